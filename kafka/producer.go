package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// BackendName is what Backend returns, and the backend of this package's
// emit options.
const BackendName = "kafka"

var (
	// ErrUnknownTopic reports producing to a topic that does not exist
	// while topic auto-creation is off (the default). It also wraps
	// franz-go's kerr.UnknownTopicOrPartition.
	ErrUnknownTopic = errors.New("kafka: topic does not exist")
	// ErrNoGroup reports a Consume without a consumer group: give the
	// listener dispytch.ConsumerGroup(name). The listener's group is the only
	// group setting: it names the Kafka consumer group and the group's
	// dead-letter topic ("<group>.dlq").
	ErrNoGroup = errors.New("kafka: a consumer group is required: give the listener dispytch.ConsumerGroup(name)")
	// ErrPartitioner reports an explicit Partition emit option on a
	// producer whose client was not built with Partitioner().
	ErrPartitioner = errors.New("kafka: explicit partitions need the client built with kafka.Partitioner()")
)

// Producer sends dispytch messages as Kafka records through a franz-go
// client, which batches them: Produce hands every message of a call to the
// client at once and then waits for their acks, and ProduceAsync does not
// wait at all. It implements backend.Producer, backend.AsyncProducer and
// backend.Named. It is safe for concurrent use.
//
// The record value is the envelope exactly as the emitter encoded it. The
// record headers are the message headers plus dispytch-event-id and
// dispytch-event-type (HeaderEventID, HeaderEventType).
//
// # Not sent, unconfirmed
//
// A failed message's error says whether Kafka may have it:
//
//   - dispytch.ErrNotSent: the message was never handed to franz-go (ctx
//     was done, the producer is closed, the message is invalid, ctx ended
//     while waiting for buffer space), or franz-go failed it and it cannot
//     have been written: the broker rejected it (too large, unknown topic,
//     not authorized, policy), the client never connected to a broker, or
//     (idempotent clients this package built) no produce request was
//     written to any broker since it was handed over.
//
//   - dispytch.ErrUnconfirmed: the message was handed to franz-go and no
//     acknowledgement arrived before ctx ended, or it failed after a
//     produce request may have carried it. Kafka may have it, or may get
//     it later: a record handed to franz-go is not withdrawn when ctx ends
//     (see below), so it is still written unless it fails on its own.
//
// A broker that refuses the credentials of a client this package built
// (SASL, TLS verification) makes its buffered messages fail at once with
// the broker's reason, wrapping dispytch.ErrPermanent (and ErrNotSent when
// the client never got a connection), instead of at their deadlines.
//
// Why a handed-over record is not withdrawn: franz-go (v1.22) cancels a
// buffered batch on the context of the batch's first record only, and then
// fails every record buffered for that partition, other callers' records
// included; and an idempotent client cannot fail a batch that was written
// until its response arrived. So this producer gives franz-go records
// whose contexts never end (one caller's cancellation never fails another
// caller's records), checks ctx before handing each record over, and
// reports the records still pending when ctx ends as unconfirmed: for
// those it cannot tell a record still in franz-go's buffer from one in
// flight, and it says so conservatively.
type Producer struct {
	cl     *kgo.Client
	own    bool
	manual bool // the client's partitioner honours Partition options
	closed atomic.Bool
	close  sync.Once
	// slots bounds the records handed to the client and not yet
	// acknowledged at the client's MaxBufferedRecords, so that waiting for
	// room honours the caller's context (franz-go's own wait would cancel
	// the whole batch the record joins).
	slots slots
	// promise is onProduced, bound once.
	promise func(*kgo.Record, error)
	// records holds *produced for reuse.
	records sync.Pool
	// obs is what the client's hooks saw, nil for a client this package
	// did not build.
	obs *observer
	// safeAbort: franz-go fails no written batch of this client before
	// its response arrived, except when the client closes (idempotent
	// producing, without AllowIdempotentProduceCancellation).
	safeAbort    bool
	closeTimeout time.Duration
	aborting     atomic.Bool  // refused is aborting the buffered records
	lastPing     atomic.Int64 // unix nanos of ConnStatus's last ping
	pinging      atomic.Bool
}

