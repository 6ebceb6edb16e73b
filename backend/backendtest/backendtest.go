// Package backendtest is the conformance suite every Dispytch backend runs,
// the project's own and yours: a backend's test calls Run with a
// constructor and the backend's features, and the suite checks, against the
// real broker, what listeners and emitters rely on.
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, backendtest.Backend{
//			Name: "mybroker",
//			New: func(t testing.TB) (backend.Producer, backend.Consumer) {
//				c := mybroker.New(addr)
//				t.Cleanup(func() { c.Close() })
//				return c, c
//			},
//			Features: backendtest.Features{Persistent: true, ConsumerGroups: true, OrderPerKey: true},
//		})
//	}
//
// It covers publish and consume with ids, types, keys and headers; acks
// (nothing handled twice after a clean run); nacks and redelivery;
// competing consumers within a group and fan-out across groups; per-key
// order under concurrency; pattern subscriptions, also of topics created
// after the start; dead letters with their failure headers, and a Redrive
// that ends; bounded in-flight work behind a slow handler; graceful
// shutdown that leaves unfinished messages for redelivery; poison payloads;
// a consumer process killed with SIGKILL mid-stream, which loses nothing;
// and connection cuts or broker restarts where the backend can do them.
// Each test uses topics and groups of its own.
package backendtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
)

// Features says what the backend under test can do; the suite skips the
// tests of what it cannot.
type Features struct {
	// Persistent: messages for a group outlive its consumers: what a
	// stopped listener did not finish, and what was published meanwhile,
	// reaches the group's next consumer.
	Persistent bool
	// ConsumerGroups: consumers of one group share its messages (competing
	// consumers), and every group gets every message (fan-out).
	ConsumerGroups bool
	// OrderPerKey: messages with the same key reach a group in the order
	// they were published.
	OrderPerKey bool
	// NewTopics: a pattern subscription picks up topics created after the
	// consumer started.
	NewTopics bool
	// DelayedRedelivery: the consumer's acknowledgers implement
	// backend.DelayedNacker.
	DelayedRedelivery bool
	// DeadLetterStore: the consumer implements backend.DeadLetterStore
	// for the dead-letter topics its listeners write.
	DeadLetterStore bool
	// Subprocess: a consumer in another process can reach the broker with
	// the Backend's Env (the SIGKILL test).
	Subprocess bool
	// CutConnections, when set, cuts every connection the backend's
	// clients hold, and returns once they are cut; the clients must
	// recover by themselves.
	CutConnections func(t testing.TB)
	// RestartBroker, when set, restarts the broker, and returns once it
	// accepts connections again.
	RestartBroker func(t testing.TB)
}

// Backend is the backend under test.
type Backend struct {
	// Name names the backend in messages.
	Name string
	// New returns a producer and a consumer for one test, registering
	// their closing with t.Cleanup. They may be the same value.
	New func(t testing.TB) (backend.Producer, backend.Consumer)
	// CreateTopics, when set, creates topics before a test uses them
	// (Kafka without auto-creation). Topics are unique to each test.
	CreateTopics func(t testing.TB, topics ...string)
	// Features says what the backend can do.
	Features Features
	// Env is added to the environment of the subprocess of the SIGKILL
	// test, for it to reach the broker (addresses); the subprocess runs
	// the same test binary and test function, so New works there too.
	Env []string
	// Timeout bounds every wait of a test (default 30s).
	Timeout time.Duration
	// DeleteGroup, when set, removes what the broker keeps for a consumer
	// group of a test (its queues, its dead-letter queue) when the test
	// ends.
	DeleteGroup func(group string)
}

const childEnv = "DISPYTCH_BACKENDTEST_CHILD"

