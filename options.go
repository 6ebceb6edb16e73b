package dispytch

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// One option type per thing configured: ListenerOption (NewListener),
// HandlerOption (a handler; given to NewHandlerGroup or HandlerDefaults it
// sets the default for many), EmitterOption (NewEmitter), EmitOption (one
// emit), ProviderOption (Provide). Observe configures listeners and
// emitters alike.

// ListenerOption configures a Listener.
type ListenerOption interface{ applyListener(*Listener) }

// HandlerOption configures one handler, or the handlers of a group or a
// listener (NewHandlerGroup, HandlerDefaults). The handler's own setting
// wins over its group's, which wins over the listener's.
type HandlerOption interface{ applyHandler(*handlerConfig) }

type listenerOptionFunc func(*Listener)

func (f listenerOptionFunc) applyListener(l *Listener) { f(l) }

type setting func(*handlerConfig)

func (s setting) applyHandler(c *handlerConfig) { s(c) }

// WithLogger sets the listener's logger. Default (and for nil):
// slog.Default() at construction.
func WithLogger(log *slog.Logger) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.log = log })
}

// Codecs adds codecs the listener decodes with, by the content type a
// message names; the first is also the codec for messages whose format
// it cannot tell (no content type it knows, a first byte that is neither
// JSON's nor msgpack's). JSON and msgpack are always read. Default:
// codec.JSON.
func Codecs(cs ...codec.Codec) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		for i, c := range cs {
			if c == nil {
				continue
			}
			if i == 0 {
				l.codec = c
			}
			l.extraCodecs = append(l.extraCodecs, c)
		}
	})
}

// FailurePolicy says what happens to a message whose handler failed for good
// (after its last attempt, or with a permanent, decode or validation error).
type FailurePolicy uint8

const (
	// PolicyDeadLetter publishes the message, unchanged, with failure
	// headers to the dead-letter topic and then acks it. The default.
	PolicyDeadLetter FailurePolicy = iota
	// PolicyRedeliver nacks the message so that the broker delivers it
	// again; every handler of the message runs again.
	PolicyRedeliver
	// PolicyDrop acks the message and logs the error: the message is gone.
	// Python Dispytch's behaviour; opt-in only.
	PolicyDrop
)

// String returns the policy's label: "dead_letter", "redeliver", "drop".
func (p FailurePolicy) String() string {
	switch p {
	case PolicyDeadLetter:
		return "dead_letter"
	case PolicyRedeliver:
		return "redeliver"
	case PolicyDrop:
		return "drop"
	}
	return "unknown"
}

// backoff computes the wait before a retry; retry is 1 before the first
// retry, 2 before the second, and so on.
type backoff interface {
	Delay(retry int) time.Duration
}

// fixedBackoff waits the same time before every retry.
type fixedBackoff time.Duration

func (f fixedBackoff) Delay(int) time.Duration { return time.Duration(f) }

// ExponentialBackoff waits Initial, then Initial*Multiplier, ... capped at
// Max, each randomised by ±Jitter (a fraction: 0.2 means ±20%).
type ExponentialBackoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64 // default 2
	Jitter     float64 // 0 to 1
}

// Delay returns the wait before the given retry.
func (b ExponentialBackoff) Delay(retry int) time.Duration {
	m := b.Multiplier
	if m <= 1 {
		m = 2
	}
	d := float64(b.Initial)
	for i := 1; i < retry && (b.Max <= 0 || d < float64(b.Max)); i++ {
		d *= m
	}
	if b.Max > 0 && d > float64(b.Max) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		j := min(b.Jitter, 1)
		d *= 1 - j + 2*j*rand.Float64()
	}
	return time.Duration(d)
}

// defaultRetryInterval is Python Dispytch's fixed retry interval.
const defaultRetryInterval = 1250 * time.Millisecond

type handlerConfig struct {
	problems []string // invalid option values, reported by Check and Run
	name     string
	retries  int
	backoff  backoff
	retryIf  []func(error) bool
	policy   FailurePolicy
	strict   bool
	timeout  time.Duration
}

func defaultHandlerConfig() handlerConfig {
	return handlerConfig{backoff: fixedBackoff(defaultRetryInterval)}
}