// DefaultCloseTimeout bounds Close's flush when its context has no deadline.
const DefaultCloseTimeout = 10 * time.Second

// abortGrace bounds how long Close waits for franz-go to fail the records
// it can fail safely, after the flush gave up.
const abortGrace = time.Second

// NewProducer builds a producer with its own franz-go client. Idempotent
// producing with AcksAll is the default. Topics are not created on demand
// unless AllowAutoTopicCreation is given: producing to a missing topic fails
// with ErrUnknownTopic.
func NewProducer(opts ...ProducerOption) (*Producer, error) {
	cfg := producerConfig{}
	for _, o := range opts {
		if o != nil {
			o.applyProducer(&cfg)
		}
	}
	obs := &observer{}
	kopts := append(producerKgoOpts(&cfg), kgo.WithHooks(obs))
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new producer: %w", err)
	}
	p := newProducer(cl, true, true)
	p.obs = obs
	obs.refused.Store(&refusedFunc{p.refused})
	if cfg.closeTimeout > 0 {
		p.closeTimeout = cfg.closeTimeout
	}
	return p, nil
}

func newProducer(cl *kgo.Client, own, manual bool) *Producer {
	p := &Producer{cl: cl, own: own, manual: manual, closeTimeout: DefaultCloseTimeout}
	p.slots.max = maxBufferedRecords(cl)
	p.promise = p.onProduced
	noIdem, _ := cl.OptValue(kgo.DisableIdempotentWrite).(bool)
	allowCancel, _ := cl.OptValue(kgo.AllowIdempotentProduceCancellation).(bool)
	p.safeAbort = !noIdem && !allowCancel
	return p
}

func producerKgoOpts(cfg *producerConfig) []kgo.Opt {
	if cfg.conn.clientID == "" {
		cfg.conn.clientID = "dispytch"
	}
	opts := cfg.conn.kgoOpts()
	opts = append(opts,
		kgo.RecordPartitioner(Partitioner()),
		kgo.ProducerLinger(cfg.linger),
		kgo.RequiredAcks(cfg.acks.kgo()),
	)
	if cfg.acks != AcksAll || cfg.noIdempotence {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if len(cfg.compression) > 0 {
		opts = append(opts, kgo.ProducerBatchCompression(cfg.compression...))
	}
	if cfg.batchMaxBytes != nil {
		opts = append(opts, kgo.ProducerBatchMaxBytesFn(cfg.batchMaxBytes))
	}
	return append(opts, cfg.conn.extra...)
}

// NewProducerFromClient wraps a franz-go client the caller built and keeps
// owning: Close flushes but does not close it. Only CloseTimeout among the
// options applies; the client's own settings
// (brokers, acks, batching, ...) are used as they are. Partition emit
// options need the client to have been built with
// kgo.RecordPartitioner(kafka.Partitioner()); otherwise they fail with
// ErrPartitioner. Without this package's hooks on the client, a message
// franz-go fails after it was handed over is reported unconfirmed unless
// the broker rejected it (see Producer). A nil client gives a producer
// whose every call fails with an error.
func NewProducerFromClient(cl *kgo.Client, opts ...ProducerOption) *Producer {
	cfg := producerConfig{}
	for _, o := range opts {
		if o != nil {
			o.applyProducer(&cfg)
		}
	}
	if cl == nil {
		p := &Producer{closeTimeout: DefaultCloseTimeout}
		p.closed.Store(true)
		return p
	}
	_, manual := cl.OptValue(kgo.RecordPartitioner).(*partitioner)
	p := newProducer(cl, false, manual)
	if cfg.closeTimeout > 0 {
		p.closeTimeout = cfg.closeTimeout
	}
	return p
}

// errNilClient is the error of every call on a producer built from a nil
// client.
var errNilClient = errors.New("kafka: the producer has no client (NewProducerFromClient(nil))")

// Client returns the underlying franz-go client (nil for a producer built
// from a nil client).
func (p *Producer) Client() *kgo.Client { return p.cl }

// Backend returns "kafka".
func (p *Producer) Backend() string { return BackendName }

// Close flushes buffered records and then closes the client when the
// producer built it. Producing afterwards fails with an error wrapping
// dispytch.ErrClosed and dispytch.ErrNotSent.
//
// Close does not hang: it waits for the flush until ctx is done, or, when
// ctx has no deadline, for at most DefaultCloseTimeout (or CloseTimeout).
// When the flush did not finish (brokers unreachable, say), a client the
// producer built gets up to another second to fail the records it can fail
// safely and is then closed: the records still buffered fail, each with
// ErrNotSent or ErrUnconfirmed as they may have been written (see
// Producer), and Close returns an error wrapping dispytch.ErrTimeout (or
// ctx's error) that names how many records were left and the last broker
// error. A client the caller owns is not closed and its records are left
// to it.
//
//	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
//	defer cancel()
//	if err := producer.Close(ctx); err != nil { log.Print(err) }
func (p *Producer) Close(ctx context.Context) error {
	if ctx == nil {
		return errors.New("kafka: close producer: nil context")
	}
	var err error
	p.close.Do(func() {
		if p.cl == nil {
			return
		}
		p.closed.Store(true)
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			fctx, cancel = context.WithTimeout(ctx, p.closeTimeout)
		}
		ferr := p.cl.Flush(fctx)
		cancel()
		if ferr != nil {
			left := p.slots.used.Load()
			err = fmt.Errorf("kafka: close producer: %d records not acknowledged after %s%s: %w",
				left, p.waited(ctx), p.lastBrokerErr(), backend.ContextError(ferr))
			if p.own {
				actx, acancel := context.WithTimeout(context.Background(), abortGrace)
				_ = p.cl.AbortBufferedRecords(actx)
				acancel()
			}
		}
		if p.own {
			p.cl.Close()
		}
	})
	return err
}

