package codec

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// binCodec is a codec of opaque bodies with a non-JSON content type, as
// Avro and Protobuf are.
type binCodec struct{}

func (binCodec) ContentType() string                        { return "application/x-test" }
func (binCodec) Marshal(v any) ([]byte, error)              { return v.([]byte), nil }
func (binCodec) Unmarshal(data []byte, v any, _ bool) error { *v.(*[]byte) = data; return nil }
func (binCodec) AppendEnvelope([]byte, *Envelope) ([]byte, error) {
	return nil, errors.New("no envelope")
}
func (binCodec) DecodeEnvelope([]byte, *Envelope) error { return errors.New("no envelope") }

func lookupOf(cs ...Codec) Lookup {
	return func(ct string) Codec {
		if i := strings.IndexByte(ct, ';'); i >= 0 {
			ct = ct[:i]
		}
		for _, c := range cs {
			if c.ContentType() == ct {
				return c
			}
		}
		return nil
	}
}

var allFormats = []EnvelopeFormat{
	Headers,
	CloudEvents(CloudEventsBinary, "urn:test"),
	CloudEvents(CloudEventsStructured, "urn:test"),
}

func TestFormatsRoundTrip(t *testing.T) {
	lookup := lookupOf(JSON, binCodec{})
	bodies := []struct {
		c    Codec
		body []byte
	}{
		{JSON, []byte(`{"user":{"id":"u1"},"n":1}`)},
		{binCodec{}, []byte{0, 0, 0, 0, 7, 2, 'h', 'i', 0xff}},
	}
	for _, f := range allFormats {
		for _, backend := range []string{"kafka", "rabbitmq", "memory"} {
			for _, b := range bodies {
				t.Run(f.Name()+"/"+backend+"/"+b.c.ContentType(), func(t *testing.T) {
					in := Envelope{ID: "id-1", Type: "user_registered", Body: b.body, Timestamp: 1700000000123}
					fr := Frame{Topic: "user_events", Backend: backend, Headers: map[string]string{"x-mine": "kept"}}
					if err := f.Encode(&fr, &in, b.c); err != nil {
						t.Fatal(err)
					}
					if fr.Headers["x-mine"] != "kept" {
						t.Fatalf("the caller's header is gone: %v", fr.Headers)
					}
					// Only this format claims the frame among the others.
					for _, g := range allFormats {
						if got := g.Match(&fr); got != (g.Name() == f.Name()) {
							t.Fatalf("%s.Match = %v on a %s frame (headers %v, content type %q)", g.Name(), got, f.Name(), fr.Headers, fr.ContentType)
						}
					}
					// What the receiving side sees: no backend.
					recv := Frame{Topic: fr.Topic, Value: fr.Value, Headers: fr.Headers, ContentType: fr.ContentType}
					var out Envelope
					c, err := f.Decode(&recv, &out, lookup)
					if err != nil {
						t.Fatal(err)
					}
					if c.ContentType() != b.c.ContentType() {
						t.Fatalf("body codec %q, want %q", c.ContentType(), b.c.ContentType())
					}
					if out.ID != in.ID || out.Type != in.Type || out.Timestamp != in.Timestamp || string(out.Body) != string(in.Body) {
						t.Fatalf("decoded %+v, want %+v", out, in)
					}
				})
			}
		}
	}
}

func TestHeaderModeLayout(t *testing.T) {
	fr := Frame{Topic: "t"}
	if err := Headers.Encode(&fr, &Envelope{ID: "a", Type: "b", Body: []byte(`{}`), Timestamp: 42}, JSON); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{HeaderEventID: "a", HeaderEventType: "b", HeaderTimestamp: "42"}
	for k, v := range want {
		if fr.Headers[k] != v {
			t.Fatalf("header %s = %q, want %q (all: %v)", k, fr.Headers[k], v, fr.Headers)
		}
	}
	if string(fr.Value) != `{}` || fr.ContentType != "application/json" {
		t.Fatalf("value %q, content type %q", fr.Value, fr.ContentType)
	}
}

