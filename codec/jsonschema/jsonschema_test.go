package jsonschema_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/jsonschema"
	"github.com/dispytch/dispytch-go/dispytchtest"
)

type User struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
	Name  string `json:"name" validate:"omitempty,max=5"`
	Age   int    `json:"age" validate:"gte=0,lt=150"`
	Plan  string `json:"plan" validate:"oneof=free pro"`
}

type UserRegistered struct {
	User      User     `json:"user" validate:"required"`
	Referrer  *string  `json:"referrer"`
	Tags      []string `json:"tags" validate:"max=2"`
	Timestamp int64    `json:"timestamp"`
}

func (UserRegistered) Topic() string     { return "user_events" }
func (UserRegistered) EventType() string { return "user_registered" }

func good() UserRegistered {
	return UserRegistered{User: User{ID: "u1", Email: "ann@example.com", Name: "Ann", Age: 30, Plan: "pro"}, Timestamp: 1}
}

func TestGeneratedSchema(t *testing.T) {
	text, err := jsonschema.SchemaOf(reflect.TypeFor[UserRegistered]())
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		t.Fatal(err)
	}
	user := s["properties"].(map[string]any)["user"].(map[string]any)
	props := user["properties"].(map[string]any)
	email := props["email"].(map[string]any)
	if s["title"] != "UserRegistered" || email["format"] != "email" || email["minLength"].(float64) != 1 {
		t.Fatalf("%s", text)
	}
	if req := user["required"].([]any); len(req) != 2 || req[0] != "id" || req[1] != "email" {
		t.Fatalf("required %v in %s", req, text)
	}
	if props["name"].(map[string]any)["maxLength"] != nil {
		t.Fatalf("omitempty kept a constraint: %s", text)
	}
	if plan := props["plan"].(map[string]any); len(plan["enum"].([]any)) != 2 {
		t.Fatalf("%s", text)
	}
	if _, ok := s["properties"].(map[string]any)["referrer"].(map[string]any)["anyOf"]; !ok {
		t.Fatalf("a pointer is not nullable: %s", text)
	}
}

// TestSchemaOnWrite: events are checked before they are sent; one that
// does not conform is an error naming the field and nothing is sent. The
// bodies are the Dispytch JSON envelope's, read by any listener.
func TestSchemaOnWrite(t *testing.T) {
	c, err := jsonschema.New()
	if err != nil {
		t.Fatal(err)
	}
	kit := dispytchtest.New(t) // a plain JSON listener
	var handled []UserRegistered
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) { handled = append(handled, ev.Body) })
	kit.Start()
	e := dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(c))
	bad := map[string]func(*UserRegistered){
		"user.email": func(u *UserRegistered) { u.User.Email = "not-an-email" },
		"user.id":    func(u *UserRegistered) { u.User.ID = "" },
		"user.age":   func(u *UserRegistered) { u.User.Age = 200 },
		"user.plan":  func(u *UserRegistered) { u.User.Plan = "gold" },
		"tags":       func(u *UserRegistered) { u.Tags = []string{"a", "b", "c"} },
	}
	for field, spoil := range bad {
		ev := good()
		spoil(&ev)
		err := e.Emit(context.Background(), ev)
		var se *codec.SchemaError
		if !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, codec.ErrSchema) || !errors.As(err, &se) || se.Field != field || se.Schema != "UserRegistered" {
			t.Fatalf("%s: %v (%+v)", field, err, se)
		}
	}
	ref := "ads"
	ok := good()
	ok.Referrer = &ref
	kit.Emitter = e
	if s := kit.Wait(kit.Emit(ok)); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if s := kit.Wait(kit.Emit(good())); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	if len(handled) != 2 || *handled[0].Referrer != "ads" {
		t.Fatalf("handled %+v: something that failed its schema was sent", handled)
	}
	m, _ := e.Message(good())
	if !strings.HasPrefix(string(m.Value), `{"id":"`) || m.ContentType != "application/json" {
		t.Fatalf("not the Dispytch envelope: %s", m.Value)
	}
}

func TestGivenSchema(t *testing.T) {
	c, err := jsonschema.New(jsonschema.Schema[UserRegistered](`{"type":"object","required":["timestamp"],"properties":{"timestamp":{"type":"integer","minimum":10}}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Marshal(good())
	var se *codec.SchemaError
	if !errors.As(err, &se) || se.Field != "timestamp" {
		t.Fatalf("%v", err)
	}
	if _, err := jsonschema.New(jsonschema.Schema[UserRegistered](`{"type": 12}`)); err == nil {
		t.Fatal("a bad schema compiled")
	}
}
