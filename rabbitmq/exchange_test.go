package rabbitmq_test

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// TestExistingExchangeUsedAsItIs: an exchange the client is told to use
// that exists with other settings is used as it is instead of failing on
// "inequivalent arg". A non-durable direct exchange (what Python
// Dispytch's documentation declares) carries literal topics, both ways; a
// pattern subscription on it fails Run at once, naming the exchange, its
// type and the pattern. A non-durable topic exchange carries everything.
func TestExistingExchangeUsedAsItIs(t *testing.T) {
	for _, kind := range []string{amqp.ExchangeDirect, amqp.ExchangeTopic} {
		t.Run(kind, func(t *testing.T) {
			e := setup(t)
			ch := e.raw()
			if err := ch.ExchangeDeclare(e.x, kind, false, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			c := e.client(rabbitmq.Exchanges(e.x))
			got := make(chan int, 1)
			group := e.group("existing-" + kind)
			l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
			l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Body.N })
			run(t, l)
			// A queue of someone else's, bound by the topic.
			theirs := e.plainQueue(ch, e.x, "orders")
			if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 7}); err != nil {
				t.Fatal(err)
			}
			select {
			case n := <-got:
				if n != 7 {
					t.Fatalf("got order %d", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the listener did not get the event")
			}
			if n := queueDepth(t, ch, theirs); n != 1 {
				t.Fatalf("the other queue holds %d messages, want 1", n)
			}

			pl := dispytch.NewListener(c, dispytch.ConsumerGroup(e.group("pattern-"+kind)), dispytch.WithLogger(quietLog()))
			pl.Handle("user.{user_id}.notification", "user_notification", func(dispytch.Event[Notification]) {})
			if kind == amqp.ExchangeTopic {
				run(t, pl)
				return
			}
			var err error
			within(t, 3*time.Second, "Run with a pattern on a direct exchange", func() { err = pl.Run(ctxT(t, 20*time.Second)) })
			wantErr(t, "Run", err, []error{rabbitmq.ErrPreconditionFailed, dispytch.ErrPermanent, dispytch.ErrNotReady},
				`exchange "`+e.x+`" is a direct exchange`, `"user.{user_id}.notification"`, `"user.*.notification"`)
			t.Logf("%v", err)
			// The exchange is untouched: still direct, still non-durable.
			if err := e.raw().ExchangeDeclare(e.x, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
				t.Errorf("the exchange changed: %v", err)
			}
		})
	}
}

// TestDeadLetterExchangeOfAnotherType: a dead-letter exchange that exists
// as a fanout exchange would send every group's dead letters to every
// dead-letter queue: Run fails at once and says so.
func TestDeadLetterExchangeOfAnotherType(t *testing.T) {
	e := setup(t)
	if err := e.raw().ExchangeDeclare(e.x+".dlx", amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(e.group("dlx")), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(dispytch.Event[Order]) {})
	err := l.Run(ctxT(t, 20*time.Second))
	wantErr(t, "Run", err, []error{rabbitmq.ErrPreconditionFailed}, `exchange "`+e.x+`.dlx" is a fanout exchange`, "dead-letter exchange")
	// Emitting does not need the dead-letter exchange.
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 1}); !errors.Is(err, dispytch.ErrUnroutable) {
		t.Fatalf("emit: %v; want ErrUnroutable (no queue is bound)", err)
	}
}