// Retries sets how many times a failed handler is retried (default 0): a
// handler runs at most n+1 times per message.
func Retries(n int) HandlerOption {
	return setting(func(c *handlerConfig) {
		if n < 0 {
			c.problems = append(c.problems, fmt.Sprintf("Retries(%d): the number of retries cannot be negative", n))
			return
		}
		c.retries = n
	})
}

// RetryInterval sets a fixed wait between retries (default 1.25s, Python
// Dispytch's).
func RetryInterval(d time.Duration) HandlerOption {
	return setting(func(c *handlerConfig) { c.backoff = fixedBackoff(d) })
}

// RetryBackoff sets the wait between retries: an ExponentialBackoff, or
// anything whose Delay(retry) returns the wait before the given retry (1
// before the first).
func RetryBackoff(b interface{ Delay(retry int) time.Duration }) HandlerOption {
	return setting(func(c *handlerConfig) { c.backoff = b })
}

// RetryOn retries only errors matching one of targets with errors.Is. Other
// errors fail at once. Without RetryOn or RetryIf every error is retried
// (except permanent, decode and validation errors).
func RetryOn(targets ...error) HandlerOption {
	return setting(func(c *handlerConfig) {
		for _, t := range targets {
			c.retryIf = append(c.retryIf, func(err error) bool { return errors.Is(err, t) })
		}
	})
}

// RetryIf retries errors for which f returns true, alongside RetryOn's:
// for errors.As on an error type, say.
func RetryIf(f func(error) bool) HandlerOption {
	return setting(func(c *handlerConfig) { c.retryIf = append(c.retryIf, f) })
}

// OnFailure sets the failure policy (default PolicyDeadLetter).
func OnFailure(p FailurePolicy) HandlerOption {
	return setting(func(c *handlerConfig) { c.policy = p })
}

// Strict makes body decoding reject fields the body type has no place for.
func Strict() HandlerOption { return setting(func(c *handlerConfig) { c.strict = true }) }

// AttemptTimeout bounds each handler attempt: its context is cancelled after
// d, and an attempt that has not returned by then fails with
// ErrAttemptTimeout (and may be retried), even if the handler ignores its
// context; the handler's goroutine runs on until it returns, and its late
// result is ignored.
func AttemptTimeout(d time.Duration) HandlerOption {
	return setting(func(c *handlerConfig) { c.timeout = d })
}

// Name names the handler in logs, dead letters and Redrive. Default: the
// function's name, e.g. "main.handleUserRegistered". Give stable names to
// closures, whose generated names change when code moves.
func Name(name string) HandlerOption { return setting(func(c *handlerConfig) { c.name = name }) }

// HandlerDefaults sets options for every handler of the listener; a group's
// and a handler's own options win.
func HandlerDefaults(opts ...HandlerOption) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.settings = append(l.settings, opts...) })
}

// Concurrency bounds the handlers running at once (default 64). The
// listener stops taking deliveries from the consumer when all are busy and
// max(n, 64) deliveries wait for a worker.
func Concurrency(n int) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		if n < 1 {
			l.problems = append(l.problems, fmt.Sprintf("Concurrency(%d): at least one handler must be able to run", n))
			return
		}
		l.concurrency = n
	})
}

// ShutdownTimeout bounds how long Run waits, after its context is done, for
// the handlers already running (default 30s); deliveries that had not
// started are not started. What has not finished by then is left unacked
// for redelivery.
func ShutdownTimeout(d time.Duration) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		if d < 0 {
			l.problems = append(l.problems, fmt.Sprintf("ShutdownTimeout(%s): negative", d))
			return
		}
		l.shutdownTimeout = d
	})
}

// StartTimeout bounds how long Run waits for the consumer's subscription
// (default 30s; 0 waits as long as Run's context). A listener that is not
// subscribed by then stops and Run returns an error wrapping ErrNotReady
// and the consumer's last cause (a refused connection, say). Permanent
// causes (refused credentials) end Run at once, whatever the timeout.
func StartTimeout(d time.Duration) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		if d < 0 {
			l.problems = append(l.problems, fmt.Sprintf("StartTimeout(%s): negative; 0 waits as long as Run's context", d))
			return
		}
		l.startTimeout = d
	})
}

// ConsumerGroup names the listener's consumer group: its service.
// Listeners of one group share its messages; each group gets every
// message. Dead letters go to "<group>.dlq". Backends take the group from
// here and from nowhere else.
func ConsumerGroup(name string) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.group = name })
}

