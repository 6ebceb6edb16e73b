package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/memory"
	"github.com/dispytch/dispytch-go/topic"
)

// inbox is a hand-driven Inbox: deliveries land on a channel and the test
// settles them.
type inbox struct {
	ready chan struct{}
	ds    chan *backend.Delivery
	done  chan struct{}
	once  sync.Once
}

func newInbox(buf int) *inbox {
	return &inbox{ready: make(chan struct{}), ds: make(chan *backend.Delivery, buf), done: make(chan struct{})}
}

func (in *inbox) Ready()                { in.once.Do(func() { close(in.ready) }) }
func (in *inbox) Done() <-chan struct{} { return in.done }
func (in *inbox) Deliver(ctx context.Context, d *backend.Delivery) error {
	select {
	case in.ds <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (in *inbox) next(t *testing.T) *backend.Delivery {
	t.Helper()
	select {
	case d := <-in.ds:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
		return nil
	}
}

func (in *inbox) none(t *testing.T) {
	t.Helper()
	select {
	case d := <-in.ds:
		t.Fatalf("unexpected delivery %s %s", d.Topic, d.Value)
	default:
	}
}

// consume runs Consume in the background; stop ends it and returns its error.
func consume(t *testing.T, b *memory.Broker, group string, in *inbox, topics ...string) (stop func() error) {
	t.Helper()
	sub := backend.Subscription{Group: group, Delimiter: "."}
	for _, tp := range topics {
		p, err := topic.Parse(tp, ".")
		if err != nil {
			t.Fatal(err)
		}
		if p.IsLiteral() {
			sub.Topics = append(sub.Topics, tp)
		} else {
			sub.Patterns = append(sub.Patterns, p)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Consume(ctx, sub, in) }()
	select {
	case <-in.ready:
	case err := <-errc:
		t.Fatalf("consume: %v", err)
	}
	return func() error {
		cancel()
		close(in.done)
		return <-errc
	}
}

func publish(t *testing.T, b *memory.Broker, topic, key, value string) {
	t.Helper()
	m := &backend.Message{Topic: topic, Value: []byte(value)}
	if key != "" {
		m.Key = []byte(key)
	}
	if err := b.Produce(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func TestFanOutAndCompetingConsumers(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	a1, a2, g := newInbox(100), newInbox(100), newInbox(100)
	defer consume(t, b, "a", a1, "orders")()
	defer consume(t, b, "a", a2, "orders")()
	defer consume(t, b, "g", g, "orders")()
	for i := range 20 {
		publish(t, b, "orders", "", fmt.Sprint(i))
	}
	seen := map[string]int{}
	for range 20 {
		d := g.next(t)
		seen["g"+string(d.Value)]++
		d.Acker.Ack(context.Background())
	}
	n1, n2 := 0, 0
	for n1+n2 < 20 {
		select {
		case d := <-a1.ds:
			n1++
			seen["a"+string(d.Value)]++
			d.Acker.Ack(context.Background())
		case d := <-a2.ds:
			n2++
			seen["a"+string(d.Value)]++
			d.Acker.Ack(context.Background())
		case <-time.After(5 * time.Second):
			t.Fatalf("group a got %d", n1+n2)
		}
	}
	if len(seen) != 40 {
		t.Fatalf("not every message reached both groups exactly once: %v", seen)
	}
	for k, v := range seen {
		if v != 1 {
			t.Fatalf("%s seen %d times", k, v)
		}
	}
	a1.none(t)
	a2.none(t)
}

func TestPatternSubscriptionAndRetention(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	// Published before anyone subscribes: retained, then claimed.
	publish(t, b, "user.1.created", "", "early")
	if b.Retained("user.1.created") != 1 {
		t.Fatal("not retained")
	}
	in := newInbox(10)
	defer consume(t, b, "svc", in, "user.{id}.created")()
	if d := in.next(t); string(d.Value) != "early" || d.Topic != "user.1.created" {
		t.Fatalf("%s %s", d.Topic, d.Value)
	} else {
		d.Acker.Ack(context.Background())
	}
	publish(t, b, "user.2.created", "", "late")
	publish(t, b, "user.2.deleted", "", "other")
	if d := in.next(t); string(d.Value) != "late" {
		t.Fatal(string(d.Value))
	}
	in.none(t)
	if b.Retained("user.2.deleted") != 1 {
		t.Fatal("unmatched topic not retained")
	}
}

func TestNackRedeliveryAndKeyOrder(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	in := newInbox(10)
	defer consume(t, b, "g", in, "t")()
	publish(t, b, "t", "k", "1")
	publish(t, b, "t", "k", "2")
	publish(t, b, "t", "", "free")
	d1 := in.next(t)
	d2 := in.next(t)
	// "2" has key k like "1": it must wait while "1" is unsettled.
	if string(d1.Value) != "1" || string(d2.Value) != "free" {
		t.Fatalf("%s %s", d1.Value, d2.Value)
	}
	in.none(t)
	if err := d1.Acker.Nack(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := in.next(t)
	if string(r.Value) != "1" || !r.Info.Redelivered || r.Info.DeliveryCount != 2 {
		t.Fatalf("%s %+v", r.Value, r.Info)
	}
	// A stale acker (of the first delivery) must not settle the
	// redelivery.
	if err := d1.Acker.Ack(context.Background()); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("stale ack: %v", err)
	}
	r.Acker.Ack(context.Background())
	if d := in.next(t); string(d.Value) != "2" {
		t.Fatal(string(d.Value))
	} else {
		d.Acker.Ack(context.Background())
	}
	d2.Acker.Ack(context.Background())
	st, _ := b.GroupStats("g")
	if st.Ready != 0 || st.Unacked != 0 || st.Redelivered != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestUnsettledRequeuedWhenConsumerStops(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	in := newInbox(10)
	stop := consume(t, b, "g", in, "t")
	publish(t, b, "t", "", "a")
	d := in.next(t)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Acker.Ack(context.Background()); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("ack after stop: %v", err)
	}
	in2 := newInbox(10)
	defer consume(t, b, "g", in2, "t")()
	if r := in2.next(t); string(r.Value) != "a" || !r.Info.Redelivered {
		t.Fatalf("%s %+v", r.Value, r.Info)
	}
}

func TestBackpressure(t *testing.T) {
	b := memory.New(memory.Capacity(2))
	defer b.Close(context.Background())
	in := newInbox(10)
	defer consume(t, b, "g", in, "t")()
	publish(t, b, "t", "", "1")
	publish(t, b, "t", "", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := b.Produce(ctx, &backend.Message{Topic: "t", Value: []byte("3")})
	if !errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full queue: %v", err)
	}
	// Acking frees space: a blocked publish goes through.
	errc := make(chan error, 1)
	go func() { errc <- b.Produce(context.Background(), &backend.Message{Topic: "t", Value: []byte("4")}) }()
	in.next(t).Acker.Ack(context.Background())
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish stayed blocked after an ack")
	}
}

func TestClose(t *testing.T) {
	b := memory.New(memory.Capacity(2))
	in := newInbox(1)
	sub := backend.Subscription{Group: "g", Topics: []string{"t"}}
	errc := make(chan error, 1)
	go func() { errc <- b.Consume(context.Background(), sub, in) }()
	<-in.ready
	publish(t, b, "t", "", "1")
	in.next(t)
	publish(t, b, "t", "", "2") // fills the queue: the unacked one counts
	blocked := make(chan error, 1)
	go func() { blocked <- b.Produce(context.Background(), &backend.Message{Topic: "t", Value: []byte("3")}) }()
	b.Close(context.Background())
	for _, c := range []chan error{errc, blocked} {
		select {
		case err := <-c:
			if !errors.Is(err, dispytch.ErrClosed) {
				t.Fatalf("after close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not woken by Close")
		}
	}
	if err := b.Produce(context.Background(), &backend.Message{Topic: "t", Value: []byte("x")}); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatal(err)
	}
}

func TestForeignOption(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	err := dispytch.NewEmitter(b).Emit(context.Background(), ev{}, dispytch.WithBackendOption(kafkaish{}))
	if !errors.Is(err, dispytch.ErrForeignOption) {
		t.Fatal(err)
	}
}

type ev struct{}

func (ev) Topic() string     { return "t" }
func (ev) EventType() string { return "e" }

type kafkaish struct{}

func (kafkaish) Backend() string { return "kafka" }
