package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"

	"github.com/dispytch/dispytch-go/internal/jsonenv"
)

// JSON is the JSON codec, Python Dispytch's default wire format and
// Dispytch's default. Envelopes are written compactly; any valid layout is
// read (Python's json.dumps separators included).
var JSON Codec = &jsonCodec{}

type jsonCodec struct {
	scratch sync.Pool // *jsonScratch
}

// jsonScratch is the buffer AppendEvent builds an envelope in.
type jsonScratch struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// maxScratch is the largest buffer kept for reuse.
const maxScratch = 64 << 10

func (*jsonCodec) ContentType() string { return "application/json" }

func (*jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (*jsonCodec) Unmarshal(data []byte, v any, strict bool) error {
	if !strict {
		return json.Unmarshal(data, v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after body")
	}
	return nil
}

func (*jsonCodec) ValidBody(data []byte) bool { return json.Valid(data) }

func (*jsonCodec) AppendEnvelope(dst []byte, e *Envelope) ([]byte, error) {
	if len(e.Body) == 0 {
		return dst, errors.New("empty body")
	}
	return jsonenv.Append(dst, e.ID, e.Type, e.Body, e.Timestamp), nil
}

func (*jsonCodec) DecodeEnvelope(data []byte, e *Envelope) error {
	return jsonenv.Decode(data, (*jsonenv.Envelope)(e), nil)
}

func (*jsonCodec) DecodeEnvelopeInterned(data []byte, e *Envelope, types map[string]string) error {
	return jsonenv.Decode(data, (*jsonenv.Envelope)(e), types)
}

// AppendEvent encodes the body straight into the envelope, in a reused
// buffer. The bytes are those of Marshal and AppendEnvelope: json.Encoder
// writes what json.Marshal returns, plus a newline that is cut.
func (c *jsonCodec) AppendEvent(dst []byte, id, typ string, ts int64, v any) ([]byte, error) {
	sc, _ := c.scratch.Get().(*jsonScratch)
	if sc == nil {
		sc = new(jsonScratch)
		sc.enc = json.NewEncoder(&sc.buf)
	}
	defer func() {
		if sc.buf.Cap() <= maxScratch {
			sc.buf.Reset()
			c.scratch.Put(sc)
		}
	}()
	b := sc.buf.AvailableBuffer()
	b = append(b, `{"id":`...)
	b = jsonenv.AppendString(b, id)
	b = append(b, `,"type":`...)
	b = jsonenv.AppendString(b, typ)
	b = append(b, `,"body":`...)
	sc.buf.Write(b)
	if err := sc.enc.Encode(v); err != nil {
		return dst, err
	}
	sc.buf.Truncate(sc.buf.Len() - 1) // the newline
	b = sc.buf.AvailableBuffer()
	b = append(b, `,"timestamp":`...)
	b = jsonenv.AppendInt(b, ts)
	b = append(b, '}')
	sc.buf.Write(b)
	if dst == nil {
		return bytes.Clone(sc.buf.Bytes()), nil
	}
	return append(dst, sc.buf.Bytes()...), nil
}
