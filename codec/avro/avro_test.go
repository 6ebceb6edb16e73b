package avro_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/avro"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/internal/avroutil"
)

type Address struct {
	City string `json:"city"`
}

type Signup struct {
	ID      string            `json:"id"`
	Age     int32             `json:"age"`
	Score   float64           `json:"score"`
	Tags    []string          `json:"tags"`
	Attrs   map[string]int64  `json:"attrs"`
	Home    Address           `json:"home"`
	Work    *Address          `json:"work"`
	At      time.Time         `json:"at"`
	Raw     []byte            `json:"raw"`
	Skipped string            `json:"-"`
	Extra   map[string]string `json:"extra,omitempty"`
}

func (Signup) Topic() string     { return "signups" }
func (Signup) EventType() string { return "signed_up" }

func TestDerive(t *testing.T) {
	text, err := avro.SchemaOf(reflect.TypeFor[Signup]())
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Type, Name, Namespace string
		Fields                []struct {
			Name    string
			Type    any
			Default any
		}
	}
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		t.Fatal(err)
	}
	if s.Type != "record" || s.Name != "Signup" || s.Namespace != "avro_test" {
		t.Fatalf("%s", text)
	}
	var names []string
	for _, f := range s.Fields {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "id,age,score,tags,attrs,home,work,at,raw,extra" {
		t.Fatalf("fields %s in %s", got, text)
	}
	for _, want := range []string{`{"default":null,"name":"work","type":["null",`, `"logicalType":"timestamp-millis"`, `{"type":"map","values":"long"}`, `{"default":"","name":"id","type":"string"}`} {
		if !strings.Contains(text, want) {
			t.Errorf("schema lacks %s: %s", want, text)
		}
	}
	if _, err := avro.SchemaOf(reflect.TypeFor[chan int]()); err == nil {
		t.Fatal("a channel has a schema")
	}
}

// TestEndToEnd: a struct with a derived schema, emitted in header mode,
// handled as Event[T].
func TestEndToEnd(t *testing.T) {
	c, err := avro.New()
	if err != nil {
		t.Fatal(err)
	}
	kit := dispytchtest.New(t, dispytch.Codecs(c), dispytch.Envelopes(codec.Headers))
	kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(c), dispytch.Envelopes(codec.Headers))
	got := make(chan Signup, 1)
	kit.Listener.Handle("signups", "signed_up", func(ev dispytch.Event[Signup]) { got <- ev.Body })
	kit.Start()
	in := Signup{ID: "s1", Age: 30, Score: 1.5, Tags: []string{"a"}, Attrs: map[string]int64{"k": 9}, Home: Address{"Oslo"},
		Work: &Address{"Bergen"}, At: time.UnixMilli(1700000000123).UTC(), Raw: []byte{1, 2}, Extra: map[string]string{}}
	m, err := kit.Emitter.Message(in)
	if err != nil {
		t.Fatal(err)
	}
	if m.ContentType != avro.ContentType || m.Value[0] != 0xC3 || m.Value[1] != 0x01 {
		t.Fatalf("content type %q, value %x", m.ContentType, m.Value)
	}
	if s := kit.Wait(kit.Emit(in)); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	out := <-got
	out.At = out.At.UTC()
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("got %+v\nwant %+v", out, in)
	}
}

