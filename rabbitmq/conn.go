package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Recovery: why our own loop and not amqp091's built-in one.
//
// amqp091-go (since v1.12) can reconnect by itself (Config.Recovery), but
//   - it is marked experimental, its API and behaviour may still change;
//   - it reuses the same *amqp.Channel across a reconnect, and a Delivery's
//     Acknowledger is that channel: a delivery received before the loss,
//     acked after it, would send its old delivery tag on the new channel,
//     where tags restart at 1 and name another message. That is exactly what
//     must never happen;
//   - its consumer recovery resumes consuming behind our back, before the
//     listener knows the session changed, and the topology it replays is
//     whatever was declared, not what the listener subscribes to now;
//   - an Emit waiting for a confirm across the outage has to learn that its
//     message may be lost, and retry it within its own deadline.
//
// So Config.Recovery must stay nil, and the client supervises connections
// itself: one connection per role (publishing and consuming are kept apart,
// as RabbitMQ recommends, so that publisher flow control never delays
// acks), redialed with exponential backoff and jitter after every loss.
// Publishers and consumers open fresh channels on every new connection; each
// delivery acks through the channel it came from, so after a loss its ack
// fails (an error wrapping dispytch.ErrClosed) and the broker redelivers it.

// connMgr keeps one connection open, redialing after losses.
//
// A failed attempt is classified: a permanent failure (a refused login, a
// missing virtual host: see dialError) fails callers of get at once with
// the broker's reason, a transient one (a refused connection, a broker
// starting) makes them wait for the next attempt, up to their context.
// Either way the manager keeps redialing with backoff, so a client heals
// once the cause is gone.
type connMgr struct {
	role   string
	target string // where it connects, for errors: host, vhost and user
	dial   func(ctx context.Context) (*amqp.Connection, error)
	cfg    *config
	log    *slog.Logger

	startOnce sync.Once
	quit      chan struct{} // closed by close
	stopped   chan struct{} // closed when run returned

	mu      sync.Mutex
	conn    *amqp.Connection
	ready   chan struct{} // closed while conn != nil
	failed  chan struct{} // closed (and replaced) after every failed attempt
	lastErr error         // the last failure (classified), nil after a success
	closed  bool

	connects atomic.Int64
}

func newConnMgr(role, target string, cfg *config, dial func(ctx context.Context) (*amqp.Connection, error)) *connMgr {
	return &connMgr{
		role:    role,
		target:  target,
		dial:    dial,
		cfg:     cfg,
		log:     cfg.log,
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		ready:   make(chan struct{}),
		failed:  make(chan struct{}),
	}
}

// get returns the open connection, waiting for one until ctx is done. With
// failFast, a permanent failure of the last attempt is returned at once;
// without, get waits through it (for the client's own loops, which must
// not spin). The connection may die right after; callers handle channel
// errors.
func (m *connMgr) get(ctx context.Context, failFast bool) (*amqp.Connection, error) {
	m.startOnce.Do(func() { go m.run() })
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, fmt.Errorf("rabbitmq: %s connection: %w", m.role, dispytch.ErrClosed)
		}
		if m.conn != nil && !m.conn.IsClosed() {
			c := m.conn
			m.mu.Unlock()
			return c, nil
		}
		ready, failed, last, conn := m.ready, m.failed, m.lastErr, m.conn
		m.mu.Unlock()
		if failFast && permanent(last) {
			return nil, last
		}
		if conn != nil {
			// Handed a connection that already died: wait for run to
			// notice and replace it rather than spin.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-m.quit:
			case <-ctx.Done():
				return nil, m.notConnected(ctx)
			}
			continue
		}
		select {
		case <-ready:
		case <-failed:
		case <-m.quit:
		case <-ctx.Done():
			return nil, m.notConnected(ctx)
		}
	}
}

// notConnected is the error of a get whose ctx ended: the context's error
// and the last cause.
func (m *connMgr) notConnected(ctx context.Context) error {
	err := backend.ContextError(ctx.Err())
	if last := m.lastError(); last != nil {
		return fmt.Errorf("rabbitmq: not connected (%s): %w: last error: %w", m.role, err, last)
	}
	return fmt.Errorf("rabbitmq: not connected (%s, no connection attempt finished yet): %w", m.role, err)
}

