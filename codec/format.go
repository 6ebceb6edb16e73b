package codec

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Envelope formats: where an event's id, type and timestamp travel, next to
// its body. The emitter writes one format (dispytch.Envelopes, per event
// type with dispytch.ForEventType); a listener reads Dispytch's envelope and
// every format it is given, and tells them apart per message (EnvelopeFormat.Match).
//
//   - Dispytch: the envelope {"id","type","body","timestamp"} in the value,
//     encoded with the codec (JSON or msgpack): Python Dispytch's wire format,
//     the default.
//   - Headers: the value is the body alone; id, type and timestamp are the
//     headers dispytch-event-id, dispytch-event-type and dispytch-timestamp
//     (milliseconds since the epoch). What schema-registry framing and most
//     consumers outside Dispytch expect.
//   - CloudEvents 1.0, binary mode: the value is the body; the attributes are
//     headers: ce_* on Kafka (the Kafka protocol binding) and, on RabbitMQ,
//     cloudEvents_* (the AMQP protocol binding's application-property names;
//     AMQP 0-9-1 has no binding of its own); the content type is
//     datacontenttype.
//   - CloudEvents 1.0, structured mode: the value is the event as JSON
//     (application/cloudevents+json), the body in data, or in data_base64 when
//     it is not JSON. The mode for brokers without headers.

// Frame is a message as an envelope format sees it: its value, headers and
// content type.
type Frame struct {
	// Topic is the message's topic.
	Topic string
	// Value is the message's value.
	Value []byte
	// Headers are the message's headers; Encode may add to them (it
	// allocates the map when it is nil).
	Headers map[string]string
	// ContentType is the message's content type (an AMQP property, a
	// content-type header).
	ContentType string
	// Backend names the producer's backend ("kafka", "rabbitmq", "memory"),
	// for formats whose header names differ between brokers. Empty on
	// decode.
	Backend string
}

// contentType returns the frame's content type, from the property or the
// content-type header.
func (f *Frame) contentType() string {
	if f.ContentType != "" {
		return f.ContentType
	}
	return f.Headers["content-type"]
}

func (f *Frame) setHeader(k, v string) {
	if f.Headers == nil {
		f.Headers = make(map[string]string, 6)
	}
	f.Headers[k] = v
}

// Lookup returns the codec registered for a content type (its parameters
// ignored), or nil.
type Lookup func(contentType string) Codec

// EnvelopeFormat is an envelope format. Implementations must be safe for concurrent
// use.
type EnvelopeFormat interface {
	// Name names the format in logs and errors: "dispytch", "headers",
	// "cloudevents-binary", "cloudevents-structured".
	Name() string
	// Encode lays out the event e, whose Body body encoded, in f: it sets
	// f.Value and f.ContentType and adds its headers.
	Encode(f *Frame, e *Envelope, body Codec) error
	// Match reports whether f is laid out in this format, from its headers
	// and content type only.
	Match(f *Frame) bool
	// Decode reads the event in f into e (e.Body may alias f.Value) and
	// returns the codec of its body, found with codecs.
	Decode(f *Frame, e *Envelope, codecs Lookup) (Codec, error)
}

// Headers a format writes.
const (
	// HeaderEventID carries the event id in header mode (and, next to the
	// envelope, on Kafka).
	HeaderEventID = "dispytch-event-id"
	// HeaderEventType carries the event type in header mode (and, next to
	// the envelope, on Kafka).
	HeaderEventType = "dispytch-event-type"
	// HeaderTimestamp carries the emit time in milliseconds since the Unix
	// epoch; only header mode writes it, which is how a listener tells a
	// header-mode message.
	HeaderTimestamp = "dispytch-timestamp"
	// ContentTypeCloudEvents is the content type of a structured
	// CloudEvent in JSON.
	ContentTypeCloudEvents = "application/cloudevents+json"
)

// ErrSchema is wrapped by the error of an event that does not conform to its
// schema (see SchemaError): the emitter sends nothing.
var ErrSchema = errors.New("event does not conform to its schema")

// ErrFormat is wrapped by the errors of a message that is not laid out as
// its envelope format requires (a missing header, a bad attribute).
var ErrFormat = errors.New("malformed envelope")

