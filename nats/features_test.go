package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	dnats "github.com/dispytch/dispytch-go/nats"
)

// An emit retried with the same event id within the stream's duplicate
// window is stored once, and handled once.
func TestDedupWindow(t *testing.T) {
	url := requireShared(t)
	stream, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "dedup." + uniq("t")
	var handled atomic.Int32
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func(dispytch.Event[rawEvent]) { handled.Add(1) })
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 10*time.Second)
	for range 3 {
		if err := em.Emit(ctx, rawEvent{To: topic, N: 1}, dispytch.EventID("the-same-event")); err != nil {
			t.Fatal(err)
		}
	}
	// A batch repeating it, and a marker with an id of its own.
	if err := em.EmitBatch(ctx, []dispytch.Eventer{rawEvent{To: topic, N: 1}, rawEvent{To: topic, N: 1}}, dispytch.EventID("the-same-event")); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, rawEvent{To: topic, N: 2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the marker handled", func() bool { return handled.Load() >= 2 })
	st, err := jsFor(t, url).Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(topic))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[topic]; n != 2 {
		t.Fatalf("the stream stored %d messages on %s, want 2 (one event emitted five times, one marker)", n, topic)
	}
	if n := handled.Load(); n != 2 {
		t.Fatalf("%d handlings, want 2", n)
	}
	if info.Config.Duplicates != 2*time.Minute {
		t.Fatalf("duplicate window %v, want the server's default 2m", info.Config.Duplicates)
	}
}

// Headers carry the event id, type and content type, and the key; the
// event id is the message id.
func TestHeaders(t *testing.T) {
	url := requireShared(t)
	stream, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "headers." + uniq("t")
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 10*time.Second)
	if err := em.Emit(ctx, rawEvent{To: topic, N: 1}, dispytch.EventID("id-1"), dispytch.Key("k1"), dispytch.Header("x-a", "line1\nline2")); err != nil {
		t.Fatal(err)
	}
	js := jsFor(t, url)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	h := raw.Header
	for k, want := range map[string]string{
		dnats.HeaderEventID: "id-1", dnats.HeaderMsgID: "id-1", dnats.HeaderEventType: "raw_event",
		"content-type": "application/json", dnats.HeaderKey: "k1", "x-a": "line1 line2",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q (%v)", k, got, want, h)
		}
	}
}

// A handler running longer than AckWait keeps its delivery with
// InProgress: it is not delivered again meanwhile.
func TestLongHandlerInProgress(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, append(opts, dnats.AckWait(time.Second))...)
	topic := "long." + uniq("t")
	var calls atomic.Int32
	done := make(chan dispytch.Metadata, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func(m dispytch.Metadata) {
		calls.Add(1)
		time.Sleep(3500 * time.Millisecond) // three and a half AckWaits
		done <- m
	})
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 5*time.Second), rawEvent{To: topic}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-done:
		if m.Delivery.DeliveryCount != 1 || m.Delivery.Redelivered {
			t.Fatalf("delivery %+v", m.Delivery)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long handler did not finish")
	}
	// Past another AckWait: no redelivery arrived.
	time.Sleep(1500 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times: the delivery was redelivered while it ran", n)
	}
}

// A message delivered more often than MaxDeliver (a handler whose failure
// redelivers) is dead-lettered with reason max_deliver, not dropped.
func TestMaxDeliverDeadLetters(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, append(opts, dnats.MaxDeliver(3))...)
	topic := "maxdeliver." + uniq("t")
	group := uniq("g")
	var calls atomic.Int32
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func() error { calls.Add(1); return errors.New("always") }, dispytch.OnFailure(dispytch.PolicyRedeliver))
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 5*time.Second), rawEvent{To: topic}); err != nil {
		t.Fatal(err)
	}
	q := dlq.Open(c, group+".dlq")
	var letters []*dispytch.FailedMessage
	eventually(t, 15*time.Second, "the message dead-lettered", func() bool {
		var err error
		letters, err = q.List(context.Background(), nil)
		return err == nil && len(letters) == 1
	})
	if f := letters[0]; f.Reason != dnats.ReasonMaxDeliver || f.Topic != topic || f.Attempts != 3 || f.Group != group {
		t.Fatalf("dead letter %+v", f)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d handler calls, want 3 (MaxDeliver)", n)
	}
}

