package registry_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/internal/testpb"
	testpbv2 "github.com/dispytch/dispytch-go/internal/testpb/v2"
)

// Two versions of one Avro record; v2 adds a field with a default.
const (
	userV1 = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"string"}]}`
	userV2 = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"string"},{"name":"referrer","type":"string","default":"none"}]}`
	// userV3 adds a field without a default.
	userV3 = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"string"},{"name":"referrer","type":"string"}]}`
	// userBad changes email's type: no reader of v1 data.
	userBad = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"int"}]}`
)

type UserV1 struct {
	ID    string `avro:"id"`
	Email string `avro:"email"`
}

type UserV2 struct {
	ID       string `avro:"id"`
	Email    string `avro:"email"`
	Referrer string `avro:"referrer"`
}

type UserBad struct {
	ID    string `avro:"id"`
	Email int    `avro:"email"`
}

func (UserV1) Topic() string      { return "users" }
func (UserV1) EventType() string  { return "user" }
func (UserV2) Topic() string      { return "users" }
func (UserV2) EventType() string  { return "user" }
func (UserBad) Topic() string     { return "users" }
func (UserBad) EventType() string { return "user" }

func client(t testing.TB, srv *registrytest.Server, opts ...registry.ClientOption) *registry.Client {
	t.Helper()
	c, err := registry.New(append([]registry.ClientOption{registry.URLs(srv.URL), registry.Timeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kitWith is a memory-broker kit whose listener and emitter use serde in
// header mode, each through a client of its own.
func kitWith(t *testing.T, listen, emit codec.Codec, opts ...dispytch.ListenerOption) *dispytchtest.Kit {
	kit := dispytchtest.New(t, append([]dispytch.ListenerOption{dispytch.Codecs(listen), dispytch.Envelopes(codec.Headers)}, opts...)...)
	kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(emit), dispytch.Envelopes(codec.Headers))
	return kit
}

// TestAvroWireFormat: the value is magic 0, the registered schema's id
// (big-endian) and the Avro data; the listener decodes it by that id; only
// the first event asks the registry.
func TestAvroWireFormat(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	emit := registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	listen := registry.Avro(client(t, srv), registry.Schema[UserV1](userV1))
	kit := kitWith(t, listen, emit)
	got := make(chan UserV1, 10)
	kit.Listener.Handle("users", "user", func(ev dispytch.Event[UserV1]) { got <- ev.Body })
	kit.Start()

	m, err := kit.Emitter.Message(UserV1{ID: "u1", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := srv.Register("users-value", "AVRO", userV1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Value[0] != 0 || int(binary.BigEndian.Uint32(m.Value[1:5])) != id || m.ContentType != registry.ContentTypeAvro {
		t.Fatalf("value %x (id %d), content type %q", m.Value, id, m.ContentType)
	}
	var back UserV1
	if err := avro.Unmarshal(avro.MustParse(userV1), m.Value[5:], &back); err != nil || back != (UserV1{"u1", "a@b.c"}) {
		t.Fatalf("the data after the header is not plain Avro: %+v %v", back, err)
	}
	before := srv.Requests()
	for i := range 5 {
		if s := kit.Wait(kit.Emit(UserV1{ID: fmt.Sprint("u", i), Email: "x@y.z"})); s.Outcome != dispytch.OutcomeAcked {
			t.Fatalf("%+v", s)
		}
		if b := <-got; b.ID != fmt.Sprint("u", i) {
			t.Fatalf("%+v", b)
		}
	}
	// The listener's client fetched the schema once; the emitter none.
	if n := srv.Requests() - before; n != 1 {
		t.Fatalf("%d registry requests for 5 events, want 1 (the listener's first lookup of id %d)", n, id)
	}
}

// TestProtobufWireFormat: the message index follows the id, zigzag
// varints: UserRegistered, the file's second message, is [1] (02 02),
// Order [2] (02 04); the first message, [0], is the single byte 0.
func TestProtobufWireFormat(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	emit := registry.Protobuf(client(t, srv), registry.RegisterOnEmit())
	listen := registry.Protobuf(client(t, srv))
	kit := kitWith(t, listen, emit)
	users := make(chan *testpb.UserRegistered, 1)
	orders := make(chan *testpb.Order, 1)
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[*testpb.UserRegistered]) { users <- ev.Body })
	kit.Listener.Handle("orders", "order_placed", func(ev dispytch.Event[*testpb.Order]) { orders <- ev.Body })
	kit.Start()

	u := &testpb.UserRegistered{User: &testpb.User{Id: "u1", Email: "a@b.c"}, Timestamp: 5}
	o := &testpb.Order{Id: "o1", Lines: []*testpb.Order_Line{{Sku: "s", Quantity: 3}}}
	mu, err := kit.Emitter.Message(u)
	if err != nil {
		t.Fatal(err)
	}
	mo, err := kit.Emitter.Message(o)
	if err != nil {
		t.Fatal(err)
	}
	ub, _ := proto.Marshal(u)
	ob, _ := proto.Marshal(o)
	if mu.Value[0] != 0 || mu.Value[5] != 2 || mu.Value[6] != 2 || string(mu.Value[7:]) != string(ub) {
		t.Fatalf("UserRegistered (index [1]): %x", mu.Value)
	}
	if mo.Value[0] != 0 || mo.Value[5] != 2 || mo.Value[6] != 4 || string(mo.Value[7:]) != string(ob) {
		t.Fatalf("Order (index [2]): %x", mo.Value)
	}
	first, err := registry.Protobuf(client(t, srv), registry.RegisterOnEmit()).EncodeBody(context.Background(), "users", &testpb.User{Id: "x"})
	if err != nil || first[5] != 0 {
		t.Fatalf("User (index [0]): %x %v", first, err)
	}
	kit.Wait(kit.Emit(u))
	kit.Wait(kit.Emit(o))
	if b := <-users; !proto.Equal(b, u) {
		t.Fatalf("%v", b)
	}
	if b := <-orders; !proto.Equal(b, o) {
		t.Fatalf("%v", b)
	}
	// The registry holds the file's serialized descriptor.
	ss, err := client(t, srv).SR().SchemaByVersion(context.Background(), "orders-value", -1)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(ss.Schema.Schema)
	fd := new(descriptorpb.FileDescriptorProto)
	if err := proto.Unmarshal(raw, fd); err != nil || fd.GetPackage() != "dispytch.test.v1" {
		t.Fatalf("registered schema: %v %v", fd, err)
	}
}

// TestSubjectStrategies names subjects by topic, record and both.
func TestSubjectStrategies(t *testing.T) {
	for strategy, want := range map[registry.SubjectStrategy]string{
		registry.SubjectTopicName:       "users-value",
		registry.SubjectRecordName:      "acme.User",
		registry.SubjectTopicRecordName: "users-acme.User",
	} {
		srv := registrytest.New()
		s := registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit(), registry.Subjects(strategy))
		if _, err := s.EncodeBody(context.Background(), "users", UserV1{ID: "u"}); err != nil {
			t.Fatal(err)
		}
		subs, err := client(t, srv).SR().Subjects(context.Background())
		if err != nil || len(subs) != 1 || subs[0] != want {
			t.Fatalf("strategy %d: subjects %v %v, want %s", strategy, subs, err, want)
		}
		srv.Close()
	}
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	p := registry.Protobuf(client(t, srv), registry.RegisterOnEmit(), registry.Subjects(registry.SubjectTopicRecordName))
	if _, err := p.EncodeBody(context.Background(), "t", &testpb.Order{}); err != nil {
		t.Fatal(err)
	}
	if subs, _ := client(t, srv).SR().Subjects(context.Background()); len(subs) != 1 || subs[0] != "t-dispytch.test.v1.Order" {
		t.Fatalf("%v", subs)
	}
}

// TestUseLatest: without RegisterOnEmit the subject's latest schema is
// the writer's, events are checked against it, and a subject without one
// sends nothing.
func TestUseLatest(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	kit := kitWith(t, registry.Avro(client(t, srv), registry.Schema[UserV2](userV2)), registry.Avro(client(t, srv)))
	kit.Listener.Handle("users", "user", func(dispytch.Event[UserV2]) {})
	kit.Start()
	err := kit.Emitter.Emit(context.Background(), UserV2{ID: "u1", Email: "e"})
	if !errors.Is(err, registry.ErrNoSchema) || !errors.Is(err, dispytch.ErrNotSent) || !strings.Contains(err.Error(), "users-value") {
		t.Fatalf("no schema yet: %v", err)
	}
	id, err := srv.Register("users-value", "AVRO", userV3)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kit.Emitter.Message(UserV2{ID: "u1", Email: "e", Referrer: "r"})
	if err != nil || int(binary.BigEndian.Uint32(m.Value[1:5])) != id {
		t.Fatalf("%v %x", err, m.Value)
	}
	// A type without the latest schema's field does not conform.
	err = kit.Emitter.Emit(context.Background(), UserV1{ID: "u1", Email: "e"})
	var se *codec.SchemaError
	if !errors.As(err, &se) || se.Field != "referrer" || !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("%v (%+v)", err, se)
	}
	if s := kit.Wait(kit.Emit(UserV2{ID: "u2", Email: "e", Referrer: "r"})); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
}

// TestAvroEvolution: a reader resolves the writer's schema, the one the
// body names, against its own.
func TestAvroEvolution(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	v2 := registry.Avro(client(t, srv), registry.Schema[UserV2](userV2), registry.RegisterOnEmit(), registry.Subjects(registry.SubjectTopicRecordName))
	v1 := registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	newer, err := v2.EncodeBody(context.Background(), "a", UserV2{ID: "u", Email: "e", Referrer: "ads"})
	if err != nil {
		t.Fatal(err)
	}
	older, err := v1.EncodeBody(context.Background(), "b", UserV1{ID: "w", Email: "f"})
	if err != nil {
		t.Fatal(err)
	}
	var r1 UserV1
	if err := v1.Unmarshal(newer, &r1, false); err != nil || r1 != (UserV1{"u", "e"}) {
		t.Fatalf("v1 reads v2: %+v %v", r1, err)
	}
	if err := v1.Unmarshal(newer, &r1, true); err == nil || !strings.Contains(err.Error(), "referrer") {
		t.Fatalf("strict v1 reads v2: %v", err)
	}
	var r2 UserV2
	if err := v2.Unmarshal(older, &r2, true); err != nil || r2 != (UserV2{"w", "f", "none"}) {
		t.Fatalf("v2 reads v1: %+v %v", r2, err)
	}
}

// TestProtobufEvolution: a newer writer's field is kept as unknown by the
// older reader.
func TestProtobufEvolution(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	emit := registry.Protobuf(client(t, srv), registry.RegisterOnEmit(), registry.Subjects(registry.SubjectRecordName))
	listen := registry.Protobuf(client(t, srv))
	kit := kitWith(t, listen, emit)
	got := make(chan *testpb.UserRegistered, 1)
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[*testpb.UserRegistered]) { got <- ev.Body })
	kit.Start()
	if s := kit.Wait(kit.Emit(&testpbv2.UserRegistered{User: &testpbv2.User{Id: "u"}, Timestamp: 2, Referrer: "ads"})); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	b := <-got
	again, _ := proto.Marshal(b)
	v2 := new(testpbv2.UserRegistered)
	if err := proto.Unmarshal(again, v2); err != nil || b.GetUser().GetId() != "u" || v2.Referrer != "ads" {
		t.Fatalf("v1 %v lost the v2 field: %v %v", b, v2, err)
	}
}