// SchemaError reports an event that does not conform to its schema. It
// wraps ErrSchema and the validator's error.
type SchemaError struct {
	// Schema names the schema: a record or message name, a subject.
	Schema string
	// Field is the path of the offending field ("user.email"), or "" when
	// the validator does not say.
	Field string
	// Err is the validator's error.
	Err error
}

// Error says which schema and field, and why.
func (e *SchemaError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("schema %s: %v", e.Schema, e.Err)
	}
	return fmt.Sprintf("schema %s: field %q: %v", e.Schema, e.Field, e.Err)
}

// Unwrap returns ErrSchema and the validator's error.
func (e *SchemaError) Unwrap() []error { return []error{ErrSchema, e.Err} }

// TopicEncoder is an optional upgrade of a Codec whose encoding depends on
// the message's topic or needs I/O, such as a schema registry's (the subject
// is named after the topic, the schema id may have to be looked up). The
// emitter calls EncodeBody instead of Marshal, with the emit's context.
type TopicEncoder interface {
	EncodeBody(ctx context.Context, topic string, v any) ([]byte, error)
}

// Use is one handler's use of a body type, for SchemaChecker.
type Use struct {
	// Topic is the handler's topic or pattern.
	Topic string
	// EventType is the handler's event type.
	EventType string
	// Body is the handler's body type (T of Event[T]).
	Body reflect.Type
}

// SchemaChecker is an optional upgrade of a Codec that keeps schemas
// elsewhere (a schema registry). A listener's Check and Run call it with the
// handlers' topics and body types before consuming anything, and fail with
// its error: a schema the registry would refuse as incompatible, say.
type SchemaChecker interface {
	CheckSchemas(ctx context.Context, uses []Use) error
}

// Dispytch is Dispytch's envelope, {"id","type","body","timestamp"} encoded
// with the codec: the default format, and Python Dispytch's.
var Dispytch EnvelopeFormat = dispytchFormat{}

type dispytchFormat struct{}

func (dispytchFormat) Name() string { return "dispytch" }

func (dispytchFormat) Encode(f *Frame, e *Envelope, body Codec) error {
	v, err := body.AppendEnvelope(make([]byte, 0, len(e.Body)+len(e.ID)+len(e.Type)+64), e)
	if err != nil {
		return err
	}
	f.Value, f.ContentType = v, body.ContentType()
	return nil
}

// Match reports true for anything: the Dispytch envelope is what a message
// is when no other format claims it.
func (dispytchFormat) Match(*Frame) bool { return true }

func (dispytchFormat) Decode(f *Frame, e *Envelope, codecs Lookup) (Codec, error) {
	c, err := bodyCodec(f.contentType(), f.Value, codecs)
	if err != nil {
		return nil, err
	}
	return c, c.DecodeEnvelope(f.Value, e)
}

// bodyCodec finds the codec for a content type, or, without one, the codec
// the first byte of data shows (JSON or msgpack).
func bodyCodec(ct string, data []byte, codecs Lookup) (Codec, error) {
	if ct != "" {
		if c := codecs(ct); c != nil {
			return c, nil
		}
		return nil, fmt.Errorf("%w: no codec for content type %q (give the listener one with dispytch.Codecs)", ErrFormat, ct)
	}
	var c Codec
	switch Sniff(data) {
	case FormatJSON:
		c = codecs("application/json")
	case FormatMsgpack:
		c = codecs("application/msgpack")
	}
	if c == nil {
		return nil, fmt.Errorf("%w: the message has no content type and is neither JSON nor msgpack", ErrFormat)
	}
	return c, nil
}

// Headers is header mode: the value is the body alone, encoded by the
// codec; id, type and timestamp are the headers HeaderEventID,
// HeaderEventType and HeaderTimestamp; the content type is the body's.
var Headers EnvelopeFormat = headerFormat{}

type headerFormat struct{}

func (headerFormat) Name() string { return "headers" }

func (headerFormat) Encode(f *Frame, e *Envelope, body Codec) error {
	f.Value, f.ContentType = e.Body, body.ContentType()
	f.setHeader(HeaderEventID, e.ID)
	f.setHeader(HeaderEventType, e.Type)
	f.setHeader(HeaderTimestamp, strconv.FormatInt(e.Timestamp, 10))
	return nil
}

