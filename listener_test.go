package dispytch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/memory"
)

type User struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
	Name  string `json:"name"`
}

type UserRegistered struct {
	User      User  `json:"user" validate:"required"`
	Timestamp int64 `json:"timestamp"`
}

func (UserRegistered) Topic() string     { return "user_events" }
func (UserRegistered) EventType() string { return "user_registered" }

type Notification struct {
	UserID  int    `json:"user_id"`
	Message string `json:"message"`
}

func (Notification) Topic() string     { return "user.{user_id}.notification" }
func (Notification) EventType() string { return "user_notification" }

type Ordered struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

func (Ordered) Topic() string      { return "ordered" }
func (Ordered) EventType() string  { return "ordered" }
func (o Ordered) EventKey() string { return o.Key }
func newUser(i int) User {
	return User{ID: fmt.Sprint("u", i), Email: fmt.Sprintf("u%d@example.com", i)}
}
func registered(i int) UserRegistered { return UserRegistered{User: newUser(i), Timestamp: int64(i)} }

func TestHandleEndToEnd(t *testing.T) {
	kit := dispytchtest.New(t)
	var got []dispytch.Event[UserRegistered]
	var mu sync.Mutex
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context, ev dispytch.Event[UserRegistered]) error {
		if ctx == nil {
			return errors.New("no context")
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		return nil
	})
	kit.Start()
	id := kit.Emit(registered(1), dispytch.Header("trace", "t1"), dispytch.Key("k1"))
	if s := kit.Wait(id); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("outcome %v", s.Outcome)
	}
	mu.Lock()
	defer mu.Unlock()
	ev := got[0]
	if ev.ID != id || ev.Type != "user_registered" || ev.Topic != "user_events" || ev.Body.User.Email != "u1@example.com" {
		t.Fatalf("%+v", ev)
	}
	if ev.Headers["trace"] != "t1" || string(ev.Delivery.Key) != "k1" || ev.Delivery.Attempt != 1 || ev.Delivery.Redelivered {
		t.Fatalf("%+v", ev.Metadata)
	}
	if time.Since(ev.Timestamp) > time.Minute {
		t.Fatalf("timestamp %v", ev.Timestamp)
	}
	if st := kit.Listener.Stats(); st.Handled != 1 || st.Received != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestSeveralHandlersAllRunBeforeAck(t *testing.T) {
	kit := dispytchtest.New(t)
	release := make(chan struct{})
	fastDone := make(chan struct{})
	var ran atomic.Int32
	slow := func(dispytch.Event[UserRegistered]) error { <-release; ran.Add(1); return nil }
	fast := func(dispytch.Event[UserRegistered]) { ran.Add(1); close(fastDone) }
	g := dispytch.NewHandlerGroup("user_events", "user_registered")
	g.Handle("", "", slow, dispytch.Name("slow"))
	g.Handle("", "", fast, dispytch.Name("fast"))
	kit.Listener.AddGroup(g)
	kit.Start()
	id := kit.Emit(registered(1))
	// The fast handler is done, the slow one is not: the message must not
	// be acked yet.
	select {
	case <-fastDone:
	case <-time.After(5 * time.Second):
		t.Fatal("fast handler did not run")
	}
	if st, _ := kit.Broker.GroupStats("test"); st.Unacked != 1 {
		t.Fatalf("acked before every handler finished: %+v", st)
	}
	close(release)
	if s := kit.Wait(id); s.Outcome != dispytch.OutcomeAcked || ran.Load() != 2 {
		t.Fatalf("%v %d", s.Outcome, ran.Load())
	}
}

func TestPatternsAndSegments(t *testing.T) {
	kit := dispytchtest.New(t)
	type seg struct {
		UserID int `validate:"gt=0"`
	}
	var pattern, literal, rest atomic.Int32
	var gotSeg atomic.Value
	kit.Listener.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[Notification], s dispytch.Segments[seg]) error {
			if ev.Segment("user_id") != fmt.Sprint(s.Value.UserID) {
				return fmt.Errorf("segment %q vs %d", ev.Segment("user_id"), s.Value.UserID)
			}
			gotSeg.Store(s.Value.UserID)
			pattern.Add(1)
			return nil
		})
	kit.Listener.Handle("user.42.notification", "user_notification", func(ev dispytch.Event[Notification]) {
		literal.Add(1)
	})
	kit.Listener.Handle("user.{rest...}", "user_notification", func(m dispytch.Metadata) {
		if m.Segment("rest") == "" {
			panic("no rest")
		}
		rest.Add(1)
	})
	sub, err := kit.Listener.Subscription()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sub.Topics, ",") != "user.42.notification" || len(sub.Patterns) != 2 || sub.Concurrency != 64 {
		t.Fatalf("subscription %s", sub.String())
	}
	kit.Start()
	if s := kit.Wait(kit.Emit(Notification{UserID: 42})); s.Outcome != dispytch.OutcomeAcked {
		t.Fatal(s)
	}
	if pattern.Load() != 1 || literal.Load() != 1 || rest.Load() != 1 || gotSeg.Load() != 42 {
		t.Fatalf("pattern %d literal %d rest %d seg %v", pattern.Load(), literal.Load(), rest.Load(), gotSeg.Load())
	}
	// A segment failing validation (user_id 0 is not > 0) is dead-lettered
	// for that handler only.
	s := kit.Wait(kit.Emit(Notification{UserID: 0}))
	if s.Outcome != dispytch.OutcomeDeadLettered || len(s.Failures) != 1 || s.Failures[0].Reason != dispytch.ReasonValidation {
		t.Fatalf("%+v", s)
	}
	if rest.Load() != 2 {
		t.Fatalf("other handler did not run: %d", rest.Load())
	}
	// A non-numeric segment is a validation failure, not a panic.
	kit.Publish("user.abc.notification", mustEnvelope(t, "user_notification", `{"user_id":1}`), nil)
	s = kit.WaitFor("abc", func(s dispytch.Settlement) bool { return s.Topic == "user.abc.notification" })
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonValidation ||
		!strings.Contains(s.Failures[0].Err.Error(), `"abc"`) {
		t.Fatalf("%+v %v", s, s.Failures[0].Err)
	}
}

