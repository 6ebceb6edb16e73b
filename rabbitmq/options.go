package rabbitmq

import (
	"context"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Option configures a Client.
type Option func(*config)

// QueueType is the type of the queues the client declares.
type QueueType string

const (
	// Classic queues: RabbitMQ's default queue type.
	Classic QueueType = "classic"
	// Quorum queues: replicated, and they count deliveries, so that
	// redeliveries can be bounded with DeliveryLimit.
	Quorum QueueType = "quorum"
)

type config struct {
	exchanges      []string
	declare        bool
	queueType      QueueType
	deliveryLimit  int
	queueArgs      amqp.Table
	sac            bool
	prefetch       int
	existing       map[string]string // group -> user-declared queue
	dlSuffix       string
	tiers          []time.Duration
	window         int
	pubChannels    int
	amqpConfig     amqp.Config
	dialer         func(ctx context.Context, role string) (*amqp.Connection, error)
	backoffMin     time.Duration
	backoffMax     time.Duration
	log            *slog.Logger
	connectionName string
}

func defaultConfig() config {
	return config{
		exchanges:      []string{"dispytch"},
		declare:        true,
		queueType:      Classic,
		dlSuffix:       ".dlq",
		window:         DefaultConfirmWindow,
		pubChannels:    1,
		backoffMin:     100 * time.Millisecond,
		backoffMax:     5 * time.Second,
		log:            slog.Default(),
		connectionName: "dispytch",
	}
}

// DefaultPrefetch is the consumer prefetch when neither Prefetch nor the
// listener's Concurrency says otherwise. By default the prefetch is twice the
// listener's Concurrency (128 for the default 64), so that a listener running
// at full concurrency still has a delivery queued for every worker that frees
// up.
const DefaultPrefetch = 128

// DefaultConfirmWindow is the default number of published messages per
// channel that may await their publisher confirm at once.
const DefaultConfirmWindow = 1024

// Exchanges sets the exchanges. Emit publishes to the first unless the
// Exchange emit option names another of them; listeners bind their queues to
// all of them. Default: one exchange named "dispytch". The client declares
// them as durable topic exchanges, or uses them as they are when they
// exist: a direct exchange carries literal topics only (see the package
// documentation). Dead letters go to a direct exchange named after the
// first one plus ".dlx", which listeners declare.
func Exchanges(names ...string) Option {
	return func(c *config) {
		if len(names) > 0 {
			c.exchanges = append([]string(nil), names...)
		}
	}
}

// DeclareTopology sets whether the client declares exchanges, queues and
// bindings (default true). With false, the exchanges and every queue a
// listener consumes must already exist ("bring your own topology"); see also
// ExistingQueue.
func DeclareTopology(on bool) Option { return func(c *config) { c.declare = on } }

// WithQueueType sets the type of the group queues and dead-letter queues the
// client declares (default Classic). For queues of ExistingQueue it tells the
// client their type: with Quorum, Info.DeliveryCount is 1 on a first
// delivery.
func WithQueueType(t QueueType) Option { return func(c *config) { c.queueType = t } }

// DeliveryLimit bounds how often a quorum queue delivers a message
// (x-delivery-limit): a message nacked for redelivery (the Redeliver failure
// policy) more often than n times is dead-lettered by the broker to the
// group's dead-letter queue, with an x-death header of reason
// "delivery_limit". Classic queues keep no delivery count and ignore it.
// Default: 0, no limit.
func DeliveryLimit(n int) Option { return func(c *config) { c.deliveryLimit = n } }

// QueueArgs adds arguments to every group queue the client declares, e.g.
// x-max-length. They override the client's own.
func QueueArgs(args amqp.Table) Option {
	return func(c *config) {
		if c.queueArgs == nil {
			c.queueArgs = amqp.Table{}
		}
		for k, v := range args {
			c.queueArgs[k] = v
		}
	}
}

// SingleActiveConsumer declares group queues with x-single-active-consumer,
// so that only one consumer of a group receives messages at a time, and has
// the listener handle them strictly one at a time in queue order (every
// delivery gets the same ordering key). Use it for ordered streams; it trades
// parallelism for order. After a lost connection the listener starts none
// of the deliveries of the dead channel; only a handler already running
// then may overlap with its message's redelivery on the next consumer (see
// the package documentation).
func SingleActiveConsumer() Option { return func(c *config) { c.sac = true } }

// Prefetch sets the consumer prefetch (basic.qos) per Consume call: how many
// unacknowledged messages the broker sends ahead. By default it is twice the
// listener's Concurrency. A prefetch below the concurrency leaves
// workers idle; a much larger one only holds messages that other consumers
// of the group could take.
func Prefetch(n int) Option { return func(c *config) { c.prefetch = max(n, 1) } }

// ExistingQueue makes listeners of group consume queue, which the user
// declared and bound: the client declares and binds nothing for that group
// and only checks that the queue exists.
func ExistingQueue(group, queue string) Option {
	return func(c *config) {
		if c.existing == nil {
			c.existing = map[string]string{}
		}
		c.existing[group] = queue
	}
}

// DeadLetterSuffix sets the suffix of dead-letter topics and queues: the
// dead letters of group "orders" go to the queue "orders"+suffix (default
// ".dlq", matching the listener's default dead-letter rule). A subscription made only
// of literal topics ending with the suffix consumes the dead-letter queues
// of those names.
func DeadLetterSuffix(s string) Option {
	return func(c *config) {
		if s != "" {
			c.dlSuffix = s
		}
	}
}

// RetryTiers declares, next to every group queue, one wait queue per delay:
// "<queue>.retry.<delay>", whose messages expire after the delay and go back
// to the group queue (x-message-ttl with the default exchange as
// dead-letter exchange). With tiers, the listener hands a retry that would
// wait to the broker (the shortest tier at least as long as the wait), so
// that it holds no prefetch slot and no worker; see the package
// documentation.
func RetryTiers(delays ...time.Duration) Option {
	return func(c *config) { c.tiers = append([]time.Duration(nil), delays...) }
}

// ConfirmWindow bounds the published messages per channel that await their
// publisher confirm (default 1024). A publisher waits for a slot when the
// window is full.
func ConfirmWindow(n int) Option { return func(c *config) { c.window = max(n, 1) } }

// PublisherChannels sets how many AMQP channels publish concurrently
// (default 1). Each has its own confirm window. A batch always goes through
// one channel, in order.
func PublisherChannels(n int) Option { return func(c *config) { c.pubChannels = max(n, 1) } }

// WithConfig sets the amqp091 configuration used to dial (heartbeat, TLS,
// SASL, properties, ...). Its Recovery field must be nil: the client
// recovers connections itself.
func WithConfig(cfg amqp.Config) Option { return func(c *config) { c.amqpConfig = cfg } }

// WithDialer makes the client open connections with dial instead of dialing
// the URL: for connections the user builds. role is "publish" or "consume".
// The client calls it again after every connection loss, and closes the
// connections it returned when it is closed.
func WithDialer(dial func(ctx context.Context, role string) (*amqp.Connection, error)) Option {
	return func(c *config) { c.dialer = dial }
}

// ReconnectBackoff sets the wait between reconnection attempts: it starts at
// min and doubles up to max, with ±20% jitter (default 100ms to 5s).
func ReconnectBackoff(min, max time.Duration) Option {
	return func(c *config) {
		if min > 0 {
			c.backoffMin = min
		}
		if max >= c.backoffMin {
			c.backoffMax = max
		}
	}
}

// WithLogger sets the logger for connection events (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// ConnectionName sets the connection name the broker shows (default
// "dispytch"); the client appends the role, e.g. "dispytch/publish".
func ConnectionName(name string) Option { return func(c *config) { c.connectionName = name } }