// TestIncompatible: Check and Run fail with the registry's reason when a
// handler's schema is incompatible with its subject, and so does an emit
// that registers one; a compatible schema passes.
func TestIncompatible(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	if _, err := srv.Register("users-value", "AVRO", userV1); err != nil {
		t.Fatal(err)
	}
	bad := registry.Avro(client(t, srv), registry.Schema[UserBad](userBad), registry.RegisterOnEmit())
	kit := kitWith(t, bad, bad)
	kit.Listener.Handle("users", "user", func(dispytch.Event[UserBad]) {})
	err := kit.Listener.Check()
	if !errors.Is(err, registry.ErrIncompatible) || !strings.Contains(err.Error(), "users-value") || !strings.Contains(err.Error(), "BACKWARD") {
		t.Fatalf("Check: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := kit.Listener.Run(ctx); !errors.Is(err, registry.ErrIncompatible) {
		t.Fatalf("Run: %v", err)
	}
	err = kit.Emitter.Emit(ctx, UserBad{ID: "u", Email: 3})
	if !errors.Is(err, registry.ErrIncompatible) || !errors.Is(err, dispytch.ErrNotSent) || !strings.Contains(err.Error(), "incompatible with an earlier schema") {
		t.Fatalf("Emit: %v", err)
	}
	good := registry.Avro(client(t, srv), registry.Schema[UserV2](userV2))
	kit2 := kitWith(t, good, good)
	kit2.Listener.Handle("users", "user", func(dispytch.Event[UserV2]) {})
	if err := kit2.Listener.Check(); err != nil {
		t.Fatalf("a compatible schema: %v", err)
	}
	// Under NONE anything goes.
	srv.SetCompatibility("users-value", "NONE")
	if err := kit.Listener.Check(); err != nil {
		t.Fatalf("NONE: %v", err)
	}
}

// TestRegistryCompatibility: the in-process registry's checks for the
// cases the tests rely on, per schema type.
func TestRegistryCompatibility(t *testing.T) {
	fd := protodesc.ToFileDescriptorProto((&testpb.UserRegistered{}).ProtoReflect().Descriptor().ParentFile())
	enc := func(f *descriptorpb.FileDescriptorProto) string {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(f)
		return base64.StdEncoding.EncodeToString(b)
	}
	added := proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
	added.MessageType[1].Field = append(added.MessageType[1].Field, &descriptorpb.FieldDescriptorProto{
		Name: proto.String("referrer"), Number: proto.Int32(9), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()})
	retyped := proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
	retyped.MessageType[1].Field[1].Type = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE.Enum()
	removed := proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
	removed.MessageType = removed.MessageType[:2]
	const (
		js1 = `{"type":"object","properties":{"id":{"type":"string"}}}`
		js2 = `{"type":"object","properties":{"id":{"type":"string"},"n":{"type":"integer"}}}`
		js3 = `{"type":"object","properties":{"id":{"type":"integer"}}}`
		js4 = `{"type":"object","required":["id","n"],"properties":{"id":{"type":"string"},"n":{"type":"integer"}}}`
	)
	cases := []struct {
		typ, first, next string
		ok               bool
		msg              string
	}{
		{"AVRO", userV1, userV2, true, ""},
		{"AVRO", userV1, userBad, false, "not compatible"},
		{"PROTOBUF", enc(fd), enc(added), true, ""},
		{"PROTOBUF", enc(fd), enc(retyped), false, "FIELD_KIND_CHANGED"},
		{"PROTOBUF", enc(fd), enc(removed), false, "MESSAGE_REMOVED"},
		{"JSON", js1, js2, true, ""},
		{"JSON", js1, js3, false, "TYPE_CHANGED"},
		{"JSON", js1, js4, false, "REQUIRED_PROPERTY_ADDED"},
	}
	for i, c := range cases {
		srv := registrytest.New()
		subj := fmt.Sprint("s", i)
		if _, err := srv.Register(subj, c.typ, c.first); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		_, err := srv.Register(subj, c.typ, c.next)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("%d %s: %v, want ok=%v %q", i, c.typ, err, c.ok, c.msg)
		}
		srv.Close()
	}
}