func mustEnvelope(t testing.TB, typ, body string) []byte {
	t.Helper()
	b, err := codec.JSON.AppendEnvelope(nil, &codec.Envelope{ID: backend.NewUUID(), Type: typ, Body: []byte(body), Timestamp: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDelimiterOption(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Delimiter(":"))
	var got atomic.Value
	kit.Listener.Handle("order:{id}:events", "created", func(m dispytch.Metadata) { got.Store(m.Segment("id")) })
	kit.Start()
	kit.Publish("order:9:events", mustEnvelope(t, "created", `{}`), nil)
	kit.WaitFor("order", func(s dispytch.Settlement) bool { return s.Outcome == dispytch.OutcomeAcked })
	if got.Load() != "9" {
		t.Fatal(got.Load())
	}
}

func TestUnknownEventPolicy(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("user_events", "other", func(dispytch.Metadata) {})
	kit.Start()
	if s := kit.Wait(kit.Emit(registered(1))); s.Outcome != dispytch.OutcomeUnhandled {
		t.Fatal(s.Outcome)
	}
	if st := kit.Listener.Stats(); st.Unhandled != 1 {
		t.Fatalf("%+v", st)
	}

	kit2 := dispytchtest.New(t, dispytch.UnknownEvent(dispytch.PolicyDeadLetter))
	kit2.Listener.Handle("user_events", "other", func(dispytch.Metadata) {})
	kit2.Start()
	s := kit2.Wait(kit2.Emit(registered(1)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonNoHandler {
		t.Fatalf("%+v", s)
	}
}

func TestValidationAndStrict(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[UserRegistered]) {})
	kit.Listener.Handle("strict", "t", func(dispytch.Event[Notification]) {}, dispytch.Strict())
	kit.Listener.Handle("method", "t", func(dispytch.Event[checked]) {})
	kit.Start()
	bad := registered(1)
	bad.User.Email = "not-an-email"
	s := kit.Wait(kit.Emit(bad))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonValidation || s.Failures[0].Attempts != 1 {
		t.Fatalf("%+v", s)
	}
	kit.Publish("strict", mustEnvelope(t, "t", `{"user_id":1,"extra":true}`), nil)
	s = kit.WaitFor("strict", func(s dispytch.Settlement) bool { return s.Topic == "strict" })
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonDecode {
		t.Fatalf("%+v", s)
	}
	kit.Publish("method", mustEnvelope(t, "t", `{"n":-1}`), nil)
	s = kit.WaitFor("method", func(s dispytch.Settlement) bool { return s.Topic == "method" })
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonValidation ||
		!strings.Contains(s.Failures[0].Err.Error(), "negative") {
		t.Fatalf("%+v", s)
	}
	kit.Publish("method", mustEnvelope(t, "t", `{"n":1}`), nil)
	kit.WaitFor("method ok", func(s dispytch.Settlement) bool { return s.Topic == "method" && s.Outcome == dispytch.OutcomeAcked })
}

type checked struct {
	N int `json:"n"`
}

func (c *checked) Validate() error {
	if c.N < 0 {
		return errors.New("n is negative")
	}
	return nil
}

func TestUntypedBodies(t *testing.T) {
	kit := dispytchtest.New(t)
	var raw, bytesBody, mapBody atomic.Value
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[json.RawMessage]) { raw.Store(string(ev.Body)) }, dispytch.Name("raw"))
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[[]byte]) { bytesBody.Store(string(ev.Body)) }, dispytch.Name("bytes"))
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[map[string]any]) { mapBody.Store(ev.Body["timestamp"]) }, dispytch.Name("map"))
	kit.Start()
	kit.Wait(kit.Emit(registered(3)))
	if !strings.Contains(raw.Load().(string), `"email":"u3@example.com"`) || raw.Load() != bytesBody.Load() || mapBody.Load() != float64(3) {
		t.Fatal(raw.Load(), bytesBody.Load(), mapBody.Load())
	}
}

func TestMiddleware(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	type key struct{}
	mw := func(next dispytch.HandlerFunc) dispytch.HandlerFunc {
		return func(ctx context.Context, c *dispytch.Call) error {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s %s %s %d", c.Handler.Name, c.Meta.Topic, c.Meta.Type, c.Meta.Delivery.Attempt))
			mu.Unlock()
			return next(context.WithValue(ctx, key{}, "from-mw"), c)
		}
	}
	kit := dispytchtest.New(t, dispytch.Use(mw))
	var val atomic.Value
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context) { val.Store(ctx.Value(key{})) }, dispytch.Name("h"))
	kit.Start()
	kit.Wait(kit.Emit(registered(1)))
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "h user_events user_registered 1" || val.Load() != "from-mw" {
		t.Fatal(seen, val.Load())
	}
}

func TestRunReturnsOnConsumerClose(t *testing.T) {
	b := memory.New()
	l := dispytch.NewListener(b, dispytch.WithLogger(quiet))
	l.Handle("x", "y", func() {})
	errc := make(chan error, 1)
	go func() { errc <- l.Run(context.Background()) }()
	<-l.Ready()
	b.Close(context.Background())
	select {
	case err := <-errc:
		if !errors.Is(err, dispytch.ErrClosed) {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the broker closed")
	}
}
