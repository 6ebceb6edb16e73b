package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// The benchmarks compare this package with plain franz-go code doing the
// same work, in the same run, on the same in-process kfake cluster (3
// brokers, 6 partitions, ~150-byte event bodies). Each benchmark runs
// DISPYTCH_BENCH_ROUNDS rounds (default 5), alternating the contenders in
// every round so that machine noise hits them alike, and reports the median
// events/s of each and the median of the per-round ratios (dispytch/raw:
// the contenders of a round ran back to back). b.N is the number of
// events per run:
//
//	go test -run '^$' -bench . -benchtime 20000x ./kafka
//
// Consume: consume, decode, handle and commit b.N events. "raw" is a
// franz-go group consumer's poll loop that decodes each envelope with
// encoding/json and commits after every poll; "dispytch" is a listener
// with one handler taking Event[benchEv] on this package's Consumer,
// measured until the committed offsets reach the end; "dispytch-paused" is
// the same with partition queues of 500 records, so that fetching pauses
// and resumes all along.
//
// Produce: encode and send b.N events and wait for every ack. "raw"
// encodes the same envelope with encoding/json and hands the record (the
// same key, value and headers) to franz-go's Produce with a promise;
// "emit-async" is Emitter.EmitAsync per event and "emit-batch"
// Emitter.EmitBatch of 500 events.

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

// bench is one benchmark's cluster and emitter.
type bench struct {
	b   *testing.B
	c   *kfake.Cluster
	em  *dispytch.Emitter
	seq int
}

func newBench(b *testing.B) *bench {
	c := newCluster(b)
	p, err := kafka.NewProducer(kafka.Brokers(c.ListenAddrs()...), kafka.WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close(context.Background()) })
	return &bench{b: b, c: c, em: dispytch.NewEmitter(p)}
}

func (x *bench) topic(prefix string) string {
	x.seq++
	topic := fmt.Sprintf("%s-%d", prefix, x.seq)
	createTopics(x.b, x.c, benchParts, topic)
	return topic
}

// fill writes n events to a new topic.
func (x *bench) fill(n int) string {
	topic := x.topic("consume")
	evs := benchEvents(topic, n)
	batch := make([]dispytch.Eventer, 0, 1000)
	for i := range evs {
		batch = append(batch, evs[i])
		if len(batch) == cap(batch) || i == len(evs)-1 {
			if err := x.em.EmitBatch(context.Background(), batch); err != nil {
				x.b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return topic
}

// compare runs each contender rounds times, alternating, and reports the
// median events/s of each and the ratio of every other one to the first.
func (x *bench) compare(names []string, run func(name string, n int) time.Duration) {
	b := x.b
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("DISPYTCH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	b.StopTimer()
	rates := map[string][]float64{}
	for range rounds {
		for _, name := range names {
			d := run(name, b.N)
			rates[name] = append(rates[name], float64(b.N)/d.Seconds())
		}
	}
	med := map[string]float64{}
	raw := map[string][]float64{}
	for _, name := range names {
		raw[name] = slices.Clone(rates[name])
		r := rates[name]
		slices.Sort(r)
		med[name] = r[len(r)/2]
		b.ReportMetric(med[name], name+"-events/s")
	}
	// The ratio is the median of the per-round ratios: in each round the
	// contenders ran back to back, under the same load.
	for _, name := range names[1:] {
		var rs []float64
		for i := range rates[name] {
			rs = append(rs, raw[name][i]/raw[names[0]][i])
		}
		slices.Sort(rs)
		b.ReportMetric(rs[len(rs)/2], name+"/"+names[0])
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%d rounds of %d events, events/s per round: %v", rounds, b.N, raw)
}

func BenchmarkConsume(b *testing.B) {
	x := newBench(b)
	x.compare([]string{"raw", "dispytch", "dispytch-paused"}, func(name string, n int) time.Duration {
		topic := x.fill(n)
		switch name {
		case "raw":
			return x.consumeRaw(topic, n)
		case "dispytch-paused":
			// Partition queues far smaller than the backlog: fetching
			// pauses and resumes every few hundred records.
			return x.consumeDispytch(topic, n, kafka.PartitionQueue(500, 0))
		}
		return x.consumeDispytch(topic, n)
	})
}

func (x *bench) consumeRaw(topic string, n int) time.Duration {
	b := x.b
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(x.c.ListenAddrs()...), kgo.ConsumerGroup(topic + "-raw"),
		kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()}, groupOpts()...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	var env struct {
		ID        string  `json:"id"`
		Type      string  `json:"type"`
		Body      benchEv `json:"body"`
		Timestamp int64   `json:"timestamp"`
	}
	start := time.Now()
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			if err := json.Unmarshal(r.Value, &env); err != nil {
				b.Fatal(err)
			}
			got++
		})
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			b.Fatal(err)
		}
		cl.AllowRebalance()
	}
	return time.Since(start)
}

