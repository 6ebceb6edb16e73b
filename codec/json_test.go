package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

type wireVector struct {
	Name     string          `json:"name"`
	Topic    string          `json:"topic"`
	Envelope json.RawMessage `json:"envelope"`
	JSON     string          `json:"json_b64"`
	Msgpack  string          `json:"msgpack_b64"`
}

func loadVectors(t testing.TB) []wireVector {
	t.Helper()
	b, err := os.ReadFile("../testdata/dispytch-wire-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []wireVector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

// generic decodes JSON with numbers kept exact, for comparisons.
func generic(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

func TestJSONWireVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			raw, err := base64.StdEncoding.DecodeString(v.JSON)
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				ID        string          `json:"id"`
				Type      string          `json:"type"`
				Body      json.RawMessage `json:"body"`
				Timestamp int64           `json:"timestamp"`
			}
			if err := json.Unmarshal(v.Envelope, &want); err != nil {
				t.Fatal(err)
			}
			var env Envelope
			if err := JSON.DecodeEnvelope(raw, &env); err != nil {
				t.Fatalf("decode: %v", err)
			}
			check := func(env Envelope) {
				t.Helper()
				if env.ID != want.ID || env.Type != want.Type || env.Timestamp != want.Timestamp {
					t.Fatalf("got %q %q %d, want %q %q %d", env.ID, env.Type, env.Timestamp, want.ID, want.Type, want.Timestamp)
				}
				if !reflect.DeepEqual(generic(t, env.Body), generic(t, want.Body)) {
					t.Fatalf("body %s, want %s", env.Body, want.Body)
				}
			}
			check(env)
			// Round trip: what we encode decodes to the same envelope, and
			// is the same JSON document as Python's.
			out, err := JSON.AppendEnvelope(nil, &env)
			if err != nil {
				t.Fatal(err)
			}
			var back Envelope
			if err := JSON.DecodeEnvelope(out, &back); err != nil {
				t.Fatalf("decode own output %s: %v", out, err)
			}
			check(back)
			if !reflect.DeepEqual(generic(t, out), generic(t, raw)) {
				t.Fatalf("re-encoded %s\nis not the same document as %s", out, raw)
			}
			// Keys in Python's order.
			if !strings.HasPrefix(string(out), `{"id":`) || !strings.Contains(string(out), `,"type":`) {
				t.Fatalf("key order: %s", out)
			}
		})
	}
}

// poisonPayloads are payloads that must fail envelope decoding.
var poisonPayloads = map[string][]byte{
	"garbage":          []byte("\x00\x01garbage\xff"),
	"empty":            nil,
	"not an object":    []byte(`[1,2,3]`),
	"missing id":       []byte(`{"type":"t","body":{},"timestamp":1}`),
	"missing type":     []byte(`{"id":"x","body":{},"timestamp":1}`),
	"missing body":     []byte(`{"id":"x","type":"t","timestamp":1}`),
	"missing ts":       []byte(`{"id":"x","type":"t","body":{}}`),
	"null body":        []byte(`{"id":"x","type":"t","body":null,"timestamp":1}`),
	"null id":          []byte(`{"id":null,"type":"t","body":{},"timestamp":1}`),
	"numeric type":     []byte(`{"id":"x","type":5,"body":{},"timestamp":1}`),
	"string timestamp": []byte(`{"id":"x","type":"t","body":{},"timestamp":"now"}`),
	"invalid utf8":     []byte("{\"id\":\"x\xff\",\"type\":\"t\",\"body\":{},\"timestamp\":1}"),
	"truncated":        []byte(`{"id":"x","type":"t","body":{"a":`),
	"trailing":         []byte(`{"id":"x","type":"t","body":{},"timestamp":1} x`),
	"bad escape":       []byte(`{"id":"\q","type":"t","body":{},"timestamp":1}`),
	"leading zero":     []byte(`{"id":"x","type":"t","body":{},"timestamp":01}`),
	"unclosed body":    []byte(`{"id":"x","type":"t","body":{"a":"}"`),
}

func TestJSONPoison(t *testing.T) {
	for name, p := range poisonPayloads {
		var env Envelope
		if err := JSON.DecodeEnvelope(p, &env); err == nil {
			t.Errorf("%s: decoded %q without error", name, p)
		}
	}
}

