package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
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
	// listener dispytch.Group(name). The listener's group is the only
	// group setting: it names the Kafka consumer group and the group's
	// dead-letter topic ("<group>.dlq").
	ErrNoGroup = errors.New("kafka: a consumer group is required: give the listener dispytch.Group(name)")
	// ErrPartitioner reports an explicit Partition emit option on a
	// producer whose client was not built with Partitioner().
	ErrPartitioner = errors.New("kafka: explicit partitions need the client built with kafka.Partitioner()")
)

// Producer sends dispytch messages as Kafka records through a franz-go
// client, which batches them: Produce hands every message of a call to the
// client at once and then waits for their acks, and ProduceAsync does not
// wait at all. It implements dispytch.Producer, dispytch.AsyncProducer and
// dispytch.BackendNamer. It is safe for concurrent use.
//
// The record value is the envelope exactly as the emitter encoded it. The
// record headers are the message headers plus dispytch-event-id and
// dispytch-event-type (HeaderEventID, HeaderEventType).
type Producer struct {
	cl      *kgo.Client
	own     bool
	manual  bool // the client's partitioner honours Partition options
	codec   codec.Codec
	closed  atomic.Bool
	closeMu sync.Once
	// slots bounds the records handed to the client and not yet
	// acknowledged at the client's MaxBufferedRecords, so that waiting for
	// room honours the caller's context (franz-go's own wait would cancel
	// the whole batch the record joins).
	slots slots
	// promise is onProduced, bound once.
	promise func(*kgo.Record, error)
	// records holds *produced for reuse.
	records sync.Pool
}

// NewProducer builds a producer with its own franz-go client. Idempotent
// producing with AcksAll is the default. Topics are not created on demand
// unless AllowAutoTopicCreation is given: producing to a missing topic fails
// with ErrUnknownTopic.
func NewProducer(opts ...ProducerOption) (*Producer, error) {
	cfg := producerConfig{codec: codec.JSON}
	for _, o := range opts {
		o.applyProducer(&cfg)
	}
	kopts := producerKgoOpts(&cfg)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new producer: %w", err)
	}
	return newProducer(cl, true, true, cfg.codec), nil
}

func newProducer(cl *kgo.Client, own, manual bool, cd codec.Codec) *Producer {
	p := &Producer{cl: cl, own: own, manual: manual, codec: cd}
	p.slots.max = maxBufferedRecords(cl)
	p.promise = p.onProduced
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
	return append(opts, cfg.conn.extra...)
}

// NewProducerFromClient wraps a franz-go client the caller built and keeps
// owning: Close does not close it. Only EnvelopeCodec among the options
// applies; the client's own settings (brokers, acks, batching, ...) are
// used as they are. Partition emit options need the client to have been
// built with kgo.RecordPartitioner(kafka.Partitioner()); otherwise they fail
// with ErrPartitioner.
func NewProducerFromClient(cl *kgo.Client, opts ...ProducerOption) *Producer {
	cfg := producerConfig{codec: codec.JSON}
	for _, o := range opts {
		o.applyProducer(&cfg)
	}
	_, manual := cl.OptValue(kgo.RecordPartitioner).(*partitioner)
	return newProducer(cl, false, manual, cfg.codec)
}

// Client returns the underlying franz-go client.
func (p *Producer) Client() *kgo.Client { return p.cl }

// Backend returns "kafka".
func (p *Producer) Backend() string { return BackendName }

// Close flushes buffered records, waiting up to ctx, and then closes the
// client when the producer built it; records still buffered then fail.
// Producing afterwards fails with an error wrapping dispytch.ErrClosed.
func (p *Producer) Close(ctx context.Context) error {
	var err error
	p.closeMu.Do(func() {
		p.closed.Store(true)
		err = p.cl.Flush(ctx)
		if p.own {
			p.cl.Close()
		}
	})
	if err != nil {
		return fmt.Errorf("kafka: close producer: %w", dispytch.CtxError(err))
	}
	return nil
}

// Flush waits until every record produced so far is acked or failed.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("kafka: flush: %w", dispytch.CtxError(err))
	}
	return nil
}

