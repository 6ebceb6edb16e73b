package dispytch_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/memory"
)

var errTransient = errors.New("transient")

func TestRetriesWithTiming(t *testing.T) {
	kit := dispytchtest.New(t)
	var attempts atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if attempts.Add(1) < 3 {
			return errTransient
		}
		if ev.Delivery.Attempt != 3 {
			return dispytch.Permanent(errors.New("attempt number not visible"))
		}
		return nil
	}, dispytch.Retries(3), dispytch.RetryInterval(50*time.Millisecond))
	kit.Start()
	if s := kit.Wait(kit.Emit(registered(1))); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 50*time.Millisecond || gap > 2*time.Second {
			t.Errorf("retry %d after %v, want ~50ms", i, gap)
		}
	}
	if st := kit.Listener.Stats(); st.Retries != 2 || st.Handled != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestRetryOnAndPermanent(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.HandlerDefaults(dispytch.RetryInterval(0)))
	var calls sync.Map
	count := func(name string) int32 {
		v, _ := calls.LoadOrStore(name, new(atomic.Int32))
		return v.(*atomic.Int32).Add(1)
	}
	g := dispytch.NewHandlerGroup("user_events", "user_registered", dispytch.Retries(4))
	g.Handle("", "", func() error { count("is"); return errors.New("other") }, dispytch.Name("is"), dispytch.RetryOn(errTransient))
	g.Handle("", "", func() error { count("as"); return &fs.PathError{Op: "open", Err: errTransient} },
		dispytch.Name("as"), dispytch.RetryIf(func(err error) bool { var pe *fs.PathError; return errors.As(err, &pe) }))
	g.Handle("", "", func() error { count("perm"); return dispytch.Permanent(errTransient) }, dispytch.Name("perm"))
	g.Handle("", "", func() error { count("pred"); return errTransient }, dispytch.Name("pred"),
		dispytch.RetryIf(func(err error) bool { return false }))
	kit.Listener.AddGroup(g)
	kit.Start()
	s := kit.Wait(kit.Emit(registered(1)))
	if s.Outcome != dispytch.OutcomeDeadLettered || len(s.Failures) != 4 {
		t.Fatalf("%+v", s)
	}
	want := map[string]int32{"is": 1, "as": 5, "perm": 1, "pred": 1}
	for name, n := range want {
		v, _ := calls.Load(name)
		if got := v.(*atomic.Int32).Load(); got != n {
			t.Errorf("%s ran %d times, want %d", name, got, n)
		}
	}
	for _, f := range s.Failures {
		if f.Attempts != int(want[f.Handler]) {
			t.Errorf("%s: dead letter says %d attempts", f.Handler, f.Attempts)
		}
	}
}

