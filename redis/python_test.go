package redis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/redis"
)

// Python Dispytch's Redis backend, played by raw go-redis: PUBLISH of the
// bare envelope on the concrete channel (json.dumps layout), and a glob
// PSUBSCRIBE taking the concrete channel as the topic. See
// shared/notes/python-interop.md.

type notification struct {
	UserID  int    `json:"user_id"`
	Message string `json:"message"`
}

func (notification) Topic() string     { return "" }
func (notification) EventType() string { return "user_notification" }

// goNotification is what the Go side emits: its topic's prefix travels in
// the body too (Python's model ignores the extra field).
type goNotification struct {
	Prefix  string `json:"prefix"`
	UserID  int    `json:"user_id"`
	Message string `json:"message"`
}

func (goNotification) Topic() string     { return "{prefix}.{user_id}.notification" }
func (goNotification) EventType() string { return "user_notification" }

// A Python emitter's message reaches a Go pattern handler, topic segment
// included.
func TestPythonPublishToGo(t *testing.T) {
	requireRedis(t)
	prefix := uniq(t)
	c := newClient(t, redis.WithMode(redis.PubSub))
	type hit struct {
		ev   dispytch.Event[notification]
		user string
	}
	got := make(chan hit, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup("py"), dispytch.WithLogger(testLogger()))
	l.Handle(prefix+".{user_id}.notification", "user_notification", func(ev dispytch.Event[notification]) {
		got <- hit{ev, ev.Segment("user_id")}
	})
	run(t, l)
	// Python's json.dumps: ", " and ": " separators, non-ASCII escaped.
	payload := `{"id": "6f1c3a52-0b7e-4d4a-9a57-3f0d2b1c9e11", "type": "user_notification", ` +
		`"body": {"user_id": 42, "message": "caf\u00e9"}, "timestamp": 1700000000123}`
	// The glob user.*.notification also matches user.1.2.notification,
	// which the pattern does not: published first, it must not arrive.
	over := strings.Replace(payload, "6f1c3a52", "00000000", 1)
	if err := raw(t).Publish(context.Background(), prefix+".1.2.notification", over).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := raw(t).Publish(context.Background(), prefix+".42.notification", payload).Result()
	if err != nil || n != 1 {
		t.Fatalf("PUBLISH: %d receivers, %v", n, err)
	}
	select {
	case h := <-got:
		ev := h.ev
		if ev.ID != "6f1c3a52-0b7e-4d4a-9a57-3f0d2b1c9e11" || ev.Type != "user_notification" || ev.Topic != prefix+".42.notification" ||
			ev.Body != (notification{UserID: 42, Message: "café"}) || ev.Timestamp.UnixMilli() != 1700000000123 || h.user != "42" {
			t.Fatalf("got %+v (segment %q)", ev, h.user)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Python-shaped message did not reach the Go handler")
	}
}

// A Go emit reaches a Python-shaped glob subscriber as pmessage with the
// bare envelope, as Python's consumer reads it.
func TestGoPublishToPython(t *testing.T) {
	requireRedis(t)
	prefix := uniq(t)
	rc := raw(t)
	ctx := context.Background()
	ps := rc.PSubscribe(ctx, prefix+".*.notification")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	c := newClient(t, redis.WithMode(redis.PubSub))
	em := dispytch.NewEmitter(c)
	if err := em.Emit(ctx, goNotification{Prefix: prefix, UserID: 42, Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Pattern != prefix+".*.notification" || m.Channel != prefix+".42.notification" {
		t.Fatalf("pmessage %q %q", m.Pattern, m.Channel)
	}
	if !bytes.HasPrefix([]byte(m.Payload), []byte("{")) {
		t.Fatalf("payload is not a bare JSON envelope: %q", m.Payload)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(m.Payload), &env); err != nil {
		t.Fatal(err)
	}
	if len(env) != 4 {
		t.Fatalf("envelope keys %v, want id, type, body, timestamp", env)
	}
	var id, typ string
	var ts int64
	var body notification
	if json.Unmarshal(env["id"], &id) != nil || json.Unmarshal(env["type"], &typ) != nil ||
		json.Unmarshal(env["timestamp"], &ts) != nil || json.Unmarshal(env["body"], &body) != nil {
		t.Fatalf("envelope %s", m.Payload)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) ||
		typ != "user_notification" || body != (notification{42, "hi"}) || time.Since(time.UnixMilli(ts)) > time.Minute {
		t.Fatalf("envelope %s", m.Payload)
	}
}
