package registry_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dispytch/dispytch-go/codec/avro"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/internal/testpb"
)

type JUser struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
}

func (JUser) Topic() string     { return "jusers" }
func (JUser) EventType() string { return "juser" }

// FuzzUnmarshal: no serde panics on any body, whatever its header says;
// the seeds are real bodies of each, written with ids the registry has.
func FuzzUnmarshal(f *testing.F) {
	srv := registrytest.New()
	f.Cleanup(srv.Close)
	c := client(f, srv)
	ctx := context.Background()
	av := registry.Avro(c, registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	pb := registry.Protobuf(c, registry.RegisterOnEmit())
	js := registry.JSONSchema(c, registry.RegisterOnEmit())
	for _, seed := range []func() ([]byte, error){
		func() ([]byte, error) { return av.EncodeBody(ctx, "users", UserV1{ID: "u", Email: "e"}) },
		func() ([]byte, error) {
			return pb.EncodeBody(ctx, "orders", &testpb.Order{Id: "o", Lines: []*testpb.Order_Line{{Sku: "s", Quantity: 1}}})
		},
		func() ([]byte, error) {
			return pb.EncodeBody(ctx, "user_events", &testpb.UserRegistered{User: &testpb.User{Id: "u"}})
		},
		func() ([]byte, error) { return js.EncodeBody(ctx, "jusers", JUser{ID: "u", Email: "a@b.c"}) },
	} {
		b, err := seed()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var u UserV1
		_ = av.Unmarshal(data, &u, false)
		var o *testpb.Order
		_ = pb.Unmarshal(data, &o, true)
		var r *testpb.UserRegistered
		_ = pb.Unmarshal(data, &r, false)
		var j JUser
		_ = js.Unmarshal(data, &j, true)
	})
}

// TestFramingAllocs: with the schema cached, framing an event for the
// registry allocates nothing beyond what the codec does without framing,
// and makes no request.
func TestFramingAllocs(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	c := client(t, srv)
	ctx := context.Background()
	av := registry.Avro(c, registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	pb := registry.Protobuf(c, registry.RegisterOnEmit())
	plainAvro, err := avro.New(avro.Schema[UserV1](userV1))
	if err != nil {
		t.Fatal(err)
	}
	u := UserV1{ID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Email: "john.doe@example.com"}
	m := &testpb.UserRegistered{User: &testpb.User{Id: u.ID, Email: u.Email, Name: "John"}, Timestamp: 1}
	if _, err := av.EncodeBody(ctx, "users", u); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.EncodeBody(ctx, "user_events", m); err != nil {
		t.Fatal(err)
	}
	requests := srv.Requests()
	framedAvro := testing.AllocsPerRun(200, func() { _, _ = av.EncodeBody(ctx, "users", u) })
	bareAvro := testing.AllocsPerRun(200, func() { _, _ = plainAvro.Marshal(u) })
	framedPB := testing.AllocsPerRun(200, func() { _, _ = pb.EncodeBody(ctx, "user_events", m) })
	barePB := testing.AllocsPerRun(200, func() { _, _ = proto.Marshal(m) })
	fa, _ := av.EncodeBody(ctx, "users", u)
	ba, _ := plainAvro.Marshal(u)
	fp, _ := pb.EncodeBody(ctx, "user_events", m)
	bp, _ := proto.Marshal(m)
	decFramedAvro := testing.AllocsPerRun(200, func() { var v UserV1; _ = av.Unmarshal(fa, &v, false) })
	decBareAvro := testing.AllocsPerRun(200, func() { var v UserV1; _ = plainAvro.Unmarshal(ba, &v, false) })
	decFramedPB := testing.AllocsPerRun(200, func() { _ = pb.Unmarshal(fp, new(testpb.UserRegistered), false) })
	decBarePB := testing.AllocsPerRun(200, func() { _ = proto.Unmarshal(bp, new(testpb.UserRegistered)) })
	if decFramedAvro > decBareAvro || decFramedPB > decBarePB {
		t.Fatalf("allocations per decode: avro framed %.0f vs codec %.0f, protobuf framed %.0f vs proto.Unmarshal %.0f", decFramedAvro, decBareAvro, decFramedPB, decBarePB)
	}
	if framedAvro > bareAvro || framedPB > barePB {
		t.Fatalf("allocations per event: avro framed %.0f vs codec %.0f, protobuf framed %.0f vs proto.Marshal %.0f", framedAvro, bareAvro, framedPB, barePB)
	}
	if srv.Requests() != requests {
		t.Fatalf("%d registry requests on the hot path", srv.Requests()-requests)
	}
	t.Logf("allocations per event: avro framed %.0f, codec %.0f; protobuf framed %.0f, proto.Marshal %.0f", framedAvro, bareAvro, framedPB, barePB)
}
