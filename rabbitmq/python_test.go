package rabbitmq_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	vmsgpack "github.com/vmihailenco/msgpack/v5"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// The tests of the README's Python section: a peer shaped after what Python
// Dispytch (0.10) does on the wire with aio-pika, in both directions. The
// Go snippets of the README's Python section are fragments of this file
// (TestPythonInteropDocSnippets checks it).

// UserCreated is the event both sides share.
type UserCreated struct {
	UserID int    `json:"user_id"`
	Name   string `json:"name"`
}

func (UserCreated) Topic() string     { return "user_events" }
func (UserCreated) EventType() string { return "user_created" }

// pythonSide does what a Python Dispytch service and its aio-pika setup do.
type pythonSide struct {
	t        *testing.T
	ch       *amqp.Channel
	exchange string
}

// newPythonSide declares exchange as Python's docs do:
// channel.declare_exchange(name, type): not durable.
func newPythonSide(t *testing.T, ch *amqp.Channel, exchange, kind string) *pythonSide {
	if err := ch.ExchangeDeclare(exchange, kind, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	return &pythonSide{t: t, ch: ch, exchange: exchange}
}

// queue declares a plain queue (channel.declare_queue(name): not durable)
// bound to the exchange with key.
func (p *pythonSide) queue(e *env, name, key string) string {
	e.addQueue(name)
	if _, err := p.ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
		p.t.Fatal(err)
	}
	if err := p.ch.QueueBind(name, key, p.exchange, false, nil); err != nil {
		p.t.Fatal(err)
	}
	return name
}

// publish publishes as Python Dispytch does: routing key = the topic,
// delivery mode 1, no content type, a random hex message id unrelated to
// the event id, headers only when the event sets some.
func (p *pythonSide) publish(topic string, body []byte, headers amqp.Table) {
	p.t.Helper()
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	err := p.ch.PublishWithContext(context.Background(), p.exchange, topic, false, false, amqp.Publishing{
		DeliveryMode: amqp.Transient, MessageId: hex.EncodeToString(id), Headers: headers, Body: body,
	})
	if err != nil {
		p.t.Fatal(err)
	}
}

// field is one key of a body, in order.
type field struct {
	k string
	v any
}

// pyJSON writes an envelope as json.dumps does by default: ", " and ": "
// separators, non-ASCII as \uXXXX.
func pyJSON(id, typ string, body []field, ts int64) []byte {
	str := func(s string) string {
		var b strings.Builder
		b.WriteByte('"')
		for _, r := range s {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < 0x20 || r > 0x7e:
				fmt.Fprintf(&b, "\\u%04x", r)
			default:
				b.WriteRune(r)
			}
		}
		b.WriteByte('"')
		return b.String()
	}
	var parts []string
	for _, f := range body {
		v := fmt.Sprint(f.v)
		if s, ok := f.v.(string); ok {
			v = str(s)
		}
		parts = append(parts, str(f.k)+": "+v)
	}
	return []byte(`{"id": ` + str(id) + `, "type": ` + str(typ) + `, "body": {` + strings.Join(parts, ", ") +
		`}, "timestamp": ` + fmt.Sprint(ts) + `}`)
}

// pyMsgpack writes an envelope as Python's msgpack serializer does: a map
// of the four string keys, compact integers in the body, the timestamp a
// uint64 (0xcf).
func pyMsgpack(t *testing.T, id, typ string, body []field, ts int64) []byte {
	var buf bytes.Buffer
	enc := vmsgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(enc.EncodeMapLen(4))
	must(enc.EncodeString("id"))
	must(enc.EncodeString(id))
	must(enc.EncodeString("type"))
	must(enc.EncodeString(typ))
	must(enc.EncodeString("body"))
	must(enc.EncodeMapLen(len(body)))
	for _, f := range body {
		must(enc.EncodeString(f.k))
		must(enc.Encode(f.v))
	}
	must(enc.EncodeString("timestamp"))
	must(enc.EncodeUint64(uint64(ts)))
	b := buf.Bytes()
	if b[0] != 0x84 || !bytes.Contains(b, []byte{0xcf}) {
		t.Fatalf("not Python's msgpack layout: % x", b)
	}
	return b
}