func (x *bench) consumeDispytch(topic string, n int, opts ...kafka.ConsumerOption) time.Duration {
	b := x.b
	group := topic + "-dispytch"
	k, err := kafka.NewConsumer(append([]kafka.ConsumerOption{kafka.Brokers(x.c.ListenAddrs()...), kafka.WithLogger(quietLogger()),
		kafka.ClientOptions(groupOpts()...), kafka.CommitInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close(context.Background())
	var handled atomic.Int64
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLogger()),
		dispytch.PoisonPolicy(dispytch.PolicyDrop), dispytch.HandlerDefaults(dispytch.OnFailure(dispytch.PolicyDrop)))
	l.Handle(topic, "ev", func(ev dispytch.Event[benchEv]) { handled.Add(1) })
	adm := adminClient(b, x.c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for {
		if handled.Load() >= int64(n) {
			var sum int64
			for _, o := range committed(b, adm, group, topic) {
				sum += o
			}
			if sum >= int64(n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkProduce(b *testing.B) {
	x := newBench(b)
	x.compare([]string{"raw", "emit-async", "emit-batch"}, func(name string, n int) time.Duration {
		topic := x.topic("produce")
		evs := benchEvents(topic, n)
		switch name {
		case "raw":
			return x.produceRaw(topic, evs)
		case "emit-async":
			return x.emitAsync(evs)
		}
		return x.emitBatch(evs)
	})
}

func (x *bench) produceRaw(topic string, evs []benchEv) time.Duration {
	b := x.b
	cl, err := kgo.NewClient(kgo.SeedBrokers(x.c.ListenAddrs()...), kgo.ProducerLinger(0),
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
	evType, contentType := []byte("ev"), []byte("application/json")
	ctx := context.Background()
	// Connect before the clock starts, as the emitter's client is.
	if err := cl.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	wg.Add(len(evs))
	// What a hand-written franz-go producer does: encode the same envelope
	// and the same three headers the emitter's records carry, and produce
	// with a promise.
	for _, ev := range evs {
		id := backend.NewUUID()
		value, err := json.Marshal(envelope{ID: id, Type: "ev", Body: ev, Timestamp: time.Now().UnixMilli()})
		if err != nil {
			b.Fatal(err)
		}
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(ev.Key), Value: value, Headers: []kgo.RecordHeader{
			{Key: backend.HeaderContentType, Value: contentType},
			{Key: kafka.HeaderEventID, Value: []byte(id)}, {Key: kafka.HeaderEventType, Value: evType}}}, promise)
	}
	wg.Wait()
	d := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d records failed", failed.Load())
	}
	return d
}

func (x *bench) emitAsync(evs []benchEv) time.Duration {
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	ctx := context.Background()
	start := time.Now()
	wg.Add(len(evs))
	for _, ev := range evs {
		x.em.EmitAsync(ctx, ev, done)
	}
	wg.Wait()
	d := time.Since(start)
	if failed.Load() > 0 {
		x.b.Fatalf("%d emits failed", failed.Load())
	}
	return d
}

func (x *bench) emitBatch(evs []benchEv) time.Duration {
	ctx := context.Background()
	batch := make([]dispytch.Eventer, 0, 500)
	start := time.Now()
	for i := range evs {
		batch = append(batch, evs[i])
		if len(batch) == cap(batch) || i == len(evs)-1 {
			if err := x.em.EmitBatch(ctx, batch); err != nil {
				x.b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return time.Since(start)
}
