package dispytch

import (
	"context"
	"encoding"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/topic"
)

// Binding an attempt's event into the types handlers take: Event[T] (the
// decoded, validated body), Segments[S] (typed topic segments), and their
// validation.

var (
	validatorT    = reflect.TypeFor[interface{ Validate() error }]()
	textUnmarshal = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// eventMaker is implemented by *Event[T].
type eventMaker interface {
	newEvent(a *attempt, vi *bodyValidation, pool *sync.Pool) (any, error)
	value(o any) reflect.Value
	release(o any, pool *sync.Pool)
	bodyType() reflect.Type
	direct(fn any) directCall
}

// directCall calls a handler of a common shape without reflection; ev is
// the *Event[T] built for the attempt.
type directCall func(ctx context.Context, ev any) error

// segmentsMaker is implemented by *Segments[S].
type segmentsMaker interface {
	makeSegments(a *attempt, b *segBinder) (reflect.Value, error)
	valueType() reflect.Type
}

// attempt is the state of one handler attempt.
type attempt struct {
	meta   *Metadata
	body   []byte
	codec  codec.Codec
	strict bool
	v      structValidator
	log    *slog.Logger // the handler's: its group and name
}

// logger is the logger a handler takes (a *slog.Logger parameter without
// a provider for it): the listener's, with the message's id, type and
// topic and the handler's group and name.
func (a *attempt) logger() *slog.Logger {
	return a.log.With("id", a.meta.ID, "type", a.meta.Type, "topic", a.meta.Topic)
}

// Segments binds the topic's wildcard segments into a struct S, converting
// them to the field types and validating them with `validate` tags. A field
// takes the segment named by its `segment` tag, or the one whose name equals
// the field's name ignoring case and underscores (UserID takes {user_id}).
// A value that does not convert or validate fails the attempt with
// ErrValidation, before the handler runs.
//
//	func(ev dispytch.Event[Note], seg dispytch.Segments[struct {
//		UserID int `segment:"user_id" validate:"gt=0"`
//	}]) error
type Segments[S any] struct {
	Value S
}

func (*Segments[S]) valueType() reflect.Type { return reflect.TypeFor[S]() }

func (*Segments[S]) makeSegments(a *attempt, b *segBinder) (reflect.Value, error) {
	s := new(Segments[S])
	if err := b.bind(reflect.ValueOf(&s.Value).Elem(), a.meta.seg); err != nil {
		return reflect.Value{}, err
	}
	if err := b.vi.check(a.v, &s.Value); err != nil {
		return reflect.Value{}, err
	}
	return reflect.ValueOf(s).Elem(), nil
}

func (*Event[T]) bodyType() reflect.Type { return reflect.TypeFor[T]() }

// newEvent returns a pooled *Event[T] holding the attempt's metadata and
// its decoded, validated body. The event is returned also with an error:
// give it back with release either way.
func (*Event[T]) newEvent(a *attempt, vi *bodyValidation, pool *sync.Pool) (any, error) {
	ev, _ := pool.Get().(*Event[T])
	if ev == nil {
		ev = new(Event[T])
	}
	ev.Metadata = *a.meta
	if err := decodeBody(a, &ev.Body); err != nil {
		return ev, err
	}
	if err := vi.check(a.v, &ev.Body); err != nil {
		return ev, err
	}
	return ev, nil
}

func (*Event[T]) value(o any) reflect.Value { return reflect.ValueOf(o.(*Event[T])).Elem() }

func (*Event[T]) release(o any, pool *sync.Pool) {
	*o.(*Event[T]) = Event[T]{}
	pool.Put(o)
}

// direct returns a reflection-free caller when fn is one of the common
// handler shapes without dependencies, func([context.Context,] Event[T])
// [error], or nil.
func (*Event[T]) direct(fn any) directCall {
	switch f := fn.(type) {
	case func(Event[T]) error:
		return func(_ context.Context, ev any) error { return f(*ev.(*Event[T])) }
	case func(context.Context, Event[T]) error:
		return func(ctx context.Context, ev any) error { return f(ctx, *ev.(*Event[T])) }
	case func(Event[T]):
		return func(_ context.Context, ev any) error { f(*ev.(*Event[T])); return nil }
	case func(context.Context, Event[T]):
		return func(ctx context.Context, ev any) error { f(ctx, *ev.(*Event[T])); return nil }
	}
	return nil
}

func decodeBody(a *attempt, v any) error {
	if p, ok := v.(*[]byte); ok {
		// The body as it is on the wire, checked when the codec can.
		if bv, ok := a.codec.(codec.BodyValidator); ok && !bv.ValidBody(a.body) {
			return fmt.Errorf("%w: body of %q is not valid %s", ErrDecode, a.meta.Type, a.codec.ContentType())
		}
		*p = append([]byte(nil), a.body...)
		return nil
	}
	if err := a.codec.Unmarshal(a.body, v, a.strict); err != nil {
		return fmt.Errorf("%w: body of %q into %T: %w", ErrDecode, a.meta.Type, v, err)
	}
	return nil
}

// bodyValidation says how to validate a body or segments type, decided once.
type bodyValidation struct {
	tags   bool // run the structValidator
	deref  bool // T is a pointer to a struct
	method bool // T or *T has Validate() error
}

func newBodyValidation(t reflect.Type) *bodyValidation {
	vi := &bodyValidation{}
	st := t
	if st.Kind() == reflect.Pointer {
		st, vi.deref = st.Elem(), true
	}
	if st.Kind() == reflect.Struct {
		vi.tags = hasValidateTags(st, map[reflect.Type]bool{})
	} else {
		vi.deref = false
	}
	vi.method = t.Implements(validatorT) || reflect.PointerTo(t).Implements(validatorT)
	return vi
}

func hasValidateTags(t reflect.Type, seen map[reflect.Type]bool) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("validate"); ok {
			return true
		}
		if hasValidateTags(f.Type, seen) {
			return true
		}
	}
	return false
}

