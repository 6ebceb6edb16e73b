package nats

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Option configures a Client.
type Option func(*config)

type config struct {
	name          string
	natsOpts      []nats.Option
	tls           *tls.Config
	user, pass    string
	token         string
	creds         string
	nkeySeed      string
	stream        string
	dlStream      string
	subjects      []string
	declare       bool
	storage       jetstream.StorageType
	replicas      int
	dupWindow     time.Duration
	maxAge        time.Duration
	ackWait       time.Duration
	maxAckPending int
	maxDeliver    int
	batch         int
	deliverAll    bool
	window        int
	backoffMin    time.Duration
	backoffMax    time.Duration
	log           *slog.Logger
}

func defaultConfig() config {
	return config{
		name:       "dispytch",
		stream:     DefaultStream,
		declare:    true,
		storage:    jetstream.FileStorage,
		replicas:   1,
		ackWait:    DefaultAckWait,
		window:     DefaultPublishWindow,
		backoffMin: 50 * time.Millisecond,
		backoffMax: 2 * time.Second,
		log:        slog.Default(),
	}
}

// DefaultStream is the stream the client uses when Stream does not name one.
const DefaultStream = "DISPYTCH"

// DefaultAckWait is the consumers' AckWait when AckWait does not set one:
// how long the server waits for a delivery's ack before it redelivers it.
// A handler running longer keeps its delivery with InProgress signals (one
// every third of AckWait), so AckWait bounds how long a crashed consumer's
// messages wait for redelivery, not how long a handler may run.
const DefaultAckWait = 30 * time.Second

// DefaultPublishWindow is the number of asynchronous publishes that may
// await their ack at once (EmitAsync, EmitBatch).
const DefaultPublishWindow = 1024

// Name sets the connection name the server shows (default "dispytch").
func Name(name string) Option { return func(c *config) { c.name = name } }

// UserInfo authenticates with a user name and a password.
func UserInfo(user, password string) Option {
	return func(c *config) { c.user, c.pass = user, password }
}

// Token authenticates with a token.
func Token(token string) Option { return func(c *config) { c.token = token } }

// Credentials authenticates with a credentials file: a user JWT and its
// NKey seed, as nsc writes them.
func Credentials(file string) Option { return func(c *config) { c.creds = file } }

// NKeyFromSeed authenticates with the NKey whose seed is in file.
func NKeyFromSeed(file string) Option { return func(c *config) { c.nkeySeed = file } }

// TLS sets the TLS configuration of the connection (tls:// URLs, or
// servers that require TLS). A nil config uses the system's roots.
func TLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.tls = cfg
	}
}

// ConnOptions adds nats.go options to the connection the client opens,
// applied after the client's own (which set the name, authentication,
// unlimited reconnects and no reconnect buffer, so that a publish during an
// outage fails at once instead of waiting in a buffer).
func ConnOptions(opts ...nats.Option) Option {
	return func(c *config) { c.natsOpts = append(c.natsOpts, opts...) }
}

// Stream names the stream that holds the events (default "DISPYTCH"). The
// client creates it when it is missing, and adds to it the subjects that
// listeners consume and emitters publish (see DeclareTopology).
func Stream(name string) Option { return func(c *config) { c.stream = name } }

// DeadLetterStream names the stream that holds the dead letters (default:
// the events stream's name plus "_DLQ"). Subjects ending in ".dlq" go to it.
func DeadLetterStream(name string) Option { return func(c *config) { c.dlStream = name } }

// StreamSubjects declares subjects (NATS wildcards allowed: "orders.>") for
// the events stream up front, so that emits to them need no subject update
// of the stream.
func StreamSubjects(subjects ...string) Option {
	return func(c *config) { c.subjects = append(c.subjects, subjects...) }
}

// DeclareTopology sets whether the client creates and updates streams and
// their subjects (default true). With false it uses what exists: a listener
// needs a stream holding its subjects (and its consumer is still created),
// and an emit to a subject no stream holds fails with ErrNotSent.
func DeclareTopology(declare bool) Option { return func(c *config) { c.declare = declare } }

// MemoryStorage makes the streams the client creates keep their messages in
// memory instead of files (default file storage).
func MemoryStorage() Option { return func(c *config) { c.storage = jetstream.MemoryStorage } }

// Replicas sets the replicas of the streams the client creates (default 1).
func Replicas(n int) Option { return func(c *config) { c.replicas = n } }

// DuplicateWindow sets the duplicate window of the streams the client
// creates (the server's default is 2 minutes): a message whose Nats-Msg-Id
// (the event id) the stream saw within the window is acknowledged and
// dropped, so that an emit retried after an unconfirmed publish is stored
// once.
func DuplicateWindow(d time.Duration) Option { return func(c *config) { c.dupWindow = d } }

// MaxAge bounds how long the streams the client creates keep a message
// (default: forever). The events stream keeps messages after every group
// acked them (limits retention), so that new groups and replays can read
// them; MaxAge is what removes them.
func MaxAge(d time.Duration) Option { return func(c *config) { c.maxAge = d } }

// AckWait sets the consumers' AckWait (default DefaultAckWait).
func AckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// MaxAckPending sets the consumers' MaxAckPending: how many deliveries the
// server lets a group hold unacknowledged. Default: the listener's
// Concurrency plus its ready queue (max(Concurrency, 64)) plus the pull
// batch.
func MaxAckPending(n int) Option { return func(c *config) { c.maxAckPending = n } }

// MaxDeliver bounds the deliveries of one message to a group (default 0:
// unbounded). A message delivered more often (a handler that crashes its
// process, say) is dead-lettered with reason "max_deliver" and terminated,
// not dropped: the client checks the count itself, so the server's own
// MaxDeliver, which would drop it silently, is left unbounded.
func MaxDeliver(n int) Option { return func(c *config) { c.maxDeliver = n } }

// PullBatch sets how many messages a pull request asks for (default:
// max(Concurrency, 64), at most 256).
func PullBatch(n int) Option { return func(c *config) { c.batch = n } }

// DeliverAll makes the consumers the client creates start with the oldest
// message the stream holds for their subjects; by default a new group
// starts with the messages published after it was created.
func DeliverAll() Option { return func(c *config) { c.deliverAll = true } }

// PublishWindow bounds the asynchronous publishes awaiting their ack
// (default DefaultPublishWindow).
func PublishWindow(n int) Option { return func(c *config) { c.window = n } }

// ReconnectBackoff sets the wait between attempts to set up a listener's
// subscription (default 50ms doubling to 2s).
func ReconnectBackoff(minWait, maxWait time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = minWait, maxWait }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}
