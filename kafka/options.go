package kafka

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// ProducerOption configures a Producer (NewProducer, NewProducerFromClient).
type ProducerOption interface{ applyProducer(*producerConfig) }

// ConsumerOption configures a Consumer (NewConsumer).
type ConsumerOption interface{ applyConsumer(*consumerConfig) }

// Option is a connection setting understood by both producers and
// consumers: brokers, client id, TLS, SASL, logging, raw franz-go options.
type Option interface {
	ProducerOption
	ConsumerOption
}

// connConfig holds the settings shared by producers and consumers.
type connConfig struct {
	seeds      []string
	clientID   string
	tls        *tls.Config
	sasl       sasl.Mechanism
	extra      []kgo.Opt
	log        *slog.Logger
	autoCreate bool
}

func (c *connConfig) kgoOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.WithLogger(newKgoLogger(c.log))}
	if len(c.seeds) > 0 {
		opts = append(opts, kgo.SeedBrokers(c.seeds...))
	}
	if c.clientID != "" {
		opts = append(opts, kgo.ClientID(c.clientID))
	}
	if c.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tls.Clone()))
	}
	if c.sasl != nil {
		opts = append(opts, kgo.SASL(c.sasl))
	}
	if c.autoCreate {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	return opts
}

type commonOption func(*connConfig)

func (f commonOption) applyProducer(c *producerConfig) { f(&c.conn) }
func (f commonOption) applyConsumer(c *consumerConfig) { f(&c.conn) }

// Brokers sets the seed brokers ("host:port"). Default: "localhost:9092".
func Brokers(seeds ...string) Option {
	return commonOption(func(c *connConfig) { c.seeds = append([]string(nil), seeds...) })
}

// ClientID sets the client id the brokers see in logs and quotas.
// Default: "dispytch".
func ClientID(id string) Option {
	return commonOption(func(c *connConfig) { c.clientID = id })
}

// TLS connects to the brokers over TLS with cfg. When cfg.ServerName is
// empty, the broker's host name is used.
func TLS(cfg *tls.Config) Option {
	return commonOption(func(c *connConfig) { c.tls = cfg })
}

// SASLPlain authenticates with SASL/PLAIN. Use it only over TLS.
func SASLPlain(user, password string) Option {
	return commonOption(func(c *connConfig) {
		c.sasl = plain.Auth{User: user, Pass: password}.AsMechanism()
	})
}

// SASLScramSHA256 authenticates with SASL/SCRAM-SHA-256.
func SASLScramSHA256(user, password string) Option {
	return commonOption(func(c *connConfig) {
		c.sasl = scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	})
}

// SASLScramSHA512 authenticates with SASL/SCRAM-SHA-512.
func SASLScramSHA512(user, password string) Option {
	return commonOption(func(c *connConfig) {
		c.sasl = scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	})
}

// ClientOptions passes raw franz-go options to the clients this package
// builds, after its own, so they win. Use it for what this package does not
// wrap (fetch sizes, timeouts, session timeout, a custom dialer, ...). Do not
// override the group-management options the consumer relies on
// (ConsumerGroup, DisableAutoCommit, BlockRebalanceOnPoll, the
// OnPartitions callbacks).
func ClientOptions(opts ...kgo.Opt) Option {
	return commonOption(func(c *connConfig) { c.extra = append(c.extra, opts...) })
}

// WithLogger sets the logger for this package and for franz-go's own
// messages (at warn level and above unless the logger enables debug).
// Default: slog.Default().
func WithLogger(log *slog.Logger) Option {
	return commonOption(func(c *connConfig) { c.log = log })
}

// AllowAutoTopicCreation lets producing to, or consuming from, a topic that
// does not exist create it with the broker's defaults. It is off by default:
// a missing topic is an error (ErrUnknownTopic) rather than a silently
// created topic with a guessed partition count. The broker must also allow
// it (auto.create.topics.enable).
func AllowAutoTopicCreation() Option {
	return commonOption(func(c *connConfig) { c.autoCreate = true })
}

// Acks is how many replicas must have a produced record before the broker
// acknowledges it.
type Acks int8

const (
	// AcksAll waits for every in-sync replica. The default; required for
	// idempotent producing.
	AcksAll Acks = iota
	// AcksLeader waits for the partition leader only. Disables idempotence.
	AcksLeader
	// AcksNone does not wait at all: Emit cannot know whether the record
	// was stored. Disables idempotence.
	AcksNone
)

func (a Acks) kgo() kgo.Acks {
	switch a {
	case AcksLeader:
		return kgo.LeaderAck()
	case AcksNone:
		return kgo.NoAck()
	}
	return kgo.AllISRAcks()
}

type producerConfig struct {
	conn          connConfig
	compression   []kgo.CompressionCodec
	linger        time.Duration
	acks          Acks
	noIdempotence bool
	closeTimeout  time.Duration
	batchMaxBytes func(topic string) int32
}

type producerOption func(*producerConfig)

func (f producerOption) applyProducer(c *producerConfig) { f(c) }

// Compression sets the codecs to compress batches with, in order of
// preference, e.g. Compression(kgo.ZstdCompression(), kgo.SnappyCompression()).
// Default: franz-go's, snappy when the brokers support it, else none.
func Compression(codecs ...kgo.CompressionCodec) ProducerOption {
	return producerOption(func(c *producerConfig) { c.compression = append([]kgo.CompressionCodec(nil), codecs...) })
}

