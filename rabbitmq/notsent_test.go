package rabbitmq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// plainQueue declares a queue bound to exchange with key on ch, deleted
// at cleanup.
func (e *env) plainQueue(ch *amqp.Channel, exchange, key string) string {
	e.t.Helper()
	q := e.prefix + "-q-" + backend.NewUUID()[:4]
	e.addQueue(q)
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		e.t.Fatal(err)
	}
	if err := ch.QueueBind(q, key, exchange, false, nil); err != nil {
		e.t.Fatal(err)
	}
	return q
}

// drainOrders reads q until it finds the order numbered marker, and
// returns the numbers it read before it.
func drainOrders(t *testing.T, ch *amqp.Channel, q string, marker int) []int {
	t.Helper()
	deliveries, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	timeout := time.After(20 * time.Second)
	for {
		select {
		case d := <-deliveries:
			var env struct {
				Body Order `json:"body"`
			}
			if err := json.Unmarshal(d.Body, &env); err != nil {
				t.Fatalf("message %q: %v", d.Body, err)
			}
			if env.Body.N == marker {
				return got
			}
			got = append(got, env.Body.N)
		case <-timeout:
			t.Fatalf("no marker after 20s; read %d messages", len(got))
		}
	}
}

// TestEmitDoneContextPublishesNothing: with a context that is already
// cancelled or past its deadline, Emit, EmitBatch, Produce and
// ProduceAsync publish nothing and fail with dispytch.ErrNotSent and the
// context's error (dispytch.ErrTimeout for the deadline). The queue then
// holds only the marker published afterwards.
func TestEmitDoneContextPublishesNothing(t *testing.T) {
	e := setup(t)
	c := e.client()
	ch := e.raw()
	q := e.plainQueue(ch, e.x, "orders")
	em := dispytch.NewEmitter(c)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	msg := func(n int) *backend.Message {
		m, err := em.Message(Order{N: n})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	check := func(what string, err error, deadline bool) {
		t.Helper()
		if !errors.Is(err, dispytch.ErrNotSent) || errors.Is(err, dispytch.ErrUnconfirmed) {
			t.Fatalf("%s: %v; want dispytch.ErrNotSent", what, err)
		}
		if deadline && (!errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded)) {
			t.Fatalf("%s: %v; want dispytch.ErrTimeout and context.DeadlineExceeded", what, err)
		}
		if !deadline && !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v; want context.Canceled", what, err)
		}
	}
	for i := range 50 {
		// The producer itself, bypassing the emitter's own check: the
		// channel is up and the window free, so only the context stops it.
		check("Produce, cancelled", c.Produce(cancelled, msg(i)), false)
		check("Produce, expired", c.Produce(expired, msg(i)), true)
		res := make(chan error, 1)
		c.ProduceAsync(cancelled, msg(i), func(err error) { res <- err })
		check("ProduceAsync, cancelled", <-res, false)
		err := c.Produce(expired, msg(i), msg(i+1000))
		var be *backend.BatchError
		if !errors.As(err, &be) || len(be.NotSent()) != 2 {
			t.Fatalf("Produce batch, expired: %v", err)
		}
		check("Produce batch, expired", be.Errs[1], true)
	}
	check("Emit, cancelled", em.Emit(cancelled, Order{N: 1}), false)
	check("Emit, expired", em.Emit(expired, Order{N: 1}), true)
	check("EmitBatch, cancelled", em.EmitBatch(cancelled, []dispytch.Eventer{Order{N: 1}, Order{N: 2}}), false)

	// One channel, in order: once the marker is read, anything published
	// before it would have been read first.
	if err := em.Emit(ctxT(t, 10*time.Second), Order{N: -1}); err != nil {
		t.Fatal(err)
	}
	if got := drainOrders(t, ch, q, -1); len(got) > 0 {
		t.Fatalf("%d messages were published with a done context: %v", len(got), got)
	}
}

