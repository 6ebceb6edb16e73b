package dispytch_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/memory"
)

type traceKey struct{}

// recorder is an observer of every kind: it carries a "trace" from the
// emit's context through a header into the handler's context.
type recorder struct {
	mu      sync.Mutex
	events  []string
	settled []dispytch.Settlement
	infos   []dispytch.MessageInfo
	// settledCh, when set, gets a value after every settlement recorded.
	settledCh chan struct{}
	attempts  []error
}

func (r *recorder) add(s string) { r.mu.Lock(); r.events = append(r.events, s); r.mu.Unlock() }

func (r *recorder) ObserveEmit(ctx context.Context, m *backend.Message) (context.Context, func(error)) {
	if tr, ok := ctx.Value(traceKey{}).(string); ok {
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers["trace"] = tr
	}
	r.add("emit " + m.Topic)
	return ctx, func(err error) { r.add(fmt.Sprint("emitted ", err)) }
}

func (r *recorder) ObserveMessage(ctx context.Context, m *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	r.mu.Lock()
	r.infos = append(r.infos, *m)
	r.mu.Unlock()
	return context.WithValue(ctx, traceKey{}, m.Headers["trace"]), func(s dispytch.Settlement) {
		r.mu.Lock()
		r.settled = append(r.settled, s)
		r.mu.Unlock()
		if r.settledCh != nil {
			r.settledCh <- struct{}{}
		}
	}
}

// middleware observes every attempt.
func (r *recorder) middleware(next dispytch.HandlerFunc) dispytch.HandlerFunc {
	return func(ctx context.Context, c *dispytch.Call) error {
		r.add(fmt.Sprint("attempt ", c.Handler.Name, " ", c.Meta.Delivery.Attempt))
		err := next(ctx, c)
		r.mu.Lock()
		r.attempts = append(r.attempts, err)
		r.mu.Unlock()
		return err
	}
}

