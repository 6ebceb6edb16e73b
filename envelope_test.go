package dispytch_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/dispytchtest"
)

var everyFormat = []codec.EnvelopeFormat{
	codec.Headers,
	codec.CloudEvents(codec.CloudEventsBinary, "urn:test:users"),
	codec.CloudEvents(codec.CloudEventsStructured, "urn:test:users"),
}

// TestEnvelopesEachMode: events emitted in each envelope format reach one
// listener that reads them all, which tells them apart per message and
// gives handlers the same id, type, timestamp and body.
func TestEnvelopesEachMode(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Envelopes(everyFormat...))
	var mu sync.Mutex
	got := map[string]dispytch.Event[UserRegistered]{}
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
		mu.Lock()
		got[ev.ID] = ev
		mu.Unlock()
		return nil
	})
	kit.Start()
	before := time.Now().Truncate(time.Millisecond)
	formats := append([]codec.EnvelopeFormat{codec.Dispytch}, everyFormat...)
	ids := map[string]codec.EnvelopeFormat{}
	for i, f := range formats {
		kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.Envelopes(f))
		m, err := kit.Emitter.Message(registered(i))
		if err != nil {
			t.Fatal(err)
		}
		// Every message says what it is.
		switch f {
		case codec.Dispytch:
			if m.ContentType != "application/json" || !strings.HasPrefix(string(m.Value), `{"id":`) {
				t.Fatalf("dispytch: %q %s", m.ContentType, m.Value)
			}
		case codec.Headers:
			if m.ContentType != "application/json" || m.Headers[codec.HeaderEventType] != "user_registered" || m.Headers[codec.HeaderEventID] != m.ID || m.Headers[codec.HeaderTimestamp] == "" {
				t.Fatalf("headers: %q %v", m.ContentType, m.Headers)
			}
			var body UserRegistered
			if err := json.Unmarshal(m.Value, &body); err != nil || body != registered(i) {
				t.Fatalf("header mode value is not the body alone: %s", m.Value)
			}
		default:
			if f.Name() == "cloudevents-binary" && (m.Headers["ce_specversion"] != "1.0" || m.Headers["ce_source"] != "urn:test:users") {
				t.Fatalf("binary: %v", m.Headers)
			}
			if f.Name() == "cloudevents-structured" && m.ContentType != codec.ContentTypeCloudEvents {
				t.Fatalf("structured: %q", m.ContentType)
			}
		}
		id := kit.Emit(registered(i))
		ids[id] = f
	}
	for id, f := range ids {
		if s := kit.Wait(id); s.Outcome != dispytch.OutcomeAcked || s.Type != "user_registered" {
			t.Fatalf("%s: %+v", f.Name(), s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, f := range ids {
		ev := got[id]
		if ev.Type != "user_registered" || ev.Topic != "user_events" || ev.Timestamp.Before(before) || time.Since(ev.Timestamp) > time.Minute {
			t.Errorf("%s: metadata %+v", f.Name(), ev.Metadata)
		}
		if ev.Body.User.Email == "" {
			t.Errorf("%s: body %+v", f.Name(), ev.Body)
		}
	}
}

// TestForEventType: one emitter writes one event type in CloudEvents
// binary mode with msgpack bodies and the others in the Dispytch envelope.
func TestForEventType(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Envelopes(codec.CloudEvents(codec.CloudEventsBinary, "")))
	kit.Emitter = dispytch.NewEmitter(kit.Broker,
		dispytch.ForEventType("user_notification", dispytch.Envelopes(codec.CloudEvents(codec.CloudEventsBinary, "")), dispytch.WithCodec(msgpack.Codec)))
	n, err := kit.Emitter.Message(Notification{UserID: 7, Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Headers["ce_type"] != "user_notification" || n.ContentType != "application/msgpack" || n.Headers["ce_source"] != "/dispytch/user.7.notification" {
		t.Fatalf("notification: %q %v", n.ContentType, n.Headers)
	}
	u, err := kit.Emitter.Message(registered(1))
	if err != nil {
		t.Fatal(err)
	}
	if u.Headers != nil || u.ContentType != "application/json" || !strings.HasPrefix(string(u.Value), `{"id":`) {
		t.Fatalf("other types keep the Dispytch envelope: %q %v %s", u.ContentType, u.Headers, u.Value)
	}
	var note dispytch.Event[Notification]
	kit.Listener.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[Notification]) { note = ev })
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[UserRegistered]) {})
	kit.Start()
	if s := kit.Wait(kit.Emit(Notification{UserID: 7, Message: "hi"})); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if note.Body.Message != "hi" || note.Segment("user_id") != "7" {
		t.Fatalf("%+v", note)
	}
	if s := kit.Wait(kit.Emit(registered(2))); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
}

