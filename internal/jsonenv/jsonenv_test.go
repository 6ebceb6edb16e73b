package jsonenv

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzCanonical: the fast path for the codec's own layout agrees with the
// general scan on everything it accepts.
func FuzzCanonical(f *testing.F) {
	f.Add([]byte(`{"id":"a","type":"b","body":{"x":[1,2]},"timestamp":1}`))
	f.Add([]byte(`{"id":"a","type":"b","body":[],"timestamp":1700000000000}`))
	f.Add([]byte(`{"id":"a","type":"b","body":{"x":"\\\"}"},"timestamp":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var env Envelope
		if utf8.Valid(data) && canonicalEnvelope(data, &env, nil) {
			var gen Envelope
			if err := scanEnvelope(data, &gen, nil); err != nil || gen.ID != env.ID || gen.Type != env.Type ||
				!bytes.Equal(gen.Body, env.Body) || gen.Timestamp != env.Timestamp {
				t.Fatalf("canonical %+v, general %+v (%v) for %q", env, gen, err, data)
			}
		}
	})
}

func TestParseTimestamp(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "7": 7, "1700000000000": 1700000000000, "999999999999999999": 999999999999999999,
		"9223372036854775807": 9223372036854775807, "-1": -1, "-9223372036854775808": -9223372036854775808,
		"1.5e3": 1500, "2E2": 200, "-0.5": 0,
	} {
		if got, err := parseTimestamp([]byte(in)); err != nil || got != want {
			t.Errorf("parseTimestamp(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1e400", "-1e400", "9223372036854775808e10", ""} {
		if _, err := parseTimestamp([]byte(in)); err == nil {
			t.Errorf("parseTimestamp(%q) accepted", in)
		}
	}
}

// What the emitter writes takes the canonical fast path; other layouts
// (Python's json.dumps puts spaces after the colons) take the general scan.
func TestCanonicalEnvelopeFastPath(t *testing.T) {
	value := Append(nil, "5b6e0c52-7f4c-4e0a-9d0e-1b2c3d4e5f60", "user_registered", []byte(`{"s":"x","m":null}`), 1700000000123)
	var env Envelope
	if !canonicalEnvelope(value, &env, nil) || env.Type != "user_registered" || env.Timestamp != 1700000000123 ||
		string(env.Body) != `{"s":"x","m":null}` {
		t.Fatalf("emitter output %s: %+v", value, env)
	}
	for _, other := range []string{
		`{"id": "a", "type": "b", "body": {}, "timestamp": 1}`,
		`{"id":"a","type":"b","body":{},"timestamp":-1}`,
		`{"id":"a","type":"b","body":{},"timestamp":1.5}`,
		`{"id":"a\u0041","type":"b","body":{},"timestamp":1}`,
		`{"id":"a","type":"b","body":"str","timestamp":1}`,
		`{"id":"a","type":"b","body":{},"timestamp":1} `,
		`{"id":"a","type":"b","body":{},"timestamp":01}`,
		`{"id":"a","type":"b","body":{},"timestamp":1234567890123456789}`,
	} {
		if canonicalEnvelope([]byte(other), &env, nil) {
			t.Errorf("fast path took %s", other)
		}
	}
}

// AppendString writes what json.Marshal writes, for every byte.
func TestAppendJSONStringMatchesMarshal(t *testing.T) {
	for c := range 256 {
		s := "a" + string([]byte{byte(c)}) + "b"
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("byte %#x: %s, want %s", c, got, want)
		}
	}
}