// Run runs the suite as subtests of t.
func Run(t *testing.T, b Backend) {
	if b.New == nil {
		t.Fatal("backendtest: Backend.New is nil")
	}
	if b.Timeout == 0 {
		b.Timeout = 30 * time.Second
	}
	if os.Getenv(childEnv) != "" {
		// The subprocess of the SIGKILL test runs only its consumer.
		t.Run("KilledConsumer", func(t *testing.T) { runChild(t, b) })
		return
	}
	s := &suite{b: b, id: strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	tests := []struct {
		name string
		run  func(t *testing.T)
		skip string
	}{
		{"PublishConsume", s.publishConsume, ""},
		{"EmitAfterCancel", s.emitAfterCancel, ""},
		{"AckedNotRedelivered", s.ackedNotRedelivered, need(b.Features.Persistent, "Persistent")},
		{"NackRedelivers", s.nackRedelivers, ""},
		{"CompetingConsumers", s.competing, need(b.Features.ConsumerGroups, "ConsumerGroups")},
		{"FanOutAcrossGroups", s.fanOut, need(b.Features.ConsumerGroups, "ConsumerGroups")},
		{"OrderPerKey", s.orderPerKey, need(b.Features.OrderPerKey, "OrderPerKey")},
		{"Patterns", s.patterns, ""},
		{"PatternNewTopics", s.patternNewTopics, need(b.Features.NewTopics, "NewTopics")},
		{"DeadLetters", s.deadLetters, need(b.Features.DeadLetterStore, "DeadLetterStore")},
		{"DelayedRedelivery", s.delayedRedelivery, need(b.Features.DelayedRedelivery, "DelayedRedelivery")},
		{"Backpressure", s.backpressure, ""},
		{"GracefulShutdown", s.gracefulShutdown, need(b.Features.Persistent, "Persistent")},
		{"Poison", s.poison, ""},
		{"KilledConsumer", s.killedConsumer, need(b.Features.Subprocess && b.Features.Persistent, "Subprocess and Persistent")},
		{"ConnectionCut", s.connectionCut, need(b.Features.CutConnections != nil, "CutConnections")},
		{"BrokerRestart", s.brokerRestart, need(b.Features.RestartBroker != nil, "RestartBroker")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skipf("%s: the backend does not declare %s", b.Name, tc.skip)
			}
			tc.run(t)
		})
	}
}

func need(ok bool, feature string) string {
	if ok {
		return ""
	}
	return feature
}

// Event is the suite's event: its topic and key travel in its body, so
// that every test publishes to topics of its own.
type Event struct {
	To  string `json:"to"`
	N   int    `json:"n"`
	Key string `json:"key,omitempty"`
}

// Topic is the event's own topic, filled from its To field.
func (Event) Topic() string { return "{to}" }

// EventType is "backendtest_event".
func (Event) EventType() string { return "backendtest_event" }

// EventKey orders events with the same Key.
func (e Event) EventKey() string { return e.Key }

type suite struct {
	b   Backend
	id  string
	seq atomic.Int32
}

// names returns a topic and a group unique to the test.
func (s *suite) names(t testing.TB) (topic, group string) {
	n := s.seq.Add(1)
	base := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_"))
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	topic, group = fmt.Sprintf("bt.%s.%s.%d", s.id, base, n), fmt.Sprintf("bt_%s_%s_%d", s.id, base, n)
	if s.b.DeleteGroup != nil {
		t.Cleanup(func() { s.b.DeleteGroup(group) })
	}
	return topic, group
}

func (s *suite) create(t testing.TB, topics ...string) {
	if s.b.CreateTopics != nil {
		s.b.CreateTopics(t, topics...)
	}
}