// Observers see the emit, the message with its routes, every attempt and
// the settlement; the handler's context carries what the message observer
// made of it.
func TestObservers(t *testing.T) {
	rec := &recorder{settledCh: make(chan struct{}, 10)}
	kit := dispytchtest.New(t, dispytch.Observe(rec), dispytch.Use(rec.middleware))
	kit.Emitter = dispytch.NewEmitter(kit.Broker, dispytch.Observe(rec))
	var calls atomic.Int32
	var seen atomic.Value
	kit.Listener.Handle("user.{id}.notification", "user_notification", func(ctx context.Context) error {
		seen.Store(ctx.Value(traceKey{}))
		if calls.Add(1) == 1 {
			return errTransient
		}
		return nil
	}, dispytch.Name("notify"), dispytch.Retries(1), dispytch.RetryInterval(0))
	kit.Start()
	ctx := context.WithValue(context.Background(), traceKey{}, "t-1")
	if err := kit.Emitter.Emit(ctx, Notification{UserID: 42, Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	s := kit.WaitFor("notification", func(s dispytch.Settlement) bool { return s.Type == "user_notification" })
	if s.Outcome != dispytch.OutcomeAcked || seen.Load() != "t-1" {
		t.Fatalf("%+v, trace %v", s, seen.Load())
	}
	<-rec.settledCh // the kit's observer may see the settlement first
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.infos) != 1 || len(rec.settled) != 1 {
		t.Fatalf("infos %+v settled %+v", rec.infos, rec.settled)
	}
	info := rec.infos[0]
	if info.Topic != "user.42.notification" || fmt.Sprint(info.Patterns) != "[user.{id}.notification]" ||
		fmt.Sprint(info.Handlers) != "[notify]" || info.Group != "test" || info.Type != "user_notification" || info.Size == 0 {
		t.Fatalf("%+v", info)
	}
	if st := rec.settled[0]; st.Outcome != dispytch.OutcomeAcked || st.Duration <= 0 {
		t.Fatalf("%+v", st)
	}
	// The emit is observed before anything is sent; "emitted" comes once
	// the broker took the message, which on the memory broker may be after
	// the handler already ran.
	var attempts []string
	emitted := 0
	for _, e := range rec.events {
		switch {
		case e == "emitted <nil>":
			emitted++
		case strings.HasPrefix(e, "attempt "):
			attempts = append(attempts, e)
		}
	}
	if len(rec.events) != 4 || rec.events[0] != "emit user.42.notification" || emitted != 1 ||
		fmt.Sprint(attempts) != "[attempt notify 1 attempt notify 2]" ||
		len(rec.attempts) != 2 || !errors.Is(rec.attempts[0], errTransient) || rec.attempts[1] != nil {
		t.Fatalf("%v %v", rec.events, rec.attempts)
	}
}

// delayAcker is a delivery whose broker can redeliver after a delay.
type delayAcker struct {
	mu      sync.Mutex
	delays  []time.Duration
	acked   bool
	nacked  bool
	redeliv func(attempts int)
}

func (a *delayAcker) Ack(context.Context) error {
	a.mu.Lock()
	a.acked = true
	a.mu.Unlock()
	return nil
}
func (a *delayAcker) Nack(context.Context) error {
	a.mu.Lock()
	a.nacked = true
	a.mu.Unlock()
	return nil
}
func (a *delayAcker) CanNackAfter(time.Duration) bool { return true }
func (a *delayAcker) NackAfter(_ context.Context, d time.Duration, attempts int) error {
	a.mu.Lock()
	a.delays = append(a.delays, d)
	a.mu.Unlock()
	go a.redeliv(attempts)
	return nil
}

// delayConsumer delivers one message, and again each time its acker is
// asked to redeliver it, counting attempts as a broker would.
type delayConsumer struct {
	value []byte
	key   []byte
	acker *delayAcker
	redo  chan int
}

func (c *delayConsumer) Consume(ctx context.Context, _ backend.Subscription, in backend.Inbox) error {
	in.Ready()
	deliver := func(attempts int) {
		_ = in.Deliver(ctx, &backend.Delivery{Topic: "user_events", Key: c.key, Value: c.value, Attempts: attempts,
			Info: backend.DeliveryInfo{Redelivered: attempts > 0, DeliveryCount: attempts + 1, Partition: -1, Offset: -1}, Acker: c.acker})
	}
	deliver(0)
	for {
		select {
		case n := <-c.redo:
			deliver(n)
		case <-ctx.Done():
			<-in.Done()
			return nil
		}
	}
}

func (c *delayConsumer) Produce(context.Context, ...*backend.Message) error { return nil }

// A retry that waits goes to the broker when it can redeliver after a
// delay; the retry limit holds across deliveries, and Stats count it.
func TestRetriesThroughTheBroker(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprint("keyed=", keyed), func(t *testing.T) {
			c := &delayConsumer{value: mustEnvelope(t, "user_registered", `{}`), redo: make(chan int, 4)}
			if keyed {
				c.key = []byte("k")
			}
			c.acker = &delayAcker{}
			c.acker.redeliv = func(int) {}
			settled := make(chan dispytch.Settlement, 10)
			l := dispytch.NewListener(c, dispytch.WithLogger(quiet), dispytchtest.OnSettle(func(s dispytch.Settlement) { settled <- s }))
			var attempts []int
			var mu sync.Mutex
			l.Handle("user_events", "user_registered", func(m dispytch.Metadata) error {
				mu.Lock()
				attempts = append(attempts, m.Delivery.Attempt)
				mu.Unlock()
				return errTransient
			}, dispytch.Retries(2), dispytch.RetryInterval(time.Millisecond))
			c.acker.redeliv = func(attempts int) { c.redo <- attempts }
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- l.Run(ctx) }()
			var final dispytch.Settlement
			for s := range settled {
				if s.Outcome.Final() {
					final = s
					break
				}
			}
			cancel()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			st := l.Stats()
			mu.Lock()
			defer mu.Unlock()
			if final.Outcome != dispytch.OutcomeDeadLettered || fmt.Sprint(attempts) != "[1 2 3]" || st.Retries != 2 {
				t.Fatalf("final %+v, attempts %v, %+v", final, attempts, st)
			}
			if keyed {
				// Ordered by key: the retries waited in the worker.
				if st.BrokerRetries != 0 || len(c.acker.delays) != 0 {
					t.Fatalf("keyed message retried through the broker: %+v %v", st, c.acker.delays)
				}
			} else if st.BrokerRetries != 2 || len(c.acker.delays) != 2 || st.Handled != 0 {
				t.Fatalf("%+v, delays %v", st, c.acker.delays)
			}
		})
	}
}

type NoteSeg struct {
	ID int `segment:"id"`
}

// Handlers describes what is registered: topics, types, body and segment
// types, settings.
func TestHandlersIntrospection(t *testing.T) {
	l := dispytch.NewListener(memory.New(), dispytch.HandlerDefaults(dispytch.Retries(2)))
	g := dispytch.NewHandlerGroup("user_events", "", dispytch.OnFailure(dispytch.PolicyDrop))
	g.Handle("", "user_registered", func(dispytch.Event[UserRegistered]) {}, dispytch.Name("welcome"))
	l.AddGroup(g)
	dispytch.Handle1(l, "user.{id}.notification", "user_notification",
		func(context.Context, dispytch.Event[Notification], *Clock) error { return nil })
	l.Handle("user.{id}.notification", "raw", func(s dispytch.Segments[NoteSeg], m dispytch.Metadata) {})
	hs := l.Handlers()
	if len(hs) != 3 {
		t.Fatalf("%+v", hs)
	}
	if h := hs[0]; h.Name != "welcome" || h.Topic != "user_events" || h.Body != reflect.TypeFor[UserRegistered]() ||
		h.Retries != 2 || h.Policy != dispytch.PolicyDrop || h.Segments != nil {
		t.Fatalf("%+v", h)
	}
	if h := hs[1]; h.Body != reflect.TypeFor[Notification]() || h.EventType != "user_notification" {
		t.Fatalf("%+v", h)
	}
	if h := hs[2]; h.Body != nil || h.Segments != reflect.TypeFor[NoteSeg]() {
		t.Fatalf("%+v", h)
	}
}