func (headerFormat) Match(f *Frame) bool {
	_, ok := f.Headers[HeaderTimestamp]
	return ok
}

func (headerFormat) Decode(f *Frame, e *Envelope, codecs Lookup) (Codec, error) {
	h := f.Headers
	id, typ, ts := h[HeaderEventID], h[HeaderEventType], h[HeaderTimestamp]
	switch {
	case id == "":
		return nil, fmt.Errorf("%w: header mode: header %s is missing or empty", ErrFormat, HeaderEventID)
	case typ == "":
		return nil, fmt.Errorf("%w: header mode: header %s is missing or empty", ErrFormat, HeaderEventType)
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: header mode: header %s = %.40q is not a number of milliseconds", ErrFormat, HeaderTimestamp, ts)
	}
	c, err := bodyCodec(f.contentType(), f.Value, codecs)
	if err != nil {
		return nil, err
	}
	e.ID, e.Type, e.Timestamp, e.Body = id, typ, ms, f.Value
	return c, nil
}

// CloudEventsMode is a CloudEvents content mode.
type CloudEventsMode uint8

const (
	// CloudEventsBinary puts the attributes in headers (ce_ on Kafka,
	// cloudEvents_ on RabbitMQ) and the body in the value.
	CloudEventsBinary CloudEventsMode = iota
	// CloudEventsStructured puts the whole event, as JSON, in the value.
	CloudEventsStructured
)

// CloudEvents returns the CloudEvents 1.0 format in the given mode. source is
// the events' source attribute (a URI reference naming the producer, e.g.
// "urn:acme:users"); "" makes it "/dispytch/<topic>". The time attribute is
// the emit time; datacontenttype the body codec's content type.
//
// On decode, both header prefixes are read (ce_, cloudEvents_ and the
// AMQP binding's older cloudEvents:), whatever the broker; the event's
// source and other attributes stay in the message's headers (binary mode).
func CloudEvents(mode CloudEventsMode, source string) EnvelopeFormat {
	if mode == CloudEventsStructured {
		return ceStructured{source: source}
	}
	return ceBinary{source: source}
}

const ceVersion = "1.0"

// ceSource returns the source attribute of an event on topic.
func ceSource(source, topic string) string {
	if source != "" {
		return source
	}
	return "/dispytch/" + topic
}

func ceTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func parseCETime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%w: cloudevents: time %.40q is not an RFC 3339 timestamp", ErrFormat, s)
	}
	return t.UnixMilli(), nil
}

type ceBinary struct{ source string }

func (ceBinary) Name() string { return "cloudevents-binary" }

// ceBinaryPrefixes are the attribute header prefixes read, in order.
var ceBinaryPrefixes = [...]string{"ce_", "cloudEvents_", "cloudEvents:"}

// cePrefix returns the header prefix of the broker: the AMQP binding's on
// RabbitMQ, the Kafka binding's elsewhere.
func cePrefix(backend string) string {
	if backend == "rabbitmq" {
		return "cloudEvents_"
	}
	return "ce_"
}

func (b ceBinary) Encode(f *Frame, e *Envelope, body Codec) error {
	p := cePrefix(f.Backend)
	f.Value, f.ContentType = e.Body, body.ContentType()
	f.setHeader(p+"specversion", ceVersion)
	f.setHeader(p+"id", e.ID)
	f.setHeader(p+"source", ceSource(b.source, f.Topic))
	f.setHeader(p+"type", e.Type)
	f.setHeader(p+"time", ceTime(e.Timestamp))
	return nil
}

func (ceBinary) Match(f *Frame) bool {
	if len(f.Headers) == 0 {
		return false
	}
	for _, p := range ceBinaryPrefixes {
		if _, ok := f.Headers[p+"specversion"]; ok {
			return true
		}
	}
	return false
}