func quiet() *slog.Logger {
	if os.Getenv("DISPYTCH_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// running is a listener running in the background.
type running struct {
	l      *dispytch.Listener
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

// start runs l until the test ends (or stop), and waits until it is
// subscribed.
func (s *suite) start(t testing.TB, l *dispytch.Listener) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- l.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer wcancel()
	if err := l.WaitReady(wctx); err != nil {
		cancel()
		t.Fatalf("%s: listener did not subscribe: %v", s.b.Name, err)
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop shuts the listener down and returns Run's error.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.errc
	})
	return r.err
}

func (s *suite) listener(c backend.Consumer, group string, opts ...dispytch.ListenerOption) *dispytch.Listener {
	base := []dispytch.ListenerOption{dispytch.ConsumerGroup(group), dispytch.WithLogger(quiet()), dispytch.ShutdownTimeout(10 * time.Second)}
	return dispytch.NewListener(c, append(base, opts...)...)
}

// emit publishes n events to topic, keyed by key(i) when key is set.
func (s *suite) emit(t testing.TB, p backend.Producer, topic string, from, n int, key func(int) string) []string {
	t.Helper()
	em := dispytch.NewEmitter(p)
	ctx, cancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer cancel()
	ids := make([]string, 0, n)
	evs := make([]dispytch.Eventer, 0, n)
	for i := from; i < from+n; i++ {
		ev := Event{To: topic, N: i}
		if key != nil {
			ev.Key = key(i)
		}
		evs = append(evs, ev)
		ids = append(ids, "")
	}
	for i, ev := range evs {
		m, err := em.Message(ev)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = m.ID
		if err := p.Produce(ctx, m); err != nil {
			t.Fatalf("%s: emit %d to %s: %v", s.b.Name, i, topic, err)
		}
	}
	return ids
}

// collector records what handlers saw.
type collector struct {
	mu    sync.Mutex
	seen  map[string]int // id -> times handled
	order map[string][]int
	ch    chan struct{}
	total int
}

func newCollector() *collector {
	return &collector{seen: map[string]int{}, order: map[string][]int{}, ch: make(chan struct{}, 1)}
}

func (c *collector) add(ev dispytch.Event[Event]) {
	c.mu.Lock()
	c.seen[ev.ID]++
	c.order[ev.Body.Key] = append(c.order[ev.Body.Key], ev.Body.N)
	c.total++
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// wait waits until the collector saw n distinct events.
func (s *suite) wait(t testing.TB, c *collector, n int, what string) {
	t.Helper()
	deadline := time.NewTimer(s.b.Timeout)
	defer deadline.Stop()
	for c.distinct() < n {
		select {
		case <-c.ch:
		case <-deadline.C:
			t.Fatalf("%s: %s: %d of %d events handled after %v", s.b.Name, what, c.distinct(), n, s.b.Timeout)
		}
	}
}

func (s *suite) publishConsume(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	got := make(chan dispytch.Event[Event], 100)
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) { got <- ev })
	s.start(t, l)
	em := dispytch.NewEmitter(p)
	ctx, cancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer cancel()
	const n = 20
	ids := map[string]Event{}
	for i := range n {
		ev := Event{To: topic, N: i, Key: fmt.Sprint("k", i%3)}
		id := fmt.Sprintf("id-%s-%d", s.id, i)
		if err := em.Emit(ctx, ev, dispytch.EventID(id), dispytch.Header("x-test", strconv.Itoa(i))); err != nil {
			t.Fatalf("emit: %v", err)
		}
		ids[id] = ev
	}
	for range n {
		select {
		case ev := <-got:
			want, ok := ids[ev.ID]
			if !ok {
				t.Fatalf("unknown or duplicate event %q", ev.ID)
			}
			delete(ids, ev.ID)
			if ev.Body != want || ev.Type != "backendtest_event" || ev.Topic != topic ||
				ev.Headers["x-test"] != strconv.Itoa(want.N) || string(ev.Delivery.Key) != want.Key ||
				ev.Timestamp.IsZero() || ev.Delivery.Attempt != 1 {
				t.Fatalf("%s: got %+v (key %q, headers %v), want %+v", s.b.Name, ev.Metadata, ev.Delivery.Key, ev.Headers, want)
			}
		case <-time.After(s.b.Timeout):
			t.Fatalf("%s: %d events not delivered", s.b.Name, len(ids))
		}
	}
}

// collecting starts a listener of a new group on a new topic, whose
// handler collects what it gets, and returns the topic, a producer and the
// collector.
func (s *suite) collecting(t *testing.T) (string, backend.Producer, *collector) {
	t.Helper()
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	col := newCollector()
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", col.add)
	s.start(t, l)
	return topic, p, col
}

// emitAfterCancel: a done context sends nothing.
func (s *suite) emitAfterCancel(t *testing.T) {
	topic, p, col := s.collecting(t)
	em := dispytch.NewEmitter(p)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := em.Emit(ctx, Event{To: topic, N: -1}); !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, context.Canceled) {
		t.Fatalf("%s: emit with a cancelled context: %v", s.b.Name, err)
	}
	if err := em.EmitBatch(ctx, []dispytch.Eventer{Event{To: topic, N: -2}, Event{To: topic, N: -3}}); !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("%s: batch with a cancelled context: %v", s.b.Name, err)
	}
	// A marker sent afterwards is the first event the listener sees.
	s.emit(t, p, topic, 0, 1, nil)
	s.wait(t, col, 1, "marker")
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.total != 1 || col.order[""][0] != 0 {
		t.Fatalf("%s: events sent after cancel reached the listener: %v", s.b.Name, col.order)
	}
}