func TestExponentialBackoff(t *testing.T) {
	b := dispytch.ExponentialBackoff{Initial: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w*time.Millisecond {
			t.Errorf("retry %d: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	j := dispytch.ExponentialBackoff{Initial: 100 * time.Millisecond, Jitter: 0.5}
	distinct := map[time.Duration]bool{}
	for range 50 {
		d := j.Delay(1)
		if d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("jittered %v outside ±50%%", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Fatalf("jitter produced only %d values", len(distinct))
	}
}

func TestShutdownStopsRetryWait(t *testing.T) {
	kit := dispytchtest.New(t)
	failed := make(chan struct{}, 1)
	kit.Listener.Handle("user_events", "user_registered", func() error {
		select {
		case failed <- struct{}{}:
		default:
		}
		return errTransient
	}, dispytch.Retries(5), dispytch.RetryInterval(time.Hour))
	kit.Start()
	kit.Emit(registered(1))
	<-failed
	start := time.Now()
	kit.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown waited %v for an hour-long retry", d)
	}
	// Not acked, not dead-lettered: back in the queue for redelivery.
	st, _ := kit.Broker.GroupStats("test")
	if st.Ready != 1 || st.Unacked != 0 || len(kit.DeadLetters()) != 0 {
		t.Fatalf("%+v, %d dead letters", st, len(kit.DeadLetters()))
	}
	if kit.Listener.Stats().Abandoned != 1 {
		t.Fatalf("%+v", kit.Listener.Stats())
	}
}

func TestPoliciesRedeliverAndDrop(t *testing.T) {
	kit := dispytchtest.New(t)
	var n atomic.Int32
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
		if n.Add(1) == 1 {
			if ev.Delivery.Redelivered {
				return dispytch.Permanent(errors.New("first delivery marked redelivered"))
			}
			return errTransient
		}
		if !ev.Delivery.Redelivered || ev.Delivery.DeliveryCount != 2 {
			return dispytch.Permanent(errors.New("redelivery not marked"))
		}
		return nil
	}, dispytch.OnFailure(dispytch.PolicyRedeliver))
	kit.Listener.Handle("drop", "t", func() error { return errTransient }, dispytch.OnFailure(dispytch.PolicyDrop))
	kit.Start()
	id := kit.Emit(registered(1))
	// The nack and the redelivery's ack may be reported in either order:
	// the redelivery can finish before the nacking worker reports.
	got := map[dispytch.Outcome]int{}
	for _, s := range kit.WaitCount(2, func(s dispytch.Settlement) bool { return s.ID == id }) {
		got[s.Outcome]++
	}
	if got[dispytch.OutcomeRedelivered] != 1 || got[dispytch.OutcomeAcked] != 1 {
		t.Fatalf("settlements %v", got)
	}
	kit.Publish("drop", mustEnvelope(t, "t", `{}`), nil)
	s := kit.WaitFor("drop", func(s dispytch.Settlement) bool { return s.Topic == "drop" })
	if s.Outcome != dispytch.OutcomeDropped || kit.Listener.Stats().Dropped != 1 {
		t.Fatalf("%+v", s)
	}
	if st, _ := kit.Broker.GroupStats("test"); st.Ready+st.Unacked != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestDeadLetterHeadersAndRedrive(t *testing.T) {
	kit := dispytchtest.New(t)
	var okRuns, flakyRuns atomic.Int32
	var healthy atomic.Bool
	kit.Listener.Handle("user_events", "user_registered", func() { okRuns.Add(1) }, dispytch.Name("ok"))
	kit.Listener.Handle("user_events", "user_registered", func() error {
		flakyRuns.Add(1)
		if !healthy.Load() {
			return errors.New("db down")
		}
		return nil
	}, dispytch.Name("flaky"), dispytch.Retries(1), dispytch.RetryInterval(time.Millisecond))
	kit.Start()
	before := time.Now()
	id := kit.Emit(registered(1), dispytch.Key("k"), dispytch.Header("trace", "t1"))
	s := kit.Wait(id)
	if s.Outcome != dispytch.OutcomeDeadLettered || len(s.Failures) != 1 {
		t.Fatalf("%+v", s)
	}
	f := s.Failures[0]
	if f.Handler != "flaky" || f.Attempts != 2 || f.Reason != dispytch.ReasonHandler || f.Group != "test" ||
		f.FirstFailure.Before(before) || f.LastFailure.Before(f.FirstFailure) {
		t.Fatalf("%+v", f)
	}
	// The dead letter on the broker: original bytes and key, original
	// headers plus the failure headers.
	m := f.Message(f.DeadLetterTopic)
	if m.Topic != "test.dlq" || string(m.Key) != "k" || m.Headers["trace"] != "t1" ||
		m.Headers[dispytch.HeaderDLError] != "db down" || m.Headers[dispytch.HeaderDLHandler] != "flaky" ||
		m.Headers[dispytch.HeaderDLAttempts] != "2" || m.Headers[dispytch.HeaderDLReason] != "handler_error" ||
		m.Headers[dispytch.HeaderDLTopic] != "user_events" || m.Headers[dispytch.HeaderDLFirstFailure] == "" {
		t.Fatalf("%+v", m)
	}
	if n := kit.Broker.Retained("test.dlq"); n != 1 {
		t.Fatalf("%d dead letters on the broker", n)
	}
	// Redrive: only the failed handler runs again.
	healthy.Store(true)
	if n := kit.Redrive("test.dlq", nil); n != 1 {
		t.Fatalf("redrove %d", n)
	}
	s2 := kit.WaitFor("redriven", func(s dispytch.Settlement) bool { return s.ID == id && s.Outcome == dispytch.OutcomeAcked })
	if s2.Outcome != dispytch.OutcomeAcked || okRuns.Load() != 1 || flakyRuns.Load() != 3 {
		t.Fatalf("ok ran %d, flaky ran %d", okRuns.Load(), flakyRuns.Load())
	}
	if n := kit.Redrive("test.dlq", nil); n != 0 {
		t.Fatalf("redrove %d again", n)
	}
}

func TestPoisonPayloads(t *testing.T) {
	kit := dispytchtest.New(t)
	var good atomic.Int32
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) { good.Add(1) })
	kit.Listener.Handle("user_events", "panics", func() { panic("kaboom") })
	kit.Start()
	big := bytes.Repeat([]byte("a"), 10<<20)
	poison := map[string][]byte{
		"garbage":       []byte("\x00\xffnot json"),
		"missing keys":  []byte(`{"id":"1","type":"user_registered"}`),
		"wrong body":    mustEnvelope(t, "user_registered", `{"user":"not an object","timestamp":"x"}`),
		"invalid utf-8": []byte("{\"id\":\"1\",\"type\":\"user_registered\",\"body\":{\"user\":{\"id\":\"\xff\"}},\"timestamp\":1}"),
		"10 MiB":        append(append([]byte(`{"id":"1","type":"user_registered","body":{"user":{"id":"`), big...), []byte(`"}}`)...),
		"10 MiB valid":  mustEnvelope(t, "user_registered", `{"user":{"id":"`+string(big)+`","email":"bad"},"timestamp":1}`),
		"panic":         mustEnvelope(t, "panics", `{}`),
	}
	for name, p := range poison {
		kit.Publish("user_events", p, map[string]string{"case": name})
		kit.WaitFor(name, func(s dispytch.Settlement) bool {
			return len(s.Failures) > 0 && s.Failures[0].Headers["case"] == name
		})
		// Good events keep flowing between poison ones.
		if s := kit.Wait(kit.Emit(registered(1))); s.Outcome != dispytch.OutcomeAcked {
			t.Fatalf("after %s: %+v", name, s)
		}
	}
	wantReason := map[string]dispytch.Reason{
		"garbage": dispytch.ReasonDecode, "missing keys": dispytch.ReasonDecode, "wrong body": dispytch.ReasonDecode,
		"invalid utf-8": dispytch.ReasonDecode, "10 MiB": dispytch.ReasonDecode, "10 MiB valid": dispytch.ReasonValidation,
		"panic": dispytch.ReasonPanic,
	}
	dls := kit.DeadLetters()
	if len(dls) != len(poison) {
		t.Fatalf("%d dead letters for %d poison messages", len(dls), len(poison))
	}
	for _, f := range dls {
		name := f.Headers["case"]
		if f.Reason != wantReason[name] || !bytes.Equal(f.Value, poison[name]) || f.Err == nil {
			t.Errorf("%s: reason %s (want %s), err %v", name, f.Reason, wantReason[name], f.Err)
		}
	}
	if good.Load() != int32(len(poison)) || kit.Broker.Retained("test.dlq") != len(poison) {
		t.Fatalf("good %d, retained %d", good.Load(), kit.Broker.Retained("test.dlq"))
	}
	st := kit.Listener.Stats()
	if st.Poison != 4 || st.Panics != 1 || st.DeadLettered != int64(len(poison)) {
		t.Fatalf("%+v", st)
	}
}

