package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// TestDeclareGroupForProducers: a service that only emits declares the
// consuming group's queue and bindings with DeclareGroup, so that its
// events are kept until the group's listener starts, later, on another
// client: it gets all of them. Before, such emits failed with 312
// NO_ROUTE; the error now says what to do.
func TestDeclareGroupForProducers(t *testing.T) {
	e := setup(t)
	producer := e.client()
	group := e.group("billing")
	ctx := ctxT(t, 30*time.Second)
	em := dispytch.NewEmitter(producer)

	err := em.Emit(ctx, Order{N: 1})
	wantErr(t, "Emit before any queue", err, []error{dispytch.ErrUnroutable},
		`no queue is bound for routing key "orders" on exchange "`+e.x+`"`, "312 NO_ROUTE", `Client.DeclareGroup(ctx, group, "orders")`)

	// Listener topics and AMQP's own wildcards.
	if err := producer.DeclareGroup(ctx, group, "orders", "user.{user_id}.notification", "audit.#", "user.*.created"); err != nil {
		t.Fatal(err)
	}
	// AMQP's * binds as it is: a message to user.9.created is routed.
	if err := producer.Produce(ctx, &backend.Message{Topic: "user.9.created", Value: []byte(`{}`)}); err != nil {
		t.Fatalf("user.9.created: %v", err)
	}
	if err := em.Emit(ctx, Order{N: 2}); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, Notification{UserID: 42, Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, Audit{Path: "a.b.c", What: "x"}); err != nil {
		t.Fatal(err)
	}
	// Declaring again is a no-op.
	if err := producer.DeclareGroup(ctx, group, "orders"); err != nil {
		t.Fatal(err)
	}

	got := make(chan string, 3)
	l := dispytch.NewListener(e.client(), dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Topic })
	l.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[Notification]) { got <- ev.Topic })
	l.Handle("audit.{rest...}", "audited", func(ev dispytch.Event[Audit]) { got <- ev.Topic })
	run(t, l)
	seen := map[string]bool{}
	for range 3 {
		select {
		case topic := <-got:
			seen[topic] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("the listener got only %v", seen)
		}
	}
	if !seen["orders"] || !seen["user.42.notification"] || !seen["audit.a.b.c"] {
		t.Fatalf("the listener got %v", seen)
	}
}

// TestDeclareSubscription: a listener's Subscription declares exactly what
// the listener will consume, before it runs.
func TestDeclareSubscription(t *testing.T) {
	e := setup(t)
	c := e.client(rabbitmq.SingleActiveConsumer(), rabbitmq.WithQueueType(rabbitmq.Quorum))
	group := e.group("sub")
	got := make(chan int, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Body.N })
	sub, err := l.Subscription()
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	if err := c.DeclareSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if err := dispytch.NewEmitter(c).Emit(ctx, Order{N: 3}); err != nil {
		t.Fatal(err)
	}
	run(t, l) // the same arguments: no 406
	select {
	case n := <-got:
		if n != 3 {
			t.Fatalf("got %d", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
}

func TestDeclareGroupErrors(t *testing.T) {
	e := setup(t)
	c := e.client()
	ctx := ctxT(t, 30*time.Second)
	//lint:ignore SA1012 a nil context must be an error, not a panic
	if err := c.DeclareGroup(nil, "g", "orders"); err == nil {
		t.Error("nil context accepted")
	}
	if err := c.DeclareGroup(ctx, "", "orders"); err == nil || !strings.Contains(err.Error(), "no group") {
		t.Errorf("no group: %v", err)
	}
	if err := c.DeclareGroup(ctx, e.group("none")); err == nil {
		t.Error("no topics accepted")
	}
	if err := c.DeclareGroup(ctx, e.group("bad"), "a.{b"); !errors.Is(err, dispytch.ErrBadPattern) {
		t.Errorf("bad pattern: %v", err)
	}
	off := e.client(rabbitmq.DeclareTopology(false))
	if err := off.DeclareGroup(ctx, e.group("off"), "orders"); err == nil || !strings.Contains(err.Error(), "DeclareTopology(false)") {
		t.Errorf("DeclareTopology(false): %v", err)
	}
	if err := c.DeclareSubscription(context.Background(), backend.Subscription{Group: e.group("empty"), Delimiter: "."}); err == nil {
		t.Error("an empty subscription was accepted")
	}
}
