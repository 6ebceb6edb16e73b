// Package backend is what a Dispytch backend implements, apart from what
// users write against (as database/sql/driver is apart from database/sql):
// a Producer for emitters, a Consumer that hands Deliveries to a listener's
// Inbox, an Acknowledger per delivery, and optional upgrades by interface:
// AsyncProducer (batching), StaleChecker (deliveries that die with their
// session), DelayedNacker (redelivery after a delay), DeadLetterer (the
// broker's own dead-lettering), DeadLetterStore and DeadLetterCounter
// (operating dead letters), ConnReporter, ConnObserver and LagReporter
// (health and lag, for probes and metrics). Package backendtest is the
// conformance suite a backend runs.
package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/topic"
)

// Errors a backend returns, wrapped around its own cause; the dispytch
// package exports them under the same names for users to errors.Is.
var (
	// ErrTimeout reports that an operation did not finish before its
	// context deadline. Errors wrapping it also wrap
	// context.DeadlineExceeded (see ContextError).
	ErrTimeout = errors.New("dispytch: timeout")
	// ErrClosed reports an operation on a closed producer, consumer or
	// broker, or a settlement of a delivery whose session ended.
	ErrClosed = errors.New("dispytch: closed")
	// ErrForeignOption reports a backend-specific emit option passed to a
	// producer of another backend.
	ErrForeignOption = errors.New("dispytch: emit option belongs to another backend")
	// ErrUnroutable reports a message the broker accepted but could not
	// route to any queue.
	ErrUnroutable = errors.New("dispytch: message unroutable")
	// ErrNotSent reports a message that was not sent: the context was done
	// before it was handed to the broker, or the producer could not send
	// it. Retrying it cannot create a duplicate.
	ErrNotSent = errors.New("dispytch: not sent")
	// ErrUnconfirmed reports a message that was handed to the broker but
	// whose confirmation did not arrive (the context ended, or the
	// connection was lost): the broker may or may not have stored it.
	ErrUnconfirmed = errors.New("dispytch: sent but not confirmed")
	// ErrTooLarge reports a message larger than the broker accepts.
	ErrTooLarge = errors.New("dispytch: message too large")
	// ErrPermanent marks an error that retrying cannot fix: a handler's
	// (dispytch.Permanent), or a broker's (access refused, a missing
	// virtual host, an inequivalent declaration).
	ErrPermanent = errors.New("dispytch: permanent error")
	// ErrStopping is returned by Inbox.Deliver once the listener is
	// shutting down and accepts no more deliveries.
	ErrStopping = errors.New("dispytch: listener stopping")
	// ErrStopScan, returned by a scan's function, ends the scan early
	// without an error; the message it was given is kept.
	ErrStopScan = errors.New("dispytch: stop scan")
)

// ContextError converts a context error: a deadline becomes an error
// wrapping both ErrTimeout and context.DeadlineExceeded; other errors are
// returned unchanged. Backends use it so that every deadline satisfies
// errors.Is(err, ErrTimeout).
func ContextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// NewUUID returns a random (version 4) UUID in its canonical text form.
func NewUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// HeaderContentType is the header that names a message's codec, on
// brokers whose messages have no content-type property of their own.
const HeaderContentType = "content-type"

// Message is an encoded message on its way to a broker.
type Message struct {
	// Topic is the concrete topic (placeholders already filled).
	Topic string
	// Template is the topic as the event's Topic method returned it, its
	// placeholders ({id}) unfilled: a label of bounded cardinality for
	// observers (span names, metrics). Empty for messages not built by an
	// Emitter (dead letters, redriven messages).
	Template string
	// Key is the message key: Kafka's partition key, the memory broker's
	// ordering key. May be nil.
	Key []byte
	// Value is the encoded envelope.
	Value []byte
	// ID and Type are the envelope's event ID and type, for backends that
	// also put them in native headers. Empty for messages not built by an
	// Emitter (dead letters, redriven messages).
	ID, Type string
	// Headers are the message headers. May be nil.
	Headers map[string]string
	// ContentType is the codec's content type ("application/json"), for
	// backends with a native property for it (AMQP) or that write it as a
	// header. May be empty.
	ContentType string
	// Options are the backend-specific emit options for this message. The
	// emitter has already checked that they belong to the producer's backend.
	Options []Option
}