// TestBadInput: a wrong magic byte, an unknown schema id, a truncated
// body, a registry outage: each is dead-lettered with reason decode and a
// typed error, never a panic.
func TestBadInput(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	emit := registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit())
	pbEmit := registry.Protobuf(client(t, srv), registry.RegisterOnEmit())
	good, err := emit.EncodeBody(context.Background(), "users", UserV1{ID: "identifier", Email: "someone@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := pbEmit.EncodeBody(context.Background(), "user_events", &testpb.UserRegistered{User: &testpb.User{Id: "identifier", Email: "someone"}})
	if err != nil {
		t.Fatal(err)
	}
	unknownID := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(unknownID[1:5], 999)
	cases := []struct {
		name  string
		body  []byte
		ct    string
		want  error
		down  bool
		topic string
	}{
		{"magic", append([]byte{1}, good[1:]...), registry.ContentTypeAvro, registry.ErrFraming, false, "users"},
		{"short", good[:3], registry.ContentTypeAvro, registry.ErrFraming, false, "users"},
		{"unknown id", unknownID, registry.ContentTypeAvro, registry.ErrUnknownSchema, false, "users"},
		{"truncated avro", good[:len(good)-5], registry.ContentTypeAvro, nil, false, "users"},
		{"truncated protobuf", pb[:len(pb)-4], registry.ContentTypeProtobuf, nil, false, "user_events"},
		{"bad index", append(append([]byte(nil), pb[:5]...), 0x02, 0x08), registry.ContentTypeProtobuf, registry.ErrFraming, false, "user_events"},
		{"outage", good, registry.ContentTypeAvro, registry.ErrUnavailable, true, "users"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kit := dispytchtest.New(t, dispytch.Codecs(registry.Avro(client(t, srv), registry.Schema[UserV1](userV1)), registry.Protobuf(client(t, srv))),
				dispytch.Envelopes(codec.Headers))
			kit.Listener.Handle("users", "user", func(dispytch.Event[UserV1]) {})
			kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[*testpb.UserRegistered]) {})
			kit.Start()
			if c.down {
				srv.SetDown(true)
				defer srv.SetDown(false)
			}
			typ := "user"
			if c.topic == "user_events" {
				typ = "user_registered"
			}
			kit.Publish(c.topic, c.body, map[string]string{codec.HeaderEventID: "bad", codec.HeaderEventType: typ, codec.HeaderTimestamp: "1", "content-type": c.ct})
			st := kit.Wait("bad")
			if st.Outcome != dispytch.OutcomeDeadLettered || len(st.Failures) != 1 || st.Failures[0].Reason != dispytch.ReasonDecode {
				t.Fatalf("%+v", st)
			}
			if err := st.Failures[0].Err; !errors.Is(err, dispytch.ErrDecode) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}

// TestOutageAtEmit: an emit that cannot reach the registry returns an
// error and sends nothing.
func TestOutageAtEmit(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	dead := registrytest.New()
	dead.Close() // connections refused
	kit := kitWith(t, registry.Avro(client(t, srv), registry.Schema[UserV1](userV1)),
		registry.Avro(client(t, dead), registry.Schema[UserV1](userV1), registry.RegisterOnEmit()))
	var handled []string
	kit.Listener.Handle("users", "user", func(ev dispytch.Event[UserV1]) { handled = append(handled, ev.Body.ID) })
	kit.Start()
	err := kit.Emitter.Emit(context.Background(), UserV1{ID: "lost", Email: "e"})
	if !errors.Is(err, registry.ErrUnavailable) || !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("%v", err)
	}
	srv.SetDown(true)
	err = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(registry.Avro(client(t, srv), registry.RegisterOnEmit())), dispytch.Envelopes(codec.Headers)).
		Emit(context.Background(), UserV1{ID: "lost too", Email: "e"})
	if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("%v", err)
	}
	srv.SetDown(false)
	kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit())), dispytch.Envelopes(codec.Headers))
	if s := kit.Wait(kit.Emit(UserV1{ID: "kept", Email: "e"})); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if len(handled) != 1 || handled[0] != "kept" {
		t.Fatalf("handled %v: an emit that failed sent something", handled)
	}
}

