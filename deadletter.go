package dispytch

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reason says why a message failed.
type Reason string

// Failure reasons, written to the dispytch-dlq-reason header.
const (
	// ReasonHandler: the handler returned an error on its last attempt, or
	// a permanent one.
	ReasonHandler Reason = "handler_error"
	// ReasonPanic: the handler panicked on its last attempt.
	ReasonPanic Reason = "panic"
	// ReasonDecode: the payload is not an envelope, or the body does not
	// decode into the handler's type.
	ReasonDecode Reason = "decode"
	// ReasonValidation: the body or a topic segment failed validation.
	ReasonValidation Reason = "validation"
	// ReasonNoHandler: no handler is registered for the event type (when
	// the UnknownEvent policy is DeadLetter), or a redriven message names a
	// handler that no longer exists.
	ReasonNoHandler Reason = "no_handler"
	// ReasonDependency: a provider failed, so the handler could not be
	// called.
	ReasonDependency Reason = "dependency"
)

// Headers written on a dead letter, next to the original headers.
const (
	HeaderDLReason       = "dispytch-dlq-reason"
	HeaderDLError        = "dispytch-dlq-error"
	HeaderDLHandler      = "dispytch-dlq-handler"
	HeaderDLAttempts     = "dispytch-dlq-attempts"
	HeaderDLFirstFailure = "dispytch-dlq-first-failure"
	HeaderDLLastFailure  = "dispytch-dlq-last-failure"
	HeaderDLTopic        = "dispytch-dlq-topic"
	HeaderDLGroup        = "dispytch-dlq-group"
	// HeaderRedriveHandler, set by Redrive, limits a message to the named
	// handler.
	HeaderRedriveHandler = "dispytch-redrive-handler"
	// HeaderRedriveGroup, set by Redrive, limits a message to the listeners
	// of the group whose handler failed; other groups consuming the same
	// topic skip it.
	HeaderRedriveGroup = "dispytch-redrive-group"
	// HeaderContentType names the codec of the envelope.
	HeaderContentType = "content-type"
)

// FailedMessage describes a message that failed for good, together with why:
// what a dead letter carries.
type FailedMessage struct {
	// Topic is the topic the message was consumed from.
	Topic string
	// Key, Value and Headers are the original message, unchanged.
	Key     []byte
	Value   []byte
	Headers Headers
	// Group is the listener's consumer group.
	Group string
	// Reason classifies the failure; Err is the last error.
	Reason Reason
	Err    error
	// Handler names the handler that failed ("" when the message never
	// reached one).
	Handler string
	// Attempts is the number of attempts made.
	Attempts int
	// FirstFailure and LastFailure are the times of the first and the last
	// failed attempt.
	FirstFailure, LastFailure time.Time
	// DeadLetterTopic is where the listener's DeadLetterTopic rule sends the
	// message; set before dead-lettering.
	DeadLetterTopic string
}

// DeadLetterTopicFunc names the topic a dead letter goes to.
type DeadLetterTopicFunc func(f *FailedMessage) string

// DefaultDeadLetterTopic is the default dead-letter rule: one dead-letter
// topic per consumer group, "<group>.dlq", or "dispytch.dlq" for a listener
// without a group. The original topic travels in the dispytch-dlq-topic
// header, so Redrive can send each message back where it came from.
func DefaultDeadLetterTopic(dl *FailedMessage) string {
	if dl.Group == "" {
		return "dispytch.dlq"
	}
	return dl.Group + ".dlq"
}

