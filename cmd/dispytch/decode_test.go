package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
)

// TestDecodePythonWireVectors: tail and dlq show read what Python
// Dispytch writes, in JSON (its separators, no content type) and msgpack.
func TestDecodePythonWireVectors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "dispytch-wire-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Name     string
		Envelope struct {
			ID        string
			Type      string
			Body      json.RawMessage
			Timestamp int64
		}
		JSON    string `json:"json_b64"`
		Msgpack string `json:"msgpack_b64"`
	}
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vectors {
		for codecName, b64 := range map[string]string{"json": v.JSON, "msgpack": v.Msgpack} {
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatal(err)
			}
			d := decodeValue(raw, "") // Python names no content type
			if !d.envelope || d.problem != "" || d.id != v.Envelope.ID || d.typ != v.Envelope.Type || d.timestamp != v.Envelope.Timestamp || d.codec != codecName {
				t.Errorf("%s/%s: %+v", v.Name, codecName, d)
				continue
			}
			var got, want any
			if err := json.Unmarshal(d.body, &got); err != nil {
				t.Fatalf("%s/%s: body %s: %v", v.Name, codecName, d.body, err)
			}
			_ = json.Unmarshal(v.Envelope.Body, &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s/%s: body %s, want %s", v.Name, codecName, d.body, v.Envelope.Body)
			}
		}
	}
}

func TestDecodeNonEnvelopes(t *testing.T) {
	cases := []struct {
		in, body, problem string
	}{
		{`{"plain": 1}`, `{"plain": 1}`, "missing"},
		{"hello", `"hello"`, "not a Dispytch envelope"},
		{"\xff\x00", `"base64:/wA="`, "not a Dispytch envelope"},
	}
	for _, c := range cases {
		d := decodeValue([]byte(c.in), "")
		if d.envelope || string(d.body) != c.body || !strings.Contains(d.problem, c.problem) {
			t.Errorf("%q: %+v (body %s)", c.in, d, d.body)
		}
	}
}

func FuzzDecodeValue(f *testing.F) {
	for _, s := range []string{`{"id":"1","type":"t","body":{"a":1},"timestamp":1}`, `{"id": "1", "type": "t", "body": [1, 2], "timestamp": 2}`,
		"\x84\xa2id\xa11\xa4type\xa1t\xa4body\x80\xa9timestamp\x01", "{", "\x84", "", "\xde\x00\x04", `{"id":"","type":"","body":[A],"timestamp":0}`} {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "application/msgpack")
	}
	f.Fuzz(func(t *testing.T, value []byte, contentType string) {
		d := decodeValue(value, contentType)
		if !json.Valid(d.body) {
			t.Fatalf("body %q is not JSON", d.body)
		}
		if !d.envelope && d.problem == "" {
			t.Fatal("neither an envelope nor a reason")
		}
		line := textLine(&tailLine{Topic: "t", Body: d.body, Type: d.typ, ID: d.id, Problem: d.problem}, true)
		if strings.Contains(line, "\n") && !bytes.Contains(value, []byte("\n")) {
			t.Fatalf("a text line spans lines: %q", line)
		}
	})
}

func FuzzReadLines(f *testing.F) {
	for _, s := range []string{"{}\n[1]\n", "\n\n", "{\"a\":1}\nnot json\n", "1\r\n2\r\n", `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, err := readLines(bytes.NewReader(in), "input")
		if err != nil {
			if lines != nil || !strings.Contains(err.Error(), "nothing was sent") {
				t.Fatalf("an error with lines, or without saying nothing was sent: %v", err)
			}
			return
		}
		for _, l := range lines {
			if !json.Valid(l) {
				t.Fatalf("line %q is not JSON", l)
			}
		}
	})
}

func FuzzParseBrokerURL(f *testing.F) {
	for _, s := range []string{"kafka://a:9092,b:9093", "amqp://u:p@h:5672/v", "kafka://", "amqps://h", "kafka://@/", "x://[::1]:1/a?b#c", "//", "kafka://a,,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseBrokerURL(s)
		if err != nil {
			return
		}
		if u.Host == "" {
			t.Fatalf("%q parsed without a host", s)
		}
		if p, ok := u.User.Password(); ok && p != "" && strings.Contains(redact(u), ":"+p+"@") && p != "xxxxx" {
			t.Fatalf("redact(%q) shows the password: %s", s, redact(u))
		}
	})
}

// TestDecodeMessageFormats reads what each envelope format writes, as tail
// and dlq show it.
func TestDecodeMessageFormats(t *testing.T) {
	formats := []codec.EnvelopeFormat{codec.Headers, codec.CloudEvents(codec.CloudEventsBinary, ""), codec.CloudEvents(codec.CloudEventsStructured, "urn:x")}
	for _, f := range formats {
		for _, backendName := range []string{"kafka", "rabbitmq", "nats", "redis"} {
			for _, cd := range []codec.Codec{codec.JSON, msgpack.Codec} {
				body, err := cd.Marshal(map[string]any{"n": 7})
				if err != nil {
					t.Fatal(err)
				}
				fr := &codec.Frame{Topic: "jobs", Backend: backendName}
				if err := f.Encode(fr, &codec.Envelope{ID: "id-1", Type: "job", Body: body, Timestamp: 1700000000123}, cd); err != nil {
					t.Fatal(err)
				}
				d := decodeMessage(fr.Value, fr.ContentType, fr.Headers)
				if !d.envelope || d.problem != "" || d.id != "id-1" || d.typ != "job" || d.timestamp != 1700000000123 ||
					d.format != f.Name() || string(d.body) != `{"n":7}` {
					t.Errorf("%s on %s, %s body: %+v (body %s)", f.Name(), backendName, cd.ContentType(), d, d.body)
				}
			}
		}
	}
	// A Dispytch envelope is still one, with no format named.
	v, _ := codec.JSON.AppendEnvelope(nil, &codec.Envelope{ID: "a", Type: "b", Body: []byte(`{}`), Timestamp: 1})
	if d := decodeMessage(v, "", map[string]string{"x": "y"}); !d.envelope || d.format != "" || d.id != "a" {
		t.Errorf("dispytch envelope: %+v", d)
	}
	// A header-mode message missing its id says so.
	d := decodeMessage([]byte(`{}`), "application/json", map[string]string{"dispytch-timestamp": "1", "dispytch-event-type": "b"})
	if d.envelope || !strings.Contains(d.problem, "dispytch-event-id") || d.format != "headers" {
		t.Errorf("header mode without an id: %+v", d)
	}
}
