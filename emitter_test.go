package dispytch

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// recorder is a backend.Producer keeping what it was given.
type recorder struct {
	mu   sync.Mutex
	msgs []*backend.Message
	err  error
	name string
}

func (r *recorder) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if r.err != nil {
		return r.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, msgs...)
	r.mu.Unlock()
	return nil
}

func (r *recorder) Backend() string { return r.name }

type notification struct {
	UserID  int    `json:"user_id"`
	Message string `json:"message"`
	Channel string `json:"channel,omitempty"`
	Ptr     *int   `json:"ptr,omitempty"`
}

func (notification) Topic() string     { return "user.{user_id}.notification" }
func (notification) EventType() string { return "user_notification" }

type badTopic struct{ notification }

func (badTopic) Topic() string { return "user.{nope}.x" }

type nilTopic struct{ notification }

func (nilTopic) Topic() string { return "p.{ptr}" }

type keyed struct {
	K string `json:"k"`
}

func (keyed) Topic() string      { return "keyed" }
func (keyed) EventType() string  { return "keyed" }
func (k keyed) EventKey() string { return k.K }
func (k keyed) EventID() string  { return "fixed-" + k.K }

type fakeOpt struct{ b string }

func (o fakeOpt) Backend() string { return o.b }

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestEmitDynamicTopic(t *testing.T) {
	r := &recorder{name: "rec"}
	e := NewEmitter(r)
	ctx := context.Background()
	if err := e.Emit(ctx, notification{UserID: 42, Message: "Hey there!"}); err != nil {
		t.Fatal(err)
	}
	m := r.msgs[0]
	if m.Topic != "user.42.notification" {
		t.Fatalf("topic %q", m.Topic)
	}
	var env codec.Envelope
	if err := codec.JSON.DecodeEnvelope(m.Value, &env); err != nil {
		t.Fatal(err)
	}
	if !uuidRE.MatchString(env.ID) || env.Type != "user_notification" || string(env.Body) != `{"user_id":42,"message":"Hey there!"}` {
		t.Fatalf("%+v %s", env, env.Body)
	}
	if d := time.Since(time.UnixMilli(env.Timestamp)); d < 0 || d > time.Minute {
		t.Fatalf("timestamp %d", env.Timestamp)
	}
	err := e.Emit(ctx, badTopic{})
	if !errors.Is(err, ErrTopicField) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing field: %v", err)
	}
	if err := e.Emit(ctx, nilTopic{}); !errors.Is(err, ErrTopicField) || !strings.Contains(err.Error(), "nil") {
		t.Fatalf("nil field: %v", err)
	}
	if len(r.msgs) != 1 {
		t.Fatalf("failed emits produced messages: %d", len(r.msgs))
	}
}

func TestEmitOptions(t *testing.T) {
	r := &recorder{name: "rec"}
	e := NewEmitter(r)
	ctx := context.Background()
	if err := e.Emit(ctx, keyed{K: "a"}, Header("h", "v")); err != nil {
		t.Fatal(err)
	}
	if err := e.Emit(ctx, keyed{K: "a"}, Key("override"), EventID("mine"), WithBackendOption(fakeOpt{"rec"})); err != nil {
		t.Fatal(err)
	}
	m0, m1 := r.msgs[0], r.msgs[1]
	if string(m0.Key) != "a" || m0.Headers["h"] != "v" || !strings.Contains(string(m0.Value), `"id":"fixed-a"`) {
		t.Fatalf("%s %v %s", m0.Key, m0.Headers, m0.Value)
	}
	if string(m1.Key) != "override" || !strings.Contains(string(m1.Value), `"id":"mine"`) || len(m1.Options) != 1 {
		t.Fatalf("%s %s %v", m1.Key, m1.Value, m1.Options)
	}
	err := e.Emit(ctx, keyed{K: "a"}, WithBackendOption(fakeOpt{"kafka"}))
	if !errors.Is(err, ErrForeignOption) {
		t.Fatalf("foreign option: %v", err)
	}
}

func TestEmitErrors(t *testing.T) {
	r := &recorder{name: "rec"}
	e := NewEmitter(r)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	err := e.Emit(ctx, keyed{K: "x"})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	r.err = ErrClosed
	if err := e.Emit(context.Background(), keyed{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

func TestEmitBatch(t *testing.T) {
	r := &recorder{name: "rec"}
	e := NewEmitter(r)
	evs := []Eventer{keyed{K: "1"}, notification{UserID: 1}, keyed{K: "2"}}
	if err := e.EmitBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	if len(r.msgs) != 3 || r.msgs[1].Topic != "user.1.notification" {
		t.Fatalf("%d", len(r.msgs))
	}
	// One bad event: nothing is sent.
	err := e.EmitBatch(context.Background(), []Eventer{keyed{}, badTopic{}})
	if !errors.Is(err, ErrTopicField) || len(r.msgs) != 3 {
		t.Fatalf("%v %d", err, len(r.msgs))
	}
}

func TestNewUUID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		u := backend.NewUUID()
		if !uuidRE.MatchString(u) || seen[u] {
			t.Fatalf("bad or repeated uuid %q", u)
		}
		seen[u] = true
	}
}

func TestEmitContentType(t *testing.T) {
	r := &recorder{name: "rec"}
	if err := NewEmitter(r).Emit(context.Background(), keyed{}); err != nil {
		t.Fatal(err)
	}
	if r.msgs[0].ContentType != "application/json" {
		t.Fatal(r.msgs[0].ContentType)
	}
}
