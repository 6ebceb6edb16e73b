// Package jsonschema is a JSON body codec with schema-on-write: every event
// is checked against the JSON Schema of its type before it is sent, and one
// that does not conform is an error naming the field (nothing is sent).
// Schemas are generated from the Go types (invopop/jsonschema, with the
// validate tags that map, see SchemaOf) or given as text; events are checked
// with santhosh-tekuri/jsonschema.
//
// The bodies are plain JSON, in the Dispytch envelope or any other format:
// Python Dispytch and every JSON listener read them. For the Confluent
// Schema Registry's framing, use package codec/registry.
package jsonschema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/internal/jsutil"
)

// Option configures a Codec.
type Option func(*Codec) error

// Schema gives the JSON Schema of T as text, instead of the generated one.
func Schema[T any](schema string) Option {
	t := reflect.TypeFor[T]()
	return func(c *Codec) error {
		s, err := jsutil.Compile(t.Name(), schema)
		if err != nil {
			return err
		}
		c.schemas.Store(deref(t), s)
		return nil
	}
}

// SchemaOf returns the JSON Schema (draft 2020-12) generated for a Go
// type: the properties invopop/jsonschema reflects from the json tags,
// additional properties allowed, titled with the type's name, with the
// validate tags that map: required, email, url/uri, uuid, hostname,
// ipv4/ipv6, datetime, min/max/len, gt/gte/lt/lte, oneof. A field whose
// validate tag has omitempty keeps only its type; pointers, slices and maps
// are nullable unless required.
func SchemaOf(t reflect.Type) (string, error) { return jsutil.Generate(t) }

// Codec is the JSON Schema codec: codec.JSON with every body checked. It is
// safe for concurrent use.
type Codec struct {
	schemas sync.Map // reflect.Type (not a pointer) -> *jsutil.Schema
}

// New returns a codec; types without a Schema get theirs generated at
// first use.
//
//	c, err := jsonschema.New()
//	dispytch.NewEmitter(p, dispytch.WithCodec(c))
func New(opts ...Option) (*Codec, error) {
	c := &Codec{}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func (c *Codec) schemaOf(t reflect.Type) (*jsutil.Schema, error) {
	t = deref(t)
	if v, ok := c.schemas.Load(t); ok {
		return v.(*jsutil.Schema), nil
	}
	text, err := jsutil.Generate(t)
	if err != nil {
		return nil, err
	}
	s, err := jsutil.Compile(t.Name(), text)
	if err != nil {
		return nil, err
	}
	v, _ := c.schemas.LoadOrStore(t, s)
	return v.(*jsutil.Schema), nil
}

// ContentType is "application/json": the bodies are JSON.
func (c *Codec) ContentType() string { return "application/json" }

// Marshal encodes v as JSON and checks it against its type's schema; a
// body that does not conform is a *codec.SchemaError naming the field.
func (c *Codec) Marshal(v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return nil, fmt.Errorf("jsonschema: cannot encode %T", v)
	}
	s, err := c.schemaOf(rv.Type())
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := s.Check(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Unmarshal decodes JSON, as codec.JSON does.
func (c *Codec) Unmarshal(data []byte, v any, strict bool) error {
	return codec.JSON.Unmarshal(data, v, strict)
}

// AppendEnvelope writes the Dispytch JSON envelope, as codec.JSON does.
func (c *Codec) AppendEnvelope(dst []byte, e *codec.Envelope) ([]byte, error) {
	return codec.JSON.AppendEnvelope(dst, e)
}

// DecodeEnvelope reads the Dispytch JSON envelope, as codec.JSON does.
func (c *Codec) DecodeEnvelope(data []byte, e *codec.Envelope) error {
	return codec.JSON.DecodeEnvelope(data, e)
}

// DecodeEnvelopeInterned is codec.JSON's.
func (c *Codec) DecodeEnvelopeInterned(data []byte, e *codec.Envelope, types map[string]string) error {
	return codec.JSON.(codec.InterningDecoder).DecodeEnvelopeInterned(data, e, types)
}

// ValidBody reports whether data is JSON.
func (c *Codec) ValidBody(data []byte) bool { return json.Valid(data) }
