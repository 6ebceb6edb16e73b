// Package pbutil holds what the Protobuf codec and the schema registry's
// Protobuf serde share: finding the message to decode into, and the strict
// check for unknown fields.
package pbutil

import (
	"fmt"
	"reflect"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Message returns v as a Protobuf message, or an error naming its type.
func Message(v any) (proto.Message, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a Protobuf message (use a generated message type, as a pointer)", v)
	}
	if !m.ProtoReflect().IsValid() {
		return nil, fmt.Errorf("nil %T", v)
	}
	return m, nil
}

// Target returns the message to decode into for v: v itself when it is a
// message, or, for a pointer to a message pointer (&ev.Body of an
// Event[*pb.T]), a new message stored in it.
func Target(v any) (proto.Message, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		if el := rv.Elem(); el.Kind() == reflect.Pointer && el.Type().Implements(msgType) {
			if el.IsNil() {
				el.Set(reflect.New(el.Type().Elem()))
			}
			return el.Interface().(proto.Message), nil
		}
	}
	if m, ok := v.(proto.Message); ok && m.ProtoReflect().IsValid() {
		return m, nil
	}
	return nil, fmt.Errorf("cannot decode a Protobuf body into %T: take Event[*T] with T a generated message type", v)
}

var msgType = reflect.TypeFor[proto.Message]()

// TypeName returns the full name of the message type t (a pointer to a
// generated struct), or "" when t is not one.
func TypeName(t reflect.Type) protoreflect.FullName {
	if t == nil || !t.Implements(msgType) || t.Kind() != reflect.Pointer {
		return ""
	}
	return reflect.Zero(t).Interface().(proto.Message).ProtoReflect().Descriptor().FullName()
}

// CheckUnknown returns an error naming the first field of m, or of a
// message inside it, that its type does not know.
func CheckUnknown(m protoreflect.Message) error {
	if u := m.GetUnknown(); len(u) > 0 {
		return fmt.Errorf("%s has fields it does not know (%d bytes)", m.Descriptor().FullName(), len(u))
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = CheckUnknown(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = CheckUnknown(mv.Message())
				return err == nil
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			err = CheckUnknown(v.Message())
		}
		return err == nil
	})
	return err
}

// Offending returns the path of the field that makes m fail to encode
// (protobuf-go's errors do not name it): the first string that is not
// UTF-8 ("user.name", "lines[2].sku"), or a proto2 required field that is
// not set; "" when there is none.
func Offending(m protoreflect.Message) string {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := string(fd.Name())
		if !m.Has(fd) {
			if fd.Cardinality() == protoreflect.Required {
				return name
			}
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for j := 0; j < l.Len(); j++ {
				if p, bad := offendingValue(fd, l.Get(j)); bad {
					return fmt.Sprintf("%s[%d]%s", name, j, p)
				}
			}
		case fd.IsMap():
			var found string
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					found = name + "{key}"
				} else if p, bad := offendingValue(fd.MapValue(), mv); bad {
					found = fmt.Sprintf("%s[%v]%s", name, k.Interface(), p)
				}
				return found == ""
			})
			if found != "" {
				return found
			}
		default:
			if p, bad := offendingValue(fd, v); bad {
				return name + p
			}
		}
	}
	return ""
}

// offendingValue reports whether v does not encode, and the path inside it
// that does not ("" for a string, ".field" inside a message).
func offendingValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (string, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "", !utf8.ValidString(v.String())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if p := Offending(v.Message()); p != "" {
			return "." + p, true
		}
	}
	return "", false
}