// ackedNotRedelivered: after a clean run, a new consumer of the group gets
// only what was published since.
func (s *suite) ackedNotRedelivered(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	col := newCollector()
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", col.add)
	r := s.start(t, l)
	s.emit(t, p, topic, 0, 10, nil)
	s.wait(t, col, 10, "first run")
	if err := r.stop(); err != nil {
		t.Fatalf("%s: Run: %v", s.b.Name, err)
	}
	// Published while no consumer runs: kept for the group.
	s.emit(t, p, topic, 10, 5, nil)
	_, c2 := s.b.New(t)
	col2 := newCollector()
	l2 := s.listener(c2, group)
	l2.Handle(topic, "backendtest_event", col2.add)
	s.start(t, l2)
	s.wait(t, col2, 5, "second run")
	// Give a redelivery of the first ten the chance to show.
	s.emit(t, p, topic, 15, 1, nil)
	s.wait(t, col2, 6, "marker")
	col2.mu.Lock()
	defer col2.mu.Unlock()
	for _, n := range col2.order[""] {
		if n < 10 {
			t.Fatalf("%s: acked event %d delivered again: %v", s.b.Name, n, col2.order[""])
		}
	}
}

// nackRedelivers: PolicyRedeliver nacks, and the broker delivers again.
func (s *suite) nackRedelivers(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	var calls atomic.Int32
	done := make(chan dispytch.Metadata, 1)
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", func(m dispytch.Metadata) error {
		if calls.Add(1) == 1 {
			return errors.New("first delivery fails")
		}
		done <- m
		return nil
	}, dispytch.OnFailure(dispytch.PolicyRedeliver))
	s.start(t, l)
	s.emit(t, p, topic, 0, 1, nil)
	select {
	case m := <-done:
		if !m.Delivery.Redelivered || (m.Delivery.DeliveryCount != 0 && m.Delivery.DeliveryCount < 2) {
			t.Fatalf("%s: redelivery not marked: %+v", s.b.Name, m.Delivery)
		}
	case <-time.After(s.b.Timeout):
		t.Fatalf("%s: nacked message not redelivered (%d calls)", s.b.Name, calls.Load())
	}
	if st := l.Stats(); st.Redelivered != 1 {
		t.Fatalf("%+v", st)
	}
}

// competing: two consumers of a group handle every message once between
// them.
func (s *suite) competing(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c1 := s.b.New(t)
	_, c2 := s.b.New(t)
	col := newCollector()
	var a, b atomic.Int32
	l1 := s.listener(c1, group)
	l1.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) { a.Add(1); col.add(ev) })
	l2 := s.listener(c2, group)
	l2.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) { b.Add(1); col.add(ev) })
	s.start(t, l1)
	s.start(t, l2)
	const n = 200
	s.emit(t, p, topic, 0, n, func(i int) string { return fmt.Sprint("k", i) })
	s.wait(t, col, n, "two consumers")
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.total != n {
		t.Fatalf("%s: %d handlings of %d events between two consumers of one group (a %d, b %d)", s.b.Name, col.total, n, a.Load(), b.Load())
	}
}

// fanOut: every group gets every message.
func (s *suite) fanOut(t *testing.T) {
	topic, g1 := s.names(t)
	_, g2 := s.names(t)
	s.create(t, topic)
	p, c1 := s.b.New(t)
	_, c2 := s.b.New(t)
	col1, col2 := newCollector(), newCollector()
	l1 := s.listener(c1, g1)
	l1.Handle(topic, "backendtest_event", col1.add)
	l2 := s.listener(c2, g2)
	l2.Handle(topic, "backendtest_event", col2.add)
	s.start(t, l1)
	s.start(t, l2)
	s.emit(t, p, topic, 0, 50, nil)
	s.wait(t, col1, 50, "group 1")
	s.wait(t, col2, 50, "group 2")
}