// refused runs when a broker refused the client's authentication: records
// cannot be sent with these credentials, so, rather than letting franz-go
// retry them until each emit's deadline, the producer has franz-go abort
// the buffered records (at its safe points), every 200ms while the refusal
// lasts and records are buffered. They fail with the broker's reason,
// wrapping dispytch.ErrPermanent. The loop ends once a connection
// succeeds (the credentials were accepted) or the producer closes.
func (p *Producer) refused() {
	if !p.aborting.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.aborting.Store(false)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for p.obs.authErr() != nil && !p.closed.Load() {
			if p.cl.BufferedProduceRecords() > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_ = p.cl.AbortBufferedRecords(ctx)
				cancel()
			}
			<-tick.C
		}
	}()
}

// waited describes how long Close waited.
func (p *Producer) waited(ctx context.Context) string {
	if _, ok := ctx.Deadline(); ok {
		return "the close context ended"
	}
	return p.closeTimeout.String()
}

// lastBrokerErr names the last broker connection error, for messages.
func (p *Producer) lastBrokerErr() string {
	if p.obs == nil {
		return ""
	}
	if err := p.obs.lastErr(); err != nil {
		return " (last broker error: " + err.Error() + ")"
	}
	return ""
}

// Flush waits until every record produced so far is acked or failed, or
// ctx is done.
func (p *Producer) Flush(ctx context.Context) error {
	if ctx == nil {
		return errors.New("kafka: flush: nil context")
	}
	if p.cl == nil {
		return errNilClient
	}
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("kafka: flush: %d records not acknowledged%s: %w", p.slots.used.Load(), p.lastBrokerErr(), backend.ContextError(err))
	}
	return nil
}