// TestAuthAndTLS: basic auth, bearer tokens and TLS reach a registry that
// requires them; without them the registry's refusal is the error.
func TestAuthAndTLS(t *testing.T) {
	ctx := context.Background()
	basic := registrytest.New(registrytest.BasicAuth("key", "secret"))
	defer basic.Close()
	_, err := registry.Avro(client(t, basic), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{})
	if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := registry.Avro(client(t, basic, registry.BasicAuth("key", "secret")), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{}); err != nil {
		t.Fatal(err)
	}
	bearer := registrytest.New(registrytest.BearerToken("tok"))
	defer bearer.Close()
	if _, err := registry.Avro(client(t, bearer, registry.BearerToken("tok")), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{}); err != nil {
		t.Fatal(err)
	}
	secure := registrytest.NewTLS()
	defer secure.Close()
	if _, err := registry.Avro(client(t, secure), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{}); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
	cfg := secure.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	if _, err := registry.Avro(client(t, secure, registry.TLS(cfg)), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{}); err != nil {
		t.Fatalf("TLS: %v", err)
	}
	if _, err := registry.Avro(client(t, secure, registry.HTTPClient(secure.Client())), registry.RegisterOnEmit()).EncodeBody(ctx, "users", UserV1{}); err != nil {
		t.Fatalf("HTTP client: %v", err)
	}
}
