// Package e2e runs the OpenTelemetry instrumentation end to end on every
// backend: the memory broker, Kafka (kfake, in-process) and RabbitMQ (the
// broker at DISPYTCH_RABBITMQ_URL). It holds tests only, apart from the
// otel package so that a program importing otel does not get the backends'
// test dependencies in its go.sum.
package e2e_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/kafka"
	"github.com/dispytch/dispytch-go/memory"
	"github.com/dispytch/dispytch-go/nats"
	dotel "github.com/dispytch/dispytch-go/otel"
	"github.com/dispytch/dispytch-go/rabbitmq"
	"github.com/dispytch/dispytch-go/redis"
)

// Order is emitted on a templated topic and handled on the same pattern.
type Order struct {
	Region string `json:"region"`
	N      int    `json:"n"`
	Mode   string `json:"mode,omitempty"` // "", "flaky" or "fail"
}

func (Order) Topic() string     { return "orders.{region}" }
func (Order) EventType() string { return "order_placed" }

// Shipment is emitted by the order handler.
type Shipment struct {
	N int `json:"n"`
}

func (Shipment) Topic() string     { return "shipments" }
func (Shipment) EventType() string { return "shipment_requested" }

var topics = []string{"orders.eu", "shipments"}

// kit is one backend under test.
type kit struct {
	system      string
	group       string
	prod        backend.Producer
	cons        backend.Consumer
	store       backend.DeadLetterStore
	partitioned bool
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var backends = []struct {
	name string
	new  func(t *testing.T) kit
}{
	{"memory", memoryKit},
	{"kafka", kafkaKit},
	{"rabbitmq", rabbitKit},
	{"redis", redisKit},
	{"nats", natsKit},
}

func memoryKit(t *testing.T) kit {
	b := memory.New()
	t.Cleanup(func() { b.Close(context.Background()) })
	return kit{system: "memory", group: "svc", prod: b, cons: b, store: b}
}

func kafkaKit(t *testing.T) kit {
	group := "svc-" + backend.NewUUID()[:8]
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.SeedTopics(2, append(topics, group+".dlq")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	p, err := kafka.NewProducer(kafka.Brokers(addrs...), kafka.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	k, err := kafka.NewConsumer(kafka.Brokers(addrs...), kafka.WithLogger(quiet()),
		kafka.ClientOptions(kgo.HeartbeatInterval(100*time.Millisecond), kgo.SessionTimeout(3*time.Second),
			kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond })),
		kafka.CommitInterval(100*time.Millisecond), kafka.TopicRefresh(300*time.Millisecond), kafka.RedeliveryDelay(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Close(ctx)
		_ = p.Close(ctx)
	})
	return kit{system: "kafka", group: group, prod: p, cons: k, store: k, partitioned: true}
}

func rabbitURL() string {
	return testenv.Getenv("DISPYTCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

func rabbitKit(t *testing.T) kit {
	u, err := url.Parse(rabbitURL())
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	if !strings.Contains(host, ":") {
		host += ":5672"
	}
	testenv.RequireTCP(t, "RabbitMQ", host)
	prefix := "otel" + backend.NewUUID()[:8]
	group := prefix + "-svc"
	c, err := rabbitmq.New(rabbitURL(), rabbitmq.Exchanges(prefix+"-x"), rabbitmq.WithLogger(quiet()),
		rabbitmq.ReconnectBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close(context.Background())
		conn, err := amqp.Dial(rabbitURL())
		if err != nil {
			return
		}
		defer conn.Close()
		for _, q := range []string{group, group + ".dlq"} {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				ch.Close()
			}
		}
		for _, x := range []string{prefix + "-x", prefix + "-x.dlx"} {
			if ch, err := conn.Channel(); err == nil {
				_ = ch.ExchangeDelete(x, false, false)
				ch.Close()
			}
		}
	})
	return kit{system: "rabbitmq", group: group, prod: c, cons: c, store: c}
}

// redisKit runs on database 11 of the local Redis, whose fixed topics
// ("orders.eu", "shipments") it deletes afterwards.
func redisKit(t *testing.T) kit {
	addr := testenv.Getenv("DISPYTCH_REDIS_ADDR", "127.0.0.1:6379")
	testenv.RequireTCP(t, "Redis", addr)
	group := "otel-" + backend.NewUUID()[:8] + "-svc"
	c, err := redis.New("redis://"+addr+"/11", redis.WithLogger(quiet()), redis.BlockTime(100*time.Millisecond),
		redis.StreamRefresh(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
		rc := goredis.NewClient(&goredis.Options{Addr: addr, DB: 11})
		defer rc.Close()
		rc.Del(ctx, append([]string{group + ".dlq"}, topics...)...)
	})
	return kit{system: "redis", group: group, prod: c, cons: c, store: c}
}

// natsKit runs a nats-server (JetStream, file storage) in process.
func natsKit(t *testing.T) kit {
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	c, err := nats.New(srv.ClientURL(), nats.WithLogger(quiet()), nats.ReconnectBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return kit{system: "nats", group: "svc", prod: c, cons: c, store: c}
}

// telemetry is an SDK set up with in-memory exporters.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	inst   *dotel.Instrumentation
}

func newTelemetry(t *testing.T, system string) *telemetry {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	inst, err := dotel.New(dotel.TracerProvider(tp), dotel.MeterProvider(mp), dotel.System(system))
	if err != nil {
		t.Fatal(err)
	}
	return &telemetry{spans: rec, tp: tp, reader: reader, inst: inst}
}

// waitSpans waits until an ended span matches every name given, and
// returns the ended spans.
func (tm *telemetry) waitSpans(t *testing.T, names ...string) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ended := tm.spans.Ended()
		missing := ""
		for _, n := range names {
			found := false
			for _, s := range ended {
				found = found || s.Name() == n
			}
			if !found {
				missing = n
				break
			}
		}
		if missing == "" {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended span %q; have %v", missing, spanNames(ended))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spanNames(ss []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name())
	}
	return out
}