// Produce sends msgs and returns once the brokers acknowledged all of them,
// some failed, or ctx is done: then the error is the message's own for a
// single message, else a *backend.BatchError with one entry per message
// (BatchError.NotSent and Unconfirmed tell them apart, see Producer). All
// messages are handed to the client before waiting, so one call costs
// about one round trip however many it sends; ctx is checked before each
// one is handed over.
func (p *Producer) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if ctx == nil {
		return fmt.Errorf("kafka: produce: nil context: %w", dispytch.ErrNotSent)
	}
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		m := msgs[0]
		done := make(chan error, 1)
		if p.send(ctx, m, outcome{fn: func(err error) { done <- err }}) == nil {
			return <-done
		}
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			select {
			case err := <-done:
				return err
			default:
			}
			return p.ctxUnconfirmed(ctx, m.Topic)
		}
	}
	w := &batchWait{errs: make([]error, len(msgs)), state: make([]atomic.Uint32, len(msgs)), done: make(chan struct{})}
	w.left.Store(int64(len(msgs)))
	for i, m := range msgs {
		if err := ctxDone(ctx); err != nil {
			for j := i; j < len(msgs); j++ {
				w.finish(j, notSent(topicOf(msgs[j]), backend.ContextError(err)))
			}
			break
		}
		p.send(ctx, m, outcome{bw: w, i: i})
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		// Every message not finished now was handed to franz-go (the
		// others finished before the loop went on): unconfirmed.
		for i := range w.state {
			st := &w.state[i]
			if st.CompareAndSwap(pending, abandoned) {
				w.errs[i] = p.ctxUnconfirmed(ctx, topicOf(msgs[i]))
				w.failed.Store(true)
				continue
			}
			for st.Load() != finished { // its outcome is being recorded
				runtime.Gosched()
			}
		}
	}
	if w.failed.Load() {
		return &backend.BatchError{Errs: w.errs}
	}
	return nil
}

// States of a batch's message.
const (
	pending   uint32 = iota
	recording        // its outcome is being recorded
	finished         // its outcome is recorded
	abandoned        // Produce returned without it: it is unconfirmed
)

// batchWait collects the outcomes of one Produce call's messages.
type batchWait struct {
	errs   []error
	state  []atomic.Uint32
	left   atomic.Int64
	failed atomic.Bool
	done   chan struct{}
}

func (w *batchWait) finish(i int, err error) {
	st := &w.state[i]
	if !st.CompareAndSwap(pending, recording) {
		return
	}
	w.errs[i] = err
	if err != nil {
		w.failed.Store(true)
	}
	st.Store(finished)
	if w.left.Add(-1) == 0 {
		close(w.done)
	}
}

// outcome is where a message's outcome goes: a callback, or a batch.
type outcome struct {
	fn func(error)
	bw *batchWait
	i  int
}

func (o outcome) report(err error) {
	if o.bw != nil {
		o.bw.finish(o.i, err)
		return
	}
	o.fn(err)
}

// ctxDone returns ctx's error when it is done, cheaply.
func ctxDone(ctx context.Context) error {
	if d := ctx.Done(); d != nil {
		select {
		case <-d:
			return ctx.Err()
		default:
		}
	}
	return nil
}

func topicOf(m *backend.Message) string {
	if m == nil {
		return ""
	}
	return m.Topic
}

func notSent(topic string, cause error) error {
	return fmt.Errorf("kafka: produce to %q: %w: %w", topic, dispytch.ErrNotSent, cause)
}

// ctxUnconfirmed is the error of a message handed to franz-go and not
// acknowledged when ctx ended; it names the last broker error, which is
// often why.
func (p *Producer) ctxUnconfirmed(ctx context.Context, topic string) error {
	return fmt.Errorf("kafka: produce to %q: no acknowledgement before the context ended%s: %w: %w",
		topic, p.lastBrokerErr(), dispytch.ErrUnconfirmed, backend.ContextError(ctx.Err()))
}

// ProduceAsync hands m to the client's batching and returns; done is called
// once, with the broker's answer: nil when it acknowledged the record, or
// the failure. A record is handed over only while ctx is not done (else done
// gets an error wrapping dispytch.ErrNotSent); once handed over it is not
// withdrawn (see Producer), and its outcome is reported when it is known,
// even after ctx ended — an asynchronous emit learns what happened instead
// of "unconfirmed". Close bounds the wait. It blocks only while the client
// buffers its maximum of records (franz-go's MaxBufferedRecords), until ctx
// is done (then the message is not sent). done may be called from a
// franz-go goroutine, or before ProduceAsync returns.
func (p *Producer) ProduceAsync(ctx context.Context, m *backend.Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if ctx == nil {
		done(fmt.Errorf("kafka: produce: nil context: %w", dispytch.ErrNotSent))
		return
	}
	p.send(ctx, m, outcome{fn: done})
}

