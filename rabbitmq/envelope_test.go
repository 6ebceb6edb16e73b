package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
)

// TestCloudEventsBinary (#13): AMQP 0-9-1 has no CloudEvents binding; the
// emitter uses the AMQP binding's application-property names, cloudEvents_*,
// as message headers, and datacontenttype is the content-type property. A
// listener reads it back.
func TestCloudEventsBinary(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("ce")
	ce := codec.CloudEvents(codec.CloudEventsBinary, "urn:test:shop")
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()), dispytch.Envelopes(ce))
	got := make(chan dispytch.Event[Order], 1)
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev })
	run(t, l)

	// A queue of our own, bound to the same topic, to see the raw message.
	ch := e.raw()
	q := e.prefix + "-raw"
	e.addQueue(q)
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "orders", e.x, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	em := dispytch.NewEmitter(c, dispytch.Envelopes(ce))
	if err := em.Emit(ctx, Order{N: 7}, dispytch.EventID("ce-1")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev.ID != "ce-1" || ev.Body.N != 7 || ev.Headers["cloudEvents_source"] != "urn:test:shop" {
			t.Fatalf("%+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("not handled")
	}
	var raw map[string]any
	var ct string
	for raw == nil {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			raw, ct = d.Headers, d.ContentType
			if string(d.Body) != `{"n":7}` {
				t.Fatalf("body %s", d.Body)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the raw queue got nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for k, v := range map[string]string{"cloudEvents_specversion": "1.0", "cloudEvents_id": "ce-1", "cloudEvents_type": "order_placed", "cloudEvents_source": "urn:test:shop"} {
		if raw[k] != v {
			t.Errorf("header %s = %v, want %s (all: %v)", k, raw[k], v, raw)
		}
	}
	if ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
}
