package nats_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	dnats "github.com/dispytch/dispytch-go/nats"
)

// seen records handled event numbers.
type seen struct {
	mu sync.Mutex
	n  map[int]int
}

func (s *seen) add(ev dispytch.Event[rawEvent]) {
	s.mu.Lock()
	s.n[ev.Body.N]++
	s.mu.Unlock()
}

func (s *seen) has(from, to int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := from; i < to; i++ {
		if s.n[i] == 0 {
			return false
		}
	}
	return true
}

// The group's consumer deleted under a running listener is recreated, and
// what was published meanwhile is handled.
func TestConsumerDeleted(t *testing.T) {
	srv := startServer(t)
	url := srv.url()
	stream, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "deleted." + uniq("t")
	group := uniq("g")
	s := &seen{n: map[int]int{}}
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", s.add)
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 30*time.Second)
	emit := func(from, to int) {
		for i := from; i < to; i++ {
			if err := em.Emit(ctx, rawEvent{To: topic, N: i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit(0, 50)
	eventually(t, 10*time.Second, "the first 50 handled", func() bool { return s.has(0, 50) })
	js := jsFor(t, url)
	if err := js.DeleteConsumer(ctx, stream, group); err != nil {
		t.Fatal(err)
	}
	emit(50, 100)
	eventually(t, 15*time.Second, "the events published after the deletion handled", func() bool { return s.has(50, 100) })
	if _, err := js.Consumer(ctx, stream, group); err != nil {
		t.Fatalf("the consumer was not recreated: %v", err)
	}
	if st := l.Health(); st.State != dispytch.HealthReady {
		t.Fatalf("listener health after the recreation: %+v", st)
	}
}

// During an outage emits fail with the cause (not sent, or unconfirmed),
// within their context, and the client reports the connection down; once
// the server is back, emits and deliveries resume.
func TestOutage(t *testing.T) {
	srv := startServer(t)
	url := srv.url()
	_, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "outage." + uniq("t")
	s := &seen{n: map[int]int{}}
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(uniq("g")), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", s.add)
	run(t, l)
	em := dispytch.NewEmitter(c)
	if err := em.Emit(ctxT(t, 5*time.Second), rawEvent{To: topic, N: 0}); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	eventually(t, 5*time.Second, "the client reports the connection down", func() bool {
		return c.ConnStatus().State == backend.ConnReconnecting
	})
	if st := c.ConnStatus(); st.Err == nil {
		t.Fatalf("no cause while down: %+v", st)
	}
	eventually(t, 5*time.Second, "the listener reports the connection down", func() bool { return l.Health().State == dispytch.HealthReconnecting })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := em.Emit(ctx, rawEvent{To: topic, N: 1})
	cancel()
	if err == nil || !(errors.Is(err, dispytch.ErrNotSent) || errors.Is(err, dispytch.ErrUnconfirmed)) {
		t.Fatalf("emit during the outage: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("emit during the outage took %v", d)
	}
	var batchErr *backend.BatchError
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	err = em.EmitBatch(ctx, []dispytch.Eventer{rawEvent{To: topic, N: 2}, rawEvent{To: topic, N: 3}})
	cancel()
	if !errors.As(err, &batchErr) || len(batchErr.Failed()) != 2 {
		t.Fatalf("batch during the outage: %v", err)
	}
	srv.start()
	eventually(t, 10*time.Second, "the client reconnected", func() bool { return c.ConnStatus().State == backend.ConnReady })
	for i := 10; i < 20; i++ {
		if err := em.Emit(ctxT(t, 5*time.Second), rawEvent{To: topic, N: i}); err != nil {
			t.Fatalf("emit after the outage: %v", err)
		}
	}
	eventually(t, 15*time.Second, "events emitted after the outage handled", func() bool { return s.has(10, 20) })
	eventually(t, 5*time.Second, "the listener healthy again", func() bool { return l.Health().State == dispytch.HealthReady })
	if st := c.ConnStatus(); st.Reconnects < 1 {
		t.Fatalf("%+v", st)
	}
}

// Emits with EmitAsync go out within the publish window and all report.
func TestEmitAsyncWindow(t *testing.T) {
	url := requireShared(t)
	stream, opts := streams(t, url)
	c := newClient(t, url, append(opts, dnats.PublishWindow(16))...)
	topic := "async." + uniq("t")
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 20*time.Second)
	const n = 2000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	wg.Add(n)
	for i := range n {
		em.EmitAsync(ctx, rawEvent{To: topic, N: i}, func(err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d async emits failed: %v", len(errs), errs[0])
	}
	st, err := jsFor(t, url).Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != n {
		t.Fatalf("stream holds %d messages, want %d", got, n)
	}
}

// The stream deleted under a running listener is created again, with the
// group's consumer, and events emitted afterwards are handled.
func TestStreamDeleted(t *testing.T) {
	srv := startServer(t)
	url := srv.url()
	stream, opts := streams(t, url)
	c := newClient(t, url, opts...)
	topic := "sdeleted." + uniq("t")
	s := &seen{n: map[int]int{}}
	group := uniq("g")
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle(topic, "raw_event", s.add)
	run(t, l)
	em := dispytch.NewEmitter(c)
	if err := em.Emit(ctxT(t, 5*time.Second), rawEvent{To: topic, N: 0}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first event handled", func() bool { return s.has(0, 1) })
	if err := jsFor(t, url).DeleteStream(ctxT(t, 5*time.Second), stream); err != nil {
		t.Fatal(err)
	}
	js := jsFor(t, url)
	eventually(t, 20*time.Second, "the stream and the group's consumer created again", func() bool {
		_, err := js.Consumer(context.Background(), stream, group)
		return err == nil
	})
	for i := 1; i <= 20; i++ {
		if err := em.Emit(ctxT(t, 5*time.Second), rawEvent{To: topic, N: i}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "every event emitted after the re-creation handled", func() bool { return s.has(1, 21) })
}
