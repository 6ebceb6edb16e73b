package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/dispytch/dispytch-go/backend"
)

// Health: the connection state of producers and consumer sessions (for
// dispytch.Emitter.Health and Listener.Health) and the consumer's lag.

// connPing is how often ConnStatus pings the brokers at most.
const connPing = 2 * time.Second

// ConnStatus implements backend.ConnReporter: connecting until a broker
// connection succeeded, reconnecting from a failed broker connection until
// the next one succeeds, closed after Close. An idle franz-go client does
// not notice that its brokers went away, so ConnStatus pings them in the
// background, at most every 2s: the first call makes the producer connect
// before anything is emitted, and a probe calling it every few seconds
// learns of an outage within one more call. A producer on a client given to
// NewProducerFromClient reports ready while open: its client's connections
// are not observed.
func (p *Producer) ConnStatus() backend.ConnStatus {
	if p.closed.Load() {
		return backend.ConnStatus{State: backend.ConnClosed, Err: errors.New("kafka: producer closed")}
	}
	if p.obs == nil {
		return backend.ConnStatus{State: backend.ConnReady}
	}
	now := time.Now().UnixNano()
	if now-p.lastPing.Load() >= int64(connPing) && p.pinging.CompareAndSwap(false, true) {
		p.lastPing.Store(now)
		go func() {
			defer p.pinging.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = p.cl.Ping(ctx) // its outcome reaches the hooks
		}()
	}
	return p.obs.conn.Status()
}

// sessionConn reports a session's connection to the listener's inbox
// (backend.ConnObserver) as it changes.
func (s *session) connFailed(err error) {
	s.conn.Failed(err)
	if o, ok := s.inbox.(backend.ConnObserver); ok {
		o.Disconnected(err)
	}
}

func (s *session) connOK() {
	s.conn.Succeeded()
	if o, ok := s.inbox.(backend.ConnObserver); ok {
		o.Reconnected()
	}
}

// Lag implements backend.LagReporter: for each partition assigned to the
// consumer's running Consume calls, the group's committed offset, the
// partition's end offset and the records between them, as the brokers
// report them now (committed offsets trail the listener's acks by up to
// CommitInterval). Partitions other members own are left out, so that
// every member of a group reports its own.
func (c *Consumer) Lag(ctx context.Context) ([]backend.PartitionLag, error) {
	if ctx == nil {
		return nil, errors.New("kafka: lag: nil context")
	}
	c.smu.Lock()
	sessions := make([]*session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.smu.Unlock()
	var out []backend.PartitionLag
	var errs []error
	for _, s := range sessions {
		owned := map[tp]bool{}
		s.mu.Lock()
		for k := range s.parts {
			owned[k] = true
		}
		s.mu.Unlock()
		if len(owned) == 0 {
			continue
		}
		lags, err := kadm.NewClient(s.cl).Lag(ctx, s.group)
		if err == nil {
			err = lags.Error()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("kafka: lag of group %q: %w", s.group, backend.ContextError(err)))
			continue
		}
		for _, ps := range lags[s.group].Lag {
			for _, l := range ps {
				if !owned[tp{l.Topic, l.Partition}] || l.Err != nil {
					continue
				}
				committed := l.Commit.At
				if committed < 0 {
					committed = -1
				}
				out = append(out, backend.PartitionLag{
					Group: s.group, Topic: l.Topic, Partition: l.Partition,
					End: l.End.Offset, Committed: committed, Lag: max(l.Lag, 0),
				})
			}
		}
	}
	return out, errors.Join(errs...)
}

var (
	_ backend.ConnReporter = (*Producer)(nil)
	_ backend.LagReporter  = (*Consumer)(nil)
)
