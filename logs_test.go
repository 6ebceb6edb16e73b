package dispytch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/dispytchtest"
)

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func jsonLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Handlers can take a *slog.Logger: the listener's, with the message's id,
// type and topic and the handler's group and name, on every path (direct
// reflective plan, Handle1's typed path).
func TestHandlerLogger(t *testing.T) {
	var logs logBuffer
	kit := dispytchtest.New(t, dispytch.WithLogger(jsonLogger(&logs)), dispytch.ConsumerGroup("billing"))
	kit.Listener.Handle("user.{user_id}.notification", "user_notification", func(ctx context.Context, ev dispytch.Event[Notification], log *slog.Logger) {
		log.InfoContext(ctx, "reflective", "user", ev.Body.UserID)
	}, dispytch.Name("plain"))
	dispytch.Handle1(kit.Listener, "user.{user_id}.notification", "user_notification", func(ctx context.Context, ev dispytch.Event[Notification], log *slog.Logger) error {
		log.Info("typed")
		return nil
	}, dispytch.Name("typed"))
	kit.Start()
	id := kit.Emit(Notification{UserID: 7, Message: "hi"})
	if s := kit.Wait(id); s.Outcome != dispytch.OutcomeAcked {
		t.Fatal(s)
	}
	seen := map[string]bool{}
	for _, r := range logs.records(t) {
		msg := r["msg"].(string)
		if msg != "reflective" && msg != "typed" {
			continue
		}
		seen[msg] = true
		want := map[string]any{"id": id, "type": "user_notification", "topic": "user.7.notification", "group": "billing",
			"handler": map[string]string{"reflective": "plain", "typed": "typed"}[msg]}
		for k, v := range want {
			if r[k] != v {
				t.Errorf("%s: %s = %v, want %v (%v)", msg, k, r[k], v, r)
			}
		}
	}
	if !seen["reflective"] || !seen["typed"] {
		t.Fatalf("handler lines missing: %v", logs.records(t))
	}
}

// A provider of *slog.Logger wins over the listener's: existing code that
// provides its own logger keeps it.
func TestHandlerLoggerProvided(t *testing.T) {
	var mine, listener logBuffer
	kit := dispytchtest.New(t, dispytch.WithLogger(jsonLogger(&listener)), dispytch.Provide(func() *slog.Logger { return jsonLogger(&mine) }))
	kit.Listener.Handle("user.{user_id}.notification", "user_notification", func(log *slog.Logger) { log.Info("mine") })
	kit.Start()
	kit.Wait(kit.Emit(Notification{UserID: 1}))
	rs := mine.records(t)
	if len(rs) != 1 || rs[0]["msg"] != "mine" || rs[0]["id"] != nil {
		t.Fatalf("%v", rs)
	}
}

// Every log line about a message carries its id, type, topic, group and
// handler: a workload with retries, a failure dead-lettered, a panic, a
// dropped failure, a poison payload and a redriven message whose handler
// is gone.
func TestLogLinesCarryMessageAttributes(t *testing.T) {
	var logs logBuffer
	kit := dispytchtest.New(t, dispytch.WithLogger(jsonLogger(&logs)), dispytch.ConsumerGroup("svc"))
	calls := 0
	var mu sync.Mutex
	kit.Listener.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[Notification]) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch ev.Body.Message {
		case "retry-then-ok":
			if calls == 1 {
				return errTransient
			}
		case "fail":
			return errors.New("boom")
		case "panic":
			panic("kaput")
		}
		return nil
	}, dispytch.Name("notify"), dispytch.Retries(1), dispytch.RetryInterval(0))
	kit.Listener.Handle("user_events", "user_registered", func() error { return errors.New("dropped") },
		dispytch.Name("drop"), dispytch.OnFailure(dispytch.PolicyDrop))
	kit.Start()
	ids := map[string]string{} // id -> what
	for _, m := range []string{"retry-then-ok", "fail", "panic"} {
		ids[kit.Emit(Notification{UserID: 3, Message: m})] = m
	}
	ids[kit.Emit(UserRegistered{User: User{ID: "u1", Email: "a@b.co"}})] = "drop"
	for id := range ids {
		kit.Wait(id)
	}
	kit.Publish("user.3.notification", []byte("not an envelope"), nil)
	kit.WaitFor("poison", func(s dispytch.Settlement) bool { return s.ID == "" })
	kit.Stop()

	n := 0
	for _, r := range logs.records(t) {
		msg := r["msg"].(string)
		if strings.HasPrefix(msg, "dispytch: listener ") {
			continue // about the listener, not a message
		}
		n++
		for _, k := range []string{"id", "type", "topic", "group", "handler"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%q has no %s: %v", msg, k, r)
			}
		}
		if r["group"] != "svc" || r["topic"] == "" {
			t.Errorf("%q: %v", msg, r)
		}
		if what, ok := ids[r["id"].(string)]; ok {
			wantHandler := "notify"
			if what == "drop" {
				wantHandler = "drop"
			}
			if r["handler"] != wantHandler {
				t.Errorf("%q about %s: handler %v", msg, what, r["handler"])
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d lines about messages: %v", n, logs.records(t))
	}
}
