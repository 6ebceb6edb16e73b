package rabbitmq_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// Benchmarks against raw amqp091-go on the same broker, in the same run:
//
//	go test -run '^$' -bench . -benchtime 20000x ./rabbitmq/
//
// BenchmarkConsume and BenchmarkPublish measure each path alone (one
// iteration is one message; compare msgs/s). BenchmarkVsRaw alternates the
// raw baseline and dispytch, benchRounds rounds of b.N messages each, so
// that both see the same broker state and machine load, and reports the
// median msgs/s of each and their ratio: the numbers to quote.

// benchEvent is a ~150-byte event body.
type benchEvent struct {
	UserID  string `json:"user_id"`
	Email   string `json:"email"`
	Name    string `json:"name"`
	Country string `json:"country"`
	Plan    string `json:"plan"`
	Seq     int    `json:"seq"`
}

func (benchEvent) Topic() string     { return "bench" }
func (benchEvent) EventType() string { return "bench_event" }

func newBenchEvent(i int) benchEvent {
	return benchEvent{UserID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Email: "someone@example.com",
		Name: "Jane Roe", Country: "NL", Plan: "enterprise-annual", Seq: i}
}

const benchPrefetch = rabbitmq.DefaultPrefetch

// prefill publishes n copies of body to exchange/key with windowed confirms.
func prefill(b *testing.B, ch *amqp.Channel, exchange, key string, n int, body []byte) {
	b.Helper()
	if err := rawPublish(ch, exchange, key, n, body); err != nil {
		b.Fatal(err)
	}
}

// rawPublish is the raw baseline of publishing: one channel in confirm
// mode, at most DefaultConfirmWindow messages awaiting a confirm.
func rawPublish(ch *amqp.Channel, exchange, key string, n int, body []byte) error {
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, rabbitmq.DefaultConfirmWindow+1))
	if err := ch.Confirm(false); err != nil {
		return err
	}
	out := 0
	for i := 0; i < n; i++ {
		if out == rabbitmq.DefaultConfirmWindow {
			if c := <-confirms; !c.Ack {
				return amqp.ErrClosed
			}
			out--
		}
		err := ch.Publish(exchange, key, true, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		})
		if err != nil {
			return err
		}
		out++
	}
	for ; out > 0; out-- {
		if c := <-confirms; !c.Ack {
			return amqp.ErrClosed
		}
	}
	return nil
}

func benchBody(b *testing.B) []byte {
	m, err := dispytch.NewEmitter(nil).Message(newBenchEvent(1))
	if err != nil {
		b.Fatal(err)
	}
	return m.Value
}

// benchRounds is how many rounds of each side BenchmarkVsRaw runs.
const benchRounds = 5

// consumeSetup prepares a queue with n messages for one side of the consume
// benchmark and returns the function that consumes them all.
type consumeSetup func(b *testing.B, e *env, n int) (consume func())

