package dispytch_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/memory"
)

// flakyConsumer is a consumer whose connection the test controls: it
// reports a failed attempt before subscribing, then a loss and a recovery
// through the inbox's backend.ConnObserver, as a broker client does.
type flakyConsumer struct {
	*memory.Broker
	steps chan func(backend.Inbox)
}

func (f *flakyConsumer) Consume(ctx context.Context, sub backend.Subscription, in backend.Inbox) error {
	for {
		select {
		case step := <-f.steps:
			step(in)
		case <-ctx.Done():
			<-in.Done()
			return nil
		}
	}
}

// waitHealth polls h until ok holds.
func waitHealth(t *testing.T, what string, h func() dispytch.Health, ok func(dispytch.Health) bool) dispytch.Health {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: health stayed %+v", what, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A listener's health follows its Run and its consumer's reports:
// stopped, connecting (with the last cause), ready, reconnecting (with the
// cause), ready again (one reconnect), stopped with Run's error.
func TestListenerHealth(t *testing.T) {
	f := &flakyConsumer{Broker: memory.New(), steps: make(chan func(backend.Inbox))}
	l := dispytch.NewListener(f, dispytch.WithLogger(quietLog()), dispytch.StartTimeout(0))
	l.Handle("t", "e", func() {})
	if h := l.Health(); h.State != dispytch.HealthStopped || h.Err != nil {
		t.Fatalf("before Run: %+v", h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	refused := errors.New("dial tcp: connection refused")
	f.steps <- func(in backend.Inbox) { in.(backend.ConnObserver).Disconnected(refused) }
	h := waitHealth(t, "connecting", l.Health, func(h dispytch.Health) bool { return h.Err != nil })
	if h.State != dispytch.HealthConnecting || !errors.Is(h.Err, refused) || h.Since.IsZero() {
		t.Fatalf("connecting: %+v", h)
	}
	f.steps <- func(in backend.Inbox) { in.Ready() }
	h = waitHealth(t, "ready", l.Health, func(h dispytch.Health) bool { return h.State == dispytch.HealthReady })
	if h.Err != nil || h.Reconnects != 0 {
		t.Fatalf("ready: %+v", h)
	}
	lost := errors.New("connection reset by peer")
	f.steps <- func(in backend.Inbox) { in.(backend.ConnObserver).Disconnected(lost) }
	h = waitHealth(t, "reconnecting", l.Health, func(h dispytch.Health) bool { return h.State == dispytch.HealthReconnecting })
	if !errors.Is(h.Err, lost) {
		t.Fatalf("reconnecting: %+v", h)
	}
	f.steps <- func(in backend.Inbox) { in.(backend.ConnObserver).Reconnected() }
	h = waitHealth(t, "ready again", l.Health, func(h dispytch.Health) bool { return h.State == dispytch.HealthReady })
	if h.Reconnects != 1 || h.Err != nil {
		t.Fatalf("ready again: %+v", h)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if h := l.Health(); h.State != dispytch.HealthStopped || h.Err != nil || h.Reconnects != 1 {
		t.Fatalf("after a clean stop: %+v", h)
	}
}

// A listener that never subscribed is stopped with Run's error.
func TestListenerHealthNeverSubscribed(t *testing.T) {
	f := &flakyConsumer{Broker: memory.New(), steps: make(chan func(backend.Inbox))}
	l := dispytch.NewListener(f, dispytch.WithLogger(quietLog()), dispytch.StartTimeout(50*time.Millisecond))
	l.Handle("t", "e", func() {})
	err := l.Run(context.Background())
	if h := l.Health(); h.State != dispytch.HealthStopped || !errors.Is(h.Err, dispytch.ErrNotReady) || h.Err != err {
		t.Fatalf("%+v (Run: %v)", h, err)
	}
}

// A handler that makes no progress while messages wait shows as Stalled;
// once it settles, Stalled is 0 again.
func TestListenerHealthStalled(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	l := dispytch.NewListener(b, dispytch.WithLogger(quietLog()), dispytch.Concurrency(1))
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	l.Handle("user.{user_id}.notification", "user_notification", func() {
		started <- struct{}{}
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	if err := l.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	e := dispytch.NewEmitter(b)
	for range 3 {
		if err := e.Emit(ctx, Notification{UserID: 1, Message: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	first := l.Health()
	time.Sleep(30 * time.Millisecond) // the stall being measured
	h := l.Health()
	if h.InFlight != 3 || h.Stalled < 30*time.Millisecond || h.Stalled < first.Stalled {
		t.Fatalf("stuck handler: %+v (first %+v)", h, first)
	}
	close(release)
	h = waitHealth(t, "drained", l.Health, func(h dispytch.Health) bool { return h.InFlight == 0 })
	if h.Stalled != 0 {
		t.Fatalf("after draining: %+v", h)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// connProducer reports a connection state the test sets.
type connProducer struct {
	*memory.Broker
	mu sync.Mutex
	s  backend.ConnStatus
}

func (p *connProducer) ConnStatus() backend.ConnStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

// An emitter's health is its producer's connection; the memory broker's is
// ready until it is closed.
func TestEmitterHealth(t *testing.T) {
	b := memory.New()
	e := dispytch.NewEmitter(b)
	if h := e.Health(); h.State != dispytch.HealthReady || h.Since.IsZero() {
		t.Fatalf("memory: %+v", h)
	}
	b.Close(context.Background())
	if h := e.Health(); h.State != dispytch.HealthStopped {
		t.Fatalf("memory, closed: %+v", h)
	}
	cause := errors.New("dial tcp 127.0.0.1:1: connection refused")
	p := &connProducer{Broker: memory.New(), s: backend.ConnStatus{State: backend.ConnReconnecting, Err: cause, Reconnects: 2}}
	e = dispytch.NewEmitter(p)
	h := e.Health()
	if h.State != dispytch.HealthReconnecting || !errors.Is(h.Err, cause) || h.Reconnects != 2 {
		t.Fatalf("reconnecting: %+v", h)
	}
	since := h.Since
	if h2 := e.Health(); !h2.Since.Equal(since) {
		t.Fatalf("Since moved without a change: %v then %v", since, h2.Since)
	}
	p.mu.Lock()
	p.s = backend.ConnStatus{State: backend.ConnReady, Reconnects: 3}
	p.mu.Unlock()
	if h := e.Health(); h.State != dispytch.HealthReady || h.Err != nil || h.Since.Before(since) {
		t.Fatalf("ready: %+v", h)
	}
	if got := dispytch.HealthReconnecting.String() + backend.ConnClosed.String(); !strings.Contains(got, "reconnecting") || !strings.Contains(got, "closed") {
		t.Fatal(got)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