// Delimiter sets the topic segment delimiter for patterns (default ".").
func Delimiter(d string) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		if d == "" {
			l.problems = append(l.problems, `Delimiter(""): a delimiter cannot be empty`)
			return
		}
		l.delim = d
	})
}

// UnknownEvent sets what happens to a message whose event type no handler of
// its topic handles. The default, PolicyDrop, acks it, counts it in
// Stats.Unhandled and logs at debug level: other services may publish types
// this one does not care about.
func UnknownEvent(p FailurePolicy) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.unknown = p })
}

// PoisonPolicy sets what happens to a payload that is not a valid envelope.
// Default PolicyDeadLetter.
func PoisonPolicy(p FailurePolicy) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.poison = p })
}

// DeadLetterConfig is how a listener dead-letters; zero fields keep their
// defaults.
type DeadLetterConfig struct {
	// Topic names a failed message's dead-letter topic. Default:
	// "<group>.dlq", or "dispytch.dlq" for a listener without a group. The
	// original topic travels in the dispytch-dlq-topic header, so Redrive
	// sends each message back where it came from.
	Topic func(f *FailedMessage) string
	// Producer publishes the dead letters. Default: the consumer itself
	// when it is also a Producer (the memory broker, Kafka and RabbitMQ
	// clients are).
	Producer backend.Producer
	// Attempts bounds how often a message whose dead-lettering failed is
	// redelivered to try again (default 5), on backends that count
	// deliveries (Kafka, the memory broker, RabbitMQ quorum queues): at
	// that delivery count the Fallback applies, so that a dead-letter topic
	// that cannot be written never holds a partition's commit. Where the
	// broker counts nothing, the message is redelivered until
	// dead-lettering succeeds. A permanent failure (a dead letter too large
	// even without the original's value, an error wrapping ErrPermanent)
	// applies the Fallback at once.
	Attempts int
	// Fallback is the last resort for a message that could not be
	// dead-lettered: PolicyDrop (the default) acks it with an error log
	// naming its topic, partition, offset and id, counted in
	// Stats.DeadLetterDropped; PolicyRedeliver nacks it again, which on
	// Kafka holds the partition's commit behind it.
	Fallback FailurePolicy
}

// DeadLettering configures dead-lettering (see DeadLetterConfig).
func DeadLettering(c DeadLetterConfig) ListenerOption {
	return listenerOptionFunc(func(l *Listener) {
		if c.Topic != nil {
			l.dlTopic = c.Topic
		}
		if c.Producer != nil {
			l.dlProducer = c.Producer
		}
		switch {
		case c.Attempts > 0:
			l.dlAttempts = c.Attempts
		case c.Attempts < 0:
			l.problems = append(l.problems, fmt.Sprintf("DeadLetterConfig.Attempts %d: negative", c.Attempts))
		}
		l.dlFallback = c.Fallback
	})
}

// defaultDeadLetterTopic is "<group>.dlq", or "dispytch.dlq" without a
// group.
func defaultDeadLetterTopic(dl *FailedMessage) string {
	if dl.Group == "" {
		return "dispytch.dlq"
	}
	return dl.Group + ".dlq"
}

// Validator validates event bodies and segment structs by their tags:
// Struct gets a pointer to the struct (or the struct a body type points
// to) and returns nil or an error describing every failed field.
type structValidator interface {
	Struct(v any) error
}

// WithValidator sets the validator for bodies and segments: anything with
// go-playground/validator's Struct(any) error method. The default is
// go-playground's validator.New(validator.WithRequiredStructEnabled()),
// with a faster "email" tag that accepts exactly the strings the built-in
// one does; pass your own *validator.Validate to register more tags. A
// body's own Validate() error method runs too, whatever the validator.
func WithValidator(v interface{ Struct(any) error }) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.validator = v })
}

// OrderByKey makes the listener handle deliveries with the same message key
// one at a time, in order, when the backend gives no ordering key of its own
// (default true).
func OrderByKey(on bool) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.orderByKey = on })
}

// Use adds middleware around every handler attempt. The first one given is
// the outermost.
func Use(mw ...Middleware) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.mw = append(l.mw, mw...) })
}
