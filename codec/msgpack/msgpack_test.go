package msgpack_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	vm "github.com/vmihailenco/msgpack/v5"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/dispytchtest"
)

type vector struct {
	Name     string          `json:"name"`
	Envelope json.RawMessage `json:"envelope"`
	Msgpack  string          `json:"msgpack_b64"`
}

func vectors(t testing.TB) []vector {
	b, err := os.ReadFile("../../testdata/dispytch-wire-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// normalize makes decoded msgpack and JSON comparable: numbers as strings
// of their value.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case json.Number:
		return x.String()
	case int8, int16, int32, int64, uint8, uint16, uint32, uint64, int, uint:
		b, _ := json.Marshal(x)
		return string(b)
	case float64:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return v
}

func TestWireVectors(t *testing.T) {
	for _, v := range vectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			raw, _ := base64.StdEncoding.DecodeString(v.Msgpack)
			d := json.NewDecoder(bytes.NewReader(v.Envelope))
			d.UseNumber()
			var want map[string]any
			if err := d.Decode(&want); err != nil {
				t.Fatal(err)
			}
			check := func(data []byte) {
				t.Helper()
				var env codec.Envelope
				if err := msgpack.Codec.DecodeEnvelope(data, &env); err != nil {
					t.Fatal(err)
				}
				if env.ID != want["id"] || env.Type != want["type"] || json.Number(fmtInt(env.Timestamp)) != want["timestamp"] {
					t.Fatalf("%+v vs %v", env, want)
				}
				var body any
				if err := msgpack.Codec.Unmarshal(env.Body, &body, false); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(normalize(body), normalize(want["body"])) {
					t.Fatalf("body %v\nwant %v", normalize(body), normalize(want["body"]))
				}
			}
			check(raw)
			var env codec.Envelope
			if err := msgpack.Codec.DecodeEnvelope(raw, &env); err != nil {
				t.Fatal(err)
			}
			out, err := msgpack.Codec.AppendEnvelope(nil, &env)
			if err != nil {
				t.Fatal(err)
			}
			check(out)
			// Python's bytes, key order and all.
			if !bytes.Equal(out, raw) {
				t.Logf("note: re-encoded bytes differ from Python's (%d vs %d bytes)", len(out), len(raw))
			}
		})
	}
}

func fmtInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestPoison(t *testing.T) {
	bad := [][]byte{
		nil, {0xc1}, []byte("{}"),
		mustMarshal(t, map[string]any{"id": "x", "type": "t", "body": map[string]any{}}),
		mustMarshal(t, map[string]any{"id": "x", "type": "t", "body": nil, "timestamp": 1}),
		mustMarshal(t, map[string]any{"id": 5, "type": "t", "body": map[string]any{}, "timestamp": 1}),
		append(mustMarshal(t, map[string]any{"id": "x", "type": "t", "body": map[string]any{}, "timestamp": 1}), 0x01),
	}
	for i, b := range bad {
		var env codec.Envelope
		if err := msgpack.Codec.DecodeEnvelope(b, &env); err == nil {
			t.Errorf("%d: %x decoded", i, b)
		}
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	b, err := vm.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type Order struct {
	Customer string  `json:"customer" validate:"required"`
	Total    float64 `json:"total"`
	Big      int64   `json:"big"`
}

func (Order) Topic() string     { return "orders" }
func (Order) EventType() string { return "order_placed" }

func TestEndToEndWithListener(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Codecs(msgpack.Codec))
	kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(msgpack.Codec))
	got := make(chan Order, 1)
	var raw json.RawMessage
	kit.Listener.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Body })
	kit.Listener.Handle("orders", "order_placed", func(ev dispytch.Event[json.RawMessage]) { raw = ev.Body }, dispytch.Name("raw"))
	kit.Listener.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) {}, dispytch.Name("strict"), dispytch.Strict())
	kit.Start()
	want := Order{Customer: "Jöhn 🚀", Total: 19.99, Big: 9007199254740993}
	if s := kit.Wait(kit.Emit(want)); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s.Failures[0].Err)
	}
	select {
	case o := <-got:
		if o != want {
			t.Fatalf("%+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not handled")
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m["customer"] != "Jöhn 🚀" {
		t.Fatalf("%s %v", raw, err)
	}
	// Strict decoding rejects unknown fields in msgpack too.
	body := mustMarshal(t, map[string]any{"customer": "x", "extra": 1})
	env, _ := msgpack.Codec.AppendEnvelope(nil, &codec.Envelope{ID: "1", Type: "order_placed", Body: body, Timestamp: 1})
	kit.Publish("orders", env, nil)
	s := kit.WaitFor("strict", func(s dispytch.Settlement) bool { return s.ID == "1" })
	if s.Outcome != dispytch.OutcomeDeadLettered || len(s.Failures) != 1 || s.Failures[0].Handler != "strict" {
		t.Fatalf("%+v", s)
	}
	_ = context.Background
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, v := range vectors(f) {
		raw, _ := base64.StdEncoding.DecodeString(v.Msgpack)
		f.Add(raw)
	}
	f.Add([]byte{0x80})
	f.Add([]byte{0x84, 0xa2, 'i', 'd'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var env codec.Envelope
		if err := msgpack.Codec.DecodeEnvelope(data, &env); err != nil {
			return
		}
		out, err := msgpack.Codec.AppendEnvelope(nil, &env)
		if err != nil {
			t.Fatal(err)
		}
		var back codec.Envelope
		if err := msgpack.Codec.DecodeEnvelope(out, &back); err != nil {
			t.Fatalf("own output: %v", err)
		}
		if back.ID != env.ID || back.Type != env.Type || back.Timestamp != env.Timestamp || !bytes.Equal(back.Body, env.Body) {
			t.Fatalf("round trip %+v vs %+v", back, env)
		}
	})
}