func find(t *testing.T, ss []sdktrace.ReadOnlySpan, name string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range ss {
		if s.Name() == name && (match == nil || match(s)) {
			return s
		}
	}
	t.Fatalf("no span %q among %v", name, spanNames(ss))
	return nil
}

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func attrIs(s sdktrace.ReadOnlySpan, key string, v any) bool {
	got, ok := attr(s, key)
	if !ok {
		return false
	}
	return got.AsInterface() == v
}

// run runs l until the test ends.
func run(t *testing.T, l *dispytch.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("listener: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := l.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
}

// One trace across emit → broker → handler → an emit in the handler → its
// handler, on every backend: span names, kinds, parents, the messaging
// attributes, the baggage, and the handler's ctx carrying its attempt's
// span.
func TestOneTraceAcrossEmitsAndHandlers(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testOneTrace(t, b.new(t)) })
	}
}

func testOneTrace(t *testing.T, k kit) {
	tm := newTelemetry(t, k.system)
	em := dispytch.NewEmitter(k.prod, dispytch.Observe(tm.inst))
	l := dispytch.NewListener(k.cons, dispytch.ConsumerGroup(k.group), dispytch.WithLogger(quiet()),
		dispytch.Observe(tm.inst), dispytch.Use(tm.inst.Middleware()))
	type seen struct {
		sc     trace.SpanContext
		tenant string
		id     string
	}
	orders, ships := make(chan seen, 1), make(chan seen, 1)
	l.Handle("orders.{region}", "order_placed", func(ctx context.Context, ev dispytch.Event[Order]) error {
		orders <- seen{trace.SpanContextFromContext(ctx), baggage.FromContext(ctx).Member("tenant").Value(), ev.ID}
		return em.Emit(ctx, Shipment{N: ev.Body.N})
	}, dispytch.Name("place"))
	l.Handle("shipments", "shipment_requested", func(ctx context.Context, ev dispytch.Event[Shipment]) {
		ships <- seen{trace.SpanContextFromContext(ctx), baggage.FromContext(ctx).Member("tenant").Value(), ev.ID}
	}, dispytch.Name("ship"))
	run(t, l)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx, root := tm.tp.Tracer("test").Start(ctx, "client request")
	member, _ := baggage.NewMember("tenant", "acme")
	bag, _ := baggage.New(member)
	ctx = baggage.ContextWithBaggage(ctx, bag)
	if err := em.Emit(ctx, Order{Region: "eu", N: 1}); err != nil {
		t.Fatal(err)
	}
	root.End()
	var o, s seen
	select {
	case o = <-orders:
	case <-ctx.Done():
		t.Fatal("order not handled")
	}
	select {
	case s = <-ships:
	case <-ctx.Done():
		t.Fatal("shipment not handled")
	}
	ended := tm.waitSpans(t, "process shipments", "process orders.{region}")
	traceID := root.SpanContext().TraceID()
	for _, sp := range ended {
		if sp.SpanContext().TraceID() != traceID {
			t.Errorf("span %q is in trace %s, not %s", sp.Name(), sp.SpanContext().TraceID(), traceID)
		}
	}
	send1 := find(t, ended, "send orders.{region}", nil)
	proc1 := find(t, ended, "process orders.{region}", nil)
	att1 := find(t, ended, "handle place", nil)
	send2 := find(t, ended, "send shipments", nil)
	proc2 := find(t, ended, "process shipments", nil)
	att2 := find(t, ended, "handle ship", nil)
	chain := []struct {
		span   sdktrace.ReadOnlySpan
		parent trace.SpanContext
		kind   trace.SpanKind
	}{
		{send1, root.SpanContext(), trace.SpanKindProducer},
		{proc1, send1.SpanContext(), trace.SpanKindConsumer},
		{att1, proc1.SpanContext(), trace.SpanKindInternal},
		{send2, att1.SpanContext(), trace.SpanKindProducer},
		{proc2, send2.SpanContext(), trace.SpanKindConsumer},
		{att2, proc2.SpanContext(), trace.SpanKindInternal},
	}
	for _, c := range chain {
		if c.span.Parent().SpanID() != c.parent.SpanID() {
			t.Errorf("%q: parent %s, want %s", c.span.Name(), c.span.Parent().SpanID(), c.parent.SpanID())
		}
		if c.span.SpanKind() != c.kind {
			t.Errorf("%q: kind %v, want %v", c.span.Name(), c.span.SpanKind(), c.kind)
		}
	}
	if !proc1.Parent().IsRemote() {
		t.Error("the process span's parent should be the remote send span")
	}
	if o.sc.SpanID() != att1.SpanContext().SpanID() || s.sc.SpanID() != att2.SpanContext().SpanID() {
		t.Error("a handler's ctx should carry its attempt's span")
	}
	if o.tenant != "acme" || s.tenant != "acme" {
		t.Errorf("baggage: %q, %q", o.tenant, s.tenant)
	}
	want := map[string]any{
		"messaging.system":               k.system,
		"messaging.operation.name":       "process",
		"messaging.operation.type":       "process",
		"messaging.destination.name":     "orders.eu",
		"messaging.destination.template": "orders.{region}",
		"messaging.consumer.group.name":  k.group,
		"messaging.message.id":           o.id,
		"dispytch.event.type":            "order_placed",
		"dispytch.outcome":               "acked",
	}
	for key, v := range want {
		if !attrIs(proc1, key, v) {
			got, _ := attr(proc1, key)
			t.Errorf("process span: %s = %v, want %v", key, got.AsInterface(), v)
		}
	}
	if v, ok := attr(proc1, "messaging.message.body.size"); !ok || v.AsInt64() < 20 {
		t.Errorf("body size: %v", v.AsInterface())
	}
	_, hasPart := attr(proc1, "messaging.destination.partition.id")
	_, hasOffset := attr(proc1, "messaging.kafka.offset")
	if hasPart != k.partitioned || hasOffset != k.partitioned {
		t.Errorf("partition %v, offset %v on a partitioned log: %v", hasPart, hasOffset, k.partitioned)
	}
	for key, v := range map[string]any{
		"messaging.system": k.system, "messaging.operation.type": "send", "messaging.destination.name": "orders.eu",
		"messaging.destination.template": "orders.{region}", "messaging.message.id": o.id,
	} {
		if !attrIs(send1, key, v) {
			got, _ := attr(send1, key)
			t.Errorf("send span: %s = %v, want %v", key, got.AsInterface(), v)
		}
	}
	if !attrIs(att1, "dispytch.handler", "place") || !attrIs(att1, "dispytch.attempt", int64(1)) {
		t.Errorf("attempt span: %v", att1.Attributes())
	}
}

