package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
	"github.com/dispytch/dispytch-go/topic"
)

type Notification struct {
	UserID  int    `json:"user_id"`
	Message string `json:"message"`
}

func (Notification) Topic() string     { return "user.{user_id}.notification" }
func (Notification) EventType() string { return "user_notification" }

type Audit struct {
	Path string `json:"path"`
	What string `json:"what"`
}

func (Audit) Topic() string     { return "audit.{path}" }
func (Audit) EventType() string { return "audited" }

type Order struct {
	N int `json:"n"`
}

func (Order) Topic() string     { return "orders" }
func (Order) EventType() string { return "order_placed" }

type Stray struct{}

func (Stray) Topic() string     { return "nobody.listens.here" }
func (Stray) EventType() string { return "stray" }

type fakeOption struct{}

func (fakeOption) Backend() string { return "kafka" }

func TestRoundTripPatternsSegmentsAndProperties(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("rt")

	type seen struct {
		userID string
		rest   string
		body   any
		meta   dispytch.Metadata
	}
	var mu sync.Mutex
	got := map[string]seen{}
	record := func(kind string, s seen) {
		mu.Lock()
		got[kind] = s
		mu.Unlock()
	}
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[Notification]) {
		record("notification", seen{userID: ev.Segment("user_id"), body: ev.Body, meta: ev.Metadata})
	})
	l.Handle("audit.{rest...}", "audited", func(ev dispytch.Event[Audit]) {
		record("audit", seen{rest: ev.Segment("rest"), body: ev.Body, meta: ev.Metadata})
	})
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) {
		record("order", seen{body: ev.Body, meta: ev.Metadata})
	})
	run(t, l)

	// The bindings the listener declared: {x} became *, {x...} became #.
	ch := e.raw()
	for _, key := range []string{"user.*.notification", "audit.#", "orders"} {
		// Binding again with the same key is idempotent; a missing queue or
		// exchange would fail. The routing checks below prove the keys.
		if err := ch.QueueBind(group, key, e.x, false, nil); err != nil {
			t.Fatalf("bind %q: %v", key, err)
		}
	}

	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 30*time.Second)
	if err := em.Emit(ctx, Notification{UserID: 42, Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, Audit{Path: "billing.invoices.2026", What: "export"}); err != nil {
		t.Fatal(err)
	}
	stamp := time.Unix(1700000000, 0)
	err := em.Emit(ctx, Order{N: 7},
		dispytch.Key("customer-9"),
		dispytch.Header("tenant", "acme"),
		rabbitmq.Exchange(e.x2),
		rabbitmq.Priority(5),
		rabbitmq.Expiration(time.Minute),
		rabbitmq.Headers(amqp.Table{"retries-allowed": int32(3)}),
		rabbitmq.ContentEncoding("identity"),
		rabbitmq.CorrelationID("corr-1"),
		rabbitmq.ReplyTo("replies"),
		rabbitmq.MessageID("msg-1"),
		rabbitmq.Timestamp(stamp),
		rabbitmq.Type("order"),
		rabbitmq.UserID("guest"),
		rabbitmq.AppID("tests"),
	)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "three events handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if n := got["notification"]; n.userID != "42" || n.body.(Notification).Message != "hi" || n.meta.Topic != "user.42.notification" {
		t.Errorf("notification: %+v", n)
	}
	if a := got["audit"]; a.rest != "billing.invoices.2026" || a.meta.Topic != "audit.billing.invoices.2026" {
		t.Errorf("audit: rest %q topic %q", a.rest, a.meta.Topic)
	}
	o := got["order"]
	if o.body.(Order).N != 7 || string(o.meta.Delivery.Key) != "customer-9" || o.meta.Headers["tenant"] != "acme" {
		t.Errorf("order: body %+v key %q headers %v", o.body, o.meta.Delivery.Key, o.meta.Headers)
	}
	if _, ok := o.meta.Headers[rabbitmq.HeaderKey]; ok {
		t.Errorf("the key header leaked into the event headers: %v", o.meta.Headers)
	}
	if o.meta.Headers["retries-allowed"] != "3" {
		t.Errorf("typed header: %v", o.meta.Headers)
	}
	d, ok := rabbitmq.DeliveryOf(&o.meta)
	if !ok {
		t.Fatalf("Raw is %T", o.meta.Delivery.Raw)
	}
	want := amqp.Delivery{
		Exchange: e.x2, RoutingKey: "orders", DeliveryMode: amqp.Persistent, Priority: 5, Expiration: "60000",
		ContentType: "application/json", ContentEncoding: "identity", CorrelationId: "corr-1", ReplyTo: "replies",
		MessageId: "msg-1", Type: "order", UserId: "guest", AppId: "tests",
	}
	if d.Exchange != want.Exchange || d.RoutingKey != want.RoutingKey || d.DeliveryMode != want.DeliveryMode ||
		d.Priority != want.Priority || d.Expiration != want.Expiration || d.ContentType != want.ContentType ||
		d.ContentEncoding != want.ContentEncoding || d.CorrelationId != want.CorrelationId || d.ReplyTo != want.ReplyTo ||
		d.MessageId != want.MessageId || d.Type != want.Type || d.UserId != want.UserId || d.AppId != want.AppId ||
		!d.Timestamp.Equal(stamp) {
		t.Errorf("AMQP properties:\n got %+v\nwant %+v (timestamp %v)", d, want, stamp)
	}
	if n := got["notification"].meta.Delivery.Raw.(amqp.Delivery); n.DeliveryMode != amqp.Persistent || n.Exchange != e.x {
		t.Errorf("default exchange/persistence: exchange %q mode %d", n.Exchange, n.DeliveryMode)
	}
}