// send hands m to the client and returns its record, or calls done with
// why it was not sent and returns nil. Once handed over, done is called by
// onProduced.
func (p *Producer) send(ctx context.Context, m *backend.Message, done outcome) *produced {
	if p.cl == nil {
		done.report(fmt.Errorf("kafka: produce: %w: %w", errNilClient, dispytch.ErrNotSent))
		return nil
	}
	if p.closed.Load() {
		done.report(fmt.Errorf("kafka: produce to %q: the producer is closed: %w: %w", topicOf(m), dispytch.ErrClosed, dispytch.ErrNotSent))
		return nil
	}
	if m == nil {
		done.report(fmt.Errorf("kafka: produce: nil message: %w", dispytch.ErrNotSent))
		return nil
	}
	if err := ctxDone(ctx); err != nil {
		done.report(notSent(m.Topic, backend.ContextError(err)))
		return nil
	}
	x, err := p.record(ctx, m)
	if err != nil {
		done.report(fmt.Errorf("%w (%w)", err, dispytch.ErrNotSent))
		return nil
	}
	if err := p.slots.acquire(ctx); err != nil {
		p.recycle(x)
		done.report(fmt.Errorf("kafka: produce to %q: waiting for buffer space (%d records in flight): %w: %w",
			m.Topic, p.slots.max, dispytch.ErrNotSent, backend.ContextError(err)))
		return nil
	}
	if err := ctxDone(ctx); err != nil {
		p.slots.release()
		p.recycle(x)
		done.report(notSent(m.Topic, backend.ContextError(err)))
		return nil
	}
	x.done = done
	if p.obs != nil {
		x.writes = p.obs.writes.Load()
	}
	p.cl.Produce(x, &x.r, p.promise)
	return x
}

func (p *Producer) recycle(x *produced) {
	*x = produced{}
	p.records.Put(x)
}

// maxBufferedRecords is the client's MaxBufferedRecords (franz-go's
// default is 50,000).
func maxBufferedRecords(cl *kgo.Client) int64 {
	switch n := cl.OptValue(kgo.MaxBufferedRecords).(type) {
	case int64:
		if n > 0 {
			return n
		}
	case int:
		if n > 0 {
			return int64(n)
		}
	}
	return 50000
}

// onProduced is the promise of every record: the record's context is its
// *produced.
func (p *Producer) onProduced(r *kgo.Record, err error) {
	x := r.Context.(*produced)
	p.slots.release()
	if err != nil {
		err = p.produceErr(x, r.Topic, err)
	}
	x.done.report(err)
	// franz-go is done with the record once its promise returned (it
	// reads the record's size before calling it): reuse it.
	p.recycle(x)
}

type manualPartitionKey struct{}

// produced is one record on its way: the record, room for its headers and
// what its promise needs, in one reused allocation. It is also the record's
// context: it keeps the emit context's values but not its cancellation,
// because franz-go fails a whole batch when one of its records' context is
// done, which would fail other emits too. Produce stops waiting at the emit
// context's deadline instead, and the record may still land (a timeout is
// an unknown outcome, as in any Kafka client).
type produced struct {
	r      kgo.Record
	hdrs   [4]kgo.RecordHeader
	parent context.Context // the emit context
	manual bool            // an explicit partition
	done   outcome
	writes int64 // the observer's produce writes when it was handed over
}

func (*produced) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*produced) Done() <-chan struct{}       { return nil }
func (*produced) Err() error                  { return nil }
func (x *produced) Value(key any) any {
	if _, ok := key.(manualPartitionKey); ok {
		if x.manual {
			return true
		}
		return nil
	}
	return x.parent.Value(key)
}

