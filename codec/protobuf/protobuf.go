// Package protobuf is the Protobuf body codec: event bodies are generated
// message types (google.golang.org/protobuf), in their binary encoding.
//
// A generated type becomes an event with two methods in its own package:
//
//	func (*userpb.UserRegistered) Topic() string     { return "user_events" }
//	func (*userpb.UserRegistered) EventType() string { return "user_registered" }
//
// Handlers take Event[*userpb.UserRegistered]. Protobuf bodies travel in
// header mode or CloudEvents (dispytch.Envelopes): the Dispytch envelope
// holds JSON and msgpack bodies only. Fields the reader's type does not know
// (a newer writer's) are kept as unknown fields, and survive re-encoding;
// dispytch.Strict() rejects them. For the Confluent Schema Registry's
// framing, use package codec/registry.
package protobuf

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/internal/pbutil"
)

// ContentType is the content type of Protobuf bodies.
const ContentType = "application/protobuf"

// Codec is the Protobuf codec. Give it to the emitter and the listener:
//
//	dispytch.NewEmitter(p, dispytch.WithCodec(protobuf.Codec), dispytch.Envelopes(codec.Headers))
//	dispytch.NewListener(c, dispytch.Codecs(protobuf.Codec), dispytch.Envelopes(codec.Headers))
var Codec codec.Codec = protoCodec{}

type protoCodec struct{}

// ErrEnvelope is returned by the envelope methods: a Protobuf body does not
// go in the Dispytch envelope.
var ErrEnvelope = errors.New("protobuf: the Dispytch envelope holds JSON or msgpack bodies: send Protobuf bodies in header mode or CloudEvents (dispytch.Envelopes)")

func (protoCodec) ContentType() string { return ContentType }

// Marshal encodes a generated message. A message that cannot be encoded (a
// string that is not UTF-8, a proto2 required field unset) is a
// *codec.SchemaError naming the message.
func (protoCodec) Marshal(v any) ([]byte, error) {
	m, err := pbutil.Message(v)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, &codec.SchemaError{Schema: string(m.ProtoReflect().Descriptor().FullName()), Field: pbutil.Offending(m.ProtoReflect()), Err: err}
	}
	return b, nil
}

// Unmarshal decodes data into v, a *T or **T for a generated *T. With
// strict set, fields T does not know are an error.
func (protoCodec) Unmarshal(data []byte, v any, strict bool) error {
	m, err := pbutil.Target(v)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("protobuf: %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if strict {
		return pbutil.CheckUnknown(m.ProtoReflect())
	}
	return nil
}

// ValidBody reports whether data is a well-formed Protobuf message of some
// type: a sequence of complete fields.
func (protoCodec) ValidBody(data []byte) bool { return ValidWire(data) }

// ValidWire reports whether b parses as Protobuf fields, whatever the
// message type.
func ValidWire(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func (protoCodec) AppendEnvelope(dst []byte, _ *codec.Envelope) ([]byte, error) {
	return dst, ErrEnvelope
}

func (protoCodec) DecodeEnvelope([]byte, *codec.Envelope) error { return ErrEnvelope }
