// Package avro is the Avro body codec (github.com/hamba/avro/v2): event
// bodies in Avro's binary encoding, each in Avro's single-object encoding
// (0xC3 0x01, the writer schema's CRC-64-AVRO fingerprint, the data), so
// that every message names the schema it was written with.
//
// A type's schema is given as .avsc text (Schema) or derived from the struct
// (see SchemaOf). A listener decodes by the writer's schema that a message
// names, resolved against the handler's type (Avro's schema resolution:
// fields the reader lacks are skipped, fields the writer lacks take their
// defaults); writer schemas other than the codec's own types are made known
// with Writers.
//
// Avro bodies travel in header mode or CloudEvents (dispytch.Envelopes): the
// Dispytch envelope holds JSON and msgpack bodies only. For the Confluent
// Schema Registry's framing, use package codec/registry.
package avro

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/hamba/avro/v2"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/internal/avroutil"
)

// ContentType is the content type of Avro bodies, as the Avro
// specification names it.
const ContentType = "avro/binary"

// ErrEnvelope is returned by the envelope methods: an Avro body does not go
// in the Dispytch envelope.
var ErrEnvelope = errors.New("avro: the Dispytch envelope holds JSON or msgpack bodies: send Avro bodies in header mode or CloudEvents (dispytch.Envelopes)")

// ErrUnknownSchema is wrapped by the error of a body whose writer schema
// the codec does not know (see Writers).
var ErrUnknownSchema = errors.New("avro: unknown writer schema")

// Option configures a Codec.
type Option func(*Codec) error

// Schema gives the schema of T (a struct, or a pointer to one) as .avsc
// text, instead of the schema derived from it.
func Schema[T any](avsc string) Option {
	t := reflect.TypeFor[T]()
	return func(c *Codec) error {
		s, err := avroutil.Parse(avsc)
		if err != nil {
			return fmt.Errorf("avro: schema of %s: %w", t, err)
		}
		c.add(t, s)
		return nil
	}
}

// Writers makes writer schemas known (.avsc text): those of producers that
// write older or newer versions of the codec's types.
func Writers(avsc ...string) Option {
	return func(c *Codec) error {
		for _, text := range avsc {
			s, err := avroutil.Parse(text)
			if err != nil {
				return fmt.Errorf("avro: writer schema: %w", err)
			}
			c.known(s)
		}
		return nil
	}
}

// SchemaOf returns the schema New derives from the Go type t (a struct or
// a pointer to one), as .avsc text.
func SchemaOf(t reflect.Type) (string, error) { return avroutil.Derive(t) }

// Codec is the Avro codec. It is safe for concurrent use.
type Codec struct {
	mu       sync.RWMutex
	types    map[reflect.Type]*typeSchema // by body type (the struct, not a pointer)
	byFP     map[uint64]avro.Schema       // writer schemas by fingerprint
	resolver *avroutil.Resolver
}

type typeSchema struct {
	s   avro.Schema
	fp  [8]byte // little-endian CRC-64-AVRO, as in the single-object encoding
	api *avroutil.Coder
}

// New returns an Avro codec. Types without a Schema get theirs derived at
// first use:
//
//	c, err := avro.New(avro.Schema[Order](orderAvsc))
//	dispytch.NewEmitter(p, dispytch.WithCodec(c), dispytch.Envelopes(codec.Headers))
//	dispytch.NewListener(cons, dispytch.Codecs(c), dispytch.Envelopes(codec.Headers))
//
// Derived schemas: a record named after the type (namespace: its package's
// name), a field per exported field named by its avro tag, else its json
// tag, else its Go name; every field but a nested record has its zero value
// as default. See the README for the type mapping.
func New(opts ...Option) (*Codec, error) {
	c := &Codec{types: map[reflect.Type]*typeSchema{}, byFP: map[uint64]avro.Schema{}, resolver: avroutil.NewResolver()}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Codec) add(t reflect.Type, s avro.Schema) *typeSchema {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fp, _ := s.FingerprintUsing(avro.CRC64AvroLE)
	ts := &typeSchema{s: s, api: avroutil.API(t)}
	copy(ts.fp[:], fp)
	c.mu.Lock()
	c.types[t] = ts
	c.byFP[binary.LittleEndian.Uint64(ts.fp[:])] = s
	c.mu.Unlock()
	return ts
}

