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

// BenchmarkFraming is the per-event cost of the registry's framing once the
// schema is cached: EncodeBody and Unmarshal of a serde against the bare
// codec (codec/avro's single-object encoding; proto.Marshal and
// proto.Unmarshal).
//
//	go test -run '^$' -bench Framing -benchmem ./codec/registry/
func BenchmarkFraming(b *testing.B) {
	srv := registrytest.New()
	b.Cleanup(srv.Close)
	c := client(b, srv)
	ctx := context.Background()
	av := registry.Avro(c, registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	pb := registry.Protobuf(c, registry.RegisterOnEmit())
	bare, err := avro.New(avro.Schema[UserV1](userV1))
	if err != nil {
		b.Fatal(err)
	}
	u := UserV1{ID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Email: "john.doe@example.com"}
	m := &testpb.UserRegistered{User: &testpb.User{Id: u.ID, Email: u.Email, Name: "John Doe of the Benchmark Suite, Esq."}, Timestamp: 1700000000}
	framedAvro, err := av.EncodeBody(ctx, "users", u)
	if err != nil {
		b.Fatal(err)
	}
	bareAvro, _ := bare.Marshal(u)
	framedPB, err := pb.EncodeBody(ctx, "user_events", m)
	if err != nil {
		b.Fatal(err)
	}
	barePB, _ := proto.Marshal(m)
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("avro/encode/codec", func() error { _, err := bare.Marshal(u); return err })
	run("avro/encode/registry", func() error { _, err := av.EncodeBody(ctx, "users", u); return err })
	run("avro/decode/codec", func() error { var v UserV1; return bare.Unmarshal(bareAvro, &v, false) })
	run("avro/decode/registry", func() error { var v UserV1; return av.Unmarshal(framedAvro, &v, false) })
	run("protobuf/encode/proto", func() error { _, err := proto.Marshal(m); return err })
	run("protobuf/encode/registry", func() error { _, err := pb.EncodeBody(ctx, "user_events", m); return err })
	run("protobuf/decode/proto", func() error { v := new(testpb.UserRegistered); return proto.Unmarshal(barePB, v) })
	run("protobuf/decode/registry", func() error { v := new(testpb.UserRegistered); return pb.Unmarshal(framedPB, v, false) })
}