// Producer sends messages to a broker. Produce returns only after the broker
// accepted every message (or failed). Implementations must be safe for
// concurrent use.
//
// The context rules are what let callers retry without creating
// duplicates:
//   - Nothing is sent once ctx is done: a message not handed to the broker
//     fails with an error wrapping ErrNotSent and ctx.Err().
//   - A message handed to the broker whose confirmation did not arrive
//     before ctx ended (or before the connection was lost) fails with an
//     error wrapping ErrUnconfirmed: the broker may or may not have it.
//   - Errors from a deadline also wrap ErrTimeout (see CtxError).
//
// When only some messages of a batch fail, the error is a *BatchError with
// one error per message.
type Producer interface {
	Produce(ctx context.Context, msgs ...*Message) error
}

// AsyncProducer is implemented by producers that can send without waiting,
// batching many messages per broker round trip. done is called exactly once,
// when the broker accepted the message or it failed. Nothing is handed to
// the broker once ctx is done (ErrNotSent); a message already handed over
// may be reported with the broker's answer even after ctx ended, or with
// ErrUnconfirmed when the producer stops waiting at ctx's end.
type AsyncProducer interface {
	Producer
	ProduceAsync(ctx context.Context, m *Message, done func(error))
}

// Named is implemented by producers whose backend defines emit options.
// The emitter rejects options of any other backend with ErrForeignOption.
type Named interface {
	Backend() string
}

// Option is a backend-specific emit option, such as a Kafka partition or a
// RabbitMQ priority. Backends define their own and give them to users
// wrapped by dispytch.WithBackendOption.
type Option interface {
	// Backend names the backend the option belongs to, e.g. "kafka".
	Backend() string
}

// BatchError reports the messages of a batch that failed. Errs has one entry
// per message, nil for those that succeeded. An entry wrapping ErrNotSent
// was not sent (retrying it cannot duplicate it); one wrapping
// ErrUnconfirmed was sent but not confirmed (the broker may have it).
type BatchError struct {
	Errs []error
}

// Failed returns the indexes of the messages that failed, in order.
func (b *BatchError) Failed() []int { return b.indexes(func(error) bool { return true }) }

// NotSent returns the indexes of the messages that were not sent: retrying
// them cannot create duplicates.
func (b *BatchError) NotSent() []int {
	return b.indexes(func(e error) bool { return errors.Is(e, ErrNotSent) })
}

// Unconfirmed returns the indexes of the messages that were sent but whose
// confirmation did not arrive: the broker may have stored them.
func (b *BatchError) Unconfirmed() []int {
	return b.indexes(func(e error) bool { return errors.Is(e, ErrUnconfirmed) })
}

func (b *BatchError) indexes(f func(error) bool) []int {
	var out []int
	for i, e := range b.Errs {
		if e != nil && f(e) {
			out = append(out, i)
		}
	}
	return out
}

func (b *BatchError) Error() string {
	var n int
	var first error
	for _, e := range b.Errs {
		if e != nil {
			if first == nil {
				first = e
			}
			n++
		}
	}
	if n == 0 {
		return "dispytch: batch: no error"
	}
	if n == 1 {
		return first.Error()
	}
	return first.Error() + " (and " + strconv.Itoa(n-1) + " more of " + strconv.Itoa(len(b.Errs)) + " messages)"
}

