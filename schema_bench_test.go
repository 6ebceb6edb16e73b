package dispytch_test

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/avro"
	"github.com/dispytch/dispytch-go/codec/protobuf"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/internal/testpb"
	"github.com/dispytch/dispytch-go/memory"
)

// Body codecs compared (#13): the benchmark's user event as JSON in the
// Dispytch envelope (the default), as Avro and as Protobuf in header mode,
// and as Avro and Protobuf in the Confluent registry's framing (with the
// in-process registry; every event a cache hit).

// SchemaEvent is the benchmark body without validate tags, for every codec.
type SchemaEvent PlainEvent

func (SchemaEvent) Topic() string     { return "user_events" }
func (SchemaEvent) EventType() string { return "user_registered" }

var schemaEvent = SchemaEvent{
	User:      PlainUser{ID: benchEvent.User.ID, Email: benchEvent.User.Email, Name: benchEvent.User.Name},
	Timestamp: benchEvent.Timestamp,
}

var pbEvent = &testpb.UserRegistered{
	User:      &testpb.User{Id: benchEvent.User.ID, Email: benchEvent.User.Email, Name: benchEvent.User.Name},
	Timestamp: benchEvent.Timestamp,
}

// schemaCase is one codec: how to emit, how to listen, the event.
type schemaCase struct {
	name   string
	event  dispytch.Eventer
	emit   []dispytch.EmitterOption
	listen []dispytch.ListenerOption
	handle func(l *dispytch.Listener, n *atomic.Int64)
}

func schemaCases(tb testing.TB) []schemaCase {
	av, err := avro.New()
	if err != nil {
		tb.Fatal(err)
	}
	srv := registrytest.New()
	tb.Cleanup(srv.Close)
	reg, err := registry.New(registry.URLs(srv.URL))
	if err != nil {
		tb.Fatal(err)
	}
	rav := registry.Avro(reg, registry.RegisterOnEmit())
	rpb := registry.Protobuf(reg, registry.RegisterOnEmit(), registry.Subjects(registry.SubjectRecordName))
	hm := dispytch.Envelopes(codec.Headers)
	plain := func(l *dispytch.Listener, n *atomic.Int64) {
		l.Handle("user_events", "user_registered", func(ev dispytch.Event[SchemaEvent]) error { n.Add(1); return nil })
	}
	pb := func(l *dispytch.Listener, n *atomic.Int64) {
		l.Handle("user_events", "user_registered", func(ev dispytch.Event[*testpb.UserRegistered]) error { n.Add(1); return nil })
	}
	return []schemaCase{
		{"json", schemaEvent, nil, nil, plain},
		{"avro", schemaEvent, []dispytch.EmitterOption{dispytch.WithCodec(av), hm}, []dispytch.ListenerOption{dispytch.Codecs(av), hm}, plain},
		{"protobuf", pbEvent, []dispytch.EmitterOption{dispytch.WithCodec(protobuf.Codec), hm}, []dispytch.ListenerOption{dispytch.Codecs(protobuf.Codec), hm}, pb},
		{"registry-avro", schemaEvent, []dispytch.EmitterOption{dispytch.WithCodec(rav), hm}, []dispytch.ListenerOption{dispytch.Codecs(rav), hm}, plain},
		{"registry-protobuf", pbEvent, []dispytch.EmitterOption{dispytch.WithCodec(rpb), hm}, []dispytch.ListenerOption{dispytch.Codecs(rpb), hm}, pb},
	}
}

// runSchemaEmit times n emits up to the producer: the emitter encodes each
// event into the message a producer gets (Emitter.Message), and no broker
// is involved, so that only the codec's side of emitting is compared.
func runSchemaEmit(tb testing.TB, c schemaCase, n int) time.Duration {
	broker := memory.New()
	defer broker.Close(context.Background())
	e := dispytch.NewEmitter(broker, c.emit...)
	if _, err := e.Message(c.event); err != nil { // registers the schema
		tb.Fatal(err)
	}
	start := time.Now()
	for range n {
		if _, err := e.Message(c.event); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}

// schemaFeeder replays one pre-encoded message, with its headers and
// content type, n times.
type schemaFeeder struct {
	feeder
	m *backend.Message
}

func (f *schemaFeeder) Consume(ctx context.Context, sub backend.Subscription, in backend.Inbox) error {
	f.acks.Add(f.n) // before Ready, after which the runner waits for the acks
	in.Ready()
	ack := nopAcker{&f.acks}
	for range f.n {
		d := &backend.Delivery{Topic: f.m.Topic, Value: f.m.Value, Headers: f.m.Headers, ContentType: f.m.ContentType, Acker: ack}
		if err := in.Deliver(ctx, d); err != nil {
			return err
		}
	}
	<-in.Done()
	return nil
}

// runSchemaHandle times decode → route → handler → ack of n pre-encoded
// messages.
func runSchemaHandle(tb testing.TB, c schemaCase, n int) time.Duration {
	m, err := dispytch.NewEmitter(memory.New(), c.emit...).Message(c.event)
	if err != nil {
		tb.Fatal(err)
	}
	f := &schemaFeeder{feeder: feeder{n: n}, m: m}
	var handled atomic.Int64
	l := dispytch.NewListener(f, append([]dispytch.ListenerOption{dispytch.WithLogger(benchLog()), dispytch.Concurrency(runtime.GOMAXPROCS(0))}, c.listen...)...)
	c.handle(l, &handled)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	f.acks.Wait()
	d := time.Since(start)
	cancel()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	if handled.Load() != int64(n) {
		tb.Fatalf("%s: handled %d of %d (%v)", c.name, handled.Load(), n, l.Stats())
	}
	return d
}

// BenchmarkSchemas runs emit (encode into a message) and handle (decode,
// route, handler, ack) for each body codec in alternating rounds
// (DISPYTCH_BENCH_ROUNDS, default 5) of b.N events, and reports median rates
// and their ratios to JSON's.
//
//	go test -run '^$' -bench Schemas -benchtime 100000x -cpu 1 .
func BenchmarkSchemas(b *testing.B) {
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("DISPYTCH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if b.N == 1 {
		rounds = 1
	}
	cases := schemaCases(b)
	b.StopTimer()
	emit, handle := map[string][]float64{}, map[string][]float64{}
	for range rounds {
		for _, c := range cases {
			runtime.GC()
			emit[c.name] = append(emit[c.name], float64(b.N)/runSchemaEmit(b, c, b.N).Seconds())
			runtime.GC()
			handle[c.name] = append(handle[c.name], float64(b.N)/runSchemaHandle(b, c, b.N).Seconds())
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for _, c := range cases {
		b.ReportMetric(med(emit[c.name]), c.name+"-emit/s")
		b.ReportMetric(med(handle[c.name]), c.name+"-handle/s")
		if c.name != "json" {
			var re, rh []float64
			for i := range emit[c.name] {
				re = append(re, emit[c.name][i]/emit["json"][i])
				rh = append(rh, handle[c.name][i]/handle["json"][i])
			}
			b.ReportMetric(med(re), c.name+"-emit/json")
			b.ReportMetric(med(rh), c.name+"-handle/json")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// TestSchemaBenchCases runs each benchmark case once, so that they cannot
// rot.
func TestSchemaBenchCases(t *testing.T) {
	for _, c := range schemaCases(t) {
		runSchemaEmit(t, c, 10)
		runSchemaHandle(t, c, 10)
	}
}