// Linger makes the producer wait up to d for more records before sending a
// batch to a partition. Default 0: a batch goes out as soon as the previous
// request to the broker returned, which already batches under load while
// keeping a lone Emit fast.
func Linger(d time.Duration) ProducerOption {
	return producerOption(func(c *producerConfig) { c.linger = d })
}

// RequiredAcks sets the acknowledgement level (default AcksAll).
func RequiredAcks(a Acks) ProducerOption {
	return producerOption(func(c *producerConfig) { c.acks = a })
}

// DisableIdempotence turns off idempotent producing, which is on by default
// with AcksAll: the broker then cannot drop the duplicates of retried
// batches.
func DisableIdempotence() ProducerOption {
	return producerOption(func(c *producerConfig) { c.noIdempotence = true })
}

// CloseTimeout bounds how long Close waits for buffered records when its
// context has no deadline (default DefaultCloseTimeout, 10s).
func CloseTimeout(d time.Duration) ProducerOption {
	return producerOption(func(c *producerConfig) {
		if d > 0 {
			c.closeTimeout = d
		}
	})
}

// StartOffset is where a consumer group without committed offsets starts.
type StartOffset uint8

const (
	// Earliest starts from the oldest record still in each partition. The
	// default: nothing emitted before the group's first start is missed.
	Earliest StartOffset = iota
	// Latest starts from the end: only records produced after the group
	// first joined are consumed.
	Latest
)

type consumerConfig struct {
	conn            connConfig
	start           StartOffset
	perKey          bool
	commitInterval  time.Duration
	revokeTimeout   time.Duration
	commitTimeout   time.Duration
	queueRecords    int
	queueBytes      int
	topicRefresh    time.Duration
	redeliveryDelay time.Duration
	producer        *Producer
	producerOpts    []ProducerOption
	dlqGroup        string
}

type consumerOption func(*consumerConfig)

func (f consumerOption) applyConsumer(c *consumerConfig) { f(c) }

// StartFrom sets where a new consumer group starts (default Earliest). A
// group with committed offsets always resumes from them.
func StartFrom(s StartOffset) ConsumerOption {
	return consumerOption(func(c *consumerConfig) { c.start = s })
}

// OrderPerKey handles the records of one partition in parallel across
// record keys, in order within each key (records without a key are not
// ordered at all). Offsets are still committed only up to the first record
// not yet done. Default: one record at a time per partition.
func OrderPerKey() ConsumerOption {
	return consumerOption(func(c *consumerConfig) { c.perKey = true })
}

// CommitInterval sets how often processed offsets are committed (default
// 1s). Offsets are also committed when partitions are revoked and at
// shutdown.
func CommitInterval(d time.Duration) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if d > 0 {
			c.commitInterval = d
		}
	})
}

// RevokeTimeout bounds how long a revoked partition's in-flight records may
// take to finish before its offset is committed and the rest is abandoned to
// the partition's next owner (default 10s). Keep it well under the group's
// rebalance timeout (franz-go's default is 60s).
func RevokeTimeout(d time.Duration) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if d > 0 {
			c.revokeTimeout = d
		}
	})
}

// PartitionQueue bounds the fetched records waiting in one partition's
// queue: when it holds records (default 10000) records or bytes (default
// 8 MiB) of keys and values, fetching that partition pauses until the queue
// is down to a quarter of both. Together with franz-go's fetch sizes it
// bounds memory with a large backlog, and a partition whose handler is
// slow or retrying holds back only itself.
func PartitionQueue(records, bytes int) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if records > 0 {
			c.queueRecords = records
		}
		if bytes > 0 {
			c.queueBytes = bytes
		}
	})
}

// TopicRefresh sets how often topic metadata is refreshed (default 10s), so
// that topics created after the start that match a pattern are picked up.
func TopicRefresh(d time.Duration) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if d > 0 {
			c.topicRefresh = d
		}
	})
}

// RedeliveryDelay sets how long a nacked record (dispytch.PolicyRedeliver, or a
// dead letter that could not be published) waits before it is delivered
// again (default 1s). Kafka cannot redeliver one record, so the consumer
// does it itself; the partition's committed offset stays behind the record
// until it is acked.
func RedeliveryDelay(d time.Duration) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if d >= 0 {
			c.redeliveryDelay = d
		}
	})
}

// DeadLetterWith makes the consumer publish dead letters (its Produce
// method) with p instead of a producer of its own.
func DeadLetterWith(p *Producer) ConsumerOption {
	return consumerOption(func(c *consumerConfig) { c.producer = p })
}

// ProducerOptions configures the producer the consumer builds for dead
// letters (ignored with DeadLetterWith).
func ProducerOptions(opts ...ProducerOption) ConsumerOption {
	return consumerOption(func(c *consumerConfig) { c.producerOpts = append(c.producerOpts, opts...) })
}

// DeadLetterGroup names the consumer group whose committed offsets mark the
// dead letters that List, Purge and Redrive removed from a dead-letter
// topic (default DefaultDeadLetterGroup, "dispytch-dlq"; see
// Consumer.ScanDeadLetters). Every operator tool on the same topics must
// use the same name.
func DeadLetterGroup(name string) ConsumerOption {
	return consumerOption(func(c *consumerConfig) {
		if name != "" {
			c.dlqGroup = name
		}
	})
}
