package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/redis"
)

type topicEvent struct {
	To string `json:"to"`
	N  int    `json:"n"`
}

func (topicEvent) Topic() string     { return "{to}" }
func (topicEvent) EventType() string { return "test_event" }

func run(t *testing.T, l *dispytch.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := l.WaitReady(wctx); err != nil {
		cancel()
		t.Fatalf("listener not ready: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// The stream entry carries the envelope and, for tools, the id, type,
// content type, key and headers as fields of their own.
func TestEntryFields(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	c := newClient(t)
	em := dispytch.NewEmitter(c)
	ctx := context.Background()
	if err := em.Emit(ctx, topicEvent{To: tp, N: 7}, dispytch.EventID("e-1"), dispytch.Header("x-tenant", "acme")); err != nil {
		t.Fatal(err)
	}
	msgs, err := raw(t).XRange(ctx, tp, "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("XRANGE: %v %v", msgs, err)
	}
	v := msgs[0].Values
	if v["id"] != "e-1" || v["type"] != "test_event" || v["content-type"] != "application/json" || v["h:x-tenant"] != "acme" {
		t.Fatalf("fields %v", v)
	}
	var env map[string]any
	if err := json.Unmarshal([]byte(v["data"].(string)), &env); err != nil || env["id"] != "e-1" {
		t.Fatalf("data %q: %v", v["data"], err)
	}
}

// Trimming bounds the stream on every XADD.
func TestTrim(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	c := newClient(t, redis.Trim(tp, redis.Trimming{MaxLen: 10, Exact: true}))
	em := dispytch.NewEmitter(c)
	for i := range 50 {
		if err := em.Emit(context.Background(), topicEvent{To: tp, N: i}); err != nil {
			t.Fatal(err)
		}
	}
	if n := raw(t).XLen(context.Background(), tp).Val(); n != 10 {
		t.Fatalf("XLEN %d, want 10", n)
	}
}

// A message redelivered more often than DeliveryLimit goes to the group's
// dead-letter stream; Redrive brings it back.
func TestDeliveryLimit(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	group := tp + ".g"
	cleanKeys(t, tp+"*")
	c := newClient(t, redis.DeliveryLimit(3), redis.MinIdle(time.Second))
	var calls atomic.Int32
	var healthy atomic.Bool
	done := make(chan dispytch.Metadata, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	l.Handle(tp, "test_event", func(m dispytch.Metadata) error {
		calls.Add(1)
		if !healthy.Load() {
			return errors.New("not now")
		}
		done <- m
		return nil
	}, dispytch.OnFailure(dispytch.PolicyRedeliver))
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(context.Background(), topicEvent{To: tp, N: 1}); err != nil {
		t.Fatal(err)
	}
	q := dlq.Open(c, group+".dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var letters []*dispytch.FailedMessage
	for len(letters) == 0 {
		var err error
		if letters, err = q.List(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("no dead letter after %d calls", calls.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f := letters[0]
	if f.Reason != redis.ReasonDeliveryLimit || f.Topic != tp || f.Group != group || f.Attempts != 4 {
		t.Fatalf("dead letter %+v", f)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d handler calls, want 3 (the delivery limit)", n)
	}
	pend, err := raw(t).XPending(ctx, tp, group).Result()
	if err != nil || pend.Count != 0 {
		t.Fatalf("pending after dead-lettering: %+v %v", pend, err)
	}
	healthy.Store(true)
	if n, err := q.Redrive(ctx, c, &dlq.Filter{Reasons: []dispytch.Reason{redis.ReasonDeliveryLimit}}); err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("redriven message not handled")
	}
	if n, _ := q.Count(ctx, nil); n != 0 {
		t.Fatalf("%d dead letters left after the redrive", n)
	}
}

// A restart of Redis (SIGKILL, AOF with fsync always) loses nothing the
// emitter was told was stored; emits during the outage fail with an
// error; the listener resumes its group by itself.
func TestRedisRestart(t *testing.T) {
	srv := startServer(t)
	tp := "restart.events"
	mk := func() *redis.Client {
		c, err := redis.New("redis://"+srv.addr(), redis.WithLogger(testLogger()), redis.BlockTime(100*time.Millisecond),
			redis.ClientOptions(func(o *goredis.UniversalOptions) { o.MaxRetries = -1; o.DialTimeout = 200 * time.Millisecond }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	p, cons := mk(), mk()
	var mu sync.Mutex
	seen := map[int]bool{}
	got := make(chan struct{}, 1)
	l := dispytch.NewListener(cons, dispytch.ConsumerGroup("svc"), dispytch.WithLogger(testLogger()))
	l.Handle(tp, "test_event", func(ev dispytch.Event[topicEvent]) {
		mu.Lock()
		seen[ev.Body.N] = true
		mu.Unlock()
		select {
		case got <- struct{}{}:
		default:
		}
	})
	run(t, l)
	em := dispytch.NewEmitter(p)
	var sent []int
	var failed int
	emit := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := em.Emit(ctx, topicEvent{To: tp, N: i})
		if err == nil {
			sent = append(sent, i)
			return
		}
		failed++
		if !errors.Is(err, dispytch.ErrNotSent) && !errors.Is(err, dispytch.ErrUnconfirmed) {
			t.Fatalf("emit during the outage: %v (neither not sent nor unconfirmed)", err)
		}
	}
	i := 0
	for ; i < 200; i++ {
		emit(i)
	}
	srv.kill()
	for range 5 {
		emit(i)
		i++
	}
	if failed < 5 {
		t.Fatalf("%d of 5 emits to a stopped Redis failed", failed)
	}
	srv.start()
	for end := i + 200; i < end; i++ {
		emit(i)
	}
	deadline := time.After(20 * time.Second)
	for {
		mu.Lock()
		missing := -1
		for _, n := range sent {
			if !seen[n] {
				missing = n
				break
			}
		}
		mu.Unlock()
		if missing < 0 {
			break
		}
		select {
		case <-got:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("event %d, reported stored, never handled after the restart (%d sent)", missing, len(sent))
		}
	}
	if len(sent) < 400 {
		t.Fatalf("only %d events stored around the restart", len(sent))
	}
}

// Nil arguments are errors, not panics.
func TestNilArguments(t *testing.T) {
	c := newClient(t)
	//lint:ignore SA1012 testing the nil check
	if err := c.Produce(nil, &backend.Message{Topic: "x"}); err == nil { //nolint:staticcheck
		t.Fatal("nil context accepted")
	}
	if err := c.Produce(context.Background(), nil); !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("nil message: %v", err)
	}
	//lint:ignore SA1012 testing the nil check
	if err := c.Consume(nil, backend.Subscription{}, nil); err == nil { //nolint:staticcheck
		t.Fatal("nil context accepted")
	}
	if err := c.Consume(context.Background(), backend.Subscription{}, nil); err == nil {
		t.Fatal("nil inbox accepted")
	}
	if err := c.ScanDeadLetters(context.Background(), "x", nil); err == nil {
		t.Fatal("nil function accepted")
	}
	if _, err := redis.NewFromClient(nil); err == nil {
		t.Fatal("nil client accepted")
	}
	if _, err := redis.New("http://x"); err == nil {
		t.Fatal("bad URL accepted")
	}
	if _, err := redis.New("", redis.MinIdle(0)); err == nil {
		t.Fatal("MinIdle(0) accepted")
	}
}

// A Client on an existing go-redis client works, and Close leaves that
// client open.
func TestNewFromClient(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	rc := raw(t)
	c, err := redis.NewFromClient(rc, redis.WithLogger(testLogger()), redis.BlockTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup("g"), dispytch.WithLogger(testLogger()))
	l.Handle(tp, "test_event", func(ev dispytch.Event[topicEvent]) { got <- ev.Body.N })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	if err := l.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := dispytch.NewEmitter(c).Emit(context.Background(), topicEvent{To: tp, N: 42}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 42 {
		t.Fatal(n)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rc.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the given client was closed: %v", err)
	}
	if err := c.Produce(context.Background(), &backend.Message{Topic: tp}); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("emit after Close: %v", err)
	}
}

// ConnStatus: ready on a reachable Redis, connecting on an unreachable one.
func TestConnStatus(t *testing.T) {
	requireRedis(t)
	c := newClient(t)
	deadline := time.Now().Add(10 * time.Second)
	for c.ConnStatus().State != backend.ConnReady {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", c.ConnStatus())
		}
		time.Sleep(20 * time.Millisecond)
	}
	bad, err := redis.New("redis://127.0.0.1:1", redis.ClientOptions(func(o *goredis.UniversalOptions) { o.MaxRetries = -1 }))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close(context.Background())
	for st := bad.ConnStatus(); st.Err == nil; st = bad.ConnStatus() {
		if st.State == backend.ConnReady || time.Now().After(deadline) {
			t.Fatalf("status of an unreachable Redis: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := bad.ConnStatus(); st.State != backend.ConnConnecting {
		t.Fatalf("status %+v", st)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.ConnStatus(); st.State != backend.ConnClosed {
		t.Fatalf("after Close: %+v", st)
	}
}

// Close ends a running listener's Consume with ErrClosed, without waiting
// for the listener to stop.
func TestCloseEndsConsume(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	for _, mode := range []redis.Mode{redis.Streams, redis.PubSub} {
		c, err := redis.New("redis://"+addr(), redis.WithMode(mode), redis.WithLogger(testLogger()))
		if err != nil {
			t.Fatal(err)
		}
		l := dispytch.NewListener(c, dispytch.ConsumerGroup("g"), dispytch.WithLogger(testLogger()))
		l.Handle(tp, "test_event", func() {})
		errc := make(chan error, 1)
		go func() { errc <- l.Run(context.Background()) }()
		if err := l.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Close(ctx); err != nil {
			t.Fatalf("mode %d: Close: %v", mode, err)
		}
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, dispytch.ErrClosed) {
				t.Fatalf("mode %d: Run after Close: %v", mode, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("mode %d: Run did not end after Close", mode)
		}
	}
}

// A handler slower than MinIdle keeps its entry: the consumer keeps it
// fresh, so the group's other consumer does not reclaim it.
func TestSlowHandlerKeepsEntry(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	var calls atomic.Int32
	done := make(chan struct{}, 2)
	for range 2 {
		c := newClient(t, redis.MinIdle(900*time.Millisecond), redis.ReclaimInterval(50*time.Millisecond))
		l := dispytch.NewListener(c, dispytch.ConsumerGroup("g"), dispytch.WithLogger(testLogger()))
		l.Handle(tp, "test_event", func() {
			calls.Add(1)
			time.Sleep(2700 * time.Millisecond) // three MinIdles
			done <- struct{}{}
		})
		run(t, l)
	}
	if err := dispytch.NewEmitter(newClient(t)).Emit(context.Background(), topicEvent{To: tp}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	// Give a wrong reclaim time to show (it would have started by now).
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handled %d times: the slow handler's entry was reclaimed", n)
	}
}

// EmitBatch pipelines; a message Redis refuses fails alone, with Redis's
// reason, as not sent and permanent.
func TestEmitBatchPartialFailure(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	rc := raw(t)
	if err := rc.Set(context.Background(), tp+".string", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	err := dispytch.NewEmitter(c).EmitBatch(context.Background(), []dispytch.Eventer{
		topicEvent{To: tp + ".ok", N: 1}, topicEvent{To: tp + ".string", N: 2}, topicEvent{To: tp + ".ok", N: 3}})
	var be *backend.BatchError
	if !errors.As(err, &be) || fmt.Sprint(be.Failed()) != "[1]" || fmt.Sprint(be.NotSent()) != "[1]" ||
		!errors.Is(be.Errs[1], dispytch.ErrPermanent) || !strings.Contains(be.Errs[1].Error(), "WRONGTYPE") {
		t.Fatalf("batch error %v", err)
	}
	if n := rc.XLen(context.Background(), tp+".ok").Val(); n != 2 {
		t.Fatalf("%d entries stored, want 2", n)
	}
}

// StartFrom(Latest): a new group skips what the stream already holds.
func TestStartFromLatest(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	cleanKeys(t, tp+"*")
	c := newClient(t, redis.StartFrom(redis.Latest))
	em := dispytch.NewEmitter(c)
	if err := em.Emit(context.Background(), topicEvent{To: tp, N: 1}); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 2)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup("late"), dispytch.WithLogger(testLogger()))
	l.Handle(tp, "test_event", func(ev dispytch.Event[topicEvent]) { got <- ev.Body.N })
	run(t, l)
	if err := em.Emit(context.Background(), topicEvent{To: tp, N: 2}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 2 {
			t.Fatalf("first event handled: %d, want the one emitted after the start", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing handled")
	}
}