func TestJSONEnvelopeEdgeCases(t *testing.T) {
	var env Envelope
	in := []byte(" { \"timestamp\" : 1.7e12 , \"body\" : [ ] , \"type\" : \"a\\\"b\" , \"id\" : \"\\u00e9\" , \"extra\": {\"x\":[true,false,null]} } ")
	if err := JSON.DecodeEnvelope(in, &env); err != nil {
		t.Fatal(err)
	}
	if env.ID != "é" || env.Type != `a"b` || env.Timestamp != 1.7e12 || string(env.Body) != "[ ]" {
		t.Fatalf("%+v", env)
	}
	out, err := JSON.AppendEnvelope(nil, &Envelope{ID: "<&>", Type: "t\n", Body: []byte(`{}`), Timestamp: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(out) {
		t.Fatalf("invalid JSON %s", out)
	}
	if err := JSON.DecodeEnvelope(out, &env); err != nil || env.ID != "<&>" || env.Type != "t\n" {
		t.Fatalf("%v %+v", err, env)
	}
}

func TestJSONStrict(t *testing.T) {
	type body struct {
		A int `json:"a"`
	}
	var b body
	if err := JSON.Unmarshal([]byte(`{"a":1,"b":2}`), &b, false); err != nil || b.A != 1 {
		t.Fatal(err)
	}
	if err := JSON.Unmarshal([]byte(`{"a":1,"b":2}`), &b, true); err == nil {
		t.Fatal("strict decoding accepted an unknown field")
	}
}

// FuzzJSONEnvelope checks the hand-written envelope scanner against
// encoding/json: whatever it accepts must be valid JSON with the same id,
// type, body and timestamp.
func FuzzJSONEnvelope(f *testing.F) {
	for _, v := range loadVectors(f) {
		raw, _ := base64.StdEncoding.DecodeString(v.JSON)
		f.Add(raw)
	}
	for _, p := range poisonPayloads {
		f.Add(p)
	}
	f.Add([]byte(`{"id":"a","type":"b","body":{"x":[1,2,{"y":"\u0041"}]},"timestamp":-0.5e-3}`))
	// Quotes after runs of backslashes inside body strings.
	f.Add([]byte(`{"id":"a","type":"b","body":{"x":"\\","y":"\\\"}","z":"\"}"},"timestamp":1}`))
	f.Add([]byte(`{"id":"a","type":"b","body":["\\\\"],"timestamp":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var env Envelope
		if err := JSON.DecodeEnvelope(data, &env); err != nil {
			return
		}
		if !json.Valid(env.Body) {
			// Bodies are only delimited by the envelope scan; the
			// handler's decode rejects them.
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var ref map[string]json.RawMessage
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("accepted %q, encoding/json says %v", data, err)
		}
		var id, typ string
		if json.Unmarshal(ref["id"], &id) != nil || id != env.ID {
			t.Fatalf("id %q vs %s", env.ID, ref["id"])
		}
		if json.Unmarshal(ref["type"], &typ) != nil || typ != env.Type {
			t.Fatalf("type %q vs %s", env.Type, ref["type"])
		}
		if !bytes.Equal(bytes.TrimSpace(ref["body"]), bytes.TrimSpace(env.Body)) {
			t.Fatalf("body %q vs %q", env.Body, ref["body"])
		}
		out, err := JSON.AppendEnvelope(nil, &env)
		if err != nil {
			t.Fatal(err)
		}
		var back Envelope
		if err := JSON.DecodeEnvelope(out, &back); err != nil {
			t.Fatalf("own output %q: %v", out, err)
		}
		if back.ID != env.ID || back.Type != env.Type || back.Timestamp != env.Timestamp {
			t.Fatalf("round trip %+v vs %+v", back, env)
		}
	})
}

type spacedBody struct{}

func (spacedBody) Topic() string                { return "t" }
func (spacedBody) EventType() string            { return "spaced" }
func (spacedBody) MarshalJSON() ([]byte, error) { return []byte(`{ "a" : [1, 2] ,"b":"<&>" }`), nil }

type htmlBody struct {
	S string         `json:"s"`
	M map[string]int `json:"m"`
}

func (htmlBody) Topic() string     { return "t" }
func (htmlBody) EventType() string { return "html\u2028<type>" }

type badBody struct{ C chan int }

func (badBody) Topic() string     { return "t" }
func (badBody) EventType() string { return "bad" }

// AppendEvent writes the bytes of Marshal followed by AppendEnvelope.
func TestAppendEventMatchesGenericPath(t *testing.T) {
	ap := JSON.(EventAppender)
	for _, v := range []any{
		spacedBody{},
		htmlBody{S: "<script>&\u2028 \"q\" é", M: map[string]int{"z": 1, "a": 2}},
		htmlBody{S: strings.Repeat("x", 100<<10)}, // larger than the reused buffer limit
	} {
		for range 2 { // a fresh buffer, then a reused one
			got, err := ap.AppendEvent(nil, "id-1", "html\u2028<type>", 42, v)
			if err != nil {
				t.Fatal(err)
			}
			body, err := JSON.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			want, err := JSON.AppendEnvelope(nil, &Envelope{ID: "id-1", Type: "html\u2028<type>", Body: body, Timestamp: 42})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %s\nwant %s", v, got, want)
			}
		}
	}
	if _, err := ap.AppendEvent(nil, "id", "bad", 1, badBody{}); err == nil {
		t.Fatal("unencodable body encoded")
	}
	// The buffer is clean after a failure.
	got, _ := ap.AppendEvent(nil, "id", "spaced", 1, spacedBody{})
	if !bytes.HasPrefix(got, []byte(`{"id":"id","type":"spaced","body":{"a":[1,2],"b":"\u003c\u0026\u003e"}`)) {
		t.Fatalf("after a failure: %s", got)
	}
	// With a destination, the envelope is appended to it.
	got, _ = ap.AppendEvent([]byte("x"), "id", "spaced", 1, spacedBody{})
	if !bytes.HasPrefix(got, []byte(`x{"id":"id"`)) {
		t.Fatalf("appended: %s", got)
	}
}

func TestSniff(t *testing.T) {
	for in, want := range map[string]Format{
		`{"id":1}`: FormatJSON, " \n\t{": FormatJSON, "\x84\xa2id": FormatMsgpack, "\x80": FormatMsgpack,
		"\x8f": FormatMsgpack, "\xde\x00\x04": FormatMsgpack, "\xdf": FormatMsgpack, "": FormatUnknown,
		"[1]": FormatUnknown, "\x90": FormatUnknown, "garbage": FormatUnknown, "   ": FormatUnknown,
	} {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %d, want %d", in, got, want)
		}
	}
}

// FuzzSniff: Sniff never panics, and what it calls JSON starts with '{'
// after whitespace, what it calls msgpack with a map byte.
func FuzzSniff(f *testing.F) {
	for _, v := range loadVectors(f) {
		raw, _ := base64.StdEncoding.DecodeString(v.JSON)
		f.Add(raw)
		raw, _ = base64.StdEncoding.DecodeString(v.Msgpack)
		f.Add(raw)
	}
	f.Add([]byte(" \r\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		switch Sniff(data) {
		case FormatJSON:
			if bytes.TrimLeft(data, " \t\r\n")[0] != '{' {
				t.Fatalf("JSON: %q", data)
			}
		case FormatMsgpack:
			if c := data[0]; !(c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf) {
				t.Fatalf("msgpack: %q", data)
			}
		}
	})
}

// The envelope scan delimits bodies whose strings end in escaped
// backslashes or hold escaped quotes and braces.
func TestEnvelopeBodyEscapes(t *testing.T) {
	body := `{"x":"\\","y":"\\\"}","z":"\"}"}`
	var env Envelope
	if err := JSON.DecodeEnvelope([]byte(`{"id":"a","type":"b","body":`+body+`,"timestamp":1}`), &env); err != nil {
		t.Fatal(err)
	}
	if string(env.Body) != body {
		t.Fatalf("body %s", env.Body)
	}
	if err := JSON.DecodeEnvelope([]byte(`{"id":"a","type":"b","body":{"x":"\\\"}`), &env); err == nil {
		t.Fatal("accepted an unterminated body")
	}
}