// A workload with failures on every backend: a retry that succeeds, a
// failure dead-lettered, the metrics after it; the dead letter keeps the
// original's trace context; a redriven letter starts a new trace linked to
// it.
func TestFailuresMetricsDeadLettersRedrive(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testFailures(t, b.new(t)) })
	}
}

func testFailures(t *testing.T, k kit) {
	tm := newTelemetry(t, k.system)
	em := dispytch.NewEmitter(k.prod, dispytch.Observe(tm.inst))
	settled := make(chan dispytch.Settlement, 16)
	// The settlement observer comes first: ends run in reverse, so the
	// instrumentation has recorded a settlement when the test learns of it.
	l := dispytch.NewListener(k.cons, dispytch.ConsumerGroup(k.group), dispytch.WithLogger(quiet()),
		dispytch.Observe(settleObserver(settled)), dispytch.Observe(tm.inst), dispytch.Use(tm.inst.Middleware()))
	var mu sync.Mutex
	flaky := map[int]int{}
	fixed := atomic.Bool{}
	l.Handle("orders.{region}", "order_placed", func(ev dispytch.Event[Order]) error {
		switch ev.Body.Mode {
		case "flaky":
			mu.Lock()
			defer mu.Unlock()
			flaky[ev.Body.N]++
			if flaky[ev.Body.N] == 1 {
				return errors.New("flaky: first attempt fails")
			}
		case "fail":
			if !fixed.Load() {
				return dispytch.Permanent(errors.New("fail: refused"))
			}
		}
		return nil
	}, dispytch.Name("place"), dispytch.Retries(2), dispytch.RetryInterval(time.Millisecond))
	run(t, l)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, mode := range []string{"", "", "", "flaky", "fail"} {
		if err := em.Emit(ctx, Order{Region: "eu", N: i, Mode: mode}); err != nil {
			t.Fatal(err)
		}
	}
	outcomes := map[string]int{}
	for range 5 {
		select {
		case s := <-settled:
			outcomes[s.Outcome.String()]++
		case <-ctx.Done():
			t.Fatalf("settled so far: %v", outcomes)
		}
	}
	if outcomes["acked"] != 4 || outcomes["dead_lettered"] != 1 {
		t.Fatalf("outcomes %v", outcomes)
	}
	ended := tm.waitSpans(t, "process orders.{region}")
	failedSpan := find(t, ended, "process orders.{region}", func(s sdktrace.ReadOnlySpan) bool {
		return attrIs(s, "dispytch.outcome", "dead_lettered")
	})
	if !attrIs(failedSpan, "dispytch.reason", "handler_error") || failedSpan.Status().Code.String() != "Error" {
		t.Errorf("dead-lettered span: %v %v", failedSpan.Attributes(), failedSpan.Status())
	}
	find(t, ended, "handle place", func(s sdktrace.ReadOnlySpan) bool {
		return attrIs(s, "dispytch.attempt", int64(2)) && s.Status().Code.String() == "Unset"
	})

	// Metrics.
	var rm metricdata.ResourceMetrics
	if err := tm.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	m := flatten(rm)
	base := map[string]string{"messaging.system": k.system, "messaging.consumer.group.name": k.group, "messaging.destination.template": "orders.{region}"}
	with := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"messaging.client.consumed.messages", base, 5},
		{"dispytch.messages.settled", with("dispytch.outcome", "acked"), 4},
		{"dispytch.messages.settled", with("dispytch.outcome", "dead_lettered", "dispytch.reason", "handler_error"), 1},
		{"dispytch.messages.dead_lettered", with("dispytch.outcome", "dead_lettered", "dispytch.reason", "handler_error"), 1},
		{"dispytch.messages.in_flight", base, 0},
		{"dispytch.handler.retries", with("dispytch.handler", "place"), 1},
		{"dispytch.handler.attempt.duration", with("dispytch.handler", "place", "dispytch.outcome", "ok"), 4},
		{"dispytch.handler.attempt.duration", with("dispytch.handler", "place", "dispytch.outcome", "failed", "error.type", "handler_error"), 2},
		{"messaging.process.duration", with("dispytch.outcome", "acked"), 4},
		{"messaging.client.sent.messages", map[string]string{"messaging.system": k.system, "messaging.operation.name": "send", "messaging.destination.template": "orders.{region}"}, 5},
		{"messaging.client.operation.duration", map[string]string{"messaging.system": k.system, "messaging.operation.name": "send", "messaging.destination.template": "orders.{region}"}, 5},
	}
	for _, c := range checks {
		if got, ok := m.value(c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v\n%s", c.name, c.labels, got, ok, c.want, m.dump(c.name))
		}
	}
	for _, p := range m.points {
		for key, v := range p.labels {
			if key == "messaging.destination.name" || strings.Contains(v, "orders.eu") {
				t.Errorf("a metric label has a concrete topic: %s %v", p.name, p.labels)
			}
		}
	}

	// The dead letter carries the original message's trace context: that of
	// its send span.
	q := dlq.Open(k.store, k.group+".dlq")
	var letters []*dispytch.FailedMessage
	deadline := time.Now().Add(20 * time.Second)
	for len(letters) == 0 && time.Now().Before(deadline) {
		var err error
		if letters, err = q.List(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if len(letters) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(letters) != 1 {
		t.Fatalf("dead letters: %d", len(letters))
	}
	sendFail := find(t, ended, "send orders.{region}", func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanContext().TraceID() == failedSpan.SpanContext().TraceID()
	})
	dlCtx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(letters[0].Headers))
	if sc := trace.SpanContextFromContext(dlCtx); sc.TraceID() != sendFail.SpanContext().TraceID() || sc.SpanID() != sendFail.SpanContext().SpanID() {
		t.Fatalf("dead letter's trace context %v, want the send span's %v (headers %v)", sc, sendFail.SpanContext(), letters[0].Headers)
	}

	// Redriven, the message is handled in a new trace linked to the
	// original.
	fixed.Store(true)
	if n, err := q.Redrive(ctx, k.prod, nil); err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	select {
	case s := <-settled:
		if s.Outcome != dispytch.OutcomeAcked {
			t.Fatalf("redriven: %+v", s)
		}
	case <-ctx.Done():
		t.Fatal("redriven message not settled")
	}
	var redriven sdktrace.ReadOnlySpan
	deadline = time.Now().Add(10 * time.Second)
	for redriven == nil && time.Now().Before(deadline) {
		for _, s := range tm.spans.Ended() {
			if s.Name() == "process orders.{region}" && attrIs(s, "dispytch.redriven", true) {
				redriven = s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if redriven == nil {
		t.Fatal("no process span of the redriven message")
	}
	if redriven.SpanContext().TraceID() == sendFail.SpanContext().TraceID() || redriven.Parent().IsValid() {
		t.Errorf("the redriven message should start a new trace: parent %v", redriven.Parent())
	}
	links := redriven.Links()
	if len(links) != 1 || links[0].SpanContext.SpanID() != sendFail.SpanContext().SpanID() {
		t.Fatalf("links %v, want the original send span %v", links, sendFail.SpanContext())
	}
}

// settleObserver reports every settlement on ch.
type settleObserver chan dispytch.Settlement

func (o settleObserver) ObserveMessage(ctx context.Context, _ *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	return ctx, func(s dispytch.Settlement) { o <- s }
}

// points are the collected metric data points, flattened.
type point struct {
	name   string
	labels map[string]string
	value  float64 // a sum's value, a gauge's, or a histogram's count
}

type flat struct{ points []point }

func flatten(rm metricdata.ResourceMetrics) flat {
	var f flat
	labels := func(s attribute.Set) map[string]string {
		out := map[string]string{}
		for _, kv := range s.ToSlice() {
			out[string(kv.Key)] = kv.Value.String()
		}
		return out
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					f.points = append(f.points, point{m.Name, labels(p.Attributes), float64(p.Value)})
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					f.points = append(f.points, point{m.Name, labels(p.Attributes), p.Value})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					f.points = append(f.points, point{m.Name, labels(p.Attributes), float64(p.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					f.points = append(f.points, point{m.Name, labels(p.Attributes), p.Value})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					f.points = append(f.points, point{m.Name, labels(p.Attributes), float64(p.Count)})
				}
			}
		}
	}
	return f
}

// value returns the point of name whose labels are exactly want.
func (f flat) value(name string, want map[string]string) (float64, bool) {
	for _, p := range f.points {
		if p.name != name || len(p.labels) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			match = match && p.labels[k] == v
		}
		if match {
			return p.value, true
		}
	}
	return 0, false
}

func (f flat) dump(name string) string {
	var b strings.Builder
	for _, p := range f.points {
		if p.name == name {
			b.WriteString("  have ")
			b.WriteString(p.name)
			for k, v := range p.labels {
				b.WriteString(" " + k + "=" + v)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// On Kafka, WatchLag's gauge reports the records each owned partition
// holds uncommitted while a handler holds them back, and 0 once they are
// handled; Watch's gauges report the listener ready.
func TestKafkaLagGauge(t *testing.T) {
	k := kafkaKit(t)
	tm := newTelemetry(t, k.system)
	em := dispytch.NewEmitter(k.prod, dispytch.Observe(tm.inst))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 10
	for i := range n {
		if err := em.Emit(ctx, Order{Region: "eu", N: i}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	defer let()
	l := dispytch.NewListener(k.cons, dispytch.ConsumerGroup(k.group), dispytch.WithLogger(quiet()), dispytch.ShutdownTimeout(time.Second),
		dispytch.Observe(tm.inst), dispytch.Use(tm.inst.Middleware()))
	l.Handle("orders.{region}", "order_placed", func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	run(t, l)
	if _, err := tm.inst.WatchLag(k.cons.(backend.LagReporter)); err != nil {
		t.Fatal(err)
	}
	if _, err := tm.inst.Watch("orders", l); err != nil {
		t.Fatal(err)
	}
	lagTotal := func() (float64, int) {
		var rm metricdata.ResourceMetrics
		if err := tm.reader.Collect(ctx, &rm); err != nil {
			t.Logf("collect: %v", err)
		}
		total, parts := 0.0, 0
		for _, p := range flatten(rm).points {
			if p.name == "dispytch.consumer.lag" && p.labels["messaging.destination.name"] == "orders.eu" {
				if p.labels["messaging.consumer.group.name"] != k.group || p.labels["messaging.system"] != "kafka" || p.labels["messaging.destination.partition.id"] == "" {
					t.Errorf("lag labels: %v", p.labels)
				}
				total += p.value
				parts++
			}
		}
		return total, parts
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		total, parts := lagTotal()
		if total == n && parts == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %v over %d partitions, want %d over 2", total, parts, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var rm metricdata.ResourceMetrics
	if err := tm.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if v, ok := flatten(rm).value("dispytch.connection.state", map[string]string{"dispytch.component": "orders", "dispytch.component.kind": "listener", "dispytch.state": "ready"}); !ok || v != 1 {
		t.Errorf("connection state ready = %v (%v)", v, ok)
	}
	let()
	deadline = time.Now().Add(20 * time.Second)
	for {
		if total, parts := lagTotal(); total == 0 && parts == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lag did not drain")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
