// Command observability runs a small order service on the embedded memory
// broker with everything production needs to see into it: OpenTelemetry
// traces (printed, one line per span) and metrics, a Prometheus /metrics
// endpoint, and /healthz and /readyz probes. It emits a workload with a
// retry and a dead letter, prints where to look, and serves until
// interrupted (-once: exits after the workload).
//
//	go run ./examples/observability
//	curl -s localhost:9464/metrics | grep dispytch_
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/health"
	"github.com/dispytch/dispytch-go/memory"
	dotel "github.com/dispytch/dispytch-go/otel"
)

// Order is placed on a regional topic.
type Order struct {
	ID     int    `json:"id"`
	Region string `json:"region"`
	Item   string `json:"item"`
}

// Topic is the order's regional topic.
func (Order) Topic() string { return "orders.{region}" }

// EventType names the event.
func (Order) EventType() string { return "order_placed" }

// Shipment is requested by the order handler, in the order's trace.
type Shipment struct {
	OrderID int `json:"order_id"`
}

// Topic is where shipments go.
func (Shipment) Topic() string { return "shipments" }

// EventType names the event.
func (Shipment) EventType() string { return "shipment_requested" }

// service is the order service with its telemetry.
type service struct {
	broker   *memory.Broker
	listener *dispytch.Listener
	emitter  *dispytch.Emitter
	mux      *http.ServeMux
	shutdown func(context.Context) error

	mu    sync.Mutex
	tries map[int]int
}

// newService wires the tracer and meter providers, the Prometheus
// endpoint, the probes, and the listener and emitter; spans are printed to
// spans.
func newService(spans io.Writer) (*service, error) {
	// Traces: the SDK with an exporter printing one line per span (a real
	// service exports OTLP: otlptracegrpc.New(ctx)).
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithSyncer(&lineExporter{w: spans}),
	)
	// Metrics: the OpenTelemetry Prometheus exporter on a registry of our
	// own, served at /metrics.
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))

	inst, err := dotel.New(dotel.TracerProvider(tp), dotel.MeterProvider(mp), dotel.System("memory"))
	if err != nil {
		return nil, err
	}
	b := memory.New()
	s := &service{broker: b, tries: map[int]int{}}
	s.emitter = dispytch.NewEmitter(b, dispytch.Observe(inst))
	s.listener = dispytch.NewListener(b,
		dispytch.ConsumerGroup("orders"),
		dispytch.Observe(inst), dispytch.Use(inst.Middleware()),
		dispytch.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
	)
	dispytch.Handle1(s.listener, "orders.{region}", "order_placed", s.placeOrder, dispytch.Name("place-order"),
		dispytch.Retries(2), dispytch.RetryInterval(10*time.Millisecond))
	s.listener.Handle("shipments", "shipment_requested", func(ctx context.Context, ev dispytch.Event[Shipment]) {},
		dispytch.Name("ship"))

	checks := health.New(health.StallAfter(30 * time.Second))
	checks.Add("orders", s.listener)
	checks.Add("events", s.emitter)
	var regs []interface{ Unregister() error }
	for name, h := range map[string]dotel.Healther{"orders": s.listener, "events": s.emitter} {
		r, err := inst.Watch(name, h)
		if err != nil {
			return nil, err
		}
		regs = append(regs, r)
	}

	s.mux = http.NewServeMux()
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.Handle("/healthz", checks.Live())
	s.mux.Handle("/readyz", checks.Ready())
	s.shutdown = func(ctx context.Context) error {
		for _, r := range regs {
			_ = r.Unregister()
		}
		b.Close(context.Background())
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}
	return s, nil
}

// placeOrder takes the message's logger (with its id, type, topic, group
// and handler) and requests the shipment in the same trace. Order 7's
// first attempt fails and is retried; order 13 is refused for good and
// dead-lettered.
func (s *service) placeOrder(ctx context.Context, ev dispytch.Event[Order], log *slog.Logger) error {
	s.mu.Lock()
	s.tries[ev.Body.ID]++
	try := s.tries[ev.Body.ID]
	s.mu.Unlock()
	switch {
	case ev.Body.ID == 7 && try == 1:
		return errors.New("inventory service timed out")
	case ev.Body.ID == 13:
		return dispytch.Permanent(fmt.Errorf("item %q is not sold in %s", ev.Body.Item, ev.Body.Region))
	}
	log.DebugContext(ctx, "order placed", "item", ev.Body.Item)
	return s.emitter.Emit(ctx, Shipment{OrderID: ev.Body.ID})
}

// workload emits n orders across three regions and waits until every one
// is settled.
func (s *service) workload(ctx context.Context, n int) error {
	regions := []string{"eu", "us", "apac"}
	before := s.listener.Stats()
	for i := 1; i <= n; i++ {
		if err := s.emitter.Emit(ctx, Order{ID: i, Region: regions[i%3], Item: "widget"}); err != nil {
			return err
		}
	}
	// Every order is settled, and every order placed (all but 13) requested
	// a shipment, settled too.
	want := int64(2 * n)
	if n >= 13 {
		want--
	}
	for {
		st := s.listener.Stats()
		if st.Received-before.Received >= want && st.InFlight == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("workload: %w (stats %+v)", ctx.Err(), st)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9464", "where to serve /metrics, /healthz and /readyz")
	n := flag.Int("orders", 20, "orders to emit")
	once := flag.Bool("once", false, "exit after the workload instead of serving until interrupted")
	flag.Parse()
	if err := run(*addr, *n, *once, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "observability:", err)
		os.Exit(1)
	}
}

func run(addr string, n int, once bool, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s, err := newService(out)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.shutdown(sctx)
	}()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.listener.Run(lctx) }()
	if err := s.listener.WaitReady(ctx); err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, `Dispytch observability example, on the memory broker.
  metrics    %[1]s/metrics   (dispytch_*, messaging_*: Prometheus text format)
  liveness   %[1]s/healthz
  readiness  %[1]s/readyz
  traces     below, one line per span: order 7 retries, order 13 is dead-lettered

`, base)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := s.workload(wctx, n); err != nil {
		return err
	}
	st := s.listener.Stats()
	fmt.Fprintf(out, "\n%d orders: %d handler calls succeeded, %d retried, %d dead-lettered.\n", n, st.Handled, st.Retries, st.DeadLettered)
	if once {
		cancel()
		return <-errc
	}
	fmt.Fprintf(out, "Serving until interrupted (Ctrl-C): try  curl -s %s/metrics | grep dispytch_\n", base)
	<-ctx.Done()
	cancel()
	return <-errc
}

// lineExporter prints each span on one line: its trace, its parent, its
// name, kind and the attributes worth reading.
type lineExporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *lineExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		var extra []string
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "messaging.destination.name", "dispytch.attempt", "dispytch.outcome", "dispytch.reason", "error.type":
				extra = append(extra, fmt.Sprintf("%s=%s", kv.Key, kv.Value.String()))
			}
		}
		parent := "-"
		if s.Parent().IsValid() {
			parent = s.Parent().SpanID().String()[:8]
		}
		fmt.Fprintf(e.w, "trace %s  span %s  parent %-8s  %-9s %-26s %s\n", s.SpanContext().TraceID().String()[:12],
			s.SpanContext().SpanID().String()[:8], parent, s.SpanKind(), s.Name(), strings.Join(extra, " "))
	}
	return nil
}

func (e *lineExporter) Shutdown(context.Context) error { return nil }
