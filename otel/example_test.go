package otel_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/memory"
	dotel "github.com/dispytch/dispytch-go/otel"
)

type UserRegistered struct {
	ID string `json:"id"`
}

func (UserRegistered) Topic() string     { return "user.{id}.events" }
func (UserRegistered) EventType() string { return "user_registered" }

// A trace started before Emit continues in the handler: the handler's ctx
// carries its attempt's span, a child of the message's, a child of the
// emit's. (Spans are recorded in memory here; a service exports them.)
func Example() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	inst, err := dotel.New(dotel.TracerProvider(tp), dotel.MeterProvider(mp), dotel.System("memory"))
	if err != nil {
		panic(err)
	}
	b := memory.New()
	defer b.Close(context.Background())
	em := dispytch.NewEmitter(b, dispytch.Observe(inst))
	l := dispytch.NewListener(b, dispytch.ConsumerGroup("users"), dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		dispytch.Observe(inst), dispytch.Use(inst.Middleware()))
	seen := make(chan trace.SpanContext, 1)
	l.Handle("user.{id}.events", "user_registered", func(ctx context.Context) {
		seen <- trace.SpanContextFromContext(ctx)
	}, dispytch.Name("welcome"))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	if err := l.WaitReady(ctx); err != nil {
		panic(err)
	}

	ctx, root := tp.Tracer("app").Start(context.Background(), "signup")
	if err := em.Emit(ctx, UserRegistered{ID: "42"}); err != nil {
		panic(err)
	}
	root.End()
	sc := <-seen
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	fmt.Println("the handler continues the trace:", sc.TraceID() == root.SpanContext().TraceID())
	var lines []string
	for _, s := range spans.Ended() {
		lines = append(lines, fmt.Sprintf("%-8s %s", s.SpanKind(), s.Name()))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// the handler continues the trace: true
	// consumer process user.{id}.events
	// internal handle welcome
	// internal signup
	// producer send user.{id}.events
}