// TestEnvelopeNotAccepted: a listener that was not given header mode
// dead-letters a header-mode message as undecodable, with reason decode.
func TestEnvelopeNotAccepted(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[UserRegistered]) {})
	kit.Start()
	m, err := dispytch.NewEmitter(kit.Broker, dispytch.Envelopes(codec.Headers)).Message(registered(1))
	if err != nil {
		t.Fatal(err)
	}
	kit.Publish(m.Topic, m.Value, m.Headers)
	s := kit.WaitFor("a dead letter", func(s dispytch.Settlement) bool { return s.Outcome == dispytch.OutcomeDeadLettered })
	if len(s.Failures) != 1 || s.Failures[0].Reason != dispytch.ReasonDecode || !errors.Is(s.Failures[0].Err, dispytch.ErrDecode) {
		t.Fatalf("%+v", s)
	}
}

// TestEnvelopeMalformed: a message that claims a format but breaks it is
// dead-lettered with reason decode and the format's error.
func TestEnvelopeMalformed(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Envelopes(everyFormat...))
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[UserRegistered]) {})
	kit.Start()
	kit.Publish("user_events", []byte(`{"user":{}}`), map[string]string{codec.HeaderTimestamp: "1", codec.HeaderEventType: "user_registered"})
	s := kit.WaitFor("a dead letter", func(s dispytch.Settlement) bool { return s.Outcome == dispytch.OutcomeDeadLettered })
	if len(s.Failures) != 1 || s.Failures[0].Reason != dispytch.ReasonDecode || !errors.Is(s.Failures[0].Err, codec.ErrFormat) ||
		!strings.Contains(s.Failures[0].Err.Error(), codec.HeaderEventID) {
		t.Fatalf("%+v", s.Failures[0])
	}
}

// schemaCheck is a codec.SchemaChecker refusing one body type.
type schemaCheck struct {
	codec.Codec
	uses []codec.Use
}

func (s *schemaCheck) ContentType() string { return "application/x-checked" }

func (s *schemaCheck) CheckSchemas(_ context.Context, uses []codec.Use) error {
	s.uses = uses
	for _, u := range uses {
		if u.EventType == "user_registered" {
			return errors.New("subject user_events-value: incompatible")
		}
	}
	return nil
}

// TestCheckRunsSchemaCheckers: Check and Run fail with a schema checker's
// error, before consuming anything.
func TestCheckRunsSchemaCheckers(t *testing.T) {
	sc := &schemaCheck{Codec: codec.JSON}
	kit := dispytchtest.New(t, dispytch.Codecs(sc))
	kit.Listener.Handle("user_events", "user_registered", func(dispytch.Event[UserRegistered]) {})
	err := kit.Listener.Check()
	if err == nil || !strings.Contains(err.Error(), "incompatible") {
		t.Fatalf("Check: %v", err)
	}
	if len(sc.uses) != 1 || sc.uses[0].Topic != "user_events" || sc.uses[0].Body.Name() != "UserRegistered" {
		t.Fatalf("uses: %+v", sc.uses)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := kit.Listener.Run(ctx); err == nil || !strings.Contains(err.Error(), "incompatible") {
		t.Fatalf("Run: %v", err)
	}
}
