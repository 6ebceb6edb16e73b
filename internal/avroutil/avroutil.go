// Package avroutil holds what the Avro codec and the schema registry's Avro
// serde share: deriving a schema from a Go type, parsing schemas apart
// from each other, the encoding API a type needs, resolution.
package avroutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/hamba/avro/v2"
)

// Parse parses a schema in a cache of its own, so that two versions of a
// record with the same name (a writer's and a reader's) do not meet.
func Parse(text string) (avro.Schema, error) {
	return avro.ParseWithCache(text, "", &avro.SchemaCache{})
}

var (
	avroTags = newCoder(avro.Config{TagKey: "avro"}.Freeze())
	jsonTags = newCoder(avro.Config{TagKey: "json"}.Freeze())
)

// Coder encodes and decodes values with one encoding API (a struct tag
// key), with pooled readers and writers.
type Coder struct {
	api     avro.API
	readers sync.Pool
	writers sync.Pool
}

func newCoder(api avro.API) *Coder {
	c := &Coder{api: api}
	c.readers.New = func() any { return avro.NewReader(nil, 0, avro.WithReaderConfig(api)) }
	c.writers.New = func() any { return avro.NewWriter(nil, 512, avro.WithWriterConfig(api)) }
	return c
}

// ErrTruncated is wrapped by the error of a body that ends before its
// value does.
var ErrTruncated = errors.New("avro: the body is truncated")

// Decode decodes data with schema s into v. Unlike avro.Unmarshal, data
// that ends before the value does is an error (wrapping ErrTruncated).
func (c *Coder) Decode(s avro.Schema, data []byte, v any) error {
	r := c.readers.Get().(*avro.Reader)
	r.Reset(data)
	r.Error = nil
	r.ReadVal(s, v)
	err := r.Error
	r.Reset(nil)
	c.readers.Put(r)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w (%d bytes): %w", ErrTruncated, len(data), err)
	}
	return err
}

// AppendEncode returns prefix followed by the encoding of v with schema s,
// in one new slice.
func (c *Coder) AppendEncode(prefix []byte, s avro.Schema, v any) ([]byte, error) {
	w := c.writers.Get().(*avro.Writer)
	w.Reset(nil)
	w.Error = nil
	_, _ = w.Write(prefix)
	w.WriteVal(s, v)
	if err := w.Error; err != nil {
		c.writers.Put(w)
		return nil, err
	}
	b := w.Buffer()
	out := make([]byte, len(b))
	copy(out, b)
	if cap(b) <= 64<<10 {
		c.writers.Put(w)
	}
	return out, nil
}

// API returns the coder for t: fields named by their avro tags when t uses
// any, else by their json tags (else their Go names), as Derive names
// them.
func API(t reflect.Type) *Coder {
	if usesAvroTags(t, map[reflect.Type]bool{}) {
		return avroTags
	}
	return jsonTags
}

func usesAvroTags(t reflect.Type, seen map[reflect.Type]bool) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("avro"); ok || usesAvroTags(f.Type, seen) {
			return true
		}
	}
	return false
}

var derived sync.Map // reflect.Type -> derivation

type derivation struct {
	text string
	err  error
}

// Derive returns the Avro schema of a Go struct type (or a pointer to
// one), as JSON text: a record named after the type (namespace: its
// package's name), a field per exported field, named by its avro tag, else
// its json tag, else its Go name; fields with a json tag "-" are left out.
// Types: string, boolean, int (int8..int32, uint8, uint16), long (int,
// int64, uint32, time.Duration), float, double, bytes ([]byte), arrays
// (slices), maps (map[string]V), records (structs), a nullable union
// ["null", T] (pointers) and timestamp-millis (time.Time). Every field but a
// record has a default, its zero value (null for pointers), so that a
// reader's new field resolves against an older writer's data.
func Derive(t reflect.Type) (string, error) {
	if v, ok := derived.Load(t); ok {
		d := v.(derivation)
		return d.text, d.err
	}
	st := t
	if st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	var d derivation
	if st.Kind() != reflect.Struct {
		d.err = fmt.Errorf("avro: cannot derive a schema from %s: not a struct (give its schema as .avsc text)", t)
	} else {
		dv := deriver{named: map[reflect.Type]string{}}
		s, err := dv.schema(st, st.Name())
		if err == nil {
			var b []byte
			b, err = json.Marshal(s)
			d.text = string(b)
		}
		d.err = err
	}
	derived.Store(t, d)
	return d.text, d.err
}

type deriver struct {
	named map[reflect.Type]string // records defined so far, by full name
}

var (
	timeType  = reflect.TypeFor[time.Time]()
	durType   = reflect.TypeFor[time.Duration]()
	bytesType = reflect.TypeFor[[]byte]()
)

// schema returns the schema of t, as a value for json.Marshal; path names
// the field, for errors.
func (d *deriver) schema(t reflect.Type, path string) (any, error) {
	switch t {
	case timeType:
		return map[string]any{"type": "long", "logicalType": "timestamp-millis"}, nil
	case durType:
		return "long", nil
	case bytesType:
		return "bytes", nil
	}
	switch t.Kind() {
	case reflect.String:
		return "string", nil
	case reflect.Bool:
		return "boolean", nil
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16:
		return "int", nil
	case reflect.Int, reflect.Int64, reflect.Uint32:
		return "long", nil
	case reflect.Float32:
		return "float", nil
	case reflect.Float64:
		return "double", nil
	case reflect.Slice, reflect.Array:
		items, err := d.schema(t.Elem(), path+"[]")
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "array", "items": items}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("avro: %s: map keys must be strings, not %s", path, t.Key())
		}
		values, err := d.schema(t.Elem(), path+"{}")
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "map", "values": values}, nil
	case reflect.Pointer:
		inner, err := d.schema(t.Elem(), path)
		if err != nil {
			return nil, err
		}
		return []any{"null", inner}, nil
	case reflect.Struct:
		return d.record(t, path)
	}
	return nil, fmt.Errorf("avro: %s: cannot derive a schema for %s (give the schema as .avsc text)", path, t)
}

