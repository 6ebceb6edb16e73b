package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	amqp "github.com/rabbitmq/amqp091-go"
)

// BackendName is what Client.Backend returns, and the backend of this
// package's emit options.
const BackendName = "rabbitmq"

// Client is a RabbitMQ backend for dispytch: a backend.Producer (and
// AsyncProducer) for emitters, a backend.Consumer for listeners, and a
// backend.DeadLetterStore for dlq.Open. It is safe for
// concurrent use. Create it with New or Dial, and Close it after the
// listeners using it stopped.
type Client struct {
	cfg config
	url string
	dlx string

	pubConn  *connMgr
	consConn *connMgr
	pub      *producer
	kinds    sync.Map // exchange name -> its type, as found on the broker

	closeOnce sync.Once
	closed    chan struct{}

	pending atomic.Int64 // publishes handed to send and not finished
	mu      sync.Mutex
	drained chan struct{} // closed when a publish finishes; nil without a waiting Close
}

// New returns a client for the broker at url (amqp://user:pass@host:port/vhost).
// It does not connect: connections are opened on first use, and reopened
// with backoff whenever they are lost. Errors of later calls carry the
// cause of a failed connection: see Dial.
func New(url string, opts ...Option) (*Client, error) {
	c := &Client{cfg: defaultConfig(), url: url, closed: make(chan struct{})}
	for _, o := range opts {
		if o != nil {
			o(&c.cfg)
		}
	}
	if c.cfg.amqpConfig.Recovery != nil {
		return nil, errors.New("rabbitmq: amqp091 Config.Recovery must be nil: the client recovers connections itself")
	}
	target := "the broker (WithDialer)"
	if c.cfg.dialer == nil {
		u, err := amqp.ParseURI(url)
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: bad URL: %w", err)
		}
		if c.cfg.amqpConfig.Vhost != "" {
			u.Vhost = c.cfg.amqpConfig.Vhost
		}
		target = fmt.Sprintf("%s:%d, vhost %q, as user %q", u.Host, u.Port, u.Vhost, u.Username)
	}
	for _, x := range c.cfg.exchanges {
		if x == "" || strings.HasPrefix(x, "amq.") && c.cfg.declare {
			return nil, fmt.Errorf("rabbitmq: exchange name %q cannot be declared (use DeclareTopology(false) for amq.* exchanges)", x)
		}
	}
	c.dlx = c.cfg.exchanges[0] + ".dlx"
	c.pubConn = newConnMgr("publish", target, &c.cfg, c.dialFunc("publish"))
	c.consConn = newConnMgr("consume", target, &c.cfg, c.dialFunc("consume"))
	c.pub = newProducer(c)
	return c, nil
}

// Dial is New followed by Ping: it returns a client that can publish, or
// an error and no client.
//
// A permanent failure fails Dial at once, with the broker's reason: a
// refused login (ErrAccessRefused), a missing virtual host
// (ErrVhostNotFound), an exchange the client cannot use
// (ErrPreconditionFailed); all of them wrap dispytch.ErrPermanent. A
// transient one (a refused connection, a broker restarting) is retried
// with backoff until ctx is done; the error then wraps dispytch.ErrTimeout
// (for a deadline) and the last cause ("...: last error: dial tcp ...:
// connection refused"). For a client that connects in the background
// whenever the broker is there, use New.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	if ctx == nil {
		return nil, errors.New("rabbitmq: Dial with a nil context")
	}
	c, err := New(url, opts...)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(ctx); err != nil {
		c.Close(context.Background())
		return nil, err
	}
	return c, nil
}

func (c *Client) dialFunc(role string) func(ctx context.Context) (*amqp.Connection, error) {
	if c.cfg.dialer != nil {
		return func(ctx context.Context) (*amqp.Connection, error) { return c.cfg.dialer(ctx, role) }
	}
	return func(ctx context.Context) (*amqp.Connection, error) {
		cfg := c.cfg.amqpConfig
		props := amqp.NewConnectionProperties()
		for k, v := range cfg.Properties {
			props[k] = v
		}
		props.SetClientConnectionName(c.cfg.connectionName + "/" + role)
		cfg.Properties = props
		if cfg.Dial == nil {
			cfg.Dial = amqp.DefaultDial(5 * time.Second)
		}
		return amqp.DialConfig(c.url, cfg)
	}
}

// Backend returns "rabbitmq".
func (c *Client) Backend() string { return BackendName }

// Ping waits until the client can publish: its publishing connection is
// open and, unless DeclareTopology(false), its exchanges are in place. It
// fails at once for a permanent failure and returns the last cause when
// ctx ends first (see Dial).
func (c *Client) Ping(ctx context.Context) error {
	if ctx == nil {
		return errors.New("rabbitmq: Ping with a nil context")
	}
	if _, err := c.pubConn.get(ctx, true); err != nil {
		return err
	}
	_, err := c.pub.slots[0].get(ctx)
	return err
}

// Reconnects returns how many times the client reconnected after a lost
// connection, for publishing and for consuming.
func (c *Client) Reconnects() (publish, consume int64) {
	return max(c.pubConn.connects.Load()-1, 0), max(c.consConn.connects.Load()-1, 0)
}

// ConnStatus implements backend.ConnReporter for emitters: the state of
// the publishing connection (connecting until the first one opened,
// reconnecting with the cause after a loss or a refusal, closed after
// Close). The first call opens it, as the first publish would, so that a
// readiness probe learns whether the broker can be reached. Listeners learn
// about the consuming connection from Consume.
func (c *Client) ConnStatus() backend.ConnStatus { return c.pubConn.status() }

// Close waits, until ctx is done, for the publishes in flight to be
// confirmed, then closes the connections. Publishes still pending then fail
// with an error wrapping dispytch.ErrClosed (and ErrUnconfirmed or
// ErrNotSent), and running Consume calls return one; Close then returns an
// error saying how many were left. Stop the listeners first, so that they
// settle their messages. Close is safe to call more than once.
func (c *Client) Close(ctx context.Context) error {
	var err error
	for ctx != nil && c.pending.Load() > 0 && err == nil {
		c.mu.Lock()
		if c.drained == nil {
			c.drained = make(chan struct{})
		}
		ch := c.drained
		c.mu.Unlock()
		if c.pending.Load() == 0 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if n := c.pending.Load(); n > 0 {
				err = fmt.Errorf("rabbitmq: close: %d publishes not confirmed when the context ended: %w", n, backend.ContextError(ctx.Err()))
			}
		}
	}
	c.closeOnce.Do(func() {
		close(c.closed)
		c.pubConn.close()
		c.consConn.close()
	})
	return err
}

// signalDrained wakes a Close waiting for the pending publishes.
func (c *Client) signalDrained() {
	c.mu.Lock()
	if c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
	c.mu.Unlock()
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

var _ interface {
	backend.AsyncProducer
	backend.ConnReporter
	backend.Consumer
	backend.Named
	backend.DeadLetterStore
	backend.DeadLetterCounter
} = (*Client)(nil)
