// Package codec defines how Dispytch events travel as bytes: the Codec
// interface, the Envelope every codec encodes ({"id","type","body",
// "timestamp"}, Python Dispytch's wire format), and the JSON codec, the
// default; the envelope formats that put id, type and timestamp elsewhere
// (EnvelopeFormat: Headers, CloudEvents), and the seams schema codecs use
// (TopicEncoder, SchemaChecker, SchemaError). The msgpack codec is in
// package codec/msgpack; Protobuf, Avro, JSON Schema and the Confluent
// Schema Registry in codec/protobuf, codec/avro, codec/jsonschema and
// codec/registry.
//
// A listener decodes every message with the codec the message says it was
// written with (its content type), or, without one, the codec its first
// byte shows (Sniff), so JSON and msgpack producers can share a topic.
package codec

// Envelope is Dispytch's wire envelope. Body holds the encoded body in the
// codec's own format.
type Envelope struct {
	ID        string
	Type      string
	Body      []byte
	Timestamp int64 // milliseconds since the Unix epoch
}

// Codec encodes and decodes envelopes and bodies. Implementations must be
// safe for concurrent use.
type Codec interface {
	// ContentType names the format, e.g. "application/json". The emitter
	// puts it in the message's content type.
	ContentType() string
	// Marshal encodes an event body.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes a body into v. With strict set, fields of the data
	// that v has no place for are an error.
	Unmarshal(data []byte, v any, strict bool) error
	// AppendEnvelope appends the encoded envelope to dst.
	AppendEnvelope(dst []byte, e *Envelope) ([]byte, error)
	// DecodeEnvelope decodes data into e. e.Body may alias data. A payload
	// missing id, type, body or timestamp, or holding null for one, is an
	// error.
	DecodeEnvelope(data []byte, e *Envelope) error
}

// EventAppender is an optional fast path of a Codec: it encodes the body v
// straight into the envelope, saving the copy that Marshal followed by
// AppendEnvelope makes. The bytes must be those of that pair.
type EventAppender interface {
	AppendEvent(dst []byte, id, typ string, ts int64, v any) ([]byte, error)
}

// InterningDecoder is an optional fast path of a Codec: DecodeEnvelope, but
// when the event type is a key of types its value is used for e.Type
// instead of a new string. Listeners pass the types they have handlers for.
type InterningDecoder interface {
	DecodeEnvelopeInterned(data []byte, e *Envelope, types map[string]string) error
}

// BodyValidator is an optional method of a Codec: it reports whether data
// is a well-formed body, for handlers that take the body as raw bytes.
type BodyValidator interface {
	ValidBody(data []byte) bool
}

// Format is an encoding Sniff recognises.
type Format uint8

const (
	// FormatUnknown is anything Sniff does not recognise.
	FormatUnknown Format = iota
	// FormatJSON is a JSON object.
	FormatJSON
	// FormatMsgpack is a msgpack map.
	FormatMsgpack
)

// Sniff tells a JSON envelope from a msgpack one by its first byte: a JSON
// object starts with '{' (after optional whitespace), a msgpack map with a
// fixmap byte (0x80–0x8f) or map16/map32 (0xde, 0xdf). Python Dispytch
// writes no content type, so a listener relies on this for its messages.
func Sniff(data []byte) Format {
	for _, c := range data {
		switch {
		case c == '{':
			return FormatJSON
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
			return FormatMsgpack
		}
		return FormatUnknown
	}
	return FormatUnknown
}