// Two versions of one record, User: v2 adds a field with a default.
const (
	userV1 = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"string"}]}`
	userV2 = `{"type":"record","name":"User","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"email","type":"string"},{"name":"referrer","type":"string","default":"none"}]}`
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

func (UserV1) Topic() string     { return "users" }
func (UserV1) EventType() string { return "user" }
func (UserV2) Topic() string     { return "users" }
func (UserV2) EventType() string { return "user" }

// TestEvolution: the reader decodes by the writer schema the body names,
// resolved against its own: a newer writer's field is skipped (Strict
// refuses it), an older writer's missing field takes its default.
func TestEvolution(t *testing.T) {
	v1, err := avro.New(avro.Schema[UserV1](userV1), avro.Writers(userV2))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := avro.New(avro.Schema[UserV2](userV2), avro.Writers(userV1))
	if err != nil {
		t.Fatal(err)
	}
	newer, err := v2.Marshal(UserV2{ID: "u1", Email: "a@b.c", Referrer: "ads"})
	if err != nil {
		t.Fatal(err)
	}
	var old UserV1
	if err := v1.Unmarshal(newer, &old, false); err != nil || old != (UserV1{"u1", "a@b.c"}) {
		t.Fatalf("v1 reading v2: %+v %v", old, err)
	}
	if err := v1.Unmarshal(newer, &old, true); err == nil || !strings.Contains(err.Error(), "referrer") {
		t.Fatalf("strict v1 reading v2: %v", err)
	}
	older, err := v1.Marshal(UserV1{ID: "u2", Email: "d@e.f"})
	if err != nil {
		t.Fatal(err)
	}
	var nw UserV2
	if err := v2.Unmarshal(older, &nw, true); err != nil || nw != (UserV2{"u2", "d@e.f", "none"}) {
		t.Fatalf("v2 reading v1: %+v %v", nw, err)
	}
	// A codec that does not know the writer's schema says so.
	alone, _ := avro.New(avro.Schema[UserV1](userV1))
	if err := alone.Unmarshal(newer, &old, false); !errors.Is(err, avro.ErrUnknownSchema) {
		t.Fatalf("unknown writer: %v", err)
	}
}

type Paint struct {
	ID    string `avro:"id"`
	Color string `avro:"color"`
}

func (Paint) Topic() string     { return "paint" }
func (Paint) EventType() string { return "painted" }

// TestNotConforming: an event its schema does not allow is an error naming
// the field, and nothing is sent.
func TestNotConforming(t *testing.T) {
	c, err := avro.New(avro.Schema[Paint](`{"type":"record","name":"Paint","fields":[{"name":"id","type":"string"},{"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	kit := dispytchtest.New(t, dispytch.Codecs(c), dispytch.Envelopes(codec.Headers))
	var handled int
	kit.Listener.Handle("paint", "painted", func(dispytch.Event[Paint]) { handled++ })
	kit.Start()
	e := dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(c), dispytch.Envelopes(codec.Headers))
	err = e.Emit(context.Background(), Paint{ID: "p", Color: "BLUE"})
	var se *codec.SchemaError
	if !errors.Is(err, dispytch.ErrNotSent) || !errors.As(err, &se) || se.Field != "Color" || se.Schema != "Paint" || !strings.Contains(err.Error(), "BLUE") {
		t.Fatalf("%v (%+v)", err, se)
	}
	// The broker got nothing: the next event is the first one handled.
	kit.Emitter = e
	if s := kit.Wait(kit.Emit(Paint{ID: "q", Color: "RED"})); s.Outcome != dispytch.OutcomeAcked || handled != 1 {
		t.Fatalf("%+v, handled %d", s, handled)
	}
	// A missing field is named too.
	type Partial struct {
		ID string `avro:"id"`
	}
	_, err = avro.MarshalAs(c, Paint{}, Partial{ID: "x"})
	if err == nil || !strings.Contains(err.Error(), "color") {
		t.Fatalf("%v", err)
	}
}

// TestBadInput: a wrong magic byte, an unknown fingerprint, a truncated
// body: each is an error, and dead-lettered with reason decode.
func TestBadInput(t *testing.T) {
	c, _ := avro.New(avro.Schema[UserV2](userV2))
	good, err := c.Marshal(UserV2{ID: "identifier", Email: "someone@example.com", Referrer: "r"})
	if err != nil {
		t.Fatal(err)
	}
	unknown := append([]byte(nil), good...)
	unknown[5] ^= 0xff
	cases := map[string]struct {
		body []byte
		want error
		msg  string
	}{
		"magic":       {append([]byte{0, 1}, good[2:]...), nil, "single-object"},
		"fingerprint": {unknown, avro.ErrUnknownSchema, "fingerprint"},
		"truncated":   {good[:len(good)-4], avroutil.ErrTruncated, "truncated"},
		"empty":       {nil, nil, "single-object"},
	}
	kit := dispytchtest.New(t, dispytch.Codecs(c), dispytch.Envelopes(codec.Headers))
	kit.Listener.Handle("users", "user", func(dispytch.Event[UserV2]) {})
	kit.Start()
	for name, tc := range cases {
		var u UserV2
		err := c.Unmarshal(tc.body, &u, false)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s: %v", name, err)
		}
		id := "bad-" + name
		kit.Publish("users", tc.body, map[string]string{codec.HeaderEventID: id, codec.HeaderEventType: "user", codec.HeaderTimestamp: "1", "content-type": avro.ContentType})
		s := kit.Wait(id)
		if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonDecode || !strings.Contains(s.Failures[0].Err.Error(), tc.msg) {
			t.Fatalf("%s: %+v", name, s)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	c, _ := avro.New(avro.Schema[UserV2](userV2), avro.Writers(userV1))
	b, _ := c.Marshal(UserV2{ID: "u", Email: "e", Referrer: "r"})
	f.Add(b)
	v1, _ := avro.New(avro.Schema[UserV1](userV1))
	b1, _ := v1.Marshal(UserV1{ID: "u", Email: "e"})
	f.Add(b1)
	f.Fuzz(func(t *testing.T, data []byte) {
		var u UserV2
		_ = c.Unmarshal(data, &u, false)
		var s Signup
		_ = c.Unmarshal(data, &s, true)
	})
}
