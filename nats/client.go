package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
)

// BackendName is what Client.Backend returns.
const BackendName = "nats"

// Client is a NATS JetStream backend for dispytch: a backend.Producer (and
// AsyncProducer) for emitters, a backend.Consumer for listeners, and a
// backend.DeadLetterStore for dlq.Open. It is safe for concurrent use.
// Create it with New, NewFromConn or NewFromJetStream, and Close it after
// the listeners using it stopped.
type Client struct {
	cfg config
	nc  *nats.Conn
	js  jetstream.JetStream
	own bool // the client opened nc and closes it

	window chan struct{} // the asynchronous publishes awaiting their ack
	// pending maps the *nats.Msg of each asynchronous publish to its
	// callback, for the JetStream context's ack and error handlers (on a
	// context the client made; one of the caller's is awaited per message).
	pendMu    sync.Mutex
	pending   map[*nats.Msg]asyncPub
	callbacks bool
	topo      topology

	obsMu     sync.Mutex
	observers map[*run]struct{}

	reconnects atomic.Int64
	connected  atomic.Bool // the connection was up once
	lastErr    atomic.Pointer[error]
	closed     atomic.Bool
}

// New connects to the NATS servers at url (nats://host:4222, tls://…; a
// comma-separated list for a cluster). It returns at once, also when no
// server can be reached yet: the connection is retried in the background,
// without limit, and re-established whenever it is lost (nats.go's
// reconnects). Errors of later calls carry the cause.
func New(url string, opts ...Option) (*Client, error) {
	c := newClient(opts)
	if err := c.check(); err != nil {
		return nil, err
	}
	nopts := []nats.Option{
		nats.Name(c.cfg.name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 100*time.Millisecond),
		// A publish during an outage fails at once instead of waiting in
		// a buffer after its context ended.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { c.disconnected(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { c.reconnected() }),
		nats.ConnectHandler(func(*nats.Conn) { c.connected.Store(true) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.remember(err) }),
	}
	if c.cfg.user != "" {
		nopts = append(nopts, nats.UserInfo(c.cfg.user, c.cfg.pass))
	}
	if c.cfg.token != "" {
		nopts = append(nopts, nats.Token(c.cfg.token))
	}
	if c.cfg.creds != "" {
		nopts = append(nopts, nats.UserCredentials(c.cfg.creds))
	}
	if c.cfg.nkeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(c.cfg.nkeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey seed %s: %w", c.cfg.nkeySeed, err)
		}
		nopts = append(nopts, o)
	}
	if c.cfg.tls != nil {
		nopts = append(nopts, nats.Secure(c.cfg.tls))
	}
	nopts = append(nopts, c.cfg.natsOpts...)
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(c.cfg.window),
		jetstream.WithPublishAsyncAckHandler(c.onAck), jetstream.WithPublishAsyncErrHandler(c.onErr))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	c.nc, c.js, c.own, c.callbacks = nc, js, true, true
	return c, nil
}

// NewFromConn returns a client on a connection the caller opened and
// closes (after Close). The client adds its own disconnect and reconnect
// callbacks to the connection's, for the listeners' health.
func NewFromConn(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("nats: NewFromConn: nil connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	return NewFromJetStream(js, opts...)
}

// NewFromJetStream returns a client on a JetStream context the caller made
// (with its domain or API prefix) and whose connection it closes.
func NewFromJetStream(js jetstream.JetStream, opts ...Option) (*Client, error) {
	if js == nil {
		return nil, errors.New("nats: NewFromJetStream: nil JetStream")
	}
	c := newClient(opts)
	if err := c.check(); err != nil {
		return nil, err
	}
	c.js, c.nc = js, js.Conn()
	if c.nc == nil {
		return nil, errors.New("nats: NewFromJetStream: the JetStream has no connection")
	}
	prevDisc, prevRec := c.nc.Opts.DisconnectedErrCB, c.nc.Opts.ReconnectedCB
	c.nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		c.disconnected(err)
		if prevDisc != nil {
			prevDisc(nc, err)
		}
	})
	c.nc.SetReconnectHandler(func(nc *nats.Conn) {
		c.reconnected()
		if prevRec != nil {
			prevRec(nc)
		}
	})
	return c, nil
}

func newClient(opts []Option) *Client {
	c := &Client{cfg: defaultConfig(), observers: map[*run]struct{}{}, pending: map[*nats.Msg]asyncPub{}}
	for _, o := range opts {
		if o != nil {
			o(&c.cfg)
		}
	}
	if c.cfg.dlStream == "" {
		c.cfg.dlStream = c.cfg.stream + "_DLQ"
	}
	c.window = make(chan struct{}, max(c.cfg.window, 1))
	c.topo.covered = map[string]string{}
	return c
}

