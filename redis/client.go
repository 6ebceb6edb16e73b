package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
)

// Client is a Redis backend: a backend.Producer (and AsyncProducer) for
// emitters and a backend.Consumer for listeners, and a
// backend.DeadLetterStore for the dead-letter streams. It is safe for
// concurrent use; one Client serves any number of emitters and listeners.
type Client struct {
	cfg      config
	rc       goredis.UniversalClient
	own      bool // rc was built here and is closed by Close
	cluster  bool
	consumer string
	namesMu  sync.Mutex
	names    map[string]map[string]bool // group -> consumer names its running sessions use

	closed   atomic.Bool
	closedCh chan struct{}
	async    *asyncQueue

	health connTrack
	wg     sync.WaitGroup
}

var (
	_ backend.Producer          = (*Client)(nil)
	_ backend.AsyncProducer     = (*Client)(nil)
	_ backend.Consumer          = (*Client)(nil)
	_ backend.Named             = (*Client)(nil)
	_ backend.DeadLetterStore   = (*Client)(nil)
	_ backend.DeadLetterCounter = (*Client)(nil)
	_ backend.ConnReporter      = (*Client)(nil)
)

// New builds a Client on its own go-redis client. url is a redis:// or
// rediss:// (TLS) URL as go-redis parses it, with user, password and
// database ("redis://user:pass@host:6379/0"); "" means 127.0.0.1:6379.
// Options given after it (Addrs, Auth, TLS, DB, ClientOptions) override
// what the URL says. Several addresses make a Cluster client, MasterName a
// Sentinel one. New does not connect: the first command does.
func New(url string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	if url != "" {
		o, err := goredis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		cfg.opts.Addrs = []string{o.Addr}
		cfg.opts.Username, cfg.opts.Password, cfg.opts.DB = o.Username, o.Password, o.DB
		cfg.opts.TLSConfig = o.TLSConfig
		cfg.opts.ClientName = o.ClientName
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.opts.Addrs) == 0 {
		cfg.opts.Addrs = []string{"127.0.0.1:6379"}
	}
	cfg.opts.ContextTimeoutEnabled = true
	if err := cfg.check(); err != nil {
		return nil, err
	}
	c := newClient(cfg, goredis.NewUniversalClient(cfg.opts), true)
	return c, nil
}

// NewFromClient builds a Client on an existing go-redis client:
// standalone (*redis.Client), Sentinel (a failover client) or Cluster
// (*redis.ClusterClient). Close leaves rc open. Connection options
// (Addrs, Auth, TLS, DB, ClientOptions) are ignored; rc's own apply.
// Enable rc's ContextTimeoutEnabled for emit deadlines to bound its reads.
func NewFromClient(rc goredis.UniversalClient, opts ...Option) (*Client, error) {
	if rc == nil {
		return nil, errors.New("redis: NewFromClient: nil client")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return newClient(cfg, rc, false), nil
}

func (c *config) check() error {
	if c.deliveryLimit < 0 {
		c.problems = append(c.problems, fmt.Sprintf("DeliveryLimit(%d): negative", c.deliveryLimit))
	}
	if len(c.problems) > 0 {
		return errors.New("redis: " + strings.Join(c.problems, "; "))
	}
	if c.reclaimEvery <= 0 {
		c.reclaimEvery = min(c.minIdle/4, 5*time.Second)
		if c.reclaimEvery <= 0 {
			c.reclaimEvery = c.minIdle
		}
	}
	return nil
}

func newClient(cfg config, rc goredis.UniversalClient, own bool) *Client {
	c := &Client{cfg: cfg, rc: rc, own: own, closedCh: make(chan struct{})}
	_, c.cluster = rc.(*goredis.ClusterClient)
	c.consumer = cfg.consumer
	if c.consumer == "" {
		c.consumer = defaultConsumerName()
	}
	c.async = newAsyncQueue(c)
	return c
}

// defaultConsumerName is "<hostname>-<pid>-<random>".
func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "dispytch"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Backend returns "redis": emit options of this package belong to it.
func (c *Client) Backend() string { return backendName }

const backendName = "redis"

// ConsumerName returns the name the client reads its groups under (see
// the ConsumerName option).
func (c *Client) ConsumerName() string { return c.consumer }

// Redis returns the go-redis client underneath, for what this package does
// not do.
func (c *Client) Redis() goredis.UniversalClient { return c.rc }

// Close stops the client: emits fail with ErrClosed, running Consume calls
// end (their deliveries stay pending for the group). It waits for pending
// asynchronous emits until ctx is done, then closes the go-redis client
// when New built it.
func (c *Client) Close(ctx context.Context) error {
	if ctx == nil {
		return errors.New("redis: close: nil context")
	}
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.closedCh)
	done := make(chan struct{})
	go func() { c.async.close(); c.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("redis: close: %w", backend.ContextError(ctx.Err()))
	}
	if c.own {
		if cerr := c.rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("redis: close: %w", cerr)
		}
	}
	return err
}

// connTrack follows whether the client's commands reach Redis.
type connTrack struct {
	backend.ConnTracker
	lastPing atomic.Int64
	pinging  atomic.Bool
}

// observe records the outcome of a command: a network failure marks the
// connection down, anything else (a reply, even an error reply) up.
func (t *connTrack) observe(err error) {
	if err == nil || isReplyError(err) {
		t.Succeeded()
		return
	}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, goredis.ErrClosed) {
		t.Failed(err)
	}
}

// connPing is how often ConnStatus pings Redis at most.
const connPing = 2 * time.Second

// ConnStatus implements backend.ConnReporter: connecting until a command
// reached Redis, reconnecting after a network failure until the next
// command succeeds, closed after Close. An idle client notices nothing, so
// ConnStatus pings Redis in the background at most every 2s.
func (c *Client) ConnStatus() backend.ConnStatus {
	if c.closed.Load() {
		return backend.ConnStatus{State: backend.ConnClosed, Err: errors.New("redis: client closed")}
	}
	t := &c.health
	now := time.Now().UnixNano()
	if now-t.lastPing.Load() >= int64(connPing) && t.pinging.CompareAndSwap(false, true) {
		t.lastPing.Store(now)
		go func() {
			defer t.pinging.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			t.observe(c.rc.Ping(ctx).Err())
		}()
	}
	return t.Status()
}
