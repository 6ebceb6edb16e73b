package rabbitmq

import (
	"context"
	"encoding/binary"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

func TestHeadersRoundTrip(t *testing.T) {
	h := map[string]string{"tenant": "acme", "content-type": "application/json", "x": ""}
	tbl := headersToTable(h, []byte("k1"), amqp.Table{"n": int32(7), "tenant": "override"})
	if tbl["tenant"] != "override" || tbl[HeaderKey] != "k1" || tbl["n"] != int32(7) {
		t.Fatalf("table %v", tbl)
	}
	if _, ok := tbl["content-type"]; ok {
		t.Fatalf("content-type must become the property, not a header: %v", tbl)
	}
	if err := tbl.Validate(); err != nil {
		t.Fatal(err)
	}
	tbl["x-death"] = []any{amqp.Table{"queue": "q"}}
	tbl["when"] = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tbl["price"] = amqp.Decimal{Scale: 2, Value: -1234}
	tbl[HeaderRetry] = "1"
	back, key := headersFromTable(tbl, false)
	want := map[string]string{"tenant": "override", "x": "", "n": "7", "when": "2026-01-02T03:04:05Z", "price": "-12.34"}
	if !reflect.DeepEqual(back, want) || string(key) != "k1" {
		t.Fatalf("got %v key %q, want %v", back, key, want)
	}
	back, _ = headersFromTable(tbl, true)
	if back[HeaderRetry] != "1" {
		t.Fatalf("retry header dropped: %v", back)
	}
	if h, k := headersFromTable(nil, true); h != nil || k != nil {
		t.Fatal("empty table")
	}
	if headersToTable(nil, nil, nil) != nil {
		t.Fatal("no headers should give a nil table")
	}
}

func TestSniffContentType(t *testing.T) {
	for in, want := range map[string]string{
		` {"id":1}`: "application/json", "\x84\xa2id": "application/msgpack", "\xde\x00\x04": "application/msgpack",
		"[1]": "", "": "", "   ": "",
	} {
		if got := sniffContentType([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestFormatDecimal(t *testing.T) {
	for _, tc := range []struct {
		d    amqp.Decimal
		want string
	}{
		{amqp.Decimal{Scale: 0, Value: 5}, "5"},
		{amqp.Decimal{Scale: 3, Value: 5}, "0.005"},
		{amqp.Decimal{Scale: 1, Value: -5}, "-0.5"},
		{amqp.Decimal{Scale: 2, Value: 12345}, "123.45"},
	} {
		if got := formatDecimal(tc.d); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestDeaths(t *testing.T) {
	at := time.Unix(1700000000, 0)
	h := amqp.Table{"x-death": []any{
		amqp.Table{"queue": "g", "reason": "delivery_limit", "exchange": "x", "routing-keys": []any{"orders", 3}, "count": int64(2), "time": at},
		"garbage",
		amqp.Table{"queue": "g.retry.1s", "reason": "expired", "count": int32(1)},
	}}
	got := Deaths(h)
	want := []Death{
		{Queue: "g", Reason: "delivery_limit", Exchange: "x", RoutingKeys: []string{"orders"}, Count: 2, Time: at},
		{Queue: "g.retry.1s", Reason: "expired", Count: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if Deaths(amqp.Table{"x-death": "nope"}) != nil || Deaths(nil) != nil {
		t.Fatal("malformed x-death")
	}
}

func TestPlan(t *testing.T) {
	c, err := New("amqp://guest:guest@127.0.0.1:5672/", Exchanges("a", "b"), WithQueueType(Quorum), DeliveryLimit(3),
		RetryTiers(time.Second, 0, time.Minute), SingleActiveConsumer())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	p1, _ := topic.Parse("user.{id}.notification", ".")
	p2, _ := topic.Parse("audit.{rest...}", ".")
	p, err := c.plan(backend.Subscription{Group: "svc", Topics: []string{"orders"}, Patterns: []*topic.Pattern{p1, p2}, Delimiter: "."})
	if err != nil {
		t.Fatal(err)
	}
	wantB := []binding{{"a", "orders", ""}, {"a", "user.*.notification", "user.{id}.notification"}, {"a", "audit.#", "audit.{rest...}"},
		{"b", "orders", ""}, {"b", "user.*.notification", "user.{id}.notification"}, {"b", "audit.#", "audit.{rest...}"}}
	if !reflect.DeepEqual(p.bindings, wantB) {
		t.Errorf("bindings %v", p.bindings)
	}
	if p.queues[0] != "svc" || p.dlQueue != "svc.dlq" || p.dlRead || !p.quorum || p.orderingKey == "" {
		t.Errorf("plan %+v", p)
	}
	wantArgs := amqp.Table{"x-queue-type": "quorum", "x-dead-letter-exchange": "a.dlx", "x-dead-letter-routing-key": "svc.dlq",
		"x-delivery-limit": int64(3), "x-single-active-consumer": true}
	if !reflect.DeepEqual(p.args, wantArgs) {
		t.Errorf("args %v", p.args)
	}
	if want := []tier{{"svc.retry.1s", time.Second}, {"svc.retry.1m0s", time.Minute}}; !reflect.DeepEqual(p.tiers, want) {
		t.Errorf("tiers %v", p.tiers)
	}

	// A subscription of dead-letter topics reads the dead-letter queue itself.
	p, err = c.plan(backend.Subscription{Group: "dispytch-redrive", Topics: []string{"svc.dlq"}, Delimiter: "."})
	if err != nil || !p.dlRead || !reflect.DeepEqual(p.queues, []string{"svc.dlq"}) {
		t.Errorf("dead-letter read plan %+v %v", p, err)
	}
	// No group: an exclusive server-named classic queue, no tiers.
	p, err = c.plan(backend.Subscription{Topics: []string{"orders"}, Delimiter: "."})
	if err != nil || !p.serverNamed || p.quorum || len(p.tiers) != 0 || p.dlQueue != "dispytch.dlq" {
		t.Errorf("group-less plan %+v %v", p, err)
	}
	if _, ok := p.args["x-queue-type"]; ok {
		t.Errorf("a server-named queue cannot be quorum: %v", p.args)
	}
	// Patterns need AMQP's delimiter.
	p3, _ := topic.Parse("a:{x}", ":")
	if _, err := c.plan(backend.Subscription{Group: "g", Patterns: []*topic.Pattern{p3}, Delimiter: ":"}); err == nil {
		t.Error("a ':' pattern was accepted")
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New("amqp://x/", WithConfig(amqp.Config{Recovery: &amqp.Recovery{}})); err == nil {
		t.Error("amqp091 recovery accepted")
	}
	if _, err := New("http://nope"); err == nil {
		t.Error("bad URL accepted")
	}
	if _, err := New("amqp://x/", Exchanges("amq.topic")); err == nil {
		t.Error("declaring amq.topic accepted")
	}
	if _, err := New("amqp://x/", Exchanges("amq.topic"), DeclareTopology(false)); err != nil {
		t.Error(err)
	}
}

func TestIsChannelException(t *testing.T) {
	if !isChannelException(&amqp.Error{Code: amqp.NotFound, Server: true}) {
		t.Error("404 from the server")
	}
	if isChannelException(&amqp.Error{Code: amqp.ConnectionForced, Server: true}) {
		t.Error("320 is a connection loss")
	}
	if isChannelException(amqp.ErrClosed) {
		t.Error("client-side closed")
	}
}

// fuzzValue turns fuzz bytes into an AMQP field value of some type,
// returning the rest.
func fuzzValue(b []byte, depth int) (any, []byte) {
	if len(b) == 0 {
		return nil, b
	}
	kind, b := b[0]%14, b[1:]
	take := func(n int) []byte {
		n = min(n, len(b))
		v := b[:n]
		b = b[n:]
		return v
	}
	u64 := func() uint64 {
		var buf [8]byte
		copy(buf[:], take(8))
		return binary.LittleEndian.Uint64(buf[:])
	}
	switch kind {
	case 0:
		n := 0
		if len(b) > 0 {
			n = int(b[0] % 16)
			b = b[1:]
		}
		return string(take(n)), b
	case 1:
		return take(4), b
	case 2:
		return u64()%2 == 0, b
	case 3:
		return int8(u64()), b
	case 4:
		return int16(u64()), b
	case 5:
		return int32(u64()), b
	case 6:
		return int64(u64()), b
	case 7:
		return float64(u64()) / 3, b
	case 8:
		return time.Unix(int64(u64()%4e9), 0), b
	case 9:
		return amqp.Decimal{Scale: uint8(u64()), Value: int32(u64())}, b
	case 10:
		return uint16(u64()), b
	case 11, 12:
		if depth > 3 {
			return nil, b
		}
		n := 0
		if len(b) > 0 {
			n = int(b[0] % 4)
			b = b[1:]
		}
		if kind == 11 {
			var arr []any
			for range n {
				var v any
				v, b = fuzzValue(b, depth+1)
				arr = append(arr, v)
			}
			return arr, b
		}
		t := amqp.Table{}
		for _, k := range []string{"queue", "reason", "count", "routing-keys"}[:n] {
			var v any
			v, b = fuzzValue(b, depth+1)
			t[k] = v
		}
		return t, b
	}
	return float32(u64()), b
}

func fuzzTable(data []byte) amqp.Table {
	t := amqp.Table{}
	keys := []string{HeaderKey, HeaderRetry, HeaderRetryTopic, "x-death", "a", "b", "x-delivery-count"}
	for i := 0; len(data) > 0 && i < 16; i++ {
		k := keys[int(data[0])%len(keys)]
		var v any
		v, data = fuzzValue(data[1:], 0)
		t[k] = v
	}
	return t
}

// FuzzHeadersFromTable: any header table converts without panicking, every
// scalar value survives as text, and the key header never leaks.
func FuzzHeadersFromTable(f *testing.F) {
	f.Add([]byte{0, 0, 3, 'a', 'b', 'c', 4, 5, 1, 2, 3, 4})
	f.Add([]byte{3, 11, 3, 12, 2, 0, 1, 'q', 0, 2, 'x', 'y'})
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl := fuzzTable(data)
		for _, keep := range []bool{false, true} {
			h, key := headersFromTable(tbl, keep)
			if _, ok := h[HeaderKey]; ok {
				t.Fatalf("key header leaked: %v", h)
			}
			if s, ok := tbl[HeaderKey].(string); ok && string(key) != s {
				t.Fatalf("key %q, want %q", key, s)
			}
			for k, v := range tbl {
				if k == HeaderKey || (!keep && (k == HeaderRetry || k == HeaderRetryTopic)) {
					continue
				}
				if s, ok := formatHeader(v); ok && h[k] != s {
					t.Fatalf("header %q = %q, want %q", k, h[k], s)
				}
			}
			back := headersToTable(h, key, nil)
			if err := back.Validate(); err != nil {
				t.Fatalf("converted headers are not a valid table: %v", err)
			}
		}
	})
}

// FuzzDeaths: any x-death value parses without panicking, into exactly one
// entry per table in the array, with the table's string fields.
func FuzzDeaths(f *testing.F) {
	f.Add([]byte{3, 11, 3, 12, 4, 0, 1, 'q', 0, 7, 'e', 'x', 'p', 'i', 'r', 'e', 'd', 6, 1, 0, 0, 0, 0, 0, 0, 0, 11, 1, 0, 1, 'k'})
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl := fuzzTable(data)
		ds := Deaths(tbl)
		arr, _ := tbl["x-death"].([]any)
		var tables []amqp.Table
		for _, e := range arr {
			if et, ok := e.(amqp.Table); ok {
				tables = append(tables, et)
			}
		}
		if len(ds) != len(tables) {
			t.Fatalf("%d deaths from %d tables", len(ds), len(tables))
		}
		for i, d := range ds {
			if q, _ := tables[i]["queue"].(string); d.Queue != q {
				t.Fatalf("death %d: queue %q, want %q", i, d.Queue, q)
			}
		}
	})
}