// record builds the Kafka record of m.
func (p *Producer) record(ctx context.Context, m *backend.Message) (*produced, error) {
	if m.Topic == "" {
		return nil, errors.New("kafka: produce: empty topic")
	}
	x, _ := p.records.Get().(*produced)
	if x == nil {
		x = new(produced)
	}
	x.parent = ctx
	r := &x.r
	*r = kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Context: x}
	var extra []kgo.RecordHeader
	verbatim := false
	for _, o := range m.Options {
		switch o := o.(type) {
		case partitionOption:
			if !p.manual {
				return nil, fmt.Errorf("%w (topic %q, partition %d)", ErrPartitioner, m.Topic, int32(o))
			}
			if o < 0 {
				return nil, fmt.Errorf("kafka: produce to %q: negative partition %d", m.Topic, int32(o))
			}
			r.Partition = int32(o)
			x.manual = true
		case timestampOption:
			r.Timestamp = time.Time(o)
		case headerOption:
			extra = append(extra, kgo.RecordHeader{Key: o.key, Value: o.value})
		case verbatimOption:
			verbatim = true
		default:
			return nil, fmt.Errorf("%w: %s option %T given to the kafka producer", dispytch.ErrForeignOption, o.Backend(), o)
		}
	}
	if verbatim {
		r.Headers = extra
	} else {
		r.Headers = recordHeaders(x.hdrs[:0], m, extra)
	}
	return x, nil
}

// produceErr turns franz-go's failure of a record handed over into the
// producer's error: what happened, whether Kafka may have the record
// (ErrNotSent or ErrUnconfirmed), and the sentinel of the cause.
func (p *Producer) produceErr(x *produced, topic string, err error) error {
	rejected := isRejection(err)
	sent := dispytch.ErrUnconfirmed
	if rejected || p.notWritten(x, err) {
		sent = dispytch.ErrNotSent
	}
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("%w: %q (topic auto-creation is off: create the topic first, or use kafka.AllowAutoTopicCreation): %w: %w",
			ErrUnknownTopic, topic, sent, err)
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return fmt.Errorf("kafka: produce to %q: %w (%d bytes of key and value; the limit is the topic's max.message.bytes, and the producer's ProducerBatchMaxBytes before compression): %w: %w: %w",
			topic, dispytch.ErrTooLarge, len(x.r.Key)+len(x.r.Value), sent, dispytch.ErrPermanent, err)
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("kafka: produce to %q: the producer closed before the broker acknowledged it%s: %w: %w: %w",
			topic, p.lastBrokerErr(), dispytch.ErrClosed, sent, err)
	case errors.Is(err, kgo.ErrAborting) && p.obs != nil && p.obs.authErr() != nil:
		return fmt.Errorf("kafka: produce to %q: the brokers refused the client's credentials (fix the SASL or TLS settings): %w: %w: %w",
			topic, sent, dispytch.ErrPermanent, p.obs.authErr())
	case errors.Is(err, kgo.ErrAborting):
		return fmt.Errorf("kafka: produce to %q: aborted by Close before the broker acknowledged it%s: %w: %w: %w",
			topic, p.lastBrokerErr(), dispytch.ErrClosed, sent, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout):
		return fmt.Errorf("kafka: produce to %q: %w: %w: %w", topic, sent, dispytch.ErrTimeout, err)
	case rejected:
		return fmt.Errorf("kafka: produce to %q: rejected by the broker: %w: %w: %w", topic, sent, dispytch.ErrPermanent, err)
	}
	return fmt.Errorf("kafka: produce to %q: %w: %w", topic, sent, err)
}

// isRejection reports broker errors that refuse the record itself: it was
// not stored, and sending the same bytes again fails the same way.
func isRejection(err error) bool {
	var ke *kerr.Error
	if !errors.As(err, &ke) || ke.Retriable {
		return false
	}
	switch ke {
	case kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
		kerr.PolicyViolation, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.TransactionalIDAuthorizationFailed, kerr.InvalidTopicException, kerr.InvalidRequiredAcks,
		kerr.UnsupportedForMessageFormat, kerr.InvalidTimestamp, kerr.SaslAuthenticationFailed,
		kerr.UnknownTopicOrPartition:
		return true
	}
	return false
}