// orderPerKey: with concurrency, each key's events run one at a time, in
// order.
func (s *suite) orderPerKey(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	col := newCollector()
	var running sync.Map // key -> *atomic.Int32
	var overlap atomic.Int32
	l := s.listener(c, group, dispytch.Concurrency(8))
	l.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) {
		v, _ := running.LoadOrStore(ev.Body.Key, new(atomic.Int32))
		n := v.(*atomic.Int32)
		if n.Add(1) > 1 {
			overlap.Add(1)
		}
		time.Sleep(100 * time.Microsecond) // widen the window for overlaps
		n.Add(-1)
		col.add(ev)
	})
	s.start(t, l)
	const keys, per = 5, 100
	s.emit(t, p, topic, 0, keys*per, func(i int) string { return fmt.Sprint("key", i%keys) })
	s.wait(t, col, keys*per, "keyed events")
	col.mu.Lock()
	defer col.mu.Unlock()
	if overlap.Load() > 0 {
		t.Fatalf("%s: %d handlings overlapped another of the same key", s.b.Name, overlap.Load())
	}
	for k, seq := range col.order {
		if !sort.IntsAreSorted(seq) {
			t.Fatalf("%s: key %s out of order: %v", s.b.Name, k, seq)
		}
	}
}

// patterns: a pattern handler gets every matching topic with its segments,
// and nothing else.
func (s *suite) patterns(t *testing.T) {
	base, group := s.names(t)
	topics := []string{base + ".u1.created", base + ".u2.created", base + ".u3.deleted"}
	s.create(t, topics...)
	p, c := s.b.New(t)
	type hit struct {
		topic, user string
		n           int
	}
	got := make(chan hit, 16)
	l := s.listener(c, group)
	l.Handle(base+".{user}.created", "backendtest_event", func(ev dispytch.Event[Event]) {
		got <- hit{ev.Topic, ev.Segment("user"), ev.Body.N}
	})
	s.start(t, l)
	for _, tp := range topics {
		s.emitMaybeUnroutable(t, p, tp)
	}
	// A marker on a matching topic, published after the others: once it
	// arrives, the event of the deleted topic would have arrived too.
	s.emit(t, p, topics[0], 1, 1, nil)
	want := map[string]string{topics[0]: "u1", topics[1]: "u2"}
	seen := map[string]bool{}
	for marker := false; !marker || len(seen) < len(want); {
		select {
		case h := <-got:
			if u, ok := want[h.topic]; !ok || u != h.user {
				t.Fatalf("%s: delivered %+v, which the pattern does not match (or with the wrong segment)", s.b.Name, h)
			}
			if h.n == 1 {
				marker = true
			} else {
				seen[h.topic] = true // duplicates are at-least-once's right
			}
		case <-time.After(s.b.Timeout):
			t.Fatalf("%s: matching events missing: got %v of %v", s.b.Name, seen, want)
		}
	}
}

// emitMaybeUnroutable emits one event to a topic that may have no
// subscriber; a broker that refuses such messages (ErrUnroutable) is fine.
func (s *suite) emitMaybeUnroutable(t testing.TB, p backend.Producer, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer cancel()
	if err := dispytch.NewEmitter(p).Emit(ctx, Event{To: topic}); err != nil && !errors.Is(err, dispytch.ErrUnroutable) {
		t.Fatalf("%s: emit to %s: %v", s.b.Name, topic, err)
	}
}

// declare makes the group exist on the broker (its queues, where the
// backend has any) by running a listener of it until it subscribed.
func (s *suite) declare(t testing.TB, c backend.Consumer, topic, group string) {
	t.Helper()
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", func() error { return errors.New("declaring only") })
	if err := s.start(t, l).stop(); err != nil {
		t.Fatalf("%s: declaring group %s: %v", s.b.Name, group, err)
	}
}

// patternNewTopics: topics created after the consumer started reach it.
func (s *suite) patternNewTopics(t *testing.T) {
	base, group := s.names(t)
	first := base + ".a.events"
	s.create(t, first)
	p, c := s.b.New(t)
	got := make(chan string, 10)
	l := s.listener(c, group)
	l.Handle(base+".{x}.events", "backendtest_event", func(m dispytch.Metadata) { got <- m.Topic })
	s.start(t, l)
	later := base + ".b.events"
	s.create(t, later)
	deadline := time.Now().Add(s.b.Timeout)
	// The new topic may take a metadata refresh to be picked up: emit
	// until it arrives.
	for time.Now().Before(deadline) {
		s.emit(t, p, later, 0, 1, nil)
		select {
		case tp := <-got:
			if tp == later {
				return
			}
		case <-time.After(time.Second):
		}
	}
	t.Fatalf("%s: a topic created after the start never reached the pattern subscription", s.b.Name)
}