// check validates *ptr (ptr is a *T).
func (vi *bodyValidation) check(v structValidator, ptr any) error {
	if vi.tags {
		target := ptr
		if vi.deref {
			rv := reflect.ValueOf(ptr).Elem()
			if rv.IsNil() {
				return fmt.Errorf("%w: body is null", ErrValidation)
			}
			target = rv.Interface()
		}
		if err := v.Struct(target); err != nil {
			return fmt.Errorf("%w: %w", ErrValidation, err)
		}
	}
	if vi.method {
		var err error
		if m, ok := ptr.(interface{ Validate() error }); ok {
			err = m.Validate()
		} else if m, ok := reflect.ValueOf(ptr).Elem().Interface().(interface{ Validate() error }); ok {
			err = m.Validate()
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrValidation, err)
		}
	}
	return nil
}

// segBinder binds segment values into the fields of a struct.
type segBinder struct {
	fields []segField
	vi     *bodyValidation
}

type segField struct {
	index []int
	name  string
	pos   int // index into the pattern's wildcard values
	conv  func(s string, dst reflect.Value) error
}

func (b *segBinder) bind(dst reflect.Value, m *segmentMatch) error {
	for i := range b.fields {
		f := &b.fields[i]
		s := m.vals[f.pos]
		if err := f.conv(s, dst.FieldByIndex(f.index)); err != nil {
			return fmt.Errorf("%w: segment %q = %q: %w", ErrValidation, f.name, s, err)
		}
	}
	return nil
}

func normName(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", ""))
}

// newSegBinder compiles the binding of struct t to the wildcards of pat.
func newSegBinder(t reflect.Type, pat *topic.Pattern) (*segBinder, []string) {
	if t.Kind() != reflect.Struct {
		return nil, []string{fmt.Sprintf("Segments[%s]: %s is not a struct", t, t)}
	}
	b := &segBinder{vi: newBodyValidation(t)}
	var problems []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, tagged := f.Tag.Lookup("segment")
		if name == "-" {
			continue
		}
		pos := -1
		for j, n := range pat.Names() {
			if n == "" {
				continue
			}
			if (tagged && n == name) || (!tagged && normName(n) == normName(f.Name)) {
				pos, name = j, n
				break
			}
		}
		if pos < 0 {
			want := name
			if !tagged {
				want = f.Name
			}
			problems = append(problems, fmt.Sprintf("Segments[%s]: field %s wants segment %q, but topic %q has no such wildcard", t, f.Name, want, pat.String()))
			continue
		}
		conv, err := segConverter(f.Type)
		if err != nil {
			problems = append(problems, fmt.Sprintf("Segments[%s]: field %s: %v", t, f.Name, err))
			continue
		}
		b.fields = append(b.fields, segField{index: f.Index, name: name, pos: pos, conv: conv})
	}
	return b, problems
}

func segConverter(t reflect.Type) (func(string, reflect.Value) error, error) {
	if reflect.PointerTo(t).Implements(textUnmarshal) {
		return func(s string, dst reflect.Value) error {
			return dst.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
		}, nil
	}
	switch t.Kind() {
	case reflect.String:
		return func(s string, dst reflect.Value) error { dst.SetString(s); return nil }, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseInt(s, 10, bits)
			if err != nil {
				return err
			}
			dst.SetInt(n)
			return nil
		}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseUint(s, 10, bits)
			if err != nil {
				return err
			}
			dst.SetUint(n)
			return nil
		}, nil
	case reflect.Float32, reflect.Float64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseFloat(s, bits)
			if err != nil {
				return err
			}
			dst.SetFloat(n)
			return nil
		}, nil
	case reflect.Bool:
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseBool(s)
			if err != nil {
				return err
			}
			dst.SetBool(n)
			return nil
		}, nil
	}
	return nil, fmt.Errorf("cannot convert a segment to %s", t)
}