func (ceBinary) Decode(f *Frame, e *Envelope, codecs Lookup) (Codec, error) {
	h := f.Headers
	var p string
	for _, q := range ceBinaryPrefixes {
		if _, ok := h[q+"specversion"]; ok {
			p = q
			break
		}
	}
	if p == "" {
		return nil, fmt.Errorf("%w: cloudevents binary: no specversion header", ErrFormat)
	}
	if v := h[p+"specversion"]; v != ceVersion {
		return nil, fmt.Errorf("%w: cloudevents binary: specversion %.20q is not %s", ErrFormat, v, ceVersion)
	}
	for _, a := range [...]string{"id", "source", "type"} {
		if h[p+a] == "" {
			return nil, fmt.Errorf("%w: cloudevents binary: required attribute %s (header %s%s) is missing or empty", ErrFormat, a, p, a)
		}
	}
	ms, err := parseCETime(h[p+"time"])
	if err != nil {
		return nil, err
	}
	c, err := bodyCodec(f.contentType(), f.Value, codecs)
	if err != nil {
		return nil, err
	}
	e.ID, e.Type, e.Timestamp, e.Body = h[p+"id"], h[p+"type"], ms, f.Value
	return c, nil
}

type ceStructured struct{ source string }

func (ceStructured) Name() string { return "cloudevents-structured" }

// ceEvent is a structured CloudEvent in JSON.
type ceEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            string          `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      *string         `json:"data_base64,omitempty"`
}

// jsonType reports whether a content type is JSON ("application/json",
// "…+json", "text/json"), which structured mode carries in data.
func jsonType(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == "" || ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

func (s ceStructured) Encode(f *Frame, e *Envelope, body Codec) error {
	ev := ceEvent{
		SpecVersion: ceVersion, ID: e.ID, Source: ceSource(s.source, f.Topic), Type: e.Type,
		Time: ceTime(e.Timestamp), DataContentType: body.ContentType(),
	}
	if jsonType(ev.DataContentType) && json.Valid(e.Body) {
		ev.Data = e.Body
	} else {
		b64 := base64.StdEncoding.EncodeToString(e.Body)
		ev.DataBase64 = &b64
	}
	v, err := json.Marshal(&ev)
	if err != nil {
		return err
	}
	f.Value, f.ContentType = v, ContentTypeCloudEvents
	return nil
}

func (ceStructured) Match(f *Frame) bool {
	ct := f.contentType()
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), ContentTypeCloudEvents)
}

func (ceStructured) Decode(f *Frame, e *Envelope, codecs Lookup) (Codec, error) {
	var ev ceEvent
	if err := json.Unmarshal(f.Value, &ev); err != nil {
		return nil, fmt.Errorf("%w: cloudevents structured: %w", ErrFormat, err)
	}
	if ev.SpecVersion != ceVersion {
		return nil, fmt.Errorf("%w: cloudevents structured: specversion %.20q is not %s", ErrFormat, ev.SpecVersion, ceVersion)
	}
	switch {
	case ev.ID == "":
		return nil, fmt.Errorf("%w: cloudevents structured: required attribute id is missing or empty", ErrFormat)
	case ev.Source == "":
		return nil, fmt.Errorf("%w: cloudevents structured: required attribute source is missing or empty", ErrFormat)
	case ev.Type == "":
		return nil, fmt.Errorf("%w: cloudevents structured: required attribute type is missing or empty", ErrFormat)
	}
	ms, err := parseCETime(ev.Time)
	if err != nil {
		return nil, err
	}
	var body []byte
	switch {
	case ev.DataBase64 != nil && len(ev.Data) > 0:
		return nil, fmt.Errorf("%w: cloudevents structured: both data and data_base64", ErrFormat)
	case ev.DataBase64 != nil:
		if body, err = base64.StdEncoding.DecodeString(*ev.DataBase64); err != nil {
			return nil, fmt.Errorf("%w: cloudevents structured: data_base64: %w", ErrFormat, err)
		}
	case len(ev.Data) > 0 && string(ev.Data) != "null":
		body = ev.Data
	default:
		return nil, fmt.Errorf("%w: cloudevents structured: the event has no data", ErrFormat)
	}
	ct := ev.DataContentType
	if ct == "" {
		ct = "application/json" // the JSON event format's default
	}
	c := codecs(ct)
	if c == nil {
		return nil, fmt.Errorf("%w: no codec for datacontenttype %q (give the listener one with dispytch.Codecs)", ErrFormat, ct)
	}
	e.ID, e.Type, e.Timestamp, e.Body = ev.ID, ev.Type, ms, body
	return c, nil
}