// goListener is the Go side of "Python emits, Go listens": the exchange's
// name is all it needs; its group gets a queue of its own, bound to
// Python's exchange.
func goListener(ctx context.Context, url, exchange, group string, got chan<- dispytch.Event[UserCreated]) (*rabbitmq.Client, *dispytch.Listener, error) {
	client, err := rabbitmq.Dial(ctx, url, rabbitmq.Exchanges(exchange))
	if err != nil {
		return nil, nil, err
	}
	listener := dispytch.NewListener(client, dispytch.ConsumerGroup(group))
	listener.Handle("user_events", "user_created", func(ev dispytch.Event[UserCreated]) {
		got <- ev
	})
	return client, listener, nil
}

// TestPythonEmitsGoListens: a Python-shaped peer declares a direct,
// non-durable exchange and a queue of its own, and publishes a JSON and a
// msgpack envelope, transient, without a content type, with typed
// headers. A Go listener at its defaults but for the exchange's name gets
// both, headers as text; the Python queue gets both too.
func TestPythonEmitsGoListens(t *testing.T) {
	e := setup(t)
	py := newPythonSide(t, e.raw(), e.x, amqp.ExchangeDirect)
	pyQueue := py.queue(e, e.prefix+"-py-billing", "user_events")

	got := make(chan dispytch.Event[UserCreated], 2)
	group := e.group("go-billing")
	client, listener, err := goListener(ctxT(t, 10*time.Second), brokerURL(), e.x, group, got)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(context.Background()) })
	run(t, listener)

	ts := time.Now().UnixMilli()
	body := []field{{"user_id", 42}, {"name", "Zoë"}}
	py.publish("user_events", pyJSON("0b1d2c3e-0000-4000-8000-00000000000a", "user_created", body, ts),
		amqp.Table{"tenant": "acme", "attempt": int64(3), "urgent": true, "ratio": 0.5})
	py.publish("user_events", pyMsgpack(t, "0b1d2c3e-0000-4000-8000-00000000000b", "user_created", body, ts), nil)

	seen := map[string]dispytch.Event[UserCreated]{}
	for range 2 {
		select {
		case ev := <-got:
			seen[ev.ID] = ev
		case <-time.After(10 * time.Second):
			t.Fatalf("the Go listener got %d of 2", len(seen))
		}
	}
	for _, id := range []string{"0b1d2c3e-0000-4000-8000-00000000000a", "0b1d2c3e-0000-4000-8000-00000000000b"} {
		ev, ok := seen[id]
		if !ok {
			t.Fatalf("event %s missing: got %v", id, seen)
		}
		if ev.Body != (UserCreated{UserID: 42, Name: "Zoë"}) || ev.Timestamp.UnixMilli() != ts || ev.Topic != "user_events" {
			t.Errorf("event %s: %+v at %v on %q", id, ev.Body, ev.Timestamp, ev.Topic)
		}
	}
	h := seen["0b1d2c3e-0000-4000-8000-00000000000a"].Headers
	want := map[string]string{"tenant": "acme", "attempt": "3", "urgent": "true", "ratio": "0.5"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, h[k], v, h)
		}
	}
	if n := queueDepth(t, e.raw(), pyQueue); n != 2 {
		t.Errorf("the Python queue holds %d messages, want 2", n)
	}
}

// goEmitter is the Go side of "Go emits, Python listens": the exchange's
// name, and nothing is declared but what is already there.
func goEmitter(ctx context.Context, url, exchange string, useMsgpack bool) error {
	client, err := rabbitmq.Dial(ctx, url, rabbitmq.Exchanges(exchange))
	if err != nil {
		return err
	}
	defer client.Close(context.Background())
	emitter := dispytch.NewEmitter(client) // JSON, Python's default serializer
	if useMsgpack {
		emitter = dispytch.NewEmitter(client, dispytch.WithCodec(msgpack.Codec))
	}
	return emitter.Emit(ctx, UserCreated{UserID: 42, Name: "Zoë"})
}