// notWritten reports whether the failed record x cannot have been written:
// the client never connected to a broker, or, on an idempotent client that
// franz-go fails only at safe points, no produce request was written since
// x was handed over and the failure is not the client closing (which fails
// records whatever their state).
func (p *Producer) notWritten(x *produced, err error) bool {
	if p.obs == nil {
		return false
	}
	if !p.obs.connected.Load() {
		return true
	}
	return p.safeAbort && !errors.Is(err, kgo.ErrClientClosed) && p.obs.writes.Load() == x.writes
}

// observer is the hook of the clients this package builds: it sees broker
// connections and produce writes, so that the producer can tell records
// that cannot have been written, and errors can name the last broker
// error.
type observer struct {
	conn      backend.ConnTracker // for ConnStatus
	connected atomic.Bool         // some broker connection succeeded
	writes    atomic.Int64        // produce requests written to a broker
	mu        sync.Mutex
	last      error
	// auth is the last refused authentication (SASL, TLS verification),
	// nil once a connection succeeded again; refused is called on one.
	auth    error
	refused atomic.Pointer[refusedFunc]
}

type refusedFunc struct{ f func() }

// isAuthRefusal reports connection errors that retrying with the same
// credentials cannot fix: the broker refused the SASL authentication, or
// the TLS certificate did not verify.
func isAuthRefusal(err error) bool {
	var cv *tls.CertificateVerificationError
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState) || errors.As(err, &cv)
}

var (
	_ kgo.HookBrokerConnect = (*observer)(nil)
	_ kgo.HookBrokerWrite   = (*observer)(nil)
)

// OnBrokerConnect records the connection, or its error.
func (o *observer) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		o.conn.Succeeded()
		o.connected.Store(true)
		o.mu.Lock()
		o.auth = nil
		o.mu.Unlock()
		return
	}
	err = fmt.Errorf("broker %s: %w", net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
	refused := isAuthRefusal(err)
	o.conn.Failed(err)
	o.mu.Lock()
	o.last = err
	if refused {
		o.auth = err
	}
	o.mu.Unlock()
	if f := o.refused.Load(); refused && f != nil {
		f.f()
	}
}

// authErr returns the last refused authentication, while no connection
// succeeded since.
func (o *observer) authErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.auth
}

// OnBrokerWrite counts produce requests that reached a broker's socket.
func (o *observer) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, bytesWritten int, _, _ time.Duration, _ error) {
	if key == 0 && bytesWritten > 0 { // 0: Produce
		o.writes.Add(1)
	}
}

func (o *observer) lastErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// CreateTopics creates topics with the given number of partitions and the
// brokers' default replication factor. Topics that already exist are left
// as they are and are no error.
func (p *Producer) CreateTopics(ctx context.Context, partitions int32, topics ...string) error {
	if ctx == nil {
		return errors.New("kafka: create topics: nil context")
	}
	if p.cl == nil {
		return fmt.Errorf("kafka: create topics: %w", errNilClient)
	}
	return createTopics(ctx, kadm.NewClient(p.cl), partitions, topics...)
}

func createTopics(ctx context.Context, adm *kadm.Client, partitions int32, topics ...string) error {
	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", backend.ContextError(err))
	}
	var errs []error
	for _, t := range resp.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("kafka: create topic %q: %w", t.Topic, t.Err))
		}
	}
	return errors.Join(errs...)
}

// Emit options. Each returns a dispytch.EmitOption for Emit, EmitAsync and
// EmitBatch; passing one to an emitter of another backend fails with
// dispytch.ErrForeignOption. The partition key is dispytch.Key, or the
// event's EventKey method.

type partitionOption int32

func (partitionOption) Backend() string { return BackendName }

// Partition sends the record to partition p instead of the partition its
// key hashes to. A partition the topic does not have fails the emit.
func Partition(p int32) dispytch.EmitOption {
	return dispytch.WithBackendOption(partitionOption(p))
}

// verbatimOption makes the record's headers exactly its RecordHeader
// options: nothing is derived (used to copy records).
type verbatimOption struct{}

