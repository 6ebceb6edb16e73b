package dispytch_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/memory"
)

// The benchmark event: ~150-byte body, validated, as in the README.
type BenchUser struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
	Name  string `json:"name"`
}

type BenchEvent struct {
	User      BenchUser `json:"user" validate:"required"`
	Timestamp int64     `json:"timestamp"`
}

func (BenchEvent) Topic() string     { return "user_events" }
func (BenchEvent) EventType() string { return "user_registered" }

// PlainEvent is the same body without validate tags.
type PlainUser struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

type PlainEvent struct {
	User      PlainUser `json:"user"`
	Timestamp int64     `json:"timestamp"`
}

var benchEvent = BenchEvent{
	User: BenchUser{
		ID:    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		Email: "john.doe@example.com",
		Name:  "John Doe of the Benchmark Suite, Esq.",
	},
	Timestamp: 1700000000,
}

type BenchService struct{ n atomic.Int64 }

func benchLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func encodedBench(b *testing.B) []byte {
	m, err := dispytch.NewEmitter(memory.New()).Message(benchEvent)
	if err != nil {
		b.Fatal(err)
	}
	return m.Value
}

// BenchmarkPipeline is emit → memory broker → route → decode → validate →
// DI → handler → ack, end to end.
func BenchmarkPipeline(b *testing.B) {
	broker := memory.New()
	defer broker.Close()
	svc := &BenchService{}
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	l := dispytch.NewListener(broker, dispytch.WithLogger(benchLog()), dispytch.Concurrency(runtime.GOMAXPROCS(0)),
		dispytch.Provide(func() *BenchService { return svc }))
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[BenchEvent], s *BenchService) error {
		s.n.Add(1)
		if handled.Add(1) == target {
			close(done)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	e := dispytch.NewEmitter(broker)
	bctx := context.Background()
	b.SetBytes(int64(len(encodedBench(b))))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := e.Emit(bctx, benchEvent); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// feeder is a Consumer replaying one pre-encoded message b.N times.
type feeder struct {
	value []byte
	n     int
	acks  sync.WaitGroup
}

type nopAcker struct{ wg *sync.WaitGroup }

func (a nopAcker) Ack(context.Context) error  { a.wg.Done(); return nil }
func (a nopAcker) Nack(context.Context) error { a.wg.Done(); return nil }

func (f *feeder) Consume(ctx context.Context, sub dispytch.Subscription, in dispytch.Inbox) error {
	in.Ready()
	f.acks.Add(f.n)
	ack := nopAcker{&f.acks}
	for range f.n {
		d := &dispytch.Delivery{Topic: "user_events", Value: f.value, Acker: ack}
		if err := in.Deliver(ctx, d); err != nil {
			return err
		}
	}
	<-in.Done()
	return nil
}

func (f *feeder) Produce(context.Context, ...*dispytch.Message) error { return nil }

func benchDispatch[T any](b *testing.B) {
	f := &feeder{value: encodedBench(b), n: b.N}
	svc := &BenchService{}
	l := dispytch.NewListener(f, dispytch.WithLogger(benchLog()), dispytch.Concurrency(runtime.GOMAXPROCS(0)),
		dispytch.Provide(func() *BenchService { return svc }))
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[T], s *BenchService) error {
		s.n.Add(1)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.SetBytes(int64(len(f.value)))
	b.ReportAllocs()
	b.ResetTimer()
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	f.acks.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if svc.n.Load() != int64(b.N) {
		b.Fatalf("handled %d of %d", svc.n.Load(), b.N)
	}
}

// BenchmarkDispatch feeds pre-encoded messages straight into the listener:
// route → decode → validate → DI → handler → ack.
func BenchmarkDispatch(b *testing.B) { benchDispatch[BenchEvent](b) }

// BenchmarkDispatchNoValidation is Dispatch with a body type without
// validate tags.
func BenchmarkDispatchNoValidation(b *testing.B) { benchDispatch[PlainEvent](b) }

// BenchmarkBareLoop is the physical limit: a buffered channel feeding
// GOMAXPROCS workers that json.Unmarshal the same message into a struct.
func BenchmarkBareLoop(b *testing.B) {
	value := encodedBench(b)
	type envelope struct {
		ID        string     `json:"id"`
		Type      string     `json:"type"`
		Body      PlainEvent `json:"body"`
		Timestamp int64      `json:"timestamp"`
	}
	workers := runtime.GOMAXPROCS(0)
	ch := make(chan []byte, 1024)
	var wg sync.WaitGroup
	var n atomic.Int64
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				var e envelope
				if err := json.Unmarshal(m, &e); err != nil {
					panic(err)
				}
				n.Add(1)
			}
		}()
	}
	for range b.N {
		ch <- value
	}
	close(ch)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBodyDecode is the part of the work that is the user's own: one
// json.Unmarshal of the body, for computing the framework's overhead.
func BenchmarkBodyDecode(b *testing.B) {
	body, _ := json.Marshal(benchEvent)
	b.ReportAllocs()
	for range b.N {
		var e PlainEvent
		if err := json.Unmarshal(body, &e); err != nil {
			b.Fatal(err)
		}
	}
}
