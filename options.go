package dispytch

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// ListenerOption configures a Listener.
type ListenerOption interface{ applyListener(*Listener) }

// HandlerOption configures one handler.
type HandlerOption interface{ applyHandler(*handlerConfig) }

// GroupOption configures a HandlerGroup.
type GroupOption interface{ applyGroup(*HandlerGroup) }

// HandlerSetting is a handler option that can also be given to a
// HandlerGroup or a Listener, where it sets the default for their handlers.
// The handler's own setting wins over its group's, which wins over the
// listener's.
type HandlerSetting interface {
	HandlerOption
	GroupOption
	ListenerOption
}

// SharedOption configures both listeners and emitters.
type SharedOption interface {
	ListenerOption
	EmitterOption
}

type listenerOptionFunc func(*Listener)

func (f listenerOptionFunc) applyListener(l *Listener) { f(l) }

type groupOptionFunc func(*HandlerGroup)

func (f groupOptionFunc) applyGroup(g *HandlerGroup) { f(g) }

type setting func(*handlerConfig)

func (s setting) applyHandler(c *handlerConfig)  { s(c) }
func (s setting) applyGroup(g *HandlerGroup)     { g.settings = append(g.settings, s) }
func (s setting) applyListener(l *Listener)      { l.settings = append(l.settings, s) }
func (s setting) applyEmitter(*Emitter)          {}
func (f sharedOption) applyListener(l *Listener) { f.l(l) }
func (f sharedOption) applyEmitter(e *Emitter)   { f.e(e) }

type sharedOption struct {
	l func(*Listener)
	e func(*Emitter)
}

// WithCodec sets the codec: the emitter encodes with it; the listener
// decodes with it the messages whose format it cannot tell otherwise (no
// content type it knows, a first byte that is neither JSON's nor
// msgpack's). Default: codec.JSON.
func WithCodec(c codec.Codec) SharedOption {
	return sharedOption{l: func(l *Listener) { l.codec = c }, e: func(e *Emitter) { e.codec = c }}
}

// WithLogger sets the logger. Default: slog.Default() at construction.
func WithLogger(log *slog.Logger) SharedOption {
	return sharedOption{l: func(l *Listener) { l.log = log }, e: func(e *Emitter) { e.log = log }}
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

// Backoff computes the wait before a retry; retry is 1 before the first
// retry, 2 before the second, and so on.
type Backoff interface {
	Delay(retry int) time.Duration
}

// FixedBackoff waits the same time before every retry.
type FixedBackoff time.Duration

// Delay returns the fixed interval.
func (f FixedBackoff) Delay(int) time.Duration { return time.Duration(f) }

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

// DefaultRetryInterval is Python Dispytch's fixed retry interval.
const DefaultRetryInterval = 1250 * time.Millisecond

type handlerConfig struct {
	name    string
	retries int
	backoff Backoff
	retryIf []func(error) bool
	policy  FailurePolicy
	strict  bool
	timeout time.Duration
}

func defaultHandlerConfig() handlerConfig {
	return handlerConfig{backoff: FixedBackoff(DefaultRetryInterval)}
}

// Retries sets how many times a failed handler is retried (default 0): a
// handler runs at most n+1 times per delivery.
func Retries(n int) HandlerSetting { return setting(func(c *handlerConfig) { c.retries = max(n, 0) }) }

// RetryInterval sets a fixed wait between retries (default 1.25s).
func RetryInterval(d time.Duration) HandlerSetting {
	return setting(func(c *handlerConfig) { c.backoff = FixedBackoff(d) })
}

// RetryBackoff sets the wait between retries, e.g. an ExponentialBackoff.
func RetryBackoff(b Backoff) HandlerSetting {
	return setting(func(c *handlerConfig) { c.backoff = b })
}

// RetryOn retries only errors matching one of targets with errors.Is. Other
// errors fail at once. Without RetryOn, RetryOnType or RetryIf every error is
// retried (except permanent, decode and validation errors).
func RetryOn(targets ...error) HandlerSetting {
	return setting(func(c *handlerConfig) {
		for _, t := range targets {
			c.retryIf = append(c.retryIf, func(err error) bool { return errors.Is(err, t) })
		}
	})
}

// RetryOnType retries errors for which errors.As finds an E.
func RetryOnType[E error]() HandlerSetting {
	return setting(func(c *handlerConfig) {
		c.retryIf = append(c.retryIf, func(err error) bool {
			var target E
			return errors.As(err, &target)
		})
	})
}

// RetryIf retries errors for which f returns true.
func RetryIf(f func(error) bool) HandlerSetting {
	return setting(func(c *handlerConfig) { c.retryIf = append(c.retryIf, f) })
}

// OnFailure sets the failure policy (default PolicyDeadLetter).
func OnFailure(p FailurePolicy) HandlerSetting {
	return setting(func(c *handlerConfig) { c.policy = p })
}

// Strict makes body decoding reject fields the body type has no place for.
func Strict() HandlerSetting { return setting(func(c *handlerConfig) { c.strict = true }) }

// AttemptTimeout bounds each handler attempt: its context is cancelled after
// d. An attempt that times out counts as failed (and may be retried).
func AttemptTimeout(d time.Duration) HandlerSetting {
	return setting(func(c *handlerConfig) { c.timeout = d })
}

// Name names the handler in logs, dead letters and Redrive. Default: the
// function's name, e.g. "main.handleUserRegistered". Give stable names to
// closures, whose generated names change when code moves.
func Name(name string) HandlerOption { return setting(func(c *handlerConfig) { c.name = name }) }

// Concurrency bounds the handlers running at once (default 64). The
// listener stops taking deliveries from the consumer when all are busy and
// max(n, 64) deliveries wait for a worker.
func Concurrency(n int) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.concurrency = max(n, 1) })
}