func TestCloudEventsBinaryPrefixes(t *testing.T) {
	for backend, prefix := range map[string]string{"kafka": "ce_", "rabbitmq": "cloudEvents_", "memory": "ce_"} {
		fr := Frame{Topic: "orders", Backend: backend}
		if err := CloudEvents(CloudEventsBinary, "").Encode(&fr, &Envelope{ID: "1", Type: "order_placed", Body: []byte(`{}`), Timestamp: 0}, JSON); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"specversion": "1.0", "id": "1", "type": "order_placed",
			"source": "/dispytch/orders", "time": "1970-01-01T00:00:00Z",
		}
		for a, v := range want {
			if got := fr.Headers[prefix+a]; got != v {
				t.Errorf("%s: %s%s = %q, want %q (all: %v)", backend, prefix, a, got, v, fr.Headers)
			}
		}
		if fr.ContentType != "application/json" {
			t.Errorf("%s: datacontenttype %q", backend, fr.ContentType)
		}
	}
	// The AMQP binding's older prefix is read too.
	fr := Frame{Value: []byte(`{}`), ContentType: "application/json", Headers: map[string]string{
		"cloudEvents:specversion": "1.0", "cloudEvents:id": "x", "cloudEvents:source": "s", "cloudEvents:type": "t",
	}}
	var e Envelope
	if _, err := CloudEvents(CloudEventsBinary, "").Decode(&fr, &e, lookupOf(JSON)); err != nil || e.ID != "x" || e.Type != "t" || e.Timestamp != 0 {
		t.Fatalf("decode: %v, %+v", err, e)
	}
}

func TestCloudEventsStructuredLayout(t *testing.T) {
	fr := Frame{Topic: "orders"}
	f := CloudEvents(CloudEventsStructured, "urn:shop")
	if err := f.Encode(&fr, &Envelope{ID: "1", Type: "t", Body: []byte(`{"a":1}`), Timestamp: 1500}, JSON); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(fr.Value, &got); err != nil {
		t.Fatal(err)
	}
	if got["data"].(map[string]any)["a"].(float64) != 1 || got["source"] != "urn:shop" || got["time"] != "1970-01-01T00:00:01.5Z" ||
		got["datacontenttype"] != "application/json" || fr.ContentType != ContentTypeCloudEvents {
		t.Fatalf("structured event %s, content type %q", fr.Value, fr.ContentType)
	}
	// A binary body goes in data_base64.
	fr = Frame{Topic: "orders"}
	if err := f.Encode(&fr, &Envelope{ID: "1", Type: "t", Body: []byte{0, 1, 2}, Timestamp: 1}, binCodec{}); err != nil {
		t.Fatal(err)
	}
	got = nil
	_ = json.Unmarshal(fr.Value, &got)
	if got["data_base64"] != base64.StdEncoding.EncodeToString([]byte{0, 1, 2}) || got["data"] != nil {
		t.Fatalf("binary body: %s", fr.Value)
	}
}

