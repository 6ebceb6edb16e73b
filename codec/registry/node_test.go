package registry_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/internal/testpb"
)

// The wire format checked by an independent implementation: Confluent's
// own serializers for Node.js (@confluentinc/schemaregistry), installed in
// testdata/confluent-node by `npm ci` (.ci/run does it). Go writes and Node
// reads, Node writes and a Go listener handles, for Avro, Protobuf and JSON
// Schema, against one in-process registry.

const nodeDir = "testdata/confluent-node"

// node runs interop.js with one request and returns its answer.
func node(t *testing.T, req map[string]any) map[string]json.RawMessage {
	t.Helper()
	testenv.RequireCommand(t, "node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@confluentinc", "schemaregistry")); err != nil {
		testenv.Unavailable(t, "Confluent's Node.js serializers are not installed: run `npm ci` in codec/registry/%s", nodeDir)
	}
	out, err := nodeErr(req)
	if err != nil {
		t.Fatalf("node %s %s: %v", req["op"], req["kind"], err)
	}
	var ans map[string]json.RawMessage
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("node answered %q: %v", out, err)
	}
	return ans
}

// nodeErr runs interop.js and returns its output, or its error with what
// it wrote to stderr.
func nodeErr(req map[string]any) ([]byte, error) {
	in, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "interop.js")
	cmd.Dir = nodeDir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return out, nil
}

