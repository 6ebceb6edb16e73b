// Package dispytchtest runs a listener on the embedded memory broker inside
// a test, as FastStream's TestBroker does: emit events, wait for them to be
// handled or dead-lettered, inspect dead letters and override dependencies.
//
//	kit := dispytchtest.New(t,
//		dispytch.Provide(NewUserService),
//		dispytch.Override(dispytch.Value[*UserService](fake)))
//	kit.Listener.AddGroup(users)
//	kit.Start()
//	id := kit.Emit(UserRegistered{...})
//	if s := kit.Wait(id); s.Outcome != dispytch.OutcomeAcked { t.Fatal(s) }
package dispytchtest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/memory"
)

// Kit is a memory broker, a listener and an emitter wired together for a
// test.
type Kit struct {
	T        testing.TB
	Broker   *memory.Broker
	Listener *dispytch.Listener
	Emitter  *dispytch.Emitter
	// Timeout bounds Emit and every Wait (default 10s).
	Timeout time.Duration

	mu      sync.Mutex
	settled []dispytch.Settlement
	changed chan struct{}
	stop    context.CancelFunc
	runErr  chan error
	ended   bool
}

// New creates a kit. opts go to the listener (after the kit's own: group
// "test" and a logger writing warnings to t.Log), so they can add providers,
// Override them, set policies or a group. The listener is not running until
// Start.
func New(t testing.TB, opts ...dispytch.ListenerOption) *Kit {
	t.Helper()
	b := memory.New()
	t.Cleanup(func() { b.Close(context.Background()) })
	return NewOn(t, b, opts...)
}

// NewOn creates a kit on an existing broker, for tests with several
// services (listeners of different groups) on one broker. The broker is not
// closed by the kit.
func NewOn(t testing.TB, b *memory.Broker, opts ...dispytch.ListenerOption) *Kit {
	t.Helper()
	k := &Kit{T: t, Broker: b, Timeout: 10 * time.Second, changed: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(&testWriter{k: k}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	all := append([]dispytch.ListenerOption{
		dispytch.ConsumerGroup("test"),
		dispytch.WithLogger(log),
		dispytch.ShutdownTimeout(5 * time.Second),
	}, opts...)
	all = append(all, OnSettle(k.record))
	k.Listener = dispytch.NewListener(k.Broker, all...)
	k.Emitter = dispytch.NewEmitter(k.Broker)
	t.Cleanup(k.Stop)
	return k
}

type testWriter struct{ k *Kit }

func (w *testWriter) Write(p []byte) (int, error) {
	w.k.mu.Lock()
	ended := w.k.ended
	w.k.mu.Unlock()
	if !ended {
		w.k.T.Log(string(p))
	}
	return len(p), nil
}

func (k *Kit) record(s dispytch.Settlement) {
	k.mu.Lock()
	k.settled = append(k.settled, s)
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

// Start runs the listener in the background and waits until it consumes.
// It fails the test when Run fails.
func (k *Kit) Start() {
	k.T.Helper()
	if err := k.Listener.Check(); err != nil {
		k.T.Fatalf("dispytchtest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.stop = cancel
	k.runErr = make(chan error, 1)
	go func() { k.runErr <- k.Listener.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, k.Timeout)
	defer wcancel()
	if err := k.Listener.WaitReady(wctx); err != nil {
		// Run has returned (or is stopped now): nothing is left for Stop
		// to wait for.
		k.stop()
		k.stop = nil
		select {
		case rerr := <-k.runErr:
			if rerr != nil {
				err = rerr
			}
		case <-time.After(k.Timeout):
		}
		k.T.Fatalf("dispytchtest: listener did not start: %v", err)
	}
}

// Stop shuts the listener down gracefully and waits for Run to return,
// failing the test when it returns an error. Cleanup calls it.
func (k *Kit) Stop() {
	if k.stop == nil {
		return
	}
	k.stop()
	k.stop = nil
	select {
	case err := <-k.runErr:
		if err != nil {
			k.T.Errorf("dispytchtest: listener: %v", err)
		}
	case <-time.After(k.Timeout):
		k.T.Errorf("dispytchtest: listener did not stop within %v", k.Timeout)
	}
	k.mu.Lock()
	k.ended = true
	k.mu.Unlock()
}

// Emit emits ev and returns its event ID: the one dispytch.EventID or the
// event's EventID method gives, or a generated one. It fails the test on
// error.
func (k *Kit) Emit(ev dispytch.Eventer, opts ...dispytch.EmitOption) string {
	k.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), k.Timeout)
	defer cancel()
	m, err := k.Emitter.Message(ev, opts...)
	if err == nil {
		err = k.Broker.Produce(ctx, m)
	}
	if err != nil {
		k.T.Fatalf("dispytchtest: emit %T: %v", ev, err)
	}
	return m.ID
}

// Publish puts a raw payload on topic, for malformed-input tests.
func (k *Kit) Publish(topic string, value []byte, headers map[string]string) {
	k.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), k.Timeout)
	defer cancel()
	if err := k.Broker.Produce(ctx, &backend.Message{Topic: topic, Value: value, Headers: headers}); err != nil {
		k.T.Fatalf("dispytchtest: publish to %q: %v", topic, err)
	}
}

// Wait waits until the event with this ID is settled for good (acked,
// dead-lettered, dropped or unhandled; not merely redelivered) and returns
// the settlement. It fails the test on timeout.
func (k *Kit) Wait(id string) dispytch.Settlement {
	k.T.Helper()
	return k.WaitFor(fmt.Sprintf("event %s settled", id), func(s dispytch.Settlement) bool {
		return s.ID == id && s.Outcome.Final()
	})
}

// WaitFor waits for the first settlement, past or future, that match
// accepts, and returns it. what describes it in the failure message.
func (k *Kit) WaitFor(what string, match func(dispytch.Settlement) bool) dispytch.Settlement {
	k.T.Helper()
	deadline := time.NewTimer(k.Timeout)
	defer deadline.Stop()
	seen := 0
	for {
		k.mu.Lock()
		for ; seen < len(k.settled); seen++ {
			if s := k.settled[seen]; match(s) {
				k.mu.Unlock()
				return s
			}
		}
		ch := k.changed
		k.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			k.T.Fatalf("dispytchtest: timed out after %v waiting for %s", k.Timeout, what)
			return dispytch.Settlement{}
		}
	}
}

