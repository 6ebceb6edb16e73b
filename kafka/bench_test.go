package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// The benchmarks compare this package with plain franz-go code doing the
// same work, in the same run and on the same in-process kfake cluster (3
// brokers, 6 partitions, ~150-byte event bodies):
//
//	go test -run '^$' -bench . -benchtime 20000x -count 5 ./kafka
//
// Consume: consume, decode, handle and commit b.N events. "raw" is a
// franz-go group consumer's poll loop that decodes each envelope with
// encoding/json and commits after every poll; "dispytch" is a listener
// with one handler taking Event[Ev] on this package's Consumer, measured
// until the committed offsets reach the end.
//
// Produce: encode and send b.N events and wait for every ack. "raw"
// encodes the same envelope with encoding/json and hands the record (the
// same key, value and headers) to franz-go's Produce with a promise;
// "emit-async" is Emitter.EmitAsync and "emit-batch" Emitter.EmitBatch of
// 500 events.

const benchParts = 6

var benchBody = strings.Repeat("x", 100)

// benchEv is the benchmarks' event: a fixed topic (no placeholders) and a
// ~150-byte body.
type benchEv struct {
	topic string
	Key   string `json:"key"`
	Seq   int    `json:"seq"`
	Pad   string `json:"pad"`
}

func (e benchEv) Topic() string    { return e.topic }
func (benchEv) EventType() string  { return "ev" }
func (e benchEv) EventKey() string { return e.Key }

func benchEvents(topic string, n int) []benchEv {
	evs := make([]benchEv, n)
	for i := range evs {
		evs[i] = benchEv{topic: topic, Key: fmt.Sprintf("k%02d", i%64), Seq: i, Pad: benchBody}
	}
	return evs
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var benchSeq atomic.Int64

func benchTopic(b *testing.B, c *kfake.Cluster, prefix string) string {
	topic := fmt.Sprintf("%s-%d", prefix, benchSeq.Add(1))
	createTopics(b, c, benchParts, topic)
	return topic
}

func BenchmarkConsume(b *testing.B) {
	c := newCluster(b)
	p, err := kafka.NewProducer(kafka.Brokers(c.ListenAddrs()...), kafka.WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	em := dispytch.NewEmitter(p)
	fill := func(b *testing.B) string {
		b.Helper()
		topic := benchTopic(b, c, "consume")
		evs := benchEvents(topic, b.N)
		batch := make([]dispytch.Eventer, 0, 1000)
		for i := range evs {
			batch = append(batch, evs[i])
			if len(batch) == cap(batch) || i == len(evs)-1 {
				if err := em.EmitBatch(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		return topic
	}

	b.Run("raw", func(b *testing.B) {
		topic := fill(b)
		group := topic + "-raw"
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()}, groupOpts()...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		b.ResetTimer()
		var env struct {
			ID        string  `json:"id"`
			Type      string  `json:"type"`
			Body      benchEv `json:"body"`
			Timestamp int64   `json:"timestamp"`
		}
		n := 0
		for n < b.N {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				if err := json.Unmarshal(r.Value, &env); err != nil {
					b.Fatal(err)
				}
				n++
			})
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				b.Fatal(err)
			}
			cl.AllowRebalance()
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("dispytch", func(b *testing.B) {
		topic := fill(b)
		group := topic + "-dispytch"
		k, err := kafka.NewConsumer(kafka.Brokers(c.ListenAddrs()...), kafka.WithLogger(quietLogger()),
			kafka.ClientOptions(groupOpts()...), kafka.CommitInterval(20*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		defer k.Close(context.Background())
		var handled atomic.Int64
		l := dispytch.NewListener(k, dispytch.Group(group), dispytch.WithLogger(quietLogger()),
			dispytch.PoisonPolicy(dispytch.Drop), dispytch.OnFailure(dispytch.Drop))
		l.Handle(topic, "ev", func(ev dispytch.Event[benchEv]) { handled.Add(1) })
		adm := adminClient(b, c)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ResetTimer()
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		for {
			if handled.Load() >= int64(b.N) {
				var sum int64
				for _, o := range committed(b, adm, group, topic) {
					sum += o
				}
				if sum >= int64(b.N) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkProduce(b *testing.B) {
	c := newCluster(b)
	p, err := kafka.NewProducer(kafka.Brokers(c.ListenAddrs()...), kafka.WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	em := dispytch.NewEmitter(p)
	ctx := context.Background()

	b.Run("raw", func(b *testing.B) {
		topic := benchTopic(b, c, "produce")
		evs := benchEvents(topic, b.N)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0),
			kgo.RecordPartitioner(kafka.Partitioner()))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		type envelope struct {
			ID        string  `json:"id"`
			Type      string  `json:"type"`
			Body      benchEv `json:"body"`
			Timestamp int64   `json:"timestamp"`
		}
		var wg sync.WaitGroup
		var failed atomic.Int64
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		}
		evType := []byte("ev")
		b.ResetTimer()
		wg.Add(b.N)
		// What a hand-written franz-go producer does: encode the same
		// envelope and headers, and produce with a promise.
		for _, ev := range evs {
			id := dispytch.NewUUID()
			value, err := json.Marshal(envelope{ID: id, Type: "ev", Body: ev, Timestamp: time.Now().UnixMilli()})
			if err != nil {
				b.Fatal(err)
			}
			cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(ev.Key), Value: value, Headers: []kgo.RecordHeader{
				{Key: kafka.HeaderEventID, Value: []byte(id)}, {Key: kafka.HeaderEventType, Value: evType}}}, promise)
		}
		wg.Wait()
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d records failed", failed.Load())
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("emit-async", func(b *testing.B) {
		topic := benchTopic(b, c, "produce")
		evs := benchEvents(topic, b.N)
		var wg sync.WaitGroup
		var failed atomic.Int64
		done := func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		}
		b.ResetTimer()
		wg.Add(b.N)
		for _, ev := range evs {
			em.EmitAsync(ctx, ev, done)
		}
		wg.Wait()
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d emits failed", failed.Load())
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("emit-batch", func(b *testing.B) {
		topic := benchTopic(b, c, "produce")
		evs := benchEvents(topic, b.N)
		batch := make([]dispytch.Eventer, 0, 500)
		b.ResetTimer()
		for i := range evs {
			batch = append(batch, evs[i])
			if len(batch) == cap(batch) || i == len(evs)-1 {
				if err := em.EmitBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
