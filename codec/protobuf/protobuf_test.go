package protobuf_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/protobuf"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/internal/testpb"
	testpbv2 "github.com/dispytch/dispytch-go/internal/testpb/v2"
)

func user(id string) *testpb.UserRegistered {
	return &testpb.UserRegistered{User: &testpb.User{Id: id, Email: id + "@example.com", Name: "Ann"}, Timestamp: 7}
}

// TestEndToEnd: a generated message emitted in header mode and in
// CloudEvents binary mode is handled as Event[*T].
func TestEndToEnd(t *testing.T) {
	for _, f := range []codec.EnvelopeFormat{codec.Headers, codec.CloudEvents(codec.CloudEventsBinary, "urn:test"), codec.CloudEvents(codec.CloudEventsStructured, "urn:test")} {
		t.Run(f.Name(), func(t *testing.T) {
			kit := dispytchtest.New(t, dispytch.Codecs(protobuf.Codec), dispytch.Envelopes(f))
			kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(protobuf.Codec), dispytch.Envelopes(f))
			got := make(chan *testpb.UserRegistered, 1)
			kit.Listener.Handle("user_events", "user_registered", func(_ context.Context, ev dispytch.Event[*testpb.UserRegistered]) error {
				got <- ev.Body
				return nil
			})
			kit.Start()
			m, err := kit.Emitter.Message(user("u1"))
			if err != nil {
				t.Fatal(err)
			}
			if f == codec.Headers {
				want, _ := proto.Marshal(user("u1"))
				if m.ContentType != protobuf.ContentType || !bytes.Equal(m.Value, want) {
					t.Fatalf("content type %q, value %x, want %x", m.ContentType, m.Value, want)
				}
			}
			if s := kit.Wait(kit.Emit(user("u1"))); s.Outcome != dispytch.OutcomeAcked {
				t.Fatalf("%+v", s)
			}
			if b := <-got; !proto.Equal(b, user("u1")) {
				t.Fatalf("body %v", b)
			}
		})
	}
}

// TestUnknownFieldsKept: a newer writer's field survives decoding into
// the older type and re-encoding; Strict rejects it.
func TestUnknownFieldsKept(t *testing.T) {
	v2 := &testpbv2.UserRegistered{User: &testpbv2.User{Id: "u1"}, Timestamp: 3, Referrer: "ads"}
	b, err := protobuf.Codec.Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	var v1 *testpb.UserRegistered
	if err := protobuf.Codec.Unmarshal(b, &v1, false); err != nil {
		t.Fatal(err)
	}
	if v1.GetUser().GetId() != "u1" || v1.GetTimestamp() != 3 || len(v1.ProtoReflect().GetUnknown()) == 0 {
		t.Fatalf("v1 %v, unknown %x", v1, v1.ProtoReflect().GetUnknown())
	}
	again, _ := proto.Marshal(v1)
	back := new(testpbv2.UserRegistered)
	if err := proto.Unmarshal(again, back); err != nil || back.Referrer != "ads" {
		t.Fatalf("re-encoded v1 lost the v2 field: %v %v", back, err)
	}
	v1 = nil
	if err := protobuf.Codec.Unmarshal(b, &v1, true); err == nil {
		t.Fatal("strict decode accepted an unknown field")
	}
}

// TestNotConforming: a message that cannot be encoded is an error naming
// it, and nothing is sent.
func TestNotConforming(t *testing.T) {
	kit := dispytchtest.New(t)
	e := dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(protobuf.Codec), dispytch.Envelopes(codec.Headers))
	bad := user("u1")
	bad.User.Name = "\xff\xfe"
	err := e.Emit(context.Background(), bad)
	var se *codec.SchemaError
	if !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, codec.ErrSchema) || !errors.As(err, &se) || se.Schema != "dispytch.test.v1.UserRegistered" || se.Field != "user.name" {
		t.Fatalf("%v", err)
	}
	if err := e.Emit(context.Background(), user("u1")); err != nil {
		t.Fatal(err)
	}
	// The Dispytch envelope cannot carry it: a clear error.
	err = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(protobuf.Codec)).Emit(context.Background(), user("u1"))
	if !errors.Is(err, protobuf.ErrEnvelope) || !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("%v", err)
	}
}

// TestBadInput: a truncated body is dead-lettered with reason decode.
func TestBadInput(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Codecs(protobuf.Codec), dispytch.Envelopes(codec.Headers))
	kit.Listener.Handle("user_events", "user_registered", func(context.Context, dispytch.Event[*testpb.UserRegistered]) error { return nil })
	kit.Start()
	m, err := dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(protobuf.Codec), dispytch.Envelopes(codec.Headers)).Message(user("u1"))
	if err != nil {
		t.Fatal(err)
	}
	m.Headers["content-type"] = protobuf.ContentType
	kit.Publish(m.Topic, m.Value[:len(m.Value)-3], m.Headers)
	s := kit.Wait(m.ID)
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonDecode {
		t.Fatalf("%+v", s)
	}
}

func FuzzUnmarshal(f *testing.F) {
	b, _ := proto.Marshal(user("u1"))
	f.Add(b)
	o, _ := proto.Marshal(&testpb.Order{Id: "o", Lines: []*testpb.Order_Line{{Sku: "a", Quantity: 2}}})
	f.Add(o)
	f.Fuzz(func(t *testing.T, data []byte) {
		var v *testpb.UserRegistered
		err := protobuf.Codec.Unmarshal(data, &v, false)
		if err == nil && !protobuf.ValidWire(data) {
			t.Fatalf("decoded %x, which ValidWire rejects", data)
		}
		_ = protobuf.Codec.Unmarshal(data, &v, true)
	})
}
