package dispytch_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
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

func encodedBench(b testing.TB) []byte {
	m, err := dispytch.NewEmitter(memory.New()).Message(benchEvent)
	if err != nil {
		b.Fatal(err)
	}
	return m.Value
}

// timer is what a runner starts and stops around the measured part: the
// *testing.B of a standard benchmark, so that ns/op and allocs/op cover
// only that part, or noTimer.
type timer interface {
	StartTimer()
	StopTimer()
}

type noTimer struct{}

func (noTimer) StartTimer() {}
func (noTimer) StopTimer()  {}

// runBench runs a runner as a standard benchmark.
func runBench(b *testing.B, run func(testing.TB, timer, int) time.Duration) {
	b.SetBytes(int64(len(encodedBench(b))))
	b.ReportAllocs()
	b.StopTimer()
	d := run(b, b, b.N)
	b.ReportMetric(float64(b.N)/d.Seconds(), "events/s")
}

// BenchmarkPipeline is emit → memory broker → route → decode → validate →
// DI → handler → ack, end to end.
func BenchmarkPipeline(b *testing.B) { runBench(b, runPipeline) }

func runPipeline(tb testing.TB, t timer, n int) time.Duration {
	broker := memory.New()
	defer broker.Close(context.Background())
	svc := &BenchService{}
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(n)
	l := dispytch.NewListener(broker, dispytch.WithLogger(benchLog()), dispytch.Concurrency(runtime.GOMAXPROCS(0)),
		dispytch.Provide(func() *BenchService { return svc }))
	dispytch.Handle1(l, "user_events", "user_registered", func(_ context.Context, ev dispytch.Event[BenchEvent], s *BenchService) error {
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
	t.StartTimer()
	start := time.Now()
	for range n {
		if err := e.Emit(bctx, benchEvent); err != nil {
			tb.Fatal(err)
		}
	}
	<-done
	d := time.Since(start)
	t.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return d
}

// feeder is a Consumer replaying one pre-encoded message n times.
type feeder struct {
	value []byte
	n     int
	acks  sync.WaitGroup
}

type nopAcker struct{ wg *sync.WaitGroup }

func (a nopAcker) Ack(context.Context) error  { a.wg.Done(); return nil }
func (a nopAcker) Nack(context.Context) error { a.wg.Done(); return nil }

func (f *feeder) Consume(ctx context.Context, sub backend.Subscription, in backend.Inbox) error {
	in.Ready()
	f.acks.Add(f.n)
	ack := nopAcker{&f.acks}
	for range f.n {
		d := &backend.Delivery{Topic: "user_events", Value: f.value, Acker: ack}
		if err := in.Deliver(ctx, d); err != nil {
			return err
		}
	}
	<-in.Done()
	return nil
}

func (f *feeder) Produce(context.Context, ...*backend.Message) error { return nil }

// runDispatch registers the handler with Handle1, the typed path.
func runDispatch[T any](tb testing.TB, t timer, n int) time.Duration {
	return dispatch[T](tb, t, n, true)
}

// runDispatchReflect registers the same handler with Handle, the
// reflective path (reflect.Value.Call for the provider and the handler).
func runDispatchReflect[T any](tb testing.TB, t timer, n int) time.Duration {
	return dispatch[T](tb, t, n, false)
}

func dispatch[T any](tb testing.TB, t timer, n int, typed bool) time.Duration {
	f := &feeder{value: encodedBench(tb), n: n}
	svc := &BenchService{}
	l := dispytch.NewListener(f, dispytch.WithLogger(benchLog()), dispytch.Concurrency(runtime.GOMAXPROCS(0)),
		dispytch.Provide(func() *BenchService { return svc }))
	h := func(ctx context.Context, ev dispytch.Event[T], s *BenchService) error {
		s.n.Add(1)
		return nil
	}
	if typed {
		dispytch.Handle1(l, "user_events", "user_registered", h)
	} else {
		l.Handle("user_events", "user_registered", h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	t.StartTimer()
	start := time.Now()
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	f.acks.Wait()
	d := time.Since(start)
	t.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	if svc.n.Load() != int64(n) {
		tb.Fatalf("handled %d of %d", svc.n.Load(), n)
	}
	return d
}

// BenchmarkDispatch feeds pre-encoded messages straight into the listener:
// route → decode → validate → DI → handler → ack.
func BenchmarkDispatch(b *testing.B) { runBench(b, runDispatch[BenchEvent]) }

// BenchmarkDispatchNoValidation is Dispatch with a body type without
// validate tags.
func BenchmarkDispatchNoValidation(b *testing.B) { runBench(b, runDispatch[PlainEvent]) }

// BenchmarkDispatchReflect is DispatchNoValidation with the handler
// registered by Handle instead of Handle1: the reflective path.
func BenchmarkDispatchReflect(b *testing.B) { runBench(b, runDispatchReflect[PlainEvent]) }

// BenchmarkBareLoop is the physical limit: a buffered channel feeding
// GOMAXPROCS workers that json.Unmarshal the same message into a struct.
func BenchmarkBareLoop(b *testing.B) { runBench(b, runBareLoop) }

func runBareLoop(tb testing.TB, t timer, n int) time.Duration {
	value := encodedBench(tb)
	type envelope struct {
		ID        string     `json:"id"`
		Type      string     `json:"type"`
		Body      PlainEvent `json:"body"`
		Timestamp int64      `json:"timestamp"`
	}
	workers := runtime.GOMAXPROCS(0)
	ch := make(chan []byte, 1024)
	var wg sync.WaitGroup
	var handled atomic.Int64
	t.StartTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				var e envelope
				if err := json.Unmarshal(m, &e); err != nil {
					panic(err)
				}
				handled.Add(1)
			}
		}()
	}
	for range n {
		ch <- value
	}
	close(ch)
	wg.Wait()
	d := time.Since(start)
	t.StopTimer()
	return d
}

// BenchmarkBodyDecode is the part of the work that is the user's own: one
// json.Unmarshal of the body, for computing the framework's overhead.
func BenchmarkBodyDecode(b *testing.B) { runBench(b, runBodyDecode) }

func runBodyDecode(tb testing.TB, t timer, n int) time.Duration {
	body, _ := json.Marshal(benchEvent)
	t.StartTimer()
	start := time.Now()
	for range n {
		var e PlainEvent
		if err := json.Unmarshal(body, &e); err != nil {
			tb.Fatal(err)
		}
	}
	d := time.Since(start)
	t.StopTimer()
	return d
}

// BenchmarkRatios runs the benchmarks above in alternating rounds
// (DISPYTCH_BENCH_ROUNDS, default 5) of b.N events each, so that the
// machine's noise hits them alike, and reports median rates and the ratios
// the goals are stated in: the median of the per-round ratios to the bare
// loop. On one core (-cpu 1) it also reports the framework's overhead per
// event beyond the body's own decode: the median over rounds of
// DispatchNoValidation's time per event minus BodyDecode's.
//
//	go test -run '^$' -bench Ratios -benchtime 300000x .
//	go test -run '^$' -bench Ratios -benchtime 300000x -cpu 1 .
func BenchmarkRatios(b *testing.B) {
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("DISPYTCH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if b.N == 1 {
		rounds = 1 // the sizing run
	}
	contenders := []struct {
		name string
		run  func(testing.TB, timer, int) time.Duration
	}{
		{"bare", runBareLoop},
		{"pipeline", runPipeline},
		{"dispatch", runDispatch[BenchEvent]},
		{"novalidate", runDispatch[PlainEvent]},
		{"reflect", runDispatchReflect[PlainEvent]},
		{"bodydecode", runBodyDecode},
	}
	b.StopTimer()
	rates := map[string][]float64{}
	var overhead, reflOverhead []float64
	for range rounds {
		ns := map[string]float64{}
		for _, c := range contenders {
			runtime.GC()
			d := c.run(b, noTimer{}, b.N)
			ns[c.name] = float64(d.Nanoseconds()) / float64(b.N)
			rates[c.name] = append(rates[c.name], 1e9/ns[c.name])
		}
		overhead = append(overhead, ns["novalidate"]-ns["bodydecode"])
		reflOverhead = append(reflOverhead, ns["reflect"]-ns["bodydecode"])
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for _, c := range contenders[:5] {
		b.ReportMetric(med(rates[c.name]), c.name+"-events/s")
	}
	for _, c := range contenders[1:5] {
		var rs []float64
		for i := range rates[c.name] {
			rs = append(rs, rates[c.name][i]/rates["bare"][i])
		}
		b.ReportMetric(med(rs), c.name+"/bare")
	}
	if runtime.GOMAXPROCS(0) == 1 {
		b.ReportMetric(med(overhead), "overhead-ns/event")
		b.ReportMetric(med(reflOverhead), "reflect-overhead-ns/event")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%d rounds of %d events; events/s per round: %v; overhead ns/event per round: %.0f", rounds, b.N, rates, overhead)
}