func TestEmitErrors(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("errs")
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	var handled sync.Map
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { handled.Store(ev.Body.N, true) })
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 30*time.Second)

	// Unroutable: mandatory + basic.return become an error.
	err := em.Emit(ctx, Stray{})
	if !errors.Is(err, dispytch.ErrUnroutable) {
		t.Fatalf("unroutable emit: %v", err)
	}
	// Another backend's option: rejected by the emitter, and by the producer.
	if err := em.Emit(ctx, Order{}, dispytch.WithBackendOption(fakeOption{})); !errors.Is(err, dispytch.ErrForeignOption) {
		t.Fatalf("foreign option via emitter: %v", err)
	}
	err = c.Produce(ctx, &backend.Message{Topic: "orders", Value: []byte(`{}`), Options: []backend.Option{fakeOption{}}})
	if !errors.Is(err, dispytch.ErrForeignOption) {
		t.Fatalf("foreign option via producer: %v", err)
	}
	if err := em.Emit(ctx, Order{}, rabbitmq.Exchange("elsewhere")); !errors.Is(err, rabbitmq.ErrUnknownExchange) {
		t.Fatalf("unknown exchange: %v", err)
	}

	// A batch: one unroutable message in the middle fails alone.
	var evs []dispytch.Eventer
	for i := range 100 {
		if i == 50 {
			evs = append(evs, Stray{})
			continue
		}
		evs = append(evs, Order{N: i})
	}
	err = em.EmitBatch(ctx, evs)
	var be *backend.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("batch: %v", err)
	}
	for i, e := range be.Errs {
		if (i == 50) != (e != nil) {
			t.Errorf("batch message %d: %v", i, e)
		}
	}
	if !errors.Is(be.Errs[50], dispytch.ErrUnroutable) {
		t.Errorf("batch message 50: %v", be.Errs[50])
	}
	eventually(t, 10*time.Second, "99 orders handled", func() bool {
		n := 0
		handled.Range(func(any, any) bool { n++; return true })
		return n == 99
	})

	// Async: the callback gets the outcome.
	res := make(chan error, 2)
	em.EmitAsync(ctx, Order{N: 1000}, func(err error) { res <- err })
	em.EmitAsync(ctx, Stray{}, func(err error) { res <- err })
	var nils, unroutable int
	for range 2 {
		switch err := <-res; {
		case err == nil:
			nils++
		case errors.Is(err, dispytch.ErrUnroutable):
			unroutable++
		default:
			t.Errorf("async: %v", err)
		}
	}
	if nils != 1 || unroutable != 1 {
		t.Errorf("async: %d ok, %d unroutable", nils, unroutable)
	}
}

// TestEmitWithoutBroker: an Emit while the broker is unreachable waits up to
// its deadline and fails with ErrTimeout, ErrNotSent and the last
// connection error (wrapped: errors.Is finds ECONNREFUSED); after Close it
// fails with ErrClosed.
func TestEmitWithoutBroker(t *testing.T) {
	c, err := rabbitmq.New("amqp://guest:guest@127.0.0.1:1/", rabbitmq.WithLogger(quietLog()),
		rabbitmq.ReconnectBackoff(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	em := dispytch.NewEmitter(c)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = em.Emit(ctx, Order{})
	if !errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dispytch.ErrNotSent) ||
		!errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "last error: dial tcp 127.0.0.1:1") {
		t.Fatalf("emit without broker: %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 5*time.Second {
		t.Errorf("emit returned after %v, want about its 300ms deadline", el)
	}
	t.Logf("error: %v", err)
	c.Close(context.Background())
	if err := em.Emit(context.Background(), Order{}); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("emit after Close: %v", err)
	}
}