// Dead letters: Count, List, Purge and Redrive on the dead-letter stream.
func TestDeadLetterOperations(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "dlops." + uniq("t")
	group := uniq("g")
	var healthy atomic.Bool
	var handled atomic.Int32
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func(ev dispytch.Event[rawEvent]) error {
		if !healthy.Load() {
			return fmt.Errorf("event %d: down", ev.Body.N)
		}
		handled.Add(1)
		return nil
	})
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 20*time.Second)
	for i := range 10 {
		if err := em.Emit(ctx, rawEvent{To: topic, N: i}); err != nil {
			t.Fatal(err)
		}
	}
	q := dlq.Open(c, group+".dlq")
	eventually(t, 10*time.Second, "10 dead letters", func() bool { n, err := q.Count(ctx, nil); return err == nil && n == 10 })
	// Purge the five oldest, redrive the rest once healthy.
	removed, err := q.Purge(ctx, &dlq.Filter{Max: 5})
	if err != nil || removed != 5 {
		t.Fatalf("purge: %d, %v", removed, err)
	}
	if n, err := q.Count(ctx, nil); err != nil || n != 5 {
		t.Fatalf("count after purge: %d, %v", n, err)
	}
	healthy.Store(true)
	moved, err := q.Redrive(ctx, c, nil)
	if err != nil || moved != 5 {
		t.Fatalf("redrive: %d, %v", moved, err)
	}
	eventually(t, 10*time.Second, "5 redriven events handled", func() bool { return handled.Load() == 5 })
	if n, err := q.Count(ctx, nil); err != nil || n != 0 {
		t.Fatalf("count after redrive: %d, %v", n, err)
	}
}

// A listener of several subjects gets what it consumes, and only that:
// on servers before 2.10 through the single-filter fallback.
func TestSeveralSubjects(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, opts...)
	base := "multi." + uniq("t")
	got := make(chan string, 10)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(base+".a", "raw_event", func(m dispytch.Metadata) { got <- m.Topic })
	l.Handle(base+".b.{x}", "raw_event", func(m dispytch.Metadata) { got <- m.Topic })
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 10*time.Second)
	for _, tp := range []string{base + ".other", base + ".a", base + ".b.1", base + ".c"} {
		if err := em.Emit(ctx, rawEvent{To: tp}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{base + ".a": true, base + ".b.1": true}
	for range want {
		select {
		case tp := <-got:
			if !want[tp] {
				t.Fatalf("delivered %s", tp)
			}
			delete(want, tp)
		case <-time.After(10 * time.Second):
			t.Fatalf("missing %v", want)
		}
	}
}

// With DeclareTopology(false), an emit to a subject no stream holds fails
// with ErrNotSent, and a listener needs its stream.
func TestNoDeclare(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, append(opts, dnats.DeclareTopology(false))...)
	topic := "nodeclare." + uniq("t")
	err := dispytch.NewEmitter(c).Emit(ctxT(t, 5*time.Second), rawEvent{To: topic})
	if !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("emit to a subject no stream holds: %v", err)
	}
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func() {})
	err = l.Run(ctxT(t, 5*time.Second))
	if err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("listener without its stream: %v", err)
	}
}

// Nil arguments give errors, not panics.
func TestNilArguments(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c := newClient(t, url, opts...)
	//lint:ignore SA1012 the nil context is the point
	if err := c.Produce(nil, &backend.Message{Topic: "a"}); !errors.Is(err, backend.ErrNotSent) { //nolint:staticcheck
		t.Fatal(err)
	}
	if err := c.Produce(context.Background(), nil); !errors.Is(err, backend.ErrNotSent) {
		t.Fatal(err)
	}
	var got error
	c.ProduceAsync(context.Background(), nil, func(err error) { got = err })
	if !errors.Is(got, backend.ErrNotSent) {
		t.Fatal(got)
	}
	if err := c.Consume(context.Background(), backend.Subscription{Topics: []string{"a"}}, nil); err == nil {
		t.Fatal("nil inbox")
	}
	if err := c.ScanDeadLetters(context.Background(), "x.dlq", nil); err == nil {
		t.Fatal("nil function")
	}
	if _, err := dnats.NewFromConn(nil); err == nil {
		t.Fatal("nil conn")
	}
	if _, err := dnats.NewFromJetStream(nil); err == nil {
		t.Fatal("nil jetstream")
	}
	if err := c.Produce(context.Background(), &backend.Message{Topic: "a.*"}); !errors.Is(err, backend.ErrNotSent) || !errors.Is(err, backend.ErrPermanent) {
		t.Fatalf("wildcard subject: %v", err)
	}
	if _, err := dnats.New(url, dnats.Stream("a.b")); err == nil {
		t.Fatal("a stream name with a dot")
	}
}