func (c *Client) check() error {
	var problems []string
	for _, s := range []string{c.cfg.stream, c.cfg.dlStream} {
		if s == "" || strings.ContainsAny(s, ".*> \t\r\n/\\") {
			problems = append(problems, fmt.Sprintf("stream name %q: empty, or has one of . * > / \\ or white space", s))
		}
	}
	if c.cfg.stream == c.cfg.dlStream {
		problems = append(problems, "the dead-letter stream must differ from the events stream")
	}
	for _, s := range c.cfg.subjects {
		if err := checkSubject(s, true); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if c.cfg.ackWait < time.Second {
		problems = append(problems, fmt.Sprintf("AckWait %v: under a second", c.cfg.ackWait))
	}
	if c.cfg.maxAckPending < 0 || c.cfg.maxDeliver < 0 || c.cfg.batch < 0 || c.cfg.window < 0 || c.cfg.replicas < 1 {
		problems = append(problems, "MaxAckPending, MaxDeliver, PullBatch and PublishWindow must not be negative, Replicas at least 1")
	}
	if c.cfg.backoffMin <= 0 || c.cfg.backoffMax < c.cfg.backoffMin {
		problems = append(problems, "ReconnectBackoff: min must be positive and max at least min")
	}
	if len(problems) > 0 {
		return errors.New("nats: " + strings.Join(problems, "; "))
	}
	return nil
}

// Backend returns "nats".
func (c *Client) Backend() string { return BackendName }

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// JetStream returns the client's JetStream context.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// ConnStatus implements backend.ConnReporter: the state of the client's
// connection, with the last error while it is not connected.
func (c *Client) ConnStatus() backend.ConnStatus {
	n := c.reconnects.Load()
	if c.closed.Load() {
		return backend.ConnStatus{State: backend.ConnClosed, Err: fmt.Errorf("nats: %w", backend.ErrClosed), Reconnects: n}
	}
	switch c.nc.Status() {
	case nats.CONNECTED, nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		c.connected.Store(true)
		return backend.ConnStatus{State: backend.ConnReady, Reconnects: n}
	case nats.CLOSED:
		return backend.ConnStatus{State: backend.ConnClosed, Err: c.closedErr(), Reconnects: n}
	case nats.RECONNECTING:
		if c.nc.Stats().Reconnects == 0 && n == 0 && !c.everConnected() {
			// nats.go retries a first connection as a reconnect.
			return backend.ConnStatus{State: backend.ConnConnecting, Err: c.connErr()}
		}
		return backend.ConnStatus{State: backend.ConnReconnecting, Err: c.connErr(), Reconnects: n}
	default:
		if n > 0 {
			return backend.ConnStatus{State: backend.ConnReconnecting, Err: c.connErr(), Reconnects: n}
		}
		return backend.ConnStatus{State: backend.ConnConnecting, Err: c.connErr(), Reconnects: n}
	}
}

// closedErr is the error of a connection nats.go closed (after refused
// logins, say): the last error, which is permanent.
func (c *Client) closedErr() error {
	if last := c.lastError(); last != nil {
		return fmt.Errorf("nats: connection closed: %w: %w: %w", backend.ErrClosed, backend.ErrPermanent, last)
	}
	return fmt.Errorf("nats: connection closed: %w", backend.ErrClosed)
}

// everConnected reports whether the connection was ever established.
func (c *Client) everConnected() bool {
	return c.nc.ConnectedServerVersion() != "" || c.connected.Load()
}

func (c *Client) connErr() error {
	if err := c.lastError(); err != nil {
		return fmt.Errorf("nats: not connected: %w", err)
	}
	return errors.New("nats: not connected")
}

// remember keeps a connection error for errors while not connected:
// nats.go forgets its last error on the next attempt.
func (c *Client) remember(err error) {
	if err != nil {
		c.lastErr.Store(&err)
	}
}

// lastError is the connection's last error, or the last one remembered.
func (c *Client) lastError() error {
	if err := c.nc.LastError(); err != nil {
		return err
	}
	if p := c.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Client) disconnected(err error) {
	c.remember(err)
	if err == nil {
		err = errors.New("connection lost")
	}
	err = fmt.Errorf("nats: %w", err)
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	for r := range c.observers {
		r.disconnected(err)
	}
}

func (c *Client) reconnected() {
	c.reconnects.Add(1)
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	for r := range c.observers {
		r.reconnected()
	}
}

// Close waits, until ctx ends, for the asynchronous publishes to get their
// acks, and closes the connection when the client opened it. Close the
// client after the listeners using it stopped.
func (c *Client) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		err = fmt.Errorf("nats: close: %d publishes unconfirmed: %w", c.js.PublishAsyncPending(), backend.ContextError(ctx.Err()))
	}
	if c.own {
		c.nc.Close()
	}
	// Publishes still awaiting their ack will not get it.
	c.pendMu.Lock()
	left := make([]*nats.Msg, 0, len(c.pending))
	for m := range c.pending {
		left = append(left, m)
	}
	c.pendMu.Unlock()
	for _, m := range left {
		c.onErr(c.js, m, fmt.Errorf("the client closed: %w", backend.ErrClosed))
	}
	return err
}

// multiFilter reports whether the server takes several filter subjects per
// consumer (nats-server 2.10 and later).
func (c *Client) multiFilter() bool {
	return versionAtLeast(c.nc.ConnectedServerVersion(), 2, 10)
}

func versionAtLeast(v string, major, minor int) bool {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

var (
	_ backend.Producer          = (*Client)(nil)
	_ backend.AsyncProducer     = (*Client)(nil)
	_ backend.Consumer          = (*Client)(nil)
	_ backend.Named             = (*Client)(nil)
	_ backend.ConnReporter      = (*Client)(nil)
	_ backend.DeadLetterStore   = (*Client)(nil)
	_ backend.DeadLetterCounter = (*Client)(nil)
)