func TestBringYourOwnQueue(t *testing.T) {
	e := setup(t)
	ch := e.raw()
	q := e.prefix + "-mine"
	e.addQueue(q)
	if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "orders", e.x, false, nil); err != nil {
		t.Fatal(err)
	}
	group := e.group("byo")
	// WithQueueType tells the client the type of the user's queue too.
	c := e.client(rabbitmq.ExistingQueue(group, q), rabbitmq.WithQueueType(rabbitmq.Quorum))
	got := make(chan dispytch.Metadata, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Metadata })
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Delivery.DeliveryCount != 1 { // quorum queues count deliveries
			t.Errorf("delivery count %d", m.Delivery.DeliveryCount)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	// The client declared no queue of the group's name.
	ch2 := e.raw()
	if _, err := ch2.QueueDeclarePassive(group, true, false, false, false, nil); err == nil {
		t.Errorf("queue %q exists, the client should only have used %q", group, q)
	}
}

// TestConsumerCancelled: deleting the queue under a running listener
// cancels its consumer; the listener declares the queue again and resumes.
func TestConsumerCancelled(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("cancel")
	got := make(chan int, 10)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Body.N })
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 30*time.Second)
	if err := em.Emit(ctx, Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 1 {
		t.Fatal(n)
	}
	ch := e.raw()
	if _, err := ch.QueueDelete(group, false, false, false); err != nil {
		t.Fatal(err)
	}
	// Emit until the queue is back: before that, emits are unroutable.
	eventually(t, 20*time.Second, "the listener to declare its queue again", func() bool {
		err := em.Emit(ctx, Order{N: 2})
		if err != nil && !errors.Is(err, dispytch.ErrUnroutable) {
			t.Fatal(err)
		}
		return err == nil
	})
	select {
	case n := <-got:
		if n != 2 {
			t.Fatalf("got %d", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not resume after its queue was deleted")
	}
}

// TestBlockedConnection: during a memory alarm the broker blocks publishing
// connections; an Emit then fails at its deadline (it does not hang in a
// socket write), and succeeds again once the alarm clears.
func TestBlockedConnection(t *testing.T) {
	testenv.RequireCommand(t, "rabbitmqctl")
	e := setup(t)
	c := e.client()
	ch := e.raw()
	q := e.prefix + "-blocked"
	e.addQueue(q)
	if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "orders", e.x, false, nil); err != nil {
		t.Fatal(err)
	}
	em := dispytch.NewEmitter(c)
	if err := em.Emit(ctxT(t, 10*time.Second), Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4") })
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0.00001")
	var blockedErr error
	eventually(t, 30*time.Second, "an emit to fail while the broker blocks publishing", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := em.Emit(ctx, Order{N: 2})
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("emit returned after %v, long past its 500ms deadline", el)
		}
		if err != nil {
			if !errors.Is(err, dispytch.ErrTimeout) {
				t.Fatalf("emit: %v", err)
			}
			blockedErr = err
		}
		// Once the connection.blocked notification arrived, publishers
		// wait for the unblock (or their deadline) before writing.
		return err != nil && strings.Contains(err.Error(), "blocks publishing")
	})
	t.Logf("emit during the alarm: %v", blockedErr)
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4")
	eventually(t, 30*time.Second, "emits to succeed after the alarm", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return em.Emit(ctx, Order{N: 3}) == nil
	})
}

// TestNoGroupBroadcast: listeners without a group each get an exclusive,
// server-named queue, so every one of them receives every event, and the
// queue goes away with its listener.
func TestNoGroupBroadcast(t *testing.T) {
	e := setup(t)
	e.addQueue("dispytch.dlq")
	c := e.client()
	got := make(chan string, 4)
	for _, name := range []string{"one", "two"} {
		l := dispytch.NewListener(c, dispytch.WithLogger(quietLog()))
		l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) {
			got <- name + ":" + ev.ID
		})
		run(t, l)
	}
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 1}, dispytch.EventID("e1")); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v", seen)
		}
	}
	if !seen["one:e1"] || !seen["two:e1"] {
		t.Fatalf("got %v, want the event in both listeners", seen)
	}
}