// lastError returns the last failure, or nil while connected.
func (m *connMgr) lastError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// setFailed records a failed attempt or a lost connection, and wakes the
// callers of get.
func (m *connMgr) setFailed(err error) {
	m.mu.Lock()
	m.lastErr = err
	close(m.failed)
	m.failed = make(chan struct{})
	m.mu.Unlock()
}

func (m *connMgr) run() {
	defer close(m.stopped)
	delay := m.cfg.backoffMin
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.quit
		cancel()
	}()
	var lastLogged string
	for {
		select {
		case <-m.quit:
			return
		default:
		}
		conn, err := m.dial(dctx)
		if err == nil && conn == nil {
			err = errors.New("rabbitmq: the dialer returned no connection and no error")
		}
		if err != nil {
			err = dialError(err, m.target)
			m.setFailed(err)
			if permanent(err) {
				// Said once, not on every attempt: callers get the error.
				if s := err.Error(); s != lastLogged {
					m.log.Error("rabbitmq: the broker refused the connection; retrying in the background", "role", m.role, "err", err)
					lastLogged = s
				}
			} else {
				m.log.Warn("rabbitmq: connect failed, retrying", "role", m.role, "err", err, "retry_in", delay)
			}
			if !m.sleep(jitter(delay)) {
				return
			}
			delay = min(2*delay, m.cfg.backoffMax)
			continue
		}
		lastLogged = ""
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = conn.Close()
			return
		}
		m.conn = conn
		m.lastErr = nil
		close(m.ready)
		n := m.connects.Add(1)
		m.mu.Unlock()
		if n > 1 {
			m.log.Info("rabbitmq: reconnected", "role", m.role, "connections", n)
		}
		delay = m.cfg.backoffMin
		var cerr *amqp.Error
		select {
		case cerr = <-closed:
		case <-m.quit:
			_ = conn.Close()
			return
		}
		m.mu.Lock()
		m.conn = nil
		m.ready = make(chan struct{})
		m.mu.Unlock()
		if cerr != nil {
			m.setFailed(fmt.Errorf("connection lost: %w", cerr))
		} else {
			m.setFailed(errors.New("connection closed"))
		}
		m.log.Warn("rabbitmq: connection lost, reconnecting", "role", m.role, "err", cerr)
		if !m.sleep(jitter(delay)) {
			return
		}
	}
}

func (m *connMgr) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.quit:
		return false
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// status reports the connection's state; it starts connecting.
func (m *connMgr) status() backend.ConnStatus {
	m.startOnce.Do(func() { go m.run() })
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.connects.Load()
	switch {
	case m.closed:
		return backend.ConnStatus{State: backend.ConnClosed, Err: fmt.Errorf("rabbitmq: %s connection: %w", m.role, dispytch.ErrClosed), Reconnects: max(n-1, 0)}
	case m.conn != nil && !m.conn.IsClosed():
		return backend.ConnStatus{State: backend.ConnReady, Reconnects: n - 1}
	case n == 0:
		var err error
		if m.lastErr != nil {
			err = fmt.Errorf("rabbitmq: %s connection to %s: %w", m.role, m.target, m.lastErr)
		}
		return backend.ConnStatus{State: backend.ConnConnecting, Err: err}
	}
	err := errors.New("connection lost")
	if m.lastErr != nil {
		err = m.lastErr
	}
	return backend.ConnStatus{State: backend.ConnReconnecting, Err: fmt.Errorf("rabbitmq: %s connection to %s: %w", m.role, m.target, err), Reconnects: n - 1}
}

// close stops redialing and closes the connection.
func (m *connMgr) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	started := true
	m.startOnce.Do(func() { started = false })
	close(m.quit)
	m.mu.Unlock()
	if started {
		<-m.stopped
	}
}

// isChannelException reports an error that closed a channel but leaves the
// connection usable and would happen again on a retry (a missing exchange,
// refused access, mismatched arguments).
func isChannelException(err error) bool {
	var ae *amqp.Error
	if !errors.As(err, &ae) || !ae.Server {
		return false
	}
	switch ae.Code {
	case amqp.ContentTooLarge, amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed:
		return true
	}
	return false
}