// rawConsumer: a plain amqp091 consumer at the same prefetch, decoding each
// envelope (the work the listener does too) and acking it.
func rawConsumer(b *testing.B, e *env, n int) func() {
	ch := e.raw()
	q := e.group("raw")
	if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(q, "bench-raw", e.x, false, nil); err != nil {
		b.Fatal(err)
	}
	prefill(b, e.raw(), e.x, "bench-raw", n, benchBody(b))
	return func() {
		cch := e.raw()
		if err := cch.Qos(benchPrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		ds, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		type envelope struct {
			ID        string     `json:"id"`
			Type      string     `json:"type"`
			Body      benchEvent `json:"body"`
			Timestamp int64      `json:"timestamp"`
		}
		for i := 0; i < n; i++ {
			d := <-ds
			var env envelope
			if err := json.Unmarshal(d.Body, &env); err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		_ = cch.Close()
	}
}

// dispytchConsumer: a listener (default Concurrency 64) with one typed
// handler, on a client with the same prefetch.
func dispytchConsumer(b *testing.B, e *env, n int) func() {
	c := e.client(rabbitmq.Prefetch(benchPrefetch))
	group := e.group("dispytch")
	var handled atomic.Int64
	done := make(chan struct{})
	newListener := func() *dispytch.Listener {
		l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
		l.Handle("bench", "bench_event", func(ev dispytch.Event[benchEvent]) {
			if handled.Add(1) == int64(n) {
				close(done)
			}
		})
		return l
	}
	// Declare the topology, then fill the queue while nobody consumes.
	stop := run(b, newListener())
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	prefill(b, e.raw(), e.x, "bench", n, benchBody(b))
	return func() {
		stop := run(b, newListener())
		<-done
		if err := stop(); err != nil {
			b.Fatal(err)
		}
	}
}

// publishSetup returns a function publishing n messages, confirmed.
type publishSetup func(b *testing.B, e *env, n int) (publish func())

func sinkQueue(b *testing.B, e *env) {
	ch := e.raw()
	q := e.group("sink")
	if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(q, "bench", e.x, false, nil); err != nil {
		b.Fatal(err)
	}
}

// rawPublisher: one channel, windowed confirms (DefaultConfirmWindow),
// mandatory, persistent: what the client does, by hand.
func rawPublisher(b *testing.B, e *env, n int) func() {
	sinkQueue(b, e)
	body := benchBody(b)
	return func() {
		if err := rawPublish(e.raw(), e.x, "bench", n, body); err != nil {
			b.Fatal(err)
		}
	}
}

// asyncPublisher: EmitAsync for every event (encoding included), then wait
// for all confirms.
func asyncPublisher(b *testing.B, e *env, n int) func() {
	sinkQueue(b, e)
	em := dispytch.NewEmitter(e.client())
	return func() {
		var wg sync.WaitGroup
		var failed atomic.Int64
		wg.Add(n)
		for i := 0; i < n; i++ {
			em.EmitAsync(context.Background(), newBenchEvent(i), func(err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.Fatalf("%d emits failed", failed.Load())
		}
	}
}

// batchPublisher: EmitBatch of 1000 events at a time.
func batchPublisher(b *testing.B, e *env, n int) func() {
	sinkQueue(b, e)
	em := dispytch.NewEmitter(e.client())
	return func() {
		const size = 1000
		evs := make([]dispytch.Eventer, 0, size)
		for i := 0; i < n; i += size {
			evs = evs[:0]
			for j := i; j < min(i+size, n); j++ {
				evs = append(evs, newBenchEvent(j))
			}
			if err := em.EmitBatch(context.Background(), evs); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// concurrentPublisher: 64 goroutines calling Emit, each waiting for its
// confirm.
func concurrentPublisher(b *testing.B, e *env, n int) func() {
	sinkQueue(b, e)
	em := dispytch.NewEmitter(e.client())
	return func() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					if err := em.Emit(context.Background(), newBenchEvent(int(i))); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}

// measure prepares one side in a fresh env (a sub-test scope for cleanup)
// and times it.
func measure(b *testing.B, side func(*testing.B, *env, int) func(), n int) (msgsPerSec float64) {
	b.StopTimer()
	e := setup(b)
	defer e.cleanup() // now, not at the end of the benchmark
	defer e.closeClients()
	f := side(b, e, n)
	b.StartTimer()
	start := time.Now()
	f()
	el := time.Since(start)
	b.StopTimer()
	return float64(n) / el.Seconds()
}

func BenchmarkConsume(b *testing.B) {
	for _, side := range []struct {
		name string
		f    consumeSetup
	}{{"raw", rawConsumer}, {"dispytch", dispytchConsumer}} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ReportMetric(measure(b, side.f, b.N), "msgs/s")
		})
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, side := range []struct {
		name string
		f    publishSetup
	}{{"raw", rawPublisher}, {"dispytch-async", asyncPublisher}, {"dispytch-batch", batchPublisher},
		{"dispytch-emit-64-goroutines", concurrentPublisher}} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ReportMetric(measure(b, side.f, b.N), "msgs/s")
		})
	}
}

// BenchmarkVsRaw alternates the raw baseline and dispytch, benchRounds
// rounds each, and reports medians and the ratio dispytch/raw.
func BenchmarkVsRaw(b *testing.B) {
	for _, cmp := range []struct {
		name      string
		raw, ours func(*testing.B, *env, int) func()
	}{
		{"consume-manual-ack", rawConsumer, dispytchConsumer},
		{"publish-confirms-async", rawPublisher, asyncPublisher},
		{"publish-confirms-batch", rawPublisher, batchPublisher},
	} {
		b.Run(cmp.name, func(b *testing.B) {
			var raw, ours []float64
			for range benchRounds {
				raw = append(raw, measure(b, cmp.raw, b.N))
				ours = append(ours, measure(b, cmp.ours, b.N))
			}
			mr, mo := median(raw), median(ours)
			b.ReportMetric(mr, "raw-msgs/s")
			b.ReportMetric(mo, "dispytch-msgs/s")
			b.ReportMetric(mo/mr, "ratio")
			b.Logf("raw %v\ndispytch %v", raw, ours)
		})
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