// deadLetters: a failing handler's messages are dead-lettered with their
// headers; Redrive makes one pass and ends, then delivers to the fixed
// handler.
func (s *suite) deadLetters(t *testing.T) {
	topic, group := s.names(t)
	dlqName := group + ".dlq"
	s.create(t, topic, dlqName)
	p, c := s.b.New(t)
	store, ok := c.(backend.DeadLetterStore)
	if !ok {
		t.Fatalf("%s: Features.DeadLetterStore, but the consumer %T is not a backend.DeadLetterStore", s.b.Name, c)
	}
	var healthy atomic.Bool
	col := newCollector()
	settled := make(settleChan, 100)
	l := s.listener(c, group, dispytch.Observe(settled))
	l.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) error {
		if !healthy.Load() {
			return errors.New("downstream unavailable")
		}
		col.add(ev)
		return nil
	}, dispytch.Name("flaky"))
	s.start(t, l)
	const n = 5
	s.emit(t, p, topic, 0, n, nil)
	waitOutcomes := func(k int, o dispytch.Outcome) {
		t.Helper()
		for got := 0; got < k; {
			select {
			case st := <-settled:
				if st.Outcome == o {
					got++
				}
			case <-time.After(s.b.Timeout):
				t.Fatalf("%s: %d of %d %s", s.b.Name, got, k, o)
			}
		}
	}
	waitOutcomes(n, dispytch.OutcomeDeadLettered)
	q := dlq.Open(store, dlqName)
	ctx, cancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer cancel()
	// The dead letters may take a moment to be readable.
	var letters []*dispytch.FailedMessage
	for deadline := time.Now().Add(s.b.Timeout); ; {
		var err error
		letters, err = q.List(ctx, nil)
		if err != nil {
			t.Fatalf("%s: List: %v", s.b.Name, err)
		}
		if len(letters) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(letters) != n {
		t.Fatalf("%s: %d dead letters listed, want %d", s.b.Name, len(letters), n)
	}
	for _, f := range letters {
		if f.Reason != dispytch.ReasonHandler || f.Handler != "flaky" || f.Topic != topic || f.Group != group ||
			f.Attempts != 1 || f.Err == nil || f.Err.Error() != "downstream unavailable" {
			t.Fatalf("%s: dead letter %+v", s.b.Name, f)
		}
	}
	// Still failing: one pass, and it ends.
	moved, err := q.Redrive(ctx, p, nil)
	if err != nil || moved != n {
		t.Fatalf("%s: redrive while failing: %d, %v", s.b.Name, moved, err)
	}
	waitOutcomes(n, dispytch.OutcomeDeadLettered)
	// Healthy: the next pass delivers them.
	healthy.Store(true)
	for deadline := time.Now().Add(s.b.Timeout); col.distinct() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d redriven events handled", s.b.Name, col.distinct(), n)
		}
		if _, err := q.Redrive(ctx, p, nil); err != nil {
			t.Fatalf("%s: redrive: %v", s.b.Name, err)
		}
		select {
		case <-col.ch:
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.wait(t, col, n, "redriven")
}

