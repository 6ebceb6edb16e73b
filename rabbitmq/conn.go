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
type connMgr struct {
	role string
	dial func(ctx context.Context) (*amqp.Connection, error)
	cfg  *config
	log  *slog.Logger

	startOnce sync.Once
	quit      chan struct{} // closed by close
	stopped   chan struct{} // closed when run returned

	mu      sync.Mutex
	conn    *amqp.Connection
	ready   chan struct{} // closed while conn != nil
	lastErr error
	closed  bool

	connects atomic.Int64
}

func newConnMgr(role string, cfg *config, dial func(ctx context.Context) (*amqp.Connection, error)) *connMgr {
	return &connMgr{
		role:    role,
		dial:    dial,
		cfg:     cfg,
		log:     cfg.log,
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		ready:   make(chan struct{}),
	}
}

// get returns the open connection, waiting for one until ctx is done. The
// connection may die right after; callers handle channel errors.
func (m *connMgr) get(ctx context.Context) (*amqp.Connection, error) {
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
		ready, last := m.ready, m.lastErr
		m.mu.Unlock()
		select {
		case <-ready:
			// If the connection we were handed is already closed, wait for
			// run to notice and replace it rather than spinning.
			m.mu.Lock()
			c := m.conn
			m.mu.Unlock()
			if c != nil && c.IsClosed() {
				select {
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
				}
			}
		case <-m.quit:
		case <-ctx.Done():
			err := dispytch.CtxError(ctx.Err())
			if last != nil {
				return nil, fmt.Errorf("rabbitmq: not connected (%s; last error: %v): %w", m.role, last, err)
			}
			return nil, fmt.Errorf("rabbitmq: not connected (%s): %w", m.role, err)
		}
	}
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
	for {
		select {
		case <-m.quit:
			return
		default:
		}
		conn, err := m.dial(dctx)
		if err != nil {
			m.mu.Lock()
			m.lastErr = err
			m.mu.Unlock()
			m.log.Warn("rabbitmq: connect failed, retrying", "role", m.role, "err", err, "retry_in", delay)
			if !m.sleep(jitter(delay)) {
				return
			}
			delay = min(2*delay, m.cfg.backoffMax)
			continue
		}
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = conn.Close()
			return
		}
		m.conn = conn
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
		if cerr != nil {
			m.lastErr = cerr
		} else {
			m.lastErr = errors.New("connection closed")
		}
		m.mu.Unlock()
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