// WaitCount waits until n settlements that match accepts have been seen.
func (k *Kit) WaitCount(n int, match func(dispytch.Settlement) bool) []dispytch.Settlement {
	k.T.Helper()
	var got []dispytch.Settlement
	k.WaitFor(fmt.Sprintf("%d settlements", n), func(s dispytch.Settlement) bool {
		if match == nil || match(s) {
			got = append(got, s)
		}
		return len(got) >= n
	})
	return got
}

// Settlements returns every settlement so far.
func (k *Kit) Settlements() []dispytch.Settlement {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]dispytch.Settlement(nil), k.settled...)
}

// DeadLetters returns the failures of every dead-lettered message so far.
func (k *Kit) DeadLetters() []*dispytch.FailedMessage {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*dispytch.FailedMessage
	for _, s := range k.settled {
		if s.Outcome == dispytch.OutcomeDeadLettered {
			out = append(out, s.Failures...)
		}
	}
	return out
}

// Redrive makes one pass over the dead letters retained on the
// dead-letter topic and republishes the ones f selects (nil: those
// dlq.Queue.Redrive takes by default), returning how many.
func (k *Kit) Redrive(dlTopic string, f *dlq.Filter) int {
	k.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), k.Timeout)
	defer cancel()
	n, err := dlq.Open(k.Broker, dlTopic).Redrive(ctx, k.Broker, f)
	if err != nil {
		k.T.Fatalf("dispytchtest: redrive: %v", err)
	}
	return n
}

// OnSettle returns a listener option calling f after every message the
// listener settled or abandoned, from the goroutine that handled it: a
// dispytch.MessageObserver that needs only the end. f must be fast.
func OnSettle(f func(dispytch.Settlement)) dispytch.ListenerOption {
	return dispytch.Observe(settleFunc(f))
}

type settleFunc func(dispytch.Settlement)

func (f settleFunc) ObserveMessage(ctx context.Context, _ *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	return ctx, f
}