// delayedRedelivery: a waiting retry goes to the broker and comes back.
func (s *suite) delayedRedelivery(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	var attempts []int
	var mu sync.Mutex
	done := make(chan struct{})
	l := s.listener(c, group, dispytch.OrderByKey(false))
	l.Handle(topic, "backendtest_event", func(m dispytch.Metadata) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, m.Delivery.Attempt)
		if len(attempts) < 3 {
			return errors.New("not yet")
		}
		close(done)
		return nil
	}, dispytch.Retries(3), dispytch.RetryInterval(100*time.Millisecond))
	s.start(t, l)
	s.emit(t, p, topic, 0, 1, nil)
	select {
	case <-done:
	case <-time.After(s.b.Timeout):
		t.Fatalf("%s: attempts %v", s.b.Name, attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if st := l.Stats(); fmt.Sprint(attempts) != "[1 2 3]" || st.BrokerRetries != 2 || st.Retries != 2 {
		t.Fatalf("%s: attempts %v, %+v", s.b.Name, attempts, st)
	}
}

// backpressure: a slow handler bounds the work the listener holds.
func (s *suite) backpressure(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	release := make(chan struct{})
	var running, peak atomic.Int32
	col := newCollector()
	const conc = 2
	l := s.listener(c, group, dispytch.Concurrency(conc))
	l.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		col.add(ev)
	})
	s.start(t, l)
	const n = 1000
	s.emit(t, p, topic, 0, n, func(i int) string { return fmt.Sprint("k", i) })
	// Let the consumer take all it will.
	time.Sleep(500 * time.Millisecond)
	inflight := l.Stats().InFlight
	// Concurrency running, the ready queue (max(Concurrency, 64)), at most
	// 32 behind each busy ordering key (a partition), and one delivery
	// blocked in Deliver.
	if bound := int64(conc + max(conc, 64) + 32*conc + 1); inflight > bound {
		t.Fatalf("%s: %d messages in flight behind %d blocked handlers; want at most %d", s.b.Name, inflight, conc, bound)
	}
	close(release)
	s.wait(t, col, n, "after release")
	if peak.Load() > conc {
		t.Fatalf("%s: %d handlers ran at once, Concurrency(%d)", s.b.Name, peak.Load(), conc)
	}
}

// gracefulShutdown: a stop mid-stream finishes what runs and leaves the
// rest for the group's next consumer; nothing is lost.
func (s *suite) gracefulShutdown(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c := s.b.New(t)
	col := newCollector()
	l := s.listener(c, group, dispytch.Concurrency(4))
	l.Handle(topic, "backendtest_event", func(ev dispytch.Event[Event]) {
		time.Sleep(2 * time.Millisecond)
		col.add(ev)
	})
	r := s.start(t, l)
	const n = 300
	ids := s.emit(t, p, topic, 0, n, func(i int) string { return fmt.Sprint("k", i%16) })
	s.wait(t, col, 20, "before the stop")
	if err := r.stop(); err != nil {
		t.Fatalf("%s: Run after a graceful stop: %v", s.b.Name, err)
	}
	_, c2 := s.b.New(t)
	l2 := s.listener(c2, group)
	l2.Handle(topic, "backendtest_event", col.add)
	s.start(t, l2)
	s.waitIDs(t, col, ids, "after the restart (events lost at the shutdown)")
}

// poison: undecodable payloads are dead-lettered (or skipped per policy)
// without stopping the listener.
func (s *suite) poison(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic, group+".dlq")
	p, c := s.b.New(t)
	col := newCollector()
	settled := make(settleChan, 10)
	l := s.listener(c, group, dispytch.Observe(settled))
	l.Handle(topic, "backendtest_event", col.add)
	s.start(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), s.b.Timeout)
	defer cancel()
	for _, v := range [][]byte{[]byte("\x00garbage\xff"), []byte(`{"id":"x","type":"t"}`), []byte(`{"id":1,"type":"backendtest_event","body":{},"timestamp":1}`)} {
		if err := p.Produce(ctx, &backend.Message{Topic: topic, Value: v}); err != nil {
			t.Fatalf("%s: publish poison: %v", s.b.Name, err)
		}
	}
	s.emit(t, p, topic, 0, 1, nil)
	s.wait(t, col, 1, "the event after the poison")
	dead := 0
	for dead < 3 {
		select {
		case st := <-settled:
			if st.Outcome == dispytch.OutcomeDeadLettered && st.Failures[0].Reason == dispytch.ReasonDecode {
				dead++
			}
		case <-time.After(s.b.Timeout):
			t.Fatalf("%s: %d of 3 poison payloads dead-lettered; %+v", s.b.Name, dead, l.Stats())
		}
	}
	if st := l.Stats(); st.Poison != 3 {
		t.Fatalf("%+v", st)
	}
}

// settleChan receives every settlement: a dispytch.MessageObserver.
type settleChan chan dispytch.Settlement

