package rabbitmq_test

import (
	"context"
	"encoding/json"
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
//	go test -run '^$' -bench . -benchtime 20000x -count 5 ./rabbitmq/
//
// Each iteration is one message; msgs/s is the metric to compare (take the
// median over -count runs).

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

func BenchmarkConsume(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		e := setup(b)
		ch := e.raw()
		q := e.group("raw")
		if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			b.Fatal(err)
		}
		if err := ch.QueueBind(q, "bench", e.x, false, nil); err != nil {
			b.Fatal(err)
		}
		prefill(b, e.raw(), e.x, "bench", b.N, benchBody(b))
		cch := e.raw()
		if err := cch.Qos(benchPrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
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
		for i := 0; i < b.N; i++ {
			d := <-ds
			var env envelope
			if err := json.Unmarshal(d.Body, &env); err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("dispytch", func(b *testing.B) {
		e := setup(b)
		c := e.client(rabbitmq.Prefetch(benchPrefetch))
		group := e.group("dispytch")
		var handled atomic.Int64
		done := make(chan struct{})
		n := int64(b.N)
		newListener := func() *dispytch.Listener {
			l := dispytch.NewListener(c, dispytch.Group(group), dispytch.WithLogger(quietLog()))
			l.Handle("bench", "bench_event", func(ev dispytch.Event[benchEvent]) {
				if handled.Add(1) == n {
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
		prefill(b, e.raw(), e.x, "bench", b.N, benchBody(b))
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		stop = run(b, newListener())
		<-done
		el := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		_ = stop()
	})
}

func BenchmarkPublish(b *testing.B) {
	bind := func(b *testing.B, e *env) {
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
	b.Run("raw", func(b *testing.B) {
		e := setup(b)
		bind(b, e)
		ch := e.raw()
		body := benchBody(b)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		if err := rawPublish(ch, e.x, "bench", b.N, body); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("dispytch-async", func(b *testing.B) {
		e := setup(b)
		bind(b, e)
		c := e.client()
		em := dispytch.NewEmitter(c)
		ctx := context.Background()
		var wg sync.WaitGroup
		var failed atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		wg.Add(b.N)
		for i := 0; i < b.N; i++ {
			em.EmitAsync(ctx, newBenchEvent(i), func(err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		if failed.Load() > 0 {
			b.Fatalf("%d emits failed", failed.Load())
		}
	})
	b.Run("dispytch-batch", func(b *testing.B) {
		e := setup(b)
		bind(b, e)
		c := e.client()
		em := dispytch.NewEmitter(c)
		ctx := context.Background()
		const size = 1000
		evs := make([]dispytch.Eventer, 0, size)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += size {
			evs = evs[:0]
			for j := i; j < min(i+size, b.N); j++ {
				evs = append(evs, newBenchEvent(j))
			}
			if err := em.EmitBatch(ctx, evs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("dispytch-emit-64-goroutines", func(b *testing.B) {
		e := setup(b)
		bind(b, e)
		c := e.client()
		em := dispytch.NewEmitter(c)
		ctx := context.Background()
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if err := em.Emit(ctx, newBenchEvent(int(i))); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}