// TestEmitBatchCancelledMidway: a batch whose context is cancelled while it
// is being published (a consumer of the queue cancels it on the 200th
// message) reports in its *BatchError which messages were not sent and
// which were not confirmed. Every message reported not sent is absent from
// the queue; every message present was reported sent (nil) or unconfirmed;
// every one reported sent is present.
func TestEmitBatchCancelledMidway(t *testing.T) {
	e := setup(t)
	c := e.client(rabbitmq.ConfirmWindow(4)) // many round trips: a slow batch
	ch := e.raw()
	q := e.plainQueue(ch, e.x, "orders")
	em := dispytch.NewEmitter(c)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := e.raw()
	deliveries, err := watch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		n := 0
		for range deliveries {
			if n++; n == 200 {
				cancel()
			}
		}
	}()
	const total = 5000
	evs := make([]dispytch.Eventer, total)
	for i := range evs {
		evs[i] = Order{N: i}
	}
	err = em.EmitBatch(ctx, evs)
	var be *backend.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("EmitBatch: %v; want a *BatchError", err)
	}
	notSent, unconfirmed := be.NotSent(), be.Unconfirmed()
	var bad []string // at most a few, with how many in all
	report := func(format string, args ...any) {
		if len(bad) < 5 {
			bad = append(bad, fmt.Sprintf(format, args...))
		} else {
			bad[4] = "..."
		}
	}
	defer func() {
		if len(bad) > 0 {
			t.Errorf("wrong reports:\n%s", strings.Join(bad, "\n"))
		}
	}()
	for i, err := range be.Errs {
		if err != nil && !errors.Is(err, dispytch.ErrNotSent) && !errors.Is(err, dispytch.ErrUnconfirmed) {
			report("message %d: %v; want nil, not sent or unconfirmed", i, err)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			report("message %d: %v; want it to wrap context.Canceled", i, err)
		}
	}
	if len(notSent) == 0 || len(notSent) == total {
		t.Fatalf("%d of %d not sent: the cancellation did not come mid-way", len(notSent), total)
	}
	// Stop the watcher (it requeues what it holds), then read everything.
	if err := watch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctxT(t, 10*time.Second), Order{N: -1}); err != nil {
		t.Fatal(err)
	}
	present := map[int]bool{}
	for _, n := range drainOrders(t, ch, q, -1) {
		present[n] = true
	}
	for _, i := range notSent {
		if present[i] {
			report("message %d was reported not sent, but the broker has it", i)
		}
	}
	for i := range total {
		if be.Errs[i] == nil && !present[i] {
			report("message %d was reported confirmed, but the queue does not have it", i)
		}
		if present[i] && be.Errs[i] != nil && !errors.Is(be.Errs[i], dispytch.ErrUnconfirmed) {
			report("message %d is in the queue, but was reported %v", i, be.Errs[i])
		}
	}
	t.Logf("%d confirmed, %d unconfirmed, %d not sent; %d in the queue; e.g. %v",
		total-len(notSent)-len(unconfirmed), len(unconfirmed), len(notSent), len(present), be.Errs[notSent[0]])
}

// TestEmitUnconfirmed: an Emit whose message went out but whose publisher
// confirm does not come (the network drops everything) fails at its
// deadline with dispytch.ErrUnconfirmed and dispytch.ErrTimeout, not
// ErrNotSent: the broker may have the message.
func TestEmitUnconfirmed(t *testing.T) {
	e := setup(t)
	var c *rabbitmq.Client
	t.Cleanup(func() { // after the proxy's cleanup cut the dead connections
		if c != nil {
			c.Close(context.Background())
		}
	})
	p := newDropProxy(t, brokerAddr(t))
	u, _ := url.Parse(brokerURL())
	u.Host = p.ln.Addr().String()
	c, err := rabbitmq.Dial(ctxT(t, 10*time.Second), u.String(), rabbitmq.Exchanges(e.x, e.x2), rabbitmq.WithLogger(quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	e.plainQueue(e.raw(), e.x, "orders")
	em := dispytch.NewEmitter(c)
	if err := em.Emit(ctxT(t, 10*time.Second), Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	p.drop.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = em.Emit(ctx, Order{N: 2})
	if !errors.Is(err, dispytch.ErrUnconfirmed) || errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("emit without a confirm: %v; want ErrUnconfirmed and ErrTimeout", err)
	}
	t.Logf("error: %v", err)
}

// TestCloseWaitsForConfirms: Close(ctx) lets the publishes in flight be
// confirmed before it closes the connections; with a context already done
// it closes at once and says how many were left.
func TestCloseWaitsForConfirms(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("close")
	if err := c.DeclareGroup(ctxT(t, 10*time.Second), group, "orders"); err != nil {
		t.Fatal(err)
	}
	em := dispytch.NewEmitter(c)
	const n = 500
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Add(n)
	for i := range n {
		em.EmitAsync(context.Background(), Order{N: i}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	if err := c.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("close: %v", err)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d publishes failed although Close waited for them", failed.Load(), n)
	}
	if got := queueDepth(t, e.raw(), group); got != n {
		t.Fatalf("%d messages in the queue, want %d", got, n)
	}
}