// Unwrap returns the non-nil errors, so errors.Is sees through a batch.
func (b *BatchError) Unwrap() []error {
	var out []error
	for _, e := range b.Errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// Acknowledger settles one delivery with the broker. Ack and Nack may be
// called at most once between them; a call after the consumer's session
// ended is a no-op that may return an error wrapping ErrClosed.
type Acknowledger interface {
	// Ack marks the delivery as done: it will not be delivered again.
	Ack(ctx context.Context) error
	// Nack returns the delivery to the broker for redelivery.
	Nack(ctx context.Context) error
}

// StaleChecker may be implemented by an Acknowledger whose deliveries die
// with a session: an AMQP channel, a Kafka partition assignment. Once Stale
// reports true, the broker redelivers the message elsewhere and settling it
// here is impossible, so the listener neither starts it nor retries it: it
// is abandoned (counted in Stats.Abandoned). This is what keeps a consumer
// that lost its connection from running a message that the broker already
// gave to another consumer.
type StaleChecker interface {
	Stale() bool
}

// StaleNotifier may be implemented by a StaleChecker that can also signal
// the moment its delivery goes stale: StaleDone is closed then. The
// listener cancels the context of the delivery's running handlers, so that
// a handler honouring its context stops before the broker's redelivery
// runs elsewhere.
type StaleNotifier interface {
	StaleDone() <-chan struct{}
}

// DelayedNacker may be implemented by an Acknowledger whose broker can
// redeliver a message after a delay (NATS NakWithDelay, RabbitMQ TTL retry
// tiers). The listener then hands a retry that would wait to the broker, so
// that no worker waits (see BrokerRetries).
type DelayedNacker interface {
	// CanNackAfter reports whether NackAfter can take a delay of d (a
	// retry tier exists for it, say).
	CanNackAfter(d time.Duration) bool
	// NackAfter returns the delivery to the broker to be delivered again
	// after about d. attempts is the number of handler attempts made so
	// far, on this delivery and earlier ones; the redelivery's
	// Delivery.Attempts must carry it, so that the listener's retry limit
	// holds across deliveries.
	NackAfter(ctx context.Context, d time.Duration, attempts int) error
}

// DeadLetterer may be implemented by an Acknowledger whose broker has its
// own dead-lettering. The listener then settles a failed delivery by calling
// DeadLetter with the dead letters it built (one per failed handler: the
// original key, value and headers plus the dispytch-dlq-* failure headers,
// Topic the dead-letter topic) instead of publishing them itself and
// acking. It must store them durably, and settle the delivery, before
// returning nil.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, letters []*Message) error
}

// Delivery is one message handed from a Consumer to the listener.
type Delivery struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers map[string]string
	// OrderingKey groups deliveries that must be handled one at a time, in
	// the order delivered (a Kafka partition, for example). Empty means the
	// listener orders by Key when it is set, and otherwise not at all.
	OrderingKey string
	// Attempts is the number of handler attempts already made on earlier
	// deliveries of this message, when the backend knows it (it scheduled
	// the redelivery through DelayedNacker); the listener numbers this
	// delivery's attempts after them. 0 otherwise.
	Attempts int
	// ContentType is the message's content type (an AMQP property, a
	// content-type header), or "". The listener decodes the message with
	// the codec it names, or sniffs the first byte without one.
	ContentType string
	// Info carries Redelivered, DeliveryCount, Partition, Offset and Raw;
	// the listener fills in Key and Attempt.
	Info DeliveryInfo
	// Acker settles the delivery.
	Acker Acknowledger
}

// Subscription is what a listener consumes: literal topics and wildcard
// patterns, for a consumer group. Backends subscribe natively from it
// (Kafka: topics and an anchored regex; AMQP: bindings).
type Subscription struct {
	// Group names the consumer group (service). Empty when the listener was
	// given none; each backend documents its default.
	Group string
	// Topics are the literal topics, sorted.
	Topics []string
	// Patterns are the wildcard patterns, sorted by their text.
	Patterns []*topic.Pattern
	// Delimiter separates topic segments.
	Delimiter string
	// Concurrency is the listener's Concurrency: how many deliveries it
	// handles at once. Backends size their prefetch from it.
	Concurrency int
}

// Matches reports whether topic is one of the literal topics or matches one
// of the patterns.
func (s *Subscription) Matches(t string) bool {
	for _, lit := range s.Topics {
		if lit == t {
			return true
		}
	}
	for _, p := range s.Patterns {
		if _, ok := p.AppendMatch(nil, t); ok {
			return true
		}
	}
	return false
}