// TestDeclareNothing: with DeclareTopology(false) the client declares
// nothing; a listener whose queue does not exist yet keeps retrying, and
// starts consuming once the user's tooling created it.
func TestDeclareNothing(t *testing.T) {
	e := setup(t)
	group := e.group("nodecl")
	c := e.client(rabbitmq.DeclareTopology(false))
	got := make(chan int, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { got <- ev.Body.N })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-l.Ready():
		t.Fatal("ready without a queue")
	case err := <-errc:
		t.Fatalf("listener gave up: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	ch := e.raw()
	if err := ch.ExchangeDeclare(e.x, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(group, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(group, "orders", e.x, false, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("not ready after the queue appeared")
	}
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 5}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 5 {
			t.Fatal(n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	// Nothing of the client's own: no dead-letter queue was declared.
	ch2 := e.raw()
	if _, err := ch2.QueueDeclarePassive(group+".dlq", true, false, false, false, nil); err == nil {
		t.Error("the client declared a dead-letter queue")
	}
}

// taggedCodec is JSON under a content type of its own, whose decoded event
// types say that it decoded them.
type taggedCodec struct{ codec.Codec }

func (taggedCodec) ContentType() string { return "application/vnd.dispytch-test+json" }

func (c taggedCodec) DecodeEnvelope(data []byte, e *codec.Envelope) error {
	if err := c.Codec.DecodeEnvelope(data, e); err != nil {
		return err
	}
	e.Type = "tagged:" + e.Type
	return nil
}

// TestContentTypeProperty: the listener picks the codec the AMQP
// content-type property names. The bytes are JSON, so without the
// property the listener would take the JSON codec, and the handler of the
// tagged type would never run.
func TestContentTypeProperty(t *testing.T) {
	e := setup(t)
	c := e.client()
	tagged := taggedCodec{codec.JSON}
	got := make(chan dispytch.Metadata, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(e.group("ct")), dispytch.Codecs(tagged), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "tagged:order_placed", func(ev dispytch.Event[Order]) { got <- ev.Metadata })
	run(t, l)
	if err := dispytch.NewEmitter(c, dispytch.WithCodec(tagged)).Emit(ctxT(t, 10*time.Second), Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if d, _ := rabbitmq.DeliveryOf(&m); d.ContentType != tagged.ContentType() {
			t.Errorf("content type %q", d.ContentType)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tagged codec did not decode the message: the content type was not used")
	}
}

// TestNilArguments: nil contexts, messages, functions and options are
// errors, not panics.
func TestNilArguments(t *testing.T) {
	c, err := rabbitmq.New("amqp://guest:guest@127.0.0.1:1/", nil, rabbitmq.WithLogger(quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var nilCtx context.Context
	ctx := context.Background()
	if _, err := rabbitmq.Dial(nilCtx, brokerURL()); err == nil {
		t.Error("Dial(nil ctx)")
	}
	if err := c.Ping(nilCtx); err == nil {
		t.Error("Ping(nil ctx)")
	}
	if err := c.Produce(nilCtx, &backend.Message{Topic: "x"}); !errors.Is(err, dispytch.ErrNotSent) {
		t.Errorf("Produce(nil ctx): %v", err)
	}
	if err := c.Produce(ctx, nil); !errors.Is(err, dispytch.ErrNotSent) {
		t.Errorf("Produce(nil message): %v", err)
	}
	err = c.Produce(ctx, &backend.Message{Topic: "x", Options: []backend.Option{nil}})
	if !errors.Is(err, dispytch.ErrNotSent) {
		t.Errorf("Produce(nil option): %v", err)
	}
	res := make(chan error, 1)
	c.ProduceAsync(nilCtx, &backend.Message{Topic: "x"}, func(err error) { res <- err })
	if err := <-res; !errors.Is(err, dispytch.ErrNotSent) {
		t.Errorf("ProduceAsync(nil ctx): %v", err)
	}
	c.ProduceAsync(ctx, nil, nil) // no callback: nothing to report to, no panic
	if err := c.Consume(nilCtx, backend.Subscription{Topics: []string{"x"}}, nil); err == nil {
		t.Error("Consume(nil ctx)")
	}
	if err := c.Consume(ctx, backend.Subscription{Topics: []string{"x"}}, nil); err == nil {
		t.Error("Consume(nil inbox)")
	}
	if err := c.ScanDeadLetters(nilCtx, "q.dlq", func(*backend.Delivery) (backend.DeadLetterAction, error) { return 0, nil }); err == nil {
		t.Error("ScanDeadLetters(nil ctx)")
	}
	if err := c.ScanDeadLetters(ctx, "q.dlq", nil); err == nil {
		t.Error("ScanDeadLetters(nil f)")
	}
	if _, err := c.CountDeadLetters(nilCtx, "q.dlq"); err == nil {
		t.Error("CountDeadLetters(nil ctx)")
	}
	if err := c.DeclareSubscription(nilCtx, backend.Subscription{Group: "g", Topics: []string{"x"}}); err == nil {
		t.Error("DeclareSubscription(nil ctx)")
	}
	if err := c.DeclareSubscription(ctx, backend.Subscription{Group: "g", Patterns: []*topic.Pattern{nil}, Delimiter: "."}); err == nil {
		t.Error("a nil pattern")
	}
}
