package otel_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tnoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/memory"
	dotel "github.com/dispytch/dispytch-go/otel"
)

// The benchmark event: the root package's, ~150 bytes, validated.
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

var benchEvent = BenchEvent{
	User:      BenchUser{ID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Email: "john.doe@example.com", Name: "John Doe of the Benchmark Suite, Esq."},
	Timestamp: 1700000000,
}

// discard is a span exporter that drops what the batcher hands it.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// setup returns the observer options of a contender and a function that
// releases what it built.
type setup func() (opts []dispytch.ListenerOption, eopts []dispytch.EmitterOption, done func())

func off() ([]dispytch.ListenerOption, []dispytch.EmitterOption, func()) { return nil, nil, func() {} }

// sdk instruments with the SDK: a batching tracer provider with the
// sampler given (dropping the exported spans) and a meter provider with a
// manual reader (aggregating every measurement).
func sdk(sampler sdktrace.Sampler) setup {
	return func() ([]dispytch.ListenerOption, []dispytch.EmitterOption, func()) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		inst, err := dotel.New(dotel.TracerProvider(tp), dotel.MeterProvider(mp), dotel.System("memory"))
		if err != nil {
			panic(err)
		}
		return []dispytch.ListenerOption{dispytch.Observe(inst), dispytch.Use(inst.Middleware())},
			[]dispytch.EmitterOption{dispytch.Observe(inst)},
			func() {
				_ = tp.Shutdown(context.Background())
				_ = mp.Shutdown(context.Background())
			}
	}
}

// noopProviders instruments with OpenTelemetry's no-op providers: the
// seams, the header propagation and the label sets, without an SDK.
func noopProviders() ([]dispytch.ListenerOption, []dispytch.EmitterOption, func()) {
	inst, err := dotel.New(dotel.TracerProvider(tnoop.NewTracerProvider()), dotel.MeterProvider(noop.NewMeterProvider()))
	if err != nil {
		panic(err)
	}
	return []dispytch.ListenerOption{dispytch.Observe(inst), dispytch.Use(inst.Middleware())},
		[]dispytch.EmitterOption{dispytch.Observe(inst)}, func() {}
}

// pipeline is the root package's BenchmarkPipeline (emit → memory broker →
// route → decode → validate → handler → ack) with the contender's
// instrumentation; traces start at each emit (a root span per event).
func pipeline(tb testing.TB, s setup, n int) time.Duration {
	lopts, eopts, done := s()
	defer done()
	broker := memory.New()
	defer broker.Close(context.Background())
	var handled atomic.Int64
	fin := make(chan struct{})
	l := dispytch.NewListener(broker, append([]dispytch.ListenerOption{
		dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		dispytch.Concurrency(runtime.GOMAXPROCS(0)),
	}, lopts...)...)
	dispytch.Handle1(l, "user_events", "user_registered", func(_ context.Context, ev dispytch.Event[BenchEvent], _ context.Context) error {
		if handled.Add(1) == int64(n) {
			close(fin)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	e := dispytch.NewEmitter(broker, eopts...)
	bctx := context.Background()
	start := time.Now()
	for range n {
		if err := e.Emit(bctx, benchEvent); err != nil {
			tb.Fatal(err)
		}
	}
	<-fin
	d := time.Since(start)
	cancel()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return d
}

// BenchmarkRatios runs the pipeline with the instrumentation off, with
// OpenTelemetry's no-op providers, and with the SDK sampling every trace or
// a parent-based 10% of them (metrics on in both), in alternating rounds
// (DISPYTCH_BENCH_ROUNDS, default 5) of b.N events, and reports the median
// rates and the medians of the per-round ratios to "off".
//
//	go test -run '^$' -bench Ratios -benchtime 100000x ./otel
func BenchmarkRatios(b *testing.B) {
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("DISPYTCH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if b.N == 1 {
		rounds = 1
	}
	contenders := []struct {
		name string
		s    setup
	}{
		{"off", off},
		{"noop", noopProviders},
		{"always", sdk(sdktrace.AlwaysSample())},
		{"parent10", sdk(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1)))},
	}
	b.StopTimer()
	rates := map[string][]float64{}
	for range rounds {
		for _, c := range contenders {
			runtime.GC()
			d := pipeline(b, c.s, b.N)
			rates[c.name] = append(rates[c.name], float64(b.N)/d.Seconds())
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for _, c := range contenders {
		b.ReportMetric(med(rates[c.name]), c.name+"-events/s")
	}
	for _, c := range contenders[1:] {
		var rs []float64
		for i := range rates[c.name] {
			rs = append(rs, rates[c.name][i]/rates["off"][i])
		}
		b.ReportMetric(med(rs), c.name+"/off")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%d rounds of %d events; events/s per round: %v", rounds, b.N, rates)
}

// BenchmarkPipeline reports allocations per event of each contender.
func BenchmarkPipeline(b *testing.B) {
	for _, c := range []struct {
		name string
		s    setup
	}{{"off", off}, {"noop", noopProviders}, {"always", sdk(sdktrace.AlwaysSample())}, {"parent10", sdk(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1)))}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			d := pipeline(b, c.s, b.N)
			b.ReportMetric(float64(b.N)/d.Seconds(), "events/s")
		})
	}
}