// String lists the subscription for logs.
func (s *Subscription) String() string {
	parts := append([]string(nil), s.Topics...)
	for _, p := range s.Patterns {
		parts = append(parts, p.String())
	}
	return "group=" + s.Group + " topics=[" + strings.Join(parts, " ") + "]"
}

// Inbox is the listener side of a consumer: the consumer hands it deliveries.
type Inbox interface {
	// Ready tells the listener that the subscription is in place: messages
	// emitted from now on will be consumed. Call it once.
	Ready()
	// Deliver passes one delivery to the listener. It blocks while the
	// listener is at capacity, which is the consumer's backpressure, and
	// returns ErrStopping once the listener is shutting down, or the
	// context's error. Deliveries with the same ordering key must be passed
	// one after another from one goroutine, in order.
	Deliver(ctx context.Context, d *Delivery) error
	// Done is closed when the listener has shut down: every delivery it
	// accepted was settled through its Acknowledger, or abandoned at the
	// shutdown timeout. The listener never settles a delivery after Done is
	// closed; abandoned ones must be left for redelivery.
	Done() <-chan struct{}
}

// Consumer consumes messages from a broker for a listener.
//
// Consume subscribes to sub, calls inbox.Ready, and passes deliveries to
// inbox.Deliver until ctx is done. Then it stops fetching, waits for
// inbox.Done (so that in-flight deliveries can still be acked, and offsets
// committed), releases what was not settled for redelivery, and returns nil.
//
// It returns an error for a failure it cannot recover from, at once for a
// permanent cause (access refused, a missing virtual host, a topology that
// contradicts the broker's): the error carries the broker's reason. While
// it cannot subscribe for a transient cause (a refused connection) it keeps
// trying; when ctx ends before it called inbox.Ready, it returns the last
// such cause (or ctx.Err() when there was none), never nil, so that a
// listener that never subscribed does not report a clean run.
type Consumer interface {
	Consume(ctx context.Context, sub Subscription, inbox Inbox) error
}

// DeliveryInfo describes how a message reached the handler.
type DeliveryInfo struct {
	// Attempt is the handler attempt, 1 for the first call and n+1 for the
	// n-th retry.
	Attempt int
	// Redelivered reports that the broker delivered this message before.
	Redelivered bool
	// DeliveryCount is the broker's delivery count when it keeps one (1 for a
	// first delivery), or 0.
	DeliveryCount int
	// Partition and Offset are the message's position in a partitioned log
	// (Kafka); -1 when the backend has none.
	Partition int32
	Offset    int64
	// Key is the message key, if any.
	Key []byte
	// Raw is the backend's own message (a *kgo.Record, an amqp091.Delivery,
	// ...), for what this package does not expose. Nil for the memory broker.
	Raw any
}

// DeadLetterAction is what a scan of a dead-letter destination does with
// one message.
type DeadLetterAction uint8

const (
	// ActionKeep leaves the message in the destination.
	ActionKeep DeadLetterAction = iota
	// ActionRemove removes the message for good.
	ActionRemove
)

// DeadLetterStore is implemented by backends whose dead-letter
// destinations can be read and edited: the memory broker, Kafka and
// RabbitMQ. dispytch.DeadLetters builds the operations on it.
type DeadLetterStore interface {
	// ScanDeadLetters calls f with each message the destination dest holds
	// when the scan starts, oldest first, each once; messages that arrive
	// during the scan (a redriven message that failed again, say) are not
	// seen. f's action says whether the message stays or goes; the
	// delivery's Acker is nil.
	//
	// An error from f ends the scan: that message and the ones not yet
	// seen stay, and the error is returned (nil for ErrStopScan). Removals
	// are applied by the time ScanDeadLetters returns; after an error
	// some may not be, so a removed message can be seen again by a later
	// scan (at-least-once). Kept messages stay in dest; a backend may move
	// them to its end, and documents it.
	ScanDeadLetters(ctx context.Context, dest string, f func(*Delivery) (DeadLetterAction, error)) error
}

// DeadLetterCounter may be implemented by a DeadLetterStore that can count
// a destination's messages without reading them.
type DeadLetterCounter interface {
	CountDeadLetters(ctx context.Context, dest string) (int, error)
}