func TestDeadLetterNotReconsumedByPattern(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.ConsumerGroup("svc"))
	var runs atomic.Int32
	kit.Listener.Handle("{anything...}", "user_registered", func() error { runs.Add(1); return errors.New("no") })
	kit.Start()
	id := kit.Emit(registered(1))
	kit.Wait(id)
	// svc.dlq matches {anything...}; the dead letter must be skipped, not
	// handled (and dead-lettered again, forever).
	s := kit.WaitFor("skip", func(s dispytch.Settlement) bool { return s.Topic == "svc.dlq" })
	if s.Outcome != dispytch.OutcomeSkipped || runs.Load() != 1 {
		t.Fatalf("%+v runs %d", s, runs.Load())
	}
}

func TestPerKeyOrderUnderConcurrency(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Concurrency(32))
	const keys, per = 20, 100
	var mu sync.Mutex
	last := map[string]int{}
	var violations, inflight, maxIn atomic.Int32
	kit.Listener.Handle("ordered", "ordered", func(ev dispytch.Event[Ordered]) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := maxIn.Load()
			if n <= m || maxIn.CompareAndSwap(m, n) {
				break
			}
		}
		mu.Lock()
		if prev, ok := last[ev.Body.Key]; ok && ev.Body.Seq != prev+1 {
			violations.Add(1)
		}
		last[ev.Body.Key] = ev.Body.Seq
		mu.Unlock()
		time.Sleep(50 * time.Microsecond) // let other keys overlap
	})
	kit.Start()
	for i := range per {
		for k := range keys {
			kit.Emit(Ordered{Key: string(rune('a' + k)), Seq: i})
		}
	}
	kit.WaitCount(keys*per, nil)
	if violations.Load() != 0 {
		t.Fatalf("%d order violations", violations.Load())
	}
	if maxIn.Load() < 2 {
		t.Fatalf("keys never ran in parallel (max %d)", maxIn.Load())
	}
	for k, v := range last {
		if v != per-1 {
			t.Fatalf("key %s ended at %d", k, v)
		}
	}
}

