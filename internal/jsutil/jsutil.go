// Package jsutil holds what the JSON Schema codec and the schema
// registry's JSON Schema serde share: generating a schema from a Go type
// (with invopop/jsonschema, plus the validate tags that map), compiling and
// checking against one (with santhosh-tekuri/jsonschema).
package jsutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	invopop "github.com/invopop/jsonschema"
	sjs "github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/dispytch/dispytch-go/codec"
)

var generated sync.Map // reflect.Type -> generation

type generation struct {
	text string
	err  error
}

// Generate returns the JSON Schema (draft 2020-12) of a Go type, as JSON
// text: what invopop/jsonschema reflects (json tags name the properties;
// no $defs, every type inline; additional properties allowed, so that
// newer writers' fields do not break older schemas), titled with the type's
// name, plus the validate tags that map: required (a required property; a
// string at least one character long), email, url/uri, uuid, hostname,
// ipv4, ipv6 and datetime formats, min/max/len (string lengths, numbers,
// item counts), gt/gte/lt/lte, oneof (an enum). A field with omitempty in
// its validate tag keeps only its type. Pointers, slices and maps are
// nullable (Go writes nil as null) unless required.
func Generate(t reflect.Type) (string, error) {
	if v, ok := generated.Load(t); ok {
		g := v.(generation)
		return g.text, g.err
	}
	st := t
	for st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	var g generation
	if st.Kind() != reflect.Struct {
		g.err = fmt.Errorf("jsonschema: cannot generate a schema from %s: not a struct (give its schema as text)", t)
	} else {
		r := &invopop.Reflector{DoNotReference: true, ExpandedStruct: true, AllowAdditionalProperties: true, RequiredFromJSONSchemaTags: true, Anonymous: true}
		s := r.ReflectFromType(st)
		s.Title = st.Name()
		applyTags(st, s)
		b, err := json.Marshal(s)
		g.text, g.err = string(b), err
	}
	generated.Store(t, g)
	return g.text, g.err
}

// applyTags adds the constraints of st's validate tags to s, its schema.
func applyTags(st reflect.Type, s *invopop.Schema) {
	if s == nil || s.Properties == nil {
		return
	}
	for i := 0; i < st.NumField(); i++ {
		f := st.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		ps, ok := s.Properties.Get(name)
		if !ok || ps == nil {
			continue
		}
		ft := f.Type
		ptr := false
		for ft.Kind() == reflect.Pointer {
			ft, ptr = ft.Elem(), true
		}
		if ft.Kind() == reflect.Struct {
			applyTags(ft, ps)
		}
		if (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array) && ps.Items != nil {
			et := ft.Elem()
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				applyTags(et, ps.Items)
			}
		}
		tags := strings.Split(f.Tag.Get("validate"), ",")
		required := false
		omit := false
		for _, tg := range tags {
			switch tg {
			case "required":
				required = true
			case "omitempty":
				omit = true
			}
		}
		if required {
			s.Required = append(s.Required, name)
		}
		if !omit {
			constrain(ps, ft, tags)
		}
		// Go writes nil pointers, slices and maps as null.
		if (ptr || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map) && !required {
			s.Properties.Set(name, &invopop.Schema{AnyOf: []*invopop.Schema{{Type: "null"}, ps}})
		}
	}
}

// constrain applies the validate tags of one field to its schema.
func constrain(ps *invopop.Schema, t reflect.Type, tags []string) {
	kind := t.Kind()
	isString := kind == reflect.String
	isNum := kind >= reflect.Int && kind <= reflect.Float64
	isList := kind == reflect.Slice || kind == reflect.Array
	for _, tg := range tags {
		if tg == "dive" {
			return // the rest applies to the items
		}
		key, arg, _ := strings.Cut(tg, "=")
		n, nerr := strconv.ParseUint(arg, 10, 64)
		num := json.Number(arg)
		_, ferr := strconv.ParseFloat(arg, 64)
		switch key {
		case "required":
			if isString && (ps.MinLength == nil || *ps.MinLength < 1) {
				one := uint64(1)
				ps.MinLength = &one
			}
		case "email":
			ps.Format = "email"
		case "url", "uri":
			ps.Format = "uri"
		case "uuid", "uuid4", "uuid_rfc4122", "uuid4_rfc4122":
			ps.Format = "uuid"
		case "hostname", "hostname_rfc1123":
			ps.Format = "hostname"
		case "ipv4":
			ps.Format = "ipv4"
		case "ipv6":
			ps.Format = "ipv6"
		case "datetime":
			ps.Format = "date-time"
		case "min", "max", "len", "gt", "gte", "lt", "lte":
			switch {
			case isString && nerr == nil:
				lo, hi := lengthBounds(key, n)
				if lo != nil {
					ps.MinLength = lo
				}
				if hi != nil {
					ps.MaxLength = hi
				}
			case isList && nerr == nil:
				lo, hi := lengthBounds(key, n)
				if lo != nil {
					ps.MinItems = lo
				}
				if hi != nil {
					ps.MaxItems = hi
				}
			case isNum && ferr == nil:
				switch key {
				case "min", "gte":
					ps.Minimum = num
				case "max", "lte":
					ps.Maximum = num
				case "gt":
					ps.ExclusiveMinimum = num
				case "lt":
					ps.ExclusiveMaximum = num
				case "len":
					ps.Const = num
				}
			}
		case "oneof":
			var enum []any
			for _, v := range strings.Fields(arg) {
				if isNum {
					enum = append(enum, json.Number(v))
				} else {
					enum = append(enum, v)
				}
			}
			ps.Enum = enum
		}
	}
}

// lengthBounds returns the minimum and maximum lengths a tag allows.
func lengthBounds(key string, n uint64) (lo, hi *uint64) {
	p := func(v uint64) *uint64 { return &v }
	switch key {
	case "min", "gte":
		return p(n), nil
	case "max", "lte":
		return nil, p(n)
	case "len":
		return p(n), p(n)
	case "gt":
		return p(n + 1), nil
	case "lt":
		if n == 0 {
			return nil, p(0)
		}
		return nil, p(n - 1)
	}
	return nil, nil
}

var printer = message.NewPrinter(language.English)

// Schema is a compiled JSON Schema.
type Schema struct {
	name string
	s    *sjs.Schema
}

// Compile compiles a schema's JSON text. name names it in errors.
func Compile(name, text string) (*Schema, error) {
	doc, err := sjs.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("jsonschema: schema of %s: %w", name, err)
	}
	c := sjs.NewCompiler()
	c.AssertFormat()
	c.DefaultDraft(sjs.Draft2020)
	const url = "mem:///schema.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("jsonschema: schema of %s: %w", name, err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("jsonschema: schema of %s: %w", name, err)
	}
	return &Schema{name: name, s: s}, nil
}

// Name returns the name the schema was compiled with.
func (s *Schema) Name() string { return s.name }

// Check validates the JSON document b. A document the schema rejects is a
// *codec.SchemaError naming the first offending field.
func (s *Schema) Check(b []byte) error {
	inst, err := sjs.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("jsonschema: %w", err)
	}
	err = s.s.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *sjs.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	leaf := ve
	for len(leaf.Causes) > 0 {
		leaf = leaf.Causes[0]
	}
	loc := leaf.InstanceLocation
	if req, ok := leaf.ErrorKind.(*kind.Required); ok && len(req.Missing) > 0 {
		loc = append(append([]string(nil), loc...), req.Missing[0])
	}
	field := strings.Join(loc, ".")
	msg := leaf.ErrorKind.LocalizedString(printer)
	return &codec.SchemaError{Schema: s.name, Field: field, Err: errors.New(msg)}
}