func (verbatimOption) Backend() string { return BackendName }

type timestampOption time.Time

func (timestampOption) Backend() string { return BackendName }

// Timestamp sets the record timestamp (default: when the record is
// produced). It is independent of the envelope's timestamp.
func Timestamp(t time.Time) dispytch.EmitOption {
	return dispytch.WithBackendOption(timestampOption(t))
}

type headerOption struct {
	key   string
	value []byte
}

func (headerOption) Backend() string { return BackendName }

// RecordHeader adds a raw record header. Unlike dispytch.Header, the value
// may be binary and the key may repeat.
func RecordHeader(key string, value []byte) dispytch.EmitOption {
	return dispytch.WithBackendOption(headerOption{key: key, value: value})
}

// Partitioner returns the franz-go partitioner this package's producers use:
// records emitted with the Partition option go to that partition, others
// are partitioned by franz-go's default (murmur2 of the key, as Kafka's Java
// client does; sticky batches for records without a key). Give it to
// kgo.RecordPartitioner when building a client for NewProducerFromClient
// that should honour Partition.
func Partitioner() kgo.Partitioner {
	return &partitioner{inner: kgo.UniformBytesPartitioner(64<<10, true, true, nil)}
}

type partitioner struct{ inner kgo.Partitioner }

// ForTopic returns the topic's partitioner.
func (p *partitioner) ForTopic(t string) kgo.TopicPartitioner {
	inner := p.inner.ForTopic(t)
	if b, ok := inner.(kgo.TopicBackupPartitioner); ok {
		return &backupTopicPartitioner{topicPartitioner{inner}, b}
	}
	return &topicPartitioner{inner}
}

type topicPartitioner struct{ inner kgo.TopicPartitioner }

func isManual(r *kgo.Record) bool {
	return r.Context != nil && r.Context.Value(manualPartitionKey{}) != nil
}

// RequiresConsistency is true for records with an explicit partition.
func (t *topicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	return isManual(r) || t.inner.RequiresConsistency(r)
}

// Partition returns the explicit partition, or the default choice.
func (t *topicPartitioner) Partition(r *kgo.Record, n int) int {
	if isManual(r) {
		return int(r.Partition)
	}
	return t.inner.Partition(r, n)
}

// OnNewBatch forwards to the default partitioner.
func (t *topicPartitioner) OnNewBatch() {
	if nb, ok := t.inner.(kgo.TopicPartitionerOnNewBatch); ok {
		nb.OnNewBatch()
	}
}

type backupTopicPartitioner struct {
	topicPartitioner
	backup kgo.TopicBackupPartitioner
}

// PartitionByBackup returns the explicit partition, or the default choice.
func (t *backupTopicPartitioner) PartitionByBackup(r *kgo.Record, n int, it kgo.TopicBackupIter) int {
	if isManual(r) {
		return int(r.Partition)
	}
	return t.backup.PartitionByBackup(r, n, it)
}

// slots is a counting semaphore that costs two atomic operations per record
// while there is room, and takes a lock only when a producer has to wait.
type slots struct {
	used    atomic.Int64
	max     int64
	waiting atomic.Bool // a producer waits on space
	mu      sync.Mutex
	space   chan struct{} // closed when a slot frees up
}

// acquire takes a slot, waiting until one is free or ctx is done.
func (s *slots) acquire(ctx context.Context) error {
	for {
		n := s.used.Load()
		if n < s.max {
			if s.used.CompareAndSwap(n, n+1) {
				return nil
			}
			continue
		}
		s.mu.Lock()
		// Announce the wait before looking again: a release either sees
		// it, or freed its slot before the look below.
		s.waiting.Store(true)
		if s.used.Load() < s.max {
			s.mu.Unlock()
			continue
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release frees a slot and wakes the producers waiting for one.
func (s *slots) release() {
	s.used.Add(-1)
	if s.waiting.Load() {
		s.mu.Lock()
		s.waiting.Store(false)
		if s.space != nil {
			close(s.space)
			s.space = nil
		}
		s.mu.Unlock()
	}
}