func TestGracefulShutdownLosesNothing(t *testing.T) {
	kit := dispytchtest.New(t, dispytch.Concurrency(8), dispytch.ShutdownTimeout(300*time.Millisecond))
	const n = 200
	started := make(chan struct{}, n)
	var handled sync.Map
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context, ev dispytch.Event[UserRegistered]) error {
		started <- struct{}{}
		if ev.Body.Timestamp%10 == 0 {
			<-ctx.Done() // stuck until the shutdown timeout cancels it
			return ctx.Err()
		}
		handled.Store(ev.ID, true)
		return nil
	})
	kit.Start()
	ids := make([]string, n)
	for i := range n {
		ids[i] = kit.Emit(registered(i))
	}
	for range 20 {
		<-started
	}
	kit.Stop()
	acked := map[string]bool{}
	for _, s := range kit.Settlements() {
		if s.Outcome == dispytch.OutcomeAcked {
			acked[s.ID] = true
		} else if s.Outcome != dispytch.OutcomeAbandoned {
			t.Fatalf("unexpected outcome %+v", s)
		}
	}
	// Nothing acked early: every acked message was handled.
	for id := range acked {
		if _, ok := handled.Load(id); !ok {
			t.Fatalf("%s acked without being handled", id)
		}
	}
	// Nothing lost: what was not acked is back in the queue.
	st, _ := kit.Broker.GroupStats("test")
	if st.Unacked != 0 || st.Ready+len(acked) != n {
		t.Fatalf("acked %d + queued %d != %d (%+v)", len(acked), st.Ready, n, st)
	}
	if len(acked) == n || len(acked) == 0 {
		t.Fatalf("acked %d of %d: the test did not interrupt anything", len(acked), n)
	}
	// A new listener picks up exactly the rest.
	l := dispytch.NewListener(kit.Broker, dispytch.ConsumerGroup("test"), dispytch.WithLogger(quiet))
	var rest atomic.Int32
	done := make(chan struct{})
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) {
		if acked[ev.ID] {
			t.Errorf("acked %s delivered again", ev.ID)
		}
		if rest.Add(1) == int32(st.Ready) {
			close(done)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("redelivered %d of %d", rest.Load(), st.Ready)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}, dispytch.AttemptTimeout(20*time.Millisecond), dispytch.Retries(1), dispytch.RetryInterval(0))
	kit.Start()
	s := kit.Wait(kit.Emit(registered(1)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Attempts != 2 || !errors.Is(s.Failures[0].Err, context.DeadlineExceeded) {
		t.Fatalf("%+v", s.Failures[0])
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestRedriveToUnknownHandlerIsDeadLettered(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("user_events", "user_registered", func() {}, dispytch.Name("present"))
	kit.Start()
	kit.Publish("user_events", mustEnvelope(t, "user_registered", `{}`), map[string]string{dispytch.HeaderRedriveHandler: "renamed"})
	s := kit.WaitFor("redriven", func(s dispytch.Settlement) bool { return s.Topic == "user_events" })
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonNoHandler || s.Failures[0].Handler != "renamed" {
		t.Fatalf("%+v", s)
	}
}

func TestRedriveOnlyReachesTheFailedGroup(t *testing.T) {
	kitA := dispytchtest.New(t, dispytch.ConsumerGroup("a"))
	bSettled := make(chan dispytch.Settlement, 10)
	kitB := dispytchtest.NewOn(t, kitA.Broker, dispytch.ConsumerGroup("b"),
		dispytchtest.OnSettle(func(s dispytch.Settlement) { bSettled <- s }))
	var aRuns, bRuns atomic.Int32
	var healthy atomic.Bool
	kitA.Listener.Handle("user_events", "user_registered", func() error {
		aRuns.Add(1)
		if !healthy.Load() {
			return errors.New("down")
		}
		return nil
	}, dispytch.Name("h"))
	kitB.Listener.Handle("user_events", "user_registered", func() { bRuns.Add(1) }, dispytch.Name("h"))
	kitA.Start()
	kitB.Start()
	id := kitA.Emit(registered(1))
	if s := kitA.Wait(id); s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].DeadLetterTopic != "a.dlq" {
		t.Fatalf("%+v", s)
	}
	if s := <-bSettled; s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("b: %+v", s)
	}
	healthy.Store(true)
	if n := kitA.Redrive("a.dlq", nil); n != 1 {
		t.Fatal(n)
	}
	kitA.WaitFor("redriven", func(s dispytch.Settlement) bool { return s.ID == id && s.Outcome == dispytch.OutcomeAcked })
	if s := <-bSettled; s.Outcome != dispytch.OutcomeSkipped {
		t.Fatalf("b handled a's redrive: %+v", s)
	}
	if aRuns.Load() != 2 || bRuns.Load() != 1 {
		t.Fatalf("a ran %d, b ran %d", aRuns.Load(), bRuns.Load())
	}
}

// signalHandler is a slog handler that closes a channel on the first record
// with a given message.
type signalHandler struct {
	slog.Handler
	msg  string
	once *sync.Once
	ch   chan struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }

// Deliveries still waiting for a worker when shutdown begins are not
// started: they stay unacked and a new listener gets them.
func TestShutdownDoesNotStartQueuedWork(t *testing.T) {
	broker := memory.New()
	defer broker.Close(context.Background())
	stopping := make(chan struct{})
	log := slog.New(signalHandler{Handler: slog.DiscardHandler, msg: "dispytch: listener stopping", once: new(sync.Once), ch: stopping})
	l := dispytch.NewListener(broker, dispytch.ConsumerGroup("g"), dispytch.Concurrency(1), dispytch.WithLogger(log))
	started := make(chan string, 100)
	release := make(chan struct{})
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) {
		started <- ev.ID
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	<-l.Ready()
	em := dispytch.NewEmitter(broker)
	const n = 20
	for i := range n {
		if err := em.Emit(context.Background(), registered(i)); err != nil {
			t.Fatal(err)
		}
	}
	first := <-started
	// Wait until the listener holds work beyond the running handler.
	for l.Stats().Received < 2 {
		runtime.Gosched()
	}
	cancel()
	<-stopping
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if extra := len(started); extra != 0 {
		t.Fatalf("%d deliveries started after shutdown began", extra)
	}
	st := l.Stats()
	if st.Handled != 1 || st.Abandoned != st.Received-1 {
		t.Fatalf("stats after shutdown: %+v", st)
	}
	// A new listener gets the other n-1 events, not the handled one.
	l2 := dispytch.NewListener(broker, dispytch.ConsumerGroup("g"), dispytch.WithLogger(quiet))
	rest := make(chan string, n)
	l2.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) { rest <- ev.ID })
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { errc <- l2.Run(ctx2) }()
	for range n - 1 {
		select {
		case id := <-rest:
			if id == first {
				t.Fatalf("handled event %s delivered again", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("queued events were not redelivered")
		}
	}
	cancel2()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