func TestFormatErrors(t *testing.T) {
	lookup := lookupOf(JSON)
	cases := []struct {
		name string
		f    EnvelopeFormat
		fr   Frame
		want string
	}{
		{"header no id", Headers, Frame{Value: []byte(`{}`), Headers: map[string]string{HeaderEventType: "t", HeaderTimestamp: "1"}}, "dispytch-event-id"},
		{"header no type", Headers, Frame{Value: []byte(`{}`), Headers: map[string]string{HeaderEventID: "i", HeaderTimestamp: "1"}}, "dispytch-event-type"},
		{"header bad ts", Headers, Frame{Value: []byte(`{}`), Headers: map[string]string{HeaderEventID: "i", HeaderEventType: "t", HeaderTimestamp: "soon"}}, "dispytch-timestamp"},
		{"header unknown type", Headers, Frame{Value: []byte(`x`), ContentType: "application/avro", Headers: map[string]string{HeaderEventID: "i", HeaderEventType: "t", HeaderTimestamp: "1"}}, `no codec for content type "application/avro"`},
		{"header unsniffable", Headers, Frame{Value: []byte(`x`), Headers: map[string]string{HeaderEventID: "i", HeaderEventType: "t", HeaderTimestamp: "1"}}, "neither JSON nor msgpack"},
		{"ce version", CloudEvents(CloudEventsBinary, ""), Frame{Value: []byte(`{}`), Headers: map[string]string{"ce_specversion": "0.3", "ce_id": "i", "ce_source": "s", "ce_type": "t"}}, "specversion"},
		{"ce no source", CloudEvents(CloudEventsBinary, ""), Frame{Value: []byte(`{}`), Headers: map[string]string{"ce_specversion": "1.0", "ce_id": "i", "ce_type": "t"}}, "source"},
		{"ce bad time", CloudEvents(CloudEventsBinary, ""), Frame{Value: []byte(`{}`), Headers: map[string]string{"ce_specversion": "1.0", "ce_id": "i", "ce_source": "s", "ce_type": "t", "ce_time": "yesterday"}}, "RFC 3339"},
		{"structured not json", CloudEvents(CloudEventsStructured, ""), Frame{Value: []byte(`{`), ContentType: ContentTypeCloudEvents}, "cloudevents structured"},
		{"structured no data", CloudEvents(CloudEventsStructured, ""), Frame{Value: []byte(`{"specversion":"1.0","id":"i","source":"s","type":"t"}`)}, "no data"},
		{"structured bad base64", CloudEvents(CloudEventsStructured, ""), Frame{Value: []byte(`{"specversion":"1.0","id":"i","source":"s","type":"t","data_base64":"!!"}`)}, "data_base64"},
		{"structured no id", CloudEvents(CloudEventsStructured, ""), Frame{Value: []byte(`{"specversion":"1.0","source":"s","type":"t","data":{}}`)}, "id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var e Envelope
			_, err := c.f.Decode(&c.fr, &e, lookup)
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrFormat mentioning %q", err, c.want)
			}
		})
	}
}

func TestSchemaError(t *testing.T) {
	cause := errors.New("not an email")
	err := error(&SchemaError{Schema: "User", Field: "user.email", Err: cause})
	if !errors.Is(err, ErrSchema) || !errors.Is(err, cause) || !strings.Contains(err.Error(), `"user.email"`) {
		t.Fatalf("%v", err)
	}
}

// FuzzFormatsDecode: no format's Decode panics on any frame, and what one
// decodes has an id and a type.
func FuzzFormatsDecode(f *testing.F) {
	for _, fm := range allFormats {
		for _, b := range []string{"kafka", "rabbitmq"} {
			fr := Frame{Topic: "t", Backend: b}
			_ = fm.Encode(&fr, &Envelope{ID: "i", Type: "t", Body: []byte(`{"a":[1]}`), Timestamp: 5}, JSON)
			var hk, hv []string
			for k, v := range fr.Headers {
				hk, hv = append(hk, k), append(hv, v)
			}
			f.Add(fr.Value, fr.ContentType, strings.Join(hk, "\n"), strings.Join(hv, "\n"))
		}
	}
	f.Add([]byte(`{"specversion":"1.0","id":"i","source":"s","type":"t","data_base64":"AAE="}`), ContentTypeCloudEvents, "", "")
	lookup := lookupOf(JSON, binCodec{})
	f.Fuzz(func(t *testing.T, value []byte, ct, keys, vals string) {
		h := map[string]string{}
		ks, vs := strings.Split(keys, "\n"), strings.Split(vals, "\n")
		for i := range ks {
			if i < len(vs) {
				h[ks[i]] = vs[i]
			}
		}
		_, _ = Dispytch.Decode(&Frame{Value: value, ContentType: ct, Headers: h}, new(Envelope), lookup)
		for _, fm := range allFormats {
			fr := Frame{Value: value, ContentType: ct, Headers: h}
			var e Envelope
			if _, err := fm.Decode(&fr, &e, lookup); err == nil && (e.ID == "" || e.Type == "") {
				t.Fatalf("%s decoded %+v without an id or a type", fm.Name(), e)
			}
		}
	})
}