// Produce sends msgs and returns once the brokers acknowledged all of them
// or some failed: then the error is the message's own for a single message,
// else a *dispytch.BatchError. All messages are handed to the client before
// waiting, so one call costs about one round trip however many it sends.
func (p *Producer) Produce(ctx context.Context, msgs ...*dispytch.Message) error {
	if p.closed.Load() {
		return fmt.Errorf("kafka: produce: %w", dispytch.ErrClosed)
	}
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		done := make(chan error, 1)
		p.ProduceAsync(ctx, msgs[0], func(err error) { done <- err })
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("kafka: produce to %q: %w", msgs[0].Topic, dispytch.CtxError(ctx.Err()))
		}
	}
	w := &batchWait{errs: make([]error, len(msgs)), done: make(chan struct{})}
	w.left.Store(int64(len(msgs)))
	for i, m := range msgs {
		p.ProduceAsync(ctx, m, func(err error) {
			w.errs[i] = err
			if err != nil {
				w.failed.Store(true)
			}
			if w.left.Add(-1) == 0 {
				close(w.done)
			}
		})
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("kafka: produce %d messages: %w", len(msgs), dispytch.CtxError(ctx.Err()))
	}
	if w.failed.Load() {
		return &dispytch.BatchError{Errs: w.errs}
	}
	return nil
}

type batchWait struct {
	errs   []error
	left   atomic.Int64
	failed atomic.Bool
	done   chan struct{}
}

// ProduceAsync hands m to the client's batching and returns; done is called
// once, from a franz-go goroutine, when the broker acknowledged the record
// or it failed. It blocks only while the client buffers its maximum of
// records (franz-go's MaxBufferedRecords), until ctx is done.
//
// Once handed over, a record is not withdrawn when ctx ends: Produce stops
// waiting for it with an error wrapping dispytch.ErrTimeout, but it may
// still be written, as with any Kafka producer. (franz-go would otherwise
// fail every record batched together with it.)
func (p *Producer) ProduceAsync(ctx context.Context, m *dispytch.Message, done func(error)) {
	if p.closed.Load() {
		done(fmt.Errorf("kafka: produce: %w", dispytch.ErrClosed))
		return
	}
	x, err := p.record(ctx, m)
	if err != nil {
		done(err)
		return
	}
	x.done = done
	if err := p.slots.acquire(ctx); err != nil {
		done(fmt.Errorf("kafka: produce to %q: waiting for buffer space: %w", m.Topic, dispytch.CtxError(err)))
		return
	}
	p.cl.Produce(x, &x.r, p.promise)
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
		err = p.produceErr(x.parent, r.Topic, err)
	}
	x.done(err)
	// franz-go is done with the record once its promise returned (it
	// reads the record's size before calling it): reuse it.
	*x = produced{}
	p.records.Put(x)
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
	done   func(error)
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
func (p *Producer) record(ctx context.Context, m *dispytch.Message) (*produced, error) {
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
		default:
			return nil, fmt.Errorf("%w: %s option %T given to the kafka producer", dispytch.ErrForeignOption, o.Backend(), o)
		}
	}
	r.Headers = recordHeaders(x.hdrs[:0], m, p.codec, extra)
	return x, nil
}

func (p *Producer) produceErr(ctx context.Context, topic string, err error) error {
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("%w: %q (topic auto-creation is off: create the topic first, or use kafka.AllowAutoTopicCreation): %w",
			ErrUnknownTopic, topic, err)
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("kafka: produce to %q: %w: %w", topic, dispytch.ErrClosed, err)
	case errors.Is(err, context.DeadlineExceeded), ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("kafka: produce to %q: %w: %w", topic, dispytch.CtxError(ctx.Err()), err)
		}
		return fmt.Errorf("kafka: produce to %q: %w", topic, dispytch.CtxError(err))
	}
	return fmt.Errorf("kafka: produce to %q: %w", topic, err)
}

// CreateTopics creates topics with the given number of partitions and the
// brokers' default replication factor. Topics that already exist are left
// as they are and are no error.
func (p *Producer) CreateTopics(ctx context.Context, partitions int32, topics ...string) error {
	return createTopics(ctx, kadm.NewClient(p.cl), partitions, topics...)
}

func createTopics(ctx context.Context, adm *kadm.Client, partitions int32, topics ...string) error {
	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("kafka: create topics: %w", dispytch.CtxError(err))
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