// A client on a JetStream context the caller made works as one from New.
func TestFromJetStream(t *testing.T) {
	url := requireShared(t)
	_, opts := streams(t, url)
	c, err := dnats.NewFromJetStream(jsFor(t, url), opts...)
	if err != nil {
		t.Fatal(err)
	}
	topic := "fromjs." + uniq("t")
	got := make(chan struct{}, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", func() { got <- struct{}{} })
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 5*time.Second), rawEvent{To: topic}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
	if st := c.ConnStatus(); st.State != backend.ConnReady {
		t.Fatalf("%+v", st)
	}
}

// validated is an event whose body must have an email.
type validated struct {
	To    string `json:"to"`
	Email string `json:"email" validate:"required,email"`
}

func (validated) Topic() string     { return "{to}" }
func (validated) EventType() string { return "validated" }

// A body that fails validation is dead-lettered and terminated: the
// server neither redelivers it nor holds it pending.
func TestValidationTerminated(t *testing.T) {
	url := requireShared(t)
	stream, opts := streams(t, url)
	c := newClient(t, url, append(opts, dnats.AckWait(time.Second))...)
	topic := "validation." + uniq("t")
	group := uniq("g")
	var calls atomic.Int32
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "validated", func(dispytch.Event[validated]) { calls.Add(1) })
	run(t, l)
	ctx := ctxT(t, 15*time.Second)
	if err := dispytch.NewEmitter(c).Emit(ctx, validated{To: topic, Email: "not an address"}); err != nil {
		t.Fatal(err)
	}
	q := dlq.Open(c, group+".dlq")
	var letters []*dispytch.FailedMessage
	eventually(t, 10*time.Second, "the invalid event dead-lettered", func() bool {
		var err error
		letters, err = q.List(ctx, nil)
		return err == nil && len(letters) == 1
	})
	if letters[0].Reason != dispytch.ReasonValidation {
		t.Fatalf("dead letter %+v", letters[0])
	}
	// Past two AckWaits: delivered once, nothing pending.
	time.Sleep(2500 * time.Millisecond)
	cons, err := jsFor(t, url).Consumer(ctx, stream, group)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.Delivered.Consumer != 1 || calls.Load() != 0 {
		t.Fatalf("after dead-lettering: ack pending %d, redelivered %d, delivered %d, handler calls %d",
			info.NumAckPending, info.NumRedelivered, info.Delivered.Consumer, calls.Load())
	}
}

// A group whose listener gains a subject keeps its consumer, updated (on
// servers before 2.10: from one filter subject to none), and loses none of
// the messages of the subject it had.
func TestGroupGainsSubject(t *testing.T) {
	t.Run("shared", func(t *testing.T) { groupGainsSubject(t, requireShared(t)) })
	t.Run("in-process", func(t *testing.T) { groupGainsSubject(t, startServer(t).url()) })
}

func groupGainsSubject(t *testing.T, url string) {
	_, opts := streams(t, url)
	c := newClient(t, url, opts...)
	base := "gains." + uniq("t")
	group := uniq("g")
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 20*time.Second)
	first := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	first.Handle(base+".a", "raw_event", func() {})
	if err := run(t, first)(); err != nil {
		t.Fatal(err)
	}
	// Published while the group is down: kept for it.
	if err := em.Emit(ctx, rawEvent{To: base + ".a", N: 1}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	second := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	second.Handle(base+".a", "raw_event", func(m dispytch.Metadata) { got <- m.Topic })
	second.Handle(base+".b", "raw_event", func(m dispytch.Metadata) { got <- m.Topic })
	run(t, second)
	if err := em.Emit(ctx, rawEvent{To: base + ".b", N: 2}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{base + ".a": true, base + ".b": true}
	for range 2 {
		select {
		case tp := <-got:
			delete(want, tp)
		case <-time.After(10 * time.Second):
			t.Fatalf("not delivered: %v", want)
		}
	}
}