// TestGoEmitsPythonListens: Go finds Python's existing direct, non-durable
// exchange and publishes to it, declaring nothing of its own; Python's
// queue gets envelopes that decode the way Python decodes them: exactly
// the keys id, type, body and timestamp (integer milliseconds), in JSON
// and in msgpack.
func TestGoEmitsPythonListens(t *testing.T) {
	e := setup(t)
	ch := e.raw()
	py := newPythonSide(t, ch, e.x, amqp.ExchangeDirect)
	pyQueue := py.queue(e, e.prefix+"-py-users", "user_events")
	before := time.Now().UnixMilli()
	for _, useMsgpack := range []bool{false, true} {
		if err := goEmitter(ctxT(t, 10*time.Second), brokerURL(), e.x, useMsgpack); err != nil {
			t.Fatal(err)
		}
		d, ok, err := ch.Get(pyQueue, true)
		if err != nil || !ok {
			t.Fatalf("Python's queue: %v %v", ok, err)
		}
		var env map[string]any
		if useMsgpack {
			if d.Body[0] != 0x84 {
				t.Errorf("msgpack envelope starts with %#x, want a 4-key fixmap", d.Body[0])
			}
			err = vmsgpack.Unmarshal(d.Body, &env)
		} else {
			err = json.Unmarshal(d.Body, &env)
		}
		if err != nil {
			t.Fatalf("envelope %q: %v", d.Body, err)
		}
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "body,id,timestamp,type" {
			t.Errorf("envelope keys %v", keys)
		}
		ts, _ := strconvNumber(env["timestamp"])
		if ts < before || ts > time.Now().UnixMilli() || env["type"] != "user_created" || d.RoutingKey != "user_events" {
			t.Errorf("envelope %v (routing key %q)", env, d.RoutingKey)
		}
		b, _ := env["body"].(map[string]any)
		if n, _ := strconvNumber(b["user_id"]); n != 42 || b["name"] != "Zoë" {
			t.Errorf("body %v", b)
		}
	}
	// Nothing incompatible was declared: the exchange is as Python made
	// it, and the producer made no dead-letter exchange.
	if err := e.raw().ExchangeDeclare(e.x, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		t.Errorf("Python's exchange changed: %v", err)
	}
	if err := e.raw().ExchangeDeclarePassive(e.x+".dlx", amqp.ExchangeDirect, true, false, false, false, nil); err == nil {
		t.Errorf("the emitter declared %s.dlx", e.x)
	}
}

// strconvNumber reads a decoded JSON or msgpack integer.
func strconvNumber(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	}
	return 0, false
}

// TestPythonTopicExchangePatterns: Python's dotted topics on a topic
// exchange (EventListener(topic_delimiter='.'), its queue bound with
// user.*.notification): a Go pattern handler gets Python's events with the
// segment, and Python's queue gets Go's.
func TestPythonTopicExchangePatterns(t *testing.T) {
	e := setup(t)
	ch := e.raw()
	py := newPythonSide(t, ch, e.x, amqp.ExchangeTopic)
	pyQueue := py.queue(e, e.prefix+"-py-notify", "user.*.notification")

	client := e.client(rabbitmq.Exchanges(e.x))
	got := make(chan string, 1)
	listener := dispytch.NewListener(client, dispytch.ConsumerGroup(e.group("go-notify")))
	listener.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[Notification]) {
		got <- ev.Segment("user_id") + ":" + ev.Body.Message
	})
	run(t, listener)

	py.publish("user.42.notification", pyJSON(backend.NewUUID(), "user_notification",
		[]field{{"user_id", 42}, {"message", "hello from Python"}}, time.Now().UnixMilli()), nil)
	select {
	case s := <-got:
		if s != "42:hello from Python" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Go listener did not get Python's event")
	}
	if err := dispytch.NewEmitter(client).Emit(ctxT(t, 10*time.Second), Notification{UserID: 7, Message: "hello from Go"}); err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get(pyQueue, true)
	for i := 0; err == nil && ok && d.RoutingKey != "user.7.notification" && i < 3; i++ {
		d, ok, err = ch.Get(pyQueue, true) // Python's own event came first
	}
	if err != nil || !ok || d.RoutingKey != "user.7.notification" {
		t.Fatalf("Python's queue: %v %v %q", ok, err, d.RoutingKey)
	}
}

// TestPythonInteropDocSnippets: every Go snippet of the README's section
// "Sharing topics with Python Dispytch", RabbitMQ part, is a fragment of
// this file, so that the README shows what the tests run.
func TestPythonInteropDocSnippets(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "## Sharing topics with Python Dispytch")
	if !ok {
		t.Fatal("the README has no section on sharing topics with Python Dispytch")
	}
	_, sec, _ = strings.Cut(sec, "### RabbitMQ")
	doc, _, _ := strings.Cut(sec, "\n### ")
	src, err := os.ReadFile("python_test.go")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return "\n" + strings.Join(out, "\n") + "\n"
	}
	code := norm(string(src))
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) < 3 {
		t.Fatalf("%d Go snippets in the README's Python section", len(blocks))
	}
	for _, b := range blocks {
		if !strings.Contains(code, norm(b[1])) {
			t.Errorf("this snippet of the README's Python section is not in python_test.go:\n%s", b[1])
		}
	}
}
