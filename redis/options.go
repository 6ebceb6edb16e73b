package redis

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Option configures a Client.
type Option func(*config)

// Mode is how a Client carries events: Redis Streams (the default) or
// pub/sub.
type Mode uint8

const (
	// Streams: XADD to a stream per topic, XREADGROUP per consumer group,
	// XACK after the handlers: at-least-once, like the Kafka and RabbitMQ
	// backends.
	Streams Mode = iota
	// PubSub: PUBLISH to a channel per topic, SUBSCRIBE/PSUBSCRIBE:
	// at-most-once, wire-compatible with Python Dispytch's Redis backend.
	PubSub
)

// StartPosition is where a consumer group created by a listener starts in
// a stream that already holds entries.
type StartPosition uint8

const (
	// Earliest starts from the first entry still in the stream (XGROUP
	// CREATE ... 0).
	Earliest StartPosition = iota
	// Latest starts after the last entry: only entries added after the
	// group was created (XGROUP CREATE ... $).
	Latest
)

// Trimming bounds a stream's length on every XADD to it. Zero fields trim
// nothing.
type Trimming struct {
	// MaxLen keeps about the last MaxLen entries (MAXLEN ~ n).
	MaxLen int64
	// MaxAge drops entries older than MaxAge (MINID ~ now-MaxAge), by the
	// time in their IDs.
	MaxAge time.Duration
	// Exact trims exactly (= instead of ~), which costs more on Redis.
	Exact bool
}

func (t Trimming) zero() bool { return t.MaxLen <= 0 && t.MaxAge <= 0 }

type config struct {
	mode          Mode
	psFrame       bool
	opts          *goredis.UniversalOptions
	consumer      string
	start         StartPosition
	minIdle       time.Duration
	reclaimEvery  time.Duration
	deliveryLimit int
	block         time.Duration
	batch         int
	refresh       time.Duration
	trimAll       Trimming
	trim          map[string]Trimming
	log           *slog.Logger
	problems      []string
}

func defaultConfig() config {
	return config{
		opts:          &goredis.UniversalOptions{},
		minIdle:       DefaultMinIdle,
		deliveryLimit: DefaultDeliveryLimit,
		block:         time.Second,
		batch:         DefaultReadCount,
		refresh:       DefaultStreamRefresh,
		log:           slog.Default(),
	}
}

const (
	// DefaultMinIdle is how long an entry stays pending on a consumer
	// before another consumer of the group reclaims it with XAUTOCLAIM.
	DefaultMinIdle = 30 * time.Second
	// DefaultDeliveryLimit is how often an entry may be delivered before
	// it goes to the group's dead letters.
	DefaultDeliveryLimit = 10
	// DefaultReadCount is the most entries one XREADGROUP asks for.
	DefaultReadCount = 128
	// DefaultStreamRefresh is how often a listener with patterns looks for
	// new streams that match them (SCAN).
	DefaultStreamRefresh = 5 * time.Second
)

// WithMode sets the mode (default Streams).
func WithMode(m Mode) Option { return func(c *config) { c.mode = m } }

// PubSubHeaders makes a PubSub-mode client publish a Go-only frame that
// carries the message key, headers, event id, type and content type next
// to the envelope (the fields of a stream entry), instead of the bare
// envelope. Python Dispytch cannot read it: leave it off where Python
// subscribes. Listeners read both forms whatever this option says.
func PubSubHeaders() Option { return func(c *config) { c.psFrame = true } }

// Addrs sets the server addresses (default "127.0.0.1:6379"). One address
// makes a standalone client; several a Cluster client; with MasterName, a
// Sentinel client (the addresses are the sentinels').
func Addrs(addrs ...string) Option {
	return func(c *config) { c.opts.Addrs = append([]string(nil), addrs...) }
}

// MasterName names the master that Sentinel monitors, making the client a
// failover client.
func MasterName(name string) Option { return func(c *config) { c.opts.MasterName = name } }

// Auth sets the username (ACL, may be empty) and password.
func Auth(username, password string) Option {
	return func(c *config) { c.opts.Username, c.opts.Password = username, password }
}

// TLS makes the client connect with TLS.
func TLS(cfg *tls.Config) Option { return func(c *config) { c.opts.TLSConfig = cfg } }

// DB selects the database (standalone and Sentinel only).
func DB(n int) Option { return func(c *config) { c.opts.DB = n } }

// ClientOptions lets f change go-redis's options before the client is
// built (pool sizes, timeouts, retries, a dialer).
func ClientOptions(f func(*goredis.UniversalOptions)) Option {
	return func(c *config) {
		if f != nil {
			f(c.opts)
		}
	}
}

// ConsumerName sets the consumer name the client uses in every group it
// reads. The default is "<hostname>-<pid>-<random>", chosen when the client
// is built: unique to the client, so that two clients never share pending
// entries. Set a name that outlives the process (a pod name, say) to have a
// restarted process take back its own pending entries at once instead of
// after MinIdle; never give two running clients of a group the same name.
// Two listeners of one group sharing a client read as "<name>" and
// "<name>-2" (and so on), so that they never take each other's entries.
func ConsumerName(name string) Option { return func(c *config) { c.consumer = name } }

// StartFrom sets where a new consumer group starts in a stream that
// already holds entries (default Earliest). Streams a pattern subscription
// discovers after the listener started always start from their first entry.
func StartFrom(s StartPosition) Option { return func(c *config) { c.start = s } }

// MinIdle sets how long an entry stays pending on a consumer that neither
// acked it nor kept it alive before the group's other consumers reclaim it
// (default DefaultMinIdle). A consumer keeps its in-flight entries alive
// (XCLAIM to itself every MinIdle/3), so a slow handler does not lose its
// entry; a consumer that died loses it after MinIdle.
func MinIdle(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.problems = append(c.problems, fmt.Sprintf("MinIdle(%v): must be positive", d))
			return
		}
		c.minIdle = d
	}
}

// ReclaimInterval sets how often a consumer looks for entries to reclaim
// (XAUTOCLAIM); default MinIdle/4, at most 5s.
func ReclaimInterval(d time.Duration) Option { return func(c *config) { c.reclaimEvery = d } }

// DeliveryLimit sets how often an entry may be delivered (the group's
// delivery count) before the consumer moves it to the group's dead letters
// ("<group>.dlq") with reason ReasonDeliveryLimit instead of delivering it
// again (default DefaultDeliveryLimit; 0 for no limit).
func DeliveryLimit(n int) Option { return func(c *config) { c.deliveryLimit = n } }

// BlockTime sets how long one XREADGROUP waits for entries (default 1s);
// it bounds how long a shutdown and the pick-up of a newly discovered
// stream wait.
func BlockTime(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.block = d
		}
	}
}

// ReadCount sets the most entries one XREADGROUP asks for (default
// DefaultReadCount).
func ReadCount(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.batch = n
		}
	}
}

// StreamRefresh sets how often a listener with patterns scans for new
// streams that match them (default DefaultStreamRefresh).
func StreamRefresh(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.refresh = d
		}
	}
}

// Trim trims the stream of topic on every XADD to it, overriding TrimAll.
func Trim(topic string, t Trimming) Option {
	return func(c *config) {
		if c.trim == nil {
			c.trim = map[string]Trimming{}
		}
		c.trim[topic] = t
	}
}

// TrimAll trims every stream the client adds to (unless Trim sets the
// topic's own).
func TrimAll(t Trimming) Option { return func(c *config) { c.trimAll = t } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}
