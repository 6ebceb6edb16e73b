package dispytch

import (
	"errors"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go/backend"
)

// HealthState is how a listener or an emitter stands with its broker.
type HealthState uint8

const (
	// HealthConnecting: the listener's Run is subscribing, or the
	// emitter's producer has not connected yet; Health.Err is the last
	// failed attempt's cause, if any.
	HealthConnecting HealthState = iota
	// HealthReady: subscribed (a listener), connected (an emitter).
	HealthReady
	// HealthReconnecting: the connection or the subscription was lost and
	// is being re-established; Health.Err is the cause.
	HealthReconnecting
	// HealthStopped: the listener is not running (Run was not called yet,
	// or returned: Health.Err says why, nil after a clean shutdown), or the
	// emitter's producer is closed.
	HealthStopped
)

var healthNames = [...]string{"connecting", "ready", "reconnecting", "stopped"}

// String returns "connecting", "ready", "reconnecting" or "stopped".
func (s HealthState) String() string {
	if int(s) < len(healthNames) {
		return healthNames[s]
	}
	return "unknown"
}

// Health is a listener's or an emitter's state, for probes (package
// health) and metrics. The connection states come from backends that
// report them (backend.ConnReporter, backend.ConnObserver); a backend that
// does not is taken as connected while it runs.
type Health struct {
	State HealthState
	// Err is the last connection error while connecting or reconnecting,
	// and why Run returned once stopped (nil after a clean shutdown).
	Err error
	// Since is when the state began (for an emitter: when Health first saw
	// it).
	Since time.Time
	// Reconnects counts the connections or subscriptions re-established
	// after a loss, since the listener or emitter was created.
	Reconnects int64
	// InFlight is the number of messages a listener accepted and has not
	// settled yet: running, or waiting for a worker.
	InFlight int64
	// Stalled is how long messages have been waiting in a listener while
	// none was settled; 0 while messages are settled or none wait. Health
	// measures it between its own calls, so call it every few seconds
	// (probes and metric readers do).
	Stalled time.Duration
}

// listenerHealth is a listener's health state, kept apart from the hot
// path: Run and the consumer's notifications write it, Health reads it and
// samples the progress counters.
type listenerHealth struct {
	mu         sync.Mutex
	state      HealthState
	err        error
	since      time.Time
	reconnects int64
	run        *runState // the current Run's, whose notifications count
	// progress sampling
	seen     int64 // settled messages at the last sample that moved
	progress time.Time
}

// setLocked moves to state s; h.mu must be held.
func (h *listenerHealth) setLocked(s HealthState, err error) {
	if s == HealthReady && h.state == HealthReconnecting {
		h.reconnects++
	}
	if s != h.state || h.since.IsZero() {
		h.since = time.Now()
	}
	h.state, h.err = s, err
}

// starting marks the start of a Run.
func (h *listenerHealth) starting(r *runState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.run = r
	h.setLocked(HealthConnecting, nil)
}

// ready marks a Run subscribed.
func (h *listenerHealth) ready(r *runState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.run == r {
		h.setLocked(HealthReady, nil)
	}
}

// stopped marks the end of a Run.
func (h *listenerHealth) stopped(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.run = nil
	h.setLocked(HealthStopped, err)
}

// Disconnected implements backend.ConnObserver for the consumer.
func (r *runState) Disconnected(err error) {
	if err == nil {
		err = errors.New("dispytch: connection lost")
	}
	h := &r.l.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.run != r {
		return // a notification after Run returned
	}
	switch h.state {
	case HealthReady, HealthReconnecting:
		h.setLocked(HealthReconnecting, err)
	case HealthConnecting:
		h.setLocked(HealthConnecting, err)
	}
}

// Reconnected implements backend.ConnObserver for the consumer.
func (r *runState) Reconnected() {
	h := &r.l.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.run == r && h.state == HealthReconnecting {
		h.setLocked(HealthReady, nil)
	}
}

var _ backend.ConnObserver = (*runState)(nil)

// Health returns the listener's state: connecting, ready, reconnecting
// (with the cause) or stopped (with why), the messages in flight, and how
// long they have waited with none settled.
func (l *Listener) Health() Health {
	settled := l.stats.finished.Load()
	inflight := l.stats.received.Load() - settled
	now := time.Now()
	h := &l.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{State: h.state, Err: h.err, Since: h.since, Reconnects: h.reconnects, InFlight: max(inflight, 0)}
	if h.since.IsZero() {
		out.State = HealthStopped // never run
	}
	if inflight <= 0 || settled != h.seen || h.progress.IsZero() {
		h.seen, h.progress = settled, now
	}
	if inflight > 0 {
		out.Stalled = now.Sub(h.progress)
	}
	return out
}

// emitterHealth remembers when an emitter's state began.
type emitterHealth struct {
	mu    sync.Mutex
	state HealthState
	since time.Time
}

// Health returns the state of the emitter's producer, as it reports it
// (backend.ConnReporter): connecting, ready, reconnecting with the cause,
// or stopped once closed. A producer that reports nothing is ready.
func (e *Emitter) Health() Health {
	out := Health{State: HealthReady}
	if cr, ok := e.p.(backend.ConnReporter); ok {
		s := cr.ConnStatus()
		out.Err, out.Reconnects = s.Err, s.Reconnects
		switch s.State {
		case backend.ConnConnecting:
			out.State = HealthConnecting
		case backend.ConnReconnecting:
			out.State = HealthReconnecting
		case backend.ConnClosed:
			out.State = HealthStopped
		}
	} else if e.p == nil {
		out.State = HealthStopped
	}
	e.health.mu.Lock()
	defer e.health.mu.Unlock()
	if e.health.since.IsZero() || e.health.state != out.State {
		e.health.state, e.health.since = out.State, time.Now()
	}
	out.Since = e.health.since
	return out
}