func (c *Codec) known(s avro.Schema) {
	fp, _ := s.FingerprintUsing(avro.CRC64AvroLE)
	c.mu.Lock()
	c.byFP[binary.LittleEndian.Uint64(fp)] = s
	c.mu.Unlock()
}

// schemaOf returns the schema of t (a struct or a pointer to one),
// deriving it at first use.
func (c *Codec) schemaOf(t reflect.Type) (*typeSchema, error) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	c.mu.RLock()
	ts := c.types[t]
	c.mu.RUnlock()
	if ts != nil {
		return ts, nil
	}
	text, err := avroutil.Derive(t)
	if err != nil {
		return nil, err
	}
	s, err := avroutil.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("avro: derived schema of %s: %w", t, err)
	}
	return c.add(t, s), nil
}

// ContentType returns ContentType.
func (c *Codec) ContentType() string { return ContentType }

// magic starts Avro's single-object encoding.
var magic = [2]byte{0xC3, 0x01}

// headerLen is the length of the single-object header.
const headerLen = 10

// Marshal encodes v in the single-object encoding. A value that does not
// conform to its schema is a *codec.SchemaError naming the record and
// saying which field.
func (c *Codec) Marshal(v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return nil, fmt.Errorf("avro: cannot encode %T", v)
	}
	ts, err := c.schemaOf(rv.Type())
	if err != nil {
		return nil, err
	}
	var head [headerLen]byte
	copy(head[:], magic[:])
	copy(head[2:], ts.fp[:])
	out, err := ts.api.AppendEncode(head[:], ts.s, v)
	if err != nil {
		return nil, &codec.SchemaError{Schema: avroutil.FullName(ts.s), Field: avroutil.ErrField(err), Err: err}
	}
	return out, nil
}

// Unmarshal decodes data, in the single-object encoding, into v (a pointer
// to the handler's type): with the writer's schema the data names, resolved
// against the type's. With strict set, writer fields the type has no place
// for are an error.
func (c *Codec) Unmarshal(data []byte, v any, strict bool) error {
	if len(data) < headerLen || data[0] != magic[0] || data[1] != magic[1] {
		return fmt.Errorf("avro: the body is not in Avro's single-object encoding (it starts %x, not c301 and a fingerprint)", data[:min(len(data), headerLen)])
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("avro: cannot decode into %T", v)
	}
	fp := binary.LittleEndian.Uint64(data[2:headerLen])
	c.mu.RLock()
	writer := c.byFP[fp]
	c.mu.RUnlock()
	reader, err := c.schemaOf(rv.Type().Elem())
	if err != nil {
		return err
	}
	if writer == nil {
		return fmt.Errorf("%w: fingerprint %016x (the reader is %s; make the writer's schema known with avro.Writers)", ErrUnknownSchema, fp, avroutil.FullName(reader.s))
	}
	s, err := c.resolver.Resolve(reader.s, writer)
	if err != nil {
		return err
	}
	if strict {
		if err := avroutil.CheckFields(reader.s, writer); err != nil {
			return err
		}
	}
	return reader.api.Decode(s, data[headerLen:], v)
}

// AppendEnvelope returns ErrEnvelope.
func (c *Codec) AppendEnvelope(dst []byte, _ *codec.Envelope) ([]byte, error) {
	return dst, ErrEnvelope
}

// DecodeEnvelope returns ErrEnvelope.
func (c *Codec) DecodeEnvelope([]byte, *codec.Envelope) error { return ErrEnvelope }
