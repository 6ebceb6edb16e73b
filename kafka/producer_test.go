package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// readAll consumes n records of topics with a plain franz-go client.
func readAll(t testing.TB, c *kfake.Cluster, n int, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", len(out), n, ctx.Err())
		}
		fs.EachError(func(t string, p int32, err error) {})
		out = append(out, fs.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// TestProduceRecord checks what one Emit writes: the envelope as value, the
// key, the explicit partition, the record timestamp, the emit headers, raw
// headers and the event id and type headers.
func TestProduceRecord(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 4, "rec")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	ctx := context.Background()
	ts := time.UnixMilli(1_700_000_000_123)

	if err := em.Emit(ctx, Ev{T: "rec", Key: "alpha", Seq: 1},
		dispytch.EventID("id-1"),
		dispytch.Header("trace", "t-1"),
		kafka.Partition(3),
		kafka.Timestamp(ts),
		kafka.RecordHeader("bin", []byte{0, 1, 2}),
		kafka.RecordHeader("bin", []byte{3}),
	); err != nil {
		t.Fatal(err)
	}
	// Keyed by the event's EventKey method, partitioned by the key.
	if err := em.Emit(ctx, Ev{T: "rec", Key: "beta", Seq: 2}, dispytch.EventID("id-2")); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, c, 2, "rec")
	byID := map[string]*kgo.Record{}
	for _, r := range recs {
		id, _ := header(r, kafka.HeaderEventID)
		byID[id] = r
	}
	r1, r2 := byID["id-1"], byID["id-2"]
	if r1 == nil || r2 == nil {
		t.Fatalf("records by event id header: %v", byID)
	}
	if r1.Partition != 3 || string(r1.Key) != "alpha" || !r1.Timestamp.Equal(ts) {
		t.Fatalf("record 1: partition %d key %q timestamp %v", r1.Partition, r1.Key, r1.Timestamp)
	}
	if typ, _ := header(r1, kafka.HeaderEventType); typ != "ev" {
		t.Fatalf("event type header %q", typ)
	}
	if v, _ := header(r1, "trace"); v != "t-1" {
		t.Fatalf("trace header %q", v)
	}
	var bins [][]byte
	for _, h := range r1.Headers {
		if h.Key == "bin" {
			bins = append(bins, h.Value)
		}
	}
	if len(bins) != 2 || !bytes.Equal(bins[0], []byte{0, 1, 2}) || !bytes.Equal(bins[1], []byte{3}) {
		t.Fatalf("raw headers %q", bins)
	}
	var env struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Body      json.RawMessage `json:"body"`
		Timestamp int64           `json:"timestamp"`
	}
	if err := json.Unmarshal(r1.Value, &env); err != nil {
		t.Fatalf("value is no JSON envelope: %v: %s", err, r1.Value)
	}
	if env.ID != "id-1" || env.Type != "ev" || string(env.Body) != `{"t":"rec","key":"alpha","seq":1}` {
		t.Fatalf("envelope %+v", env)
	}
	if string(r2.Key) != "beta" {
		t.Fatalf("record 2 key %q", r2.Key)
	}
	// Kafka's default partitioner (murmur2) places "beta" deterministically.
	if want := int32(kgoMurmurPartition([]byte("beta"), 4)); r2.Partition != want {
		t.Fatalf("record 2 partition %d, want %d (murmur2 of the key)", r2.Partition, want)
	}
}

// kgoMurmurPartition is Kafka's default key partitioning, computed by
// franz-go's own sticky key partitioner.
func kgoMurmurPartition(key []byte, n int) int {
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("x")
	return tp.Partition(&kgo.Record{Key: key}, n)
}

// TestProduceErrors checks that emit errors surface: a missing topic (auto
// creation is off), a partition the topic does not have, another backend's
// option, a closed producer, and a deadline.
func TestProduceErrors(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 2, "exists")
	p := newProducer(t, c, kafka.ClientOptions(kgo.UnknownTopicRetries(1)))
	em := dispytch.NewEmitter(p)
	ctx := context.Background()

	err := em.Emit(ctx, Ev{T: "missing"})
	if !errors.Is(err, kafka.ErrUnknownTopic) || !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("missing topic: %v", err)
	}
	if err := em.Emit(ctx, Ev{T: "exists"}, kafka.Partition(7)); err == nil {
		t.Fatal("partition 7 of a 2-partition topic: no error")
	}
	if err := em.Emit(ctx, Ev{T: "exists"}, kafka.Partition(-2)); err == nil {
		t.Fatal("negative partition: no error")
	}
	foreign := dispytch.WithBackendOption(otherOption{})
	if err := em.Emit(ctx, Ev{T: "exists"}, foreign); !errors.Is(err, dispytch.ErrForeignOption) {
		t.Fatalf("foreign option through the emitter: %v", err)
	}
	// The producer also rejects it when called directly.
	err = p.Produce(ctx, &backend.Message{Topic: "exists", Value: []byte("x"), Options: []backend.Option{otherOption{}}})
	if !errors.Is(err, dispytch.ErrForeignOption) {
		t.Fatalf("foreign option through Produce: %v", err)
	}
	// A batch with one bad message reports which.
	err = em.EmitBatch(ctx, []dispytch.Eventer{Ev{T: "exists"}, Ev{T: "missing"}, Ev{T: "exists"}})
	var be *backend.BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || be.Errs[2] != nil || !errors.Is(be.Errs[1], kafka.ErrUnknownTopic) {
		t.Fatalf("batch error: %v", err)
	}
	// A deadline wraps dispytch.ErrTimeout: stall produce requests.
	c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(500 * time.Millisecond) })
		return nil, nil, false
	})
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := em.Emit(dctx, Ev{T: "exists"}); !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("deadline: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, Ev{T: "exists"}); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("closed producer: %v", err)
	}
}