// Message builds the dead-letter message: the original key and value, the
// original headers, and the failure headers.
func (dl *FailedMessage) Message(topic string) *Message {
	h := make(Headers, len(dl.Headers)+8)
	for k, v := range dl.Headers {
		h[k] = v
	}
	h[HeaderDLReason] = string(dl.Reason)
	if dl.Err != nil {
		h[HeaderDLError] = truncate(dl.Err.Error(), 4096)
	}
	if dl.Handler != "" {
		h[HeaderDLHandler] = dl.Handler
	}
	h[HeaderDLAttempts] = strconv.Itoa(dl.Attempts)
	h[HeaderDLFirstFailure] = dl.FirstFailure.UTC().Format(time.RFC3339Nano)
	h[HeaderDLLastFailure] = dl.LastFailure.UTC().Format(time.RFC3339Nano)
	h[HeaderDLTopic] = dl.Topic
	if dl.Group != "" {
		h[HeaderDLGroup] = dl.Group
	}
	delete(h, HeaderRedriveHandler)
	delete(h, HeaderRedriveGroup)
	return &Message{Topic: topic, Key: dl.Key, Value: dl.Value, Headers: h}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// IsDeadLetter reports whether headers mark a dead letter.
func IsDeadLetter(h Headers) bool { _, ok := h[HeaderDLReason]; return ok }

// RedriveOption configures Redrive.
type RedriveOption func(*redriveConfig)

type redriveConfig struct {
	group string
	idle  time.Duration
	limit int
}

// RedriveGroup sets the consumer group Redrive reads the dead-letter topic
// with. Default: "dispytch-redrive".
func RedriveGroup(g string) RedriveOption { return func(c *redriveConfig) { c.group = g } }

// RedriveIdle stops Redrive once no dead letter arrived for d. Default 2s.
func RedriveIdle(d time.Duration) RedriveOption { return func(c *redriveConfig) { c.idle = d } }

// RedriveLimit stops Redrive after n messages. Default: no limit.
func RedriveLimit(n int) RedriveOption { return func(c *redriveConfig) { c.limit = n } }

// Redrive consumes the dead-letter topic dlTopic and republishes each dead
// letter to its original topic, with the original key, value and headers.
// It marks each with the handler that failed, so that only that handler runs
// again. It stops when ctx is done, when no dead letter arrived for the idle
// time, or after the limit, and returns how many messages it redrove. A dead
// letter is acked only after its republish was accepted.
func Redrive(ctx context.Context, c Consumer, p Producer, dlTopic string, opts ...RedriveOption) (int, error) {
	cfg := redriveConfig{group: "dispytch-redrive", idle: 2 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := &redriveInbox{
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		seen:  make(chan struct{}, 1),
		p:     p,
		cfg:   &cfg,
		stop:  cancel,
	}
	errc := make(chan error, 1)
	go func() {
		errc <- c.Consume(cctx, Subscription{Group: cfg.group, Topics: []string{dlTopic}, Delimiter: DefaultDelimiter}, in)
	}()
	timer := time.NewTimer(cfg.idle)
	defer timer.Stop()
	var cerr error
loop:
	for {
		select {
		case <-cctx.Done():
			break loop
		case cerr = <-errc:
			errc = nil
			break loop
		case <-in.seen:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(cfg.idle)
		case <-timer.C:
			break loop
		}
	}
	cancel()
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.wg.Wait()
	close(in.done)
	if errc != nil {
		cerr = <-errc
	}
	in.mu.Lock()
	n, err := in.n, in.err
	in.mu.Unlock()
	if err == nil {
		err = cerr
	}
	return n, err
}

type redriveInbox struct {
	ready, done chan struct{}
	seen        chan struct{}
	p           Producer
	cfg         *redriveConfig
	stop        func()

	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
	n      int
	err    error
}

func (r *redriveInbox) Ready()                { close(r.ready) }
func (r *redriveInbox) Done() <-chan struct{} { return r.done }

func (r *redriveInbox) Deliver(ctx context.Context, d *Delivery) error {
	r.mu.Lock()
	if r.closed || (r.cfg.limit > 0 && r.n >= r.cfg.limit) {
		r.mu.Unlock()
		return ErrStopping
	}
	r.wg.Add(1)
	r.mu.Unlock()
	defer r.wg.Done()
	m := redriveMessage(d)
	if m == nil {
		// Not a dead letter: leave it unsettled, so the broker keeps it.
		return nil
	}
	select {
	case r.seen <- struct{}{}:
	default:
	}
	if err := r.p.Produce(ctx, m); err != nil {
		_ = d.Acker.Nack(context.WithoutCancel(ctx))
		r.mu.Lock()
		r.err = fmt.Errorf("dispytch: redrive to %q: %w", m.Topic, err)
		r.mu.Unlock()
		r.stop()
		return ErrStopping
	}
	if err := d.Acker.Ack(context.WithoutCancel(ctx)); err != nil {
		r.mu.Lock()
		r.err = fmt.Errorf("dispytch: redrive ack: %w", err)
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.n++
	if r.cfg.limit > 0 && r.n >= r.cfg.limit {
		r.stop()
	}
	r.mu.Unlock()
	return nil
}

// redriveMessage turns a dead letter back into the original message, marked
// for the handler that failed. It returns nil when d is no dead letter.
func redriveMessage(d *Delivery) *Message {
	topic := d.Headers[HeaderDLTopic]
	if topic == "" {
		return nil
	}
	h := make(Headers, len(d.Headers))
	for k, v := range d.Headers {
		if !strings.HasPrefix(k, "dispytch-dlq-") {
			h[k] = v
		}
	}
	if hn := d.Headers[HeaderDLHandler]; hn != "" {
		h[HeaderRedriveHandler] = hn
	}
	if g, ok := d.Headers[HeaderDLGroup]; ok {
		h[HeaderRedriveGroup] = g
	}
	return &Message{Topic: topic, Key: d.Key, Value: d.Value, Headers: h}
}