func b64(t *testing.T, raw json.RawMessage) []byte {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handleOne publishes payload as a header-mode message (as a Kafka
// producer that sets the Dispytch headers would) and returns the settlement.
func handleOne(t *testing.T, kit interface {
	Publish(string, []byte, map[string]string)
	Wait(string) dispytch.Settlement
}, topic, typ, ct string, payload []byte) dispytch.Settlement {
	t.Helper()
	kit.Publish(topic, payload, map[string]string{codec.HeaderEventID: "from-node", codec.HeaderEventType: typ, codec.HeaderTimestamp: "1", "content-type": ct})
	return kit.Wait("from-node")
}

func TestConfluentNodeAvro(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	kit := kitWith(t, registry.Avro(client(t, srv), registry.Schema[UserV1](userV1)),
		registry.Avro(client(t, srv), registry.Schema[UserV1](userV1), registry.RegisterOnEmit()))
	got := make(chan UserV1, 1)
	kit.Listener.Handle("users", "user", func(ev dispytch.Event[UserV1]) { got <- ev.Body })
	kit.Start()

	// Go writes, Node reads.
	m, err := kit.Emitter.Message(UserV1{ID: "go-1", Email: "go@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ans := node(t, map[string]any{"op": "deserialize", "kind": "avro", "url": srv.URL, "topic": "users", "payload": m.Value})
	var v UserV1
	if err := json.Unmarshal(ans["value"], &struct {
		ID    *string `json:"id"`
		Email *string `json:"email"`
	}{&v.ID, &v.Email}); err != nil || v != (UserV1{"go-1", "go@example.com"}) {
		t.Fatalf("Node read %s: %v", ans["value"], err)
	}

	// Node writes, Go handles.
	ans = node(t, map[string]any{"op": "serialize", "kind": "avro", "url": srv.URL, "topic": "users", "value": map[string]any{"id": "node-1", "email": "node@example.com"}})
	payload := b64(t, ans["payload"])
	if payload[0] != 0 || !bytes.Equal(payload[1:5], m.Value[1:5]) {
		t.Fatalf("Node's header %x, Go's %x", payload[:5], m.Value[:5])
	}
	if s := handleOne(t, kit, "users", "user", registry.ContentTypeAvro, payload); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if b := <-got; b != (UserV1{"node-1", "node@example.com"}) {
		t.Fatalf("%+v", b)
	}
}

func TestConfluentNodeProtobuf(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	kit := kitWith(t, registry.Protobuf(client(t, srv)), registry.Protobuf(client(t, srv), registry.RegisterOnEmit()))
	got := make(chan *testpb.Order, 1)
	kit.Listener.Handle("orders", "order_placed", func(ev dispytch.Event[*testpb.Order]) { got <- ev.Body })
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[*testpb.UserRegistered]) {})
	kit.Start()

	// Go writes, Node reads: the message index [1] names UserRegistered.
	m, err := kit.Emitter.Message(&testpb.UserRegistered{User: &testpb.User{Id: "go-1", Email: "go@example.com"}, Timestamp: 5})
	if err != nil {
		t.Fatal(err)
	}
	ans := node(t, map[string]any{"op": "deserialize", "kind": "protobuf", "url": srv.URL, "topic": "user_events", "payload": m.Value})
	var u struct {
		TypeName  string `json:"$typeName"`
		User      struct{ ID, Email string }
		Timestamp string
	}
	if err := json.Unmarshal(ans["value"], &u); err != nil || u.TypeName != "dispytch.test.v1.UserRegistered" || u.User.ID != "go-1" || u.User.Email != "go@example.com" || u.Timestamp != "5" {
		t.Fatalf("Node read %s: %v", ans["value"], err)
	}

	// Node writes, Go handles: Order, index [2].
	om, err := kit.Emitter.Message(&testpb.Order{Id: "go-order"}) // registers the orders subject
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := proto.Marshal(protodesc.ToFileDescriptorProto((&testpb.Order{}).ProtoReflect().Descriptor().ParentFile()))
	ans = node(t, map[string]any{"op": "serialize", "kind": "protobuf", "url": srv.URL, "topic": "orders",
		"descriptor": fd, "message": "dispytch.test.v1.Order",
		"value": map[string]any{"id": "node-order", "lines": []any{map[string]any{"sku": "sku-1", "quantity": 3}}}})
	payload := b64(t, ans["payload"])
	if !bytes.Equal(payload[:5], om.Value[:5]) || payload[5] != 2 || payload[6] != 4 {
		t.Fatalf("Node's header %x, Go's %x", payload[:7], om.Value[:7])
	}
	if s := handleOne(t, kit, "orders", "order_placed", registry.ContentTypeProtobuf, payload); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	want := &testpb.Order{Id: "node-order", Lines: []*testpb.Order_Line{{Sku: "sku-1", Quantity: 3}}}
	if b := <-got; !proto.Equal(b, want) {
		t.Fatalf("%v", b)
	}
}

func TestConfluentNodeJSONSchema(t *testing.T) {
	srv := registrytest.New()
	t.Cleanup(srv.Close)
	kit := kitWith(t, registry.JSONSchema(client(t, srv), registry.Schema[JUser]("")), registry.JSONSchema(client(t, srv), registry.RegisterOnEmit()))
	got := make(chan JUser, 1)
	kit.Listener.Handle("jusers", "juser", func(ev dispytch.Event[JUser]) { got <- ev.Body })
	kit.Start()

	m, err := kit.Emitter.Message(JUser{ID: "go-1", Email: "go@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Value[0] != 0 || !json.Valid(m.Value[5:]) {
		t.Fatalf("%x", m.Value)
	}
	ans := node(t, map[string]any{"op": "deserialize", "kind": "json", "url": srv.URL, "topic": "jusers", "payload": m.Value})
	var v JUser
	if err := json.Unmarshal(ans["value"], &v); err != nil || v != (JUser{"go-1", "go@example.com"}) {
		t.Fatalf("Node read %s: %v", ans["value"], err)
	}
	// Node checks against the schema Go generated: a bad email is refused.
	if _, err := nodeErr(map[string]any{"op": "serialize", "kind": "json", "url": srv.URL, "topic": "jusers", "value": map[string]any{"id": "node-0", "email": "not an email"}}); err == nil || !strings.Contains(err.Error(), "Invalid message") {
		t.Fatalf("Node serialized a body the schema refuses, or failed otherwise: %v", err)
	}
	ans = node(t, map[string]any{"op": "serialize", "kind": "json", "url": srv.URL, "topic": "jusers", "value": map[string]any{"id": "node-1", "email": "node@example.com"}})
	payload := b64(t, ans["payload"])
	if binary.BigEndian.Uint32(payload[1:5]) != binary.BigEndian.Uint32(m.Value[1:5]) {
		t.Fatalf("Node's header %x, Go's %x", payload[:5], m.Value[:5])
	}
	if s := handleOne(t, kit, "jusers", "juser", registry.ContentTypeJSON, payload); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if b := <-got; b != (JUser{"node-1", "node@example.com"}) {
		t.Fatalf("%+v", b)
	}
}
