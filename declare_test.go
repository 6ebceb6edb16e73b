package dispytch_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// countingProducer counts what it is asked to send.
type countingProducer struct{ n atomic.Int64 }

func (p *countingProducer) Produce(_ context.Context, msgs ...*backend.Message) error {
	p.n.Add(int64(len(msgs)))
	return nil
}

type declaredA struct{}

func (declaredA) Topic() string     { return "a" }
func (declaredA) EventType() string { return "a_happened" }

type declaredB struct {
	ID int `json:"id"`
}

func (declaredB) Topic() string     { return "b.{id}" }
func (declaredB) EventType() string { return "b_happened" }

func TestEmitterDeclare(t *testing.T) {
	p := &countingProducer{}
	e := dispytch.NewEmitter(p)
	if got := e.Declared(); len(got) != 0 {
		t.Fatalf("Declared before Declare = %v", got)
	}
	e.Declare(declaredA{})
	e.Declare(declaredB{}, &declaredA{})
	got := e.Declared()
	if len(got) != 3 || got[0].EventType() != "a_happened" || got[1].Topic() != "b.{id}" || got[2].EventType() != "a_happened" {
		t.Fatalf("Declared = %#v", got)
	}
	got[0] = nil // the caller's copy
	if e.Declared()[0] == nil {
		t.Fatal("Declared returned the emitter's own slice")
	}
	if n := p.n.Load(); n != 0 {
		t.Fatalf("Declare sent %d messages", n)
	}
}