func (c settleChan) ObserveMessage(ctx context.Context, _ *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	return ctx, func(s dispytch.Settlement) { c <- s }
}

// childSpec is what the SIGKILL test's subprocess does.
type childSpec struct {
	Topic, Group, Out string
}

// runChild is the subprocess: it consumes the topic and appends every
// handled event's id to a file before acking it, until it is killed.
func runChild(t *testing.T, b Backend) {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &spec); err != nil {
		t.Fatalf("child spec: %v", err)
	}
	f, err := os.OpenFile(spec.Out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	_, c := b.New(t)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(spec.Group), dispytch.WithLogger(quiet()), dispytch.Concurrency(4))
	var mu sync.Mutex
	l.Handle(spec.Topic, "backendtest_event", func(ev dispytch.Event[Event]) error {
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintln(f, ev.ID)
		return err
	})
	_ = l.Run(context.Background()) // until SIGKILL
}

// killedConsumer: a consumer process killed mid-stream loses nothing: what
// it did not ack reaches the group's next consumer.
func (s *suite) killedConsumer(t *testing.T) {
	topic, group := s.names(t)
	s.create(t, topic)
	p, c0 := s.b.New(t)
	s.declare(t, c0, topic, group)
	out := filepath.Join(t.TempDir(), "handled")
	spec, _ := json.Marshal(childSpec{Topic: topic, Group: group, Out: out})
	parts := strings.Split(t.Name(), "/")
	run := "^" + regexp.QuoteMeta(parts[0]) + "$/^KilledConsumer$"
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(append(os.Environ(), s.b.Env...), childEnv+"="+string(spec))
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	const n = 500
	ids := s.emit(t, p, topic, 0, n, func(i int) string { return fmt.Sprint("k", i%8) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Kill it once it has handled a good part, mid-stream.
	deadline := time.Now().Add(s.b.Timeout)
	for lines(out) < n/5 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the consumer process handled %d events; stderr:\n%s", s.b.Name, lines(out), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	handledBefore := readLines(out)
	if len(handledBefore) >= n {
		t.Skipf("%s: the consumer process handled everything before it was killed", s.b.Name)
	}
	_, c := s.b.New(t)
	col := newCollector()
	for _, id := range handledBefore {
		col.seen[id]++
	}
	l := s.listener(c, group)
	l.Handle(topic, "backendtest_event", col.add)
	s.start(t, l)
	s.waitIDs(t, col, ids, "after the kill (events lost with the killed consumer)")
}

func lines(path string) int { return len(readLines(path)) }

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// connectionCut: connections cut mid-stream are recovered; every event the
// emitter reported sent is handled.
func (s *suite) connectionCut(t *testing.T) {
	s.survives(t, "connection cut", s.b.Features.CutConnections)
}

// brokerRestart: a broker restart mid-stream loses nothing acknowledged.
func (s *suite) brokerRestart(t *testing.T) {
	s.survives(t, "broker restart", s.b.Features.RestartBroker)
}

func (s *suite) survives(t *testing.T, what string, fault func(testing.TB)) {
	topic, p, col := s.collecting(t)
	em := dispytch.NewEmitter(p)
	var sent []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			m, err := em.Message(Event{To: topic, N: i})
			if err == nil {
				err = p.Produce(ctx, m)
			}
			cancel()
			if err == nil {
				mu.Lock()
				sent = append(sent, m.ID)
				mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	s.wait(t, col, 20, "before the "+what)
	fault(t)
	// Keep emitting until events flow again after the fault.
	after := col.distinct()
	s.wait(t, col, after+20, "after the "+what)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	s.waitIDs(t, col, sent, "every event reported sent after the "+what)
}

// waitIDs waits until the collector saw every one of ids.
func (s *suite) waitIDs(t testing.TB, c *collector, ids []string, what string) {
	t.Helper()
	deadline := time.NewTimer(s.b.Timeout)
	defer deadline.Stop()
	for {
		missing := ""
		c.mu.Lock()
		for _, id := range ids {
			if c.seen[id] == 0 {
				missing = id
				break
			}
		}
		c.mu.Unlock()
		if missing == "" {
			return
		}
		select {
		case <-c.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("%s: %s: event %s never handled", s.b.Name, what, missing)
		}
	}
}