type otherOption struct{}

func (otherOption) Backend() string { return "rabbitmq" }

// TestProduceDynamicTopicsAndAsync emits to dynamic topics with EmitAsync
// and checks every record lands on the topic its field names.
func TestProduceDynamicTopicsAndAsync(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 3, "user.1.events", "user.2.events")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	const n = 2000
	for i := range n {
		wg.Add(1)
		topic := "user.1.events"
		if i%2 == 1 {
			topic = "user.2.events"
		}
		em.EmitAsync(context.Background(), Ev{T: topic, Seq: i}, func(err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d async emits failed, first: %v", len(errs), errs[0])
	}
	recs := readAll(t, c, n, "user.1.events", "user.2.events")
	for _, r := range recs {
		var env struct {
			Body Ev `json:"body"`
		}
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatal(err)
		}
		if env.Body.T != r.Topic {
			t.Fatalf("event for %q landed on %q", env.Body.T, r.Topic)
		}
	}
}

// TestProducerFromClient wraps a user-built client: it is used as is and
// not closed by the producer; Partition needs kafka.Partitioner.
func TestProducerFromClient(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 3, "own")
	plain, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	p := kafka.NewProducerFromClient(plain)
	em := dispytch.NewEmitter(p)
	ctx := context.Background()
	if err := em.Emit(ctx, Ev{T: "own"}); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, Ev{T: "own"}, kafka.Partition(1)); !errors.Is(err, kafka.ErrPartitioner) {
		t.Fatalf("partition without kafka.Partitioner: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The client still works: the producer did not close it.
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: "own", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("user client closed by the producer: %v", err)
	}

	withPart, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kafka.Partitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer withPart.Close()
	em2 := dispytch.NewEmitter(kafka.NewProducerFromClient(withPart))
	if err := em2.Emit(ctx, Ev{T: "own", Key: "k"}, kafka.Partition(2), dispytch.EventID("manual")); err != nil {
		t.Fatal(err)
	}
	for _, r := range readAll(t, c, 3, "own") {
		if id, _ := header(r, kafka.HeaderEventID); id == "manual" && r.Partition != 2 {
			t.Fatalf("manual partition: got %d", r.Partition)
		}
	}
}

// TestNilArguments: nil arguments give errors, not panics.
func TestNilArguments(t *testing.T) {
	var nilCtx context.Context // a caller's bug, on purpose
	ctx := context.Background()
	fromNil := kafka.NewProducerFromClient(nil)
	if err := fromNil.Produce(ctx, &backend.Message{Topic: "t"}); !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("produce on a producer from a nil client: %v", err)
	}
	if err := fromNil.Flush(ctx); err == nil {
		t.Fatal("flush on a producer from a nil client: no error")
	}
	if err := fromNil.CreateTopics(ctx, 1, "t"); err == nil {
		t.Fatal("create topics on a producer from a nil client: no error")
	}
	if err := fromNil.Close(ctx); err != nil {
		t.Fatalf("close on a producer from a nil client: %v", err)
	}
	p, err := kafka.NewProducer(nil, kafka.Brokers(closedPort(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Produce(nilCtx, &backend.Message{Topic: "t"}); !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("nil context: %v", err)
	}
	err = p.Produce(ctx, nil, nil)
	var be *backend.BatchError
	if !errors.As(err, &be) || len(be.NotSent()) != 2 {
		t.Fatalf("nil messages: %v", err)
	}
	p.ProduceAsync(ctx, nil, nil) // nil done: nothing to call, no panic
	got := make(chan error, 1)
	p.ProduceAsync(nilCtx, &backend.Message{Topic: "t"}, func(err error) { got <- err })
	if err := <-got; !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("async with a nil context: %v", err)
	}
	for name, err := range map[string]error{"flush": p.Flush(nilCtx), "create topics": p.CreateTopics(nilCtx, 1, "t"), "close": p.Close(nilCtx)} {
		if err == nil {
			t.Fatalf("%s with a nil context: no error", name)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	k, err := kafka.NewConsumer(nil, kafka.Brokers(closedPort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(ctx)
	sub := backend.Subscription{Group: "g", Topics: []string{"t"}}
	if err := k.Consume(ctx, sub, nil); !errors.Is(err, dispytch.ErrPermanent) {
		t.Fatalf("consume with a nil inbox: %v", err)
	}
}