func (d *deriver) record(t reflect.Type, path string) (any, error) {
	ns := avroName(pkgName(t))
	name := avroName(t.Name())
	if name == "" {
		name = "Record" + fmt.Sprint(len(d.named)+1)
	}
	full := name
	if ns != "" {
		full = ns + "." + name
	}
	if _, ok := d.named[t]; ok {
		return full, nil // defined already: a reference
	}
	d.named[t] = full
	tag := "json"
	if usesAvroTags(t, map[reflect.Type]bool{}) {
		tag = "avro"
	}
	fields := []any{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Anonymous {
			continue
		}
		fname := f.Name
		if v, ok := f.Tag.Lookup(tag); ok {
			if v == "-" {
				continue
			}
			if n, _, _ := strings.Cut(v, ","); n != "" {
				fname = n
			}
		}
		s, err := d.schema(f.Type, path+"."+fname)
		if err != nil {
			return nil, err
		}
		field := map[string]any{"name": fname, "type": s}
		if def, ok := zeroDefault(f.Type); ok {
			field["default"] = def
		}
		fields = append(fields, field)
	}
	rec := map[string]any{"type": "record", "name": name, "fields": fields}
	if ns != "" {
		rec["namespace"] = ns
	}
	return rec, nil
}

// zeroDefault returns the Avro default of a field of type t: its zero
// value, or false for records.
func zeroDefault(t reflect.Type) (any, bool) {
	switch t {
	case timeType, durType:
		return 0, true
	case bytesType:
		return "", true
	}
	switch t.Kind() {
	case reflect.String:
		return "", true
	case reflect.Bool:
		return false, true
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16, reflect.Int, reflect.Int64, reflect.Uint32,
		reflect.Float32, reflect.Float64:
		return 0, true
	case reflect.Slice, reflect.Array:
		return []any{}, true
	case reflect.Map:
		return map[string]any{}, true
	case reflect.Pointer:
		return nil, true
	}
	return nil, false
}

func pkgName(t reflect.Type) string {
	p := t.PkgPath()
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return p
}

// avroName turns s into an Avro name: letters, digits and underscores,
// not starting with a digit.
func avroName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || r == '_'):
			b.WriteRune(r)
		case r < unicode.MaxASCII && unicode.IsDigit(r):
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// FullName returns the full name of a named schema (a record), or its type.
func FullName(s avro.Schema) string {
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return string(s.Type())
}

// Resolver resolves writer schemas against reader schemas, caching what it
// resolved.
type Resolver struct {
	compat *avro.SchemaCompatibility
	mu     sync.RWMutex
	cache  map[[2]avro.Schema]resolved
}

type resolved struct {
	s   avro.Schema
	err error
}

// NewResolver returns an empty resolver.
func NewResolver() *Resolver {
	return &Resolver{compat: avro.NewSchemaCompatibility(), cache: map[[2]avro.Schema]resolved{}}
}

// Resolve returns the schema to read data written with writer into a value
// of reader's type: writer itself when they are the same schema, else
// their resolution, or why they cannot be resolved.
func (r *Resolver) Resolve(reader, writer avro.Schema) (avro.Schema, error) {
	if reader == writer || reader.Fingerprint() == writer.Fingerprint() {
		return writer, nil
	}
	k := [2]avro.Schema{reader, writer}
	r.mu.RLock()
	v, ok := r.cache[k]
	r.mu.RUnlock()
	if ok {
		return v.s, v.err
	}
	s, err := r.compat.Resolve(reader, writer)
	if err != nil {
		err = fmt.Errorf("avro: the reader's schema %s cannot read the writer's: %w", FullName(reader), err)
	}
	r.mu.Lock()
	r.cache[k] = resolved{s, err}
	r.mu.Unlock()
	return s, err
}

// CheckFields returns an error naming a field of the writer's record that
// the reader's record does not have (for Strict).
func CheckFields(reader, writer avro.Schema) error {
	r, ok1 := reader.(*avro.RecordSchema)
	w, ok2 := writer.(*avro.RecordSchema)
	if !ok1 || !ok2 {
		return nil
	}
	have := map[string]bool{}
	for _, f := range r.Fields() {
		have[f.Name()] = true
		for _, a := range f.Aliases() {
			have[a] = true
		}
	}
	for _, f := range w.Fields() {
		if !have[f.Name()] {
			return fmt.Errorf("avro: the writer's field %s.%s has no place in %s", w.FullName(), f.Name(), r.FullName())
		}
	}
	return nil
}

// ErrField returns the field an encoding error names: hamba/avro prefixes
// errors with the Go field's name ("Color: avro: unknown enum symbol") and
// says `missing required field "color"`; "" when it names none.
func ErrField(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, `missing required field "`); i >= 0 {
		rest := msg[i+len(`missing required field "`):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	var path []string
	for {
		i := strings.Index(msg, ": ")
		if i <= 0 || strings.HasPrefix(msg, "avro") || strings.ContainsAny(msg[:i], " \t") {
			break
		}
		path = append(path, msg[:i])
		msg = msg[i+2:]
	}
	return strings.Join(path, ".")
}
