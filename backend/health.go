package backend

import (
	"context"
	"sync"
)

// Health: what a backend tells about its connection and its progress, for
// health checks and metrics. Every interface here is an optional upgrade.

// ConnState is the state of a backend's connection to its broker.
type ConnState uint8

const (
	// ConnConnecting: not connected yet; ConnStatus.Err is the last failed
	// attempt's cause, if any.
	ConnConnecting ConnState = iota
	// ConnReady: connected.
	ConnReady
	// ConnReconnecting: the connection was lost and is being re-established;
	// ConnStatus.Err is the cause.
	ConnReconnecting
	// ConnClosed: closed for good.
	ConnClosed
)

var connStateNames = [...]string{"connecting", "ready", "reconnecting", "closed"}

// String returns "connecting", "ready", "reconnecting" or "closed".
func (s ConnState) String() string {
	if int(s) < len(connStateNames) {
		return connStateNames[s]
	}
	return "unknown"
}

// ConnStatus is a connection's state as a ConnReporter reports it.
type ConnStatus struct {
	State ConnState
	// Err is the last connection error while the state is not ConnReady.
	Err error
	// Reconnects counts the connections re-established after a loss.
	Reconnects int64
}

// ConnReporter may be implemented by a Producer that knows whether it is
// connected. ConnStatus must be cheap and must not block; it may start
// connecting a producer that connects on first use, so that a health check
// learns whether the broker can be reached.
type ConnReporter interface {
	ConnStatus() ConnStatus
}

// ConnObserver is implemented by the listener's Inbox: a Consumer that
// knows its connection tells it, for the listener's health, when the
// subscription's connection is lost and when it is back. Consumers check
// for it with a type assertion and call it from any goroutine.
type ConnObserver interface {
	// Disconnected reports that the consumer lost its connection (or its
	// session: a channel, a group membership) and is trying again, with
	// the cause; before Inbox.Ready, that an attempt to subscribe failed
	// and is retried. It may be called again with later causes.
	Disconnected(err error)
	// Reconnected reports that the subscription is in place again after
	// Disconnected.
	Reconnected()
}

// PartitionLag is a consumer group's lag on one partition of a log.
type PartitionLag struct {
	Group     string
	Topic     string
	Partition int32
	// End is the partition's end offset: the offset of the next record
	// written to it.
	End int64
	// Committed is the group's committed offset, -1 when it has none.
	Committed int64
	// Lag is the records written and not yet committed: End minus
	// Committed, or minus the partition's start offset when nothing is
	// committed.
	Lag int64
}

// LagReporter may be implemented by a Consumer of partitioned logs
// (Kafka): Lag reports the lag of the partitions assigned to its running
// subscriptions, one entry per partition. It asks the brokers, so it takes
// a context and may fail.
type LagReporter interface {
	Lag(ctx context.Context) ([]PartitionLag, error)
}

// ConnTracker follows a connection for a ConnReporter: connecting until the
// first success, reconnecting from a failure after that until the next
// success, counting the reconnects. The zero value is ready for use; it is
// safe for concurrent use.
type ConnTracker struct {
	mu         sync.Mutex
	everOK     bool
	down       error // the last failure since the last success
	reconnects int64
}

// Succeeded records a success (a connection made, a command answered). It
// reports whether the success ended a failure after an earlier success: a
// reconnect.
func (t *ConnTracker) Succeeded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.down != nil && t.everOK
	if rec {
		t.reconnects++
	}
	t.everOK, t.down = true, nil
	return rec
}

// Failed records a connection failure with its cause.
func (t *ConnTracker) Failed(err error) {
	t.mu.Lock()
	t.down = err
	t.mu.Unlock()
}

// Status returns the state: ConnConnecting (with the last failure, if
// any) before the first success, ConnReconnecting after a later failure,
// else ConnReady.
func (t *ConnTracker) Status() ConnStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !t.everOK:
		return ConnStatus{State: ConnConnecting, Err: t.down}
	case t.down != nil:
		return ConnStatus{State: ConnReconnecting, Err: t.down, Reconnects: t.reconnects}
	}
	return ConnStatus{State: ConnReady, Reconnects: t.reconnects}
}