// ShutdownTimeout bounds how long Run waits, after its context is done, for
// the handlers already running (default 30s); deliveries that had not
// started are not started. What has not finished by then is left unacked
// for redelivery.
func ShutdownTimeout(d time.Duration) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.shutdownTimeout = d })
}

// Group names the listener's consumer group (its service). Consumers in the
// same group share the messages; each group gets every message.
func Group(name string) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.group = name })
}

// Delimiter sets the topic segment delimiter for patterns (default ".").
func Delimiter(d string) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.delim = d })
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

// DeadLetterTopic sets the dead-letter rule (default DefaultDeadLetterTopic).
func DeadLetterTopic(f DeadLetterTopicFunc) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.dlTopic = f })
}

// StartTimeout bounds how long Run waits for the consumer's subscription
// (default DefaultStartTimeout, 30s; 0 waits as long as Run's context). A
// listener that is not subscribed by then stops and Run returns an error
// wrapping ErrNotReady and the consumer's last cause (a refused
// connection, say). Permanent causes (refused credentials) end Run at
// once, whatever the timeout.
func StartTimeout(d time.Duration) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.startTimeout = max(d, 0) })
}

// DeadLetterAttempts bounds how often a message whose dead-lettering
// failed is redelivered to try again (default 5), for backends that count
// deliveries (Kafka, the memory broker, RabbitMQ quorum queues): at that
// delivery count the DeadLetterFallback applies, so that a dead-letter
// topic that cannot be written never holds a partition's commit. Where the
// broker counts nothing, the message is redelivered until
// dead-lettering succeeds. A permanent failure (a dead letter too large
// even without the original's value, an error wrapping ErrPermanent)
// applies the fallback at once.
func DeadLetterAttempts(n int) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.dlAttempts = max(n, 1) })
}

// DeadLetterFallback sets the last resort for a message that could not be
// dead-lettered (see DeadLetterAttempts): PolicyDrop (the default) acks it with
// an error log naming its topic, partition, offset and id, counted in
// Stats.DeadLetterDropped; PolicyRedeliver nacks it again, which on Kafka holds
// the partition's commit behind it.
func DeadLetterFallback(p FailurePolicy) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.dlFallback = p })
}

// DeadLetterProducer sets the producer dead letters are published with.
// Default: the consumer itself when it is also a backend.Producer (the memory broker,
// Kafka and RabbitMQ clients are).
func DeadLetterProducer(p backend.Producer) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.dlProducer = p })
}

// Validator validates event bodies and segment structs, by their tags:
// Struct gets a pointer to the struct (or the struct a body type points
// to) and returns nil or an error describing every failed field.
// go-playground/validator's *validator.Validate is one.
type Validator interface {
	Struct(v any) error
}

// WithValidator sets the validator for bodies and segments. The default is
// go-playground's validator.New(validator.WithRequiredStructEnabled()),
// with a faster "email" tag that accepts exactly the strings the built-in
// one does; pass your own *validator.Validate to register more tags. A
// body's own Validate() error method runs too, whatever the validator.
func WithValidator(v Validator) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.validator = v })
}

// OrderByKey makes the listener handle deliveries with the same message key
// one at a time, in order, when the backend gives no ordering key of its own
// (default true).
func OrderByKey(on bool) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.orderByKey = on })
}

// Use adds middleware around every handler attempt.
func Use(mw ...Middleware) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.mw = append(l.mw, mw...) })
}

// DefaultTopic sets the topic of handlers registered in the group with an
// empty topic.
func DefaultTopic(topic string) GroupOption {
	return groupOptionFunc(func(g *HandlerGroup) { g.topic = topic })
}

// DefaultEventType sets the event type of handlers registered in the group
// with an empty event type.
func DefaultEventType(eventType string) GroupOption {
	return groupOptionFunc(func(g *HandlerGroup) { g.eventType = eventType })
}

// BrokerRetries says whether a retry that waits may wait in the broker
// (default true): when the delivery's acknowledger can redeliver after a
// delay (DelayedNacker: NATS, RabbitMQ retry tiers), the listener hands it
// the retry instead of holding a worker for the wait. It does so only for a
// message with one handler (so that no other handler runs again) and no
// ordering key (so that no later message of the key overtakes it); other
// retries wait in the worker.
func BrokerRetries(on bool) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.brokerRetries = on })
}
