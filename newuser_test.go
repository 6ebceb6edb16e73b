package dispytch_test

// Regression tests for what a new user hit (issue #9), on the memory broker
// and on small in-test consumers.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vm "github.com/vmihailenco/msgpack/v5"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/memory"
)

// A done context sends nothing, and the error says so.
func TestEmitAfterCancelSendsNothing(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	em := dispytch.NewEmitter(b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := em.Emit(ctx, registered(1))
	if !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	err = em.Emit(dctx, registered(2))
	if !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired: %v", err)
	}
	err = em.EmitBatch(ctx, []dispytch.Eventer{registered(3), registered(4)})
	if !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("batch: %v", err)
	}
	var async error
	em.EmitAsync(ctx, registered(5), func(err error) { async = err })
	if !errors.Is(async, dispytch.ErrNotSent) {
		t.Fatalf("async: %v", async)
	}
	if n := b.Retained("user_events"); n != 0 {
		t.Fatalf("%d messages sent after cancel", n)
	}
}

// A batch that runs into a full queue reports exactly which events were
// not sent, and every one reported sent is on the broker.
func TestEmitBatchReportsWhatWasNotSent(t *testing.T) {
	b := memory.New(memory.Capacity(3))
	defer b.Close(context.Background())
	obs := &emitCounter{}
	em := dispytch.NewEmitter(b, dispytch.Observe(obs))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	evs := make([]dispytch.Eventer, 5)
	for i := range evs {
		evs[i] = registered(i)
	}
	err := em.EmitBatch(ctx, evs)
	var be *backend.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("%T %v", err, err)
	}
	if got := fmt.Sprint(be.NotSent()); got != "[3 4]" || len(be.Unconfirmed()) != 0 || fmt.Sprint(be.Failed()) != "[3 4]" {
		t.Fatalf("not sent %v, unconfirmed %v", be.NotSent(), be.Unconfirmed())
	}
	if !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("%v", err)
	}
	if n := b.Retained("user_events"); n != 3 {
		t.Fatalf("%d on the broker", n)
	}
	if obs.failed.Load() != 2 || obs.ok.Load() != 3 {
		t.Fatalf("emit observer saw %d failures, %d successes", obs.failed.Load(), obs.ok.Load())
	}
}

// emitCounter is an EmitObserver counting outcomes.
type emitCounter struct{ ok, failed atomic.Int32 }

func (c *emitCounter) ObserveEmit(ctx context.Context, _ *backend.Message) (context.Context, func(error)) {
	return ctx, func(err error) {
		if err != nil {
			c.failed.Add(1)
		} else {
			c.ok.Add(1)
		}
	}
}

// Nil arguments are errors, not panics.
func TestNilArguments(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	em := dispytch.NewEmitter(b)
	if err := em.Emit(context.Background(), nil); !errors.Is(err, dispytch.ErrEncode) || !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("nil event: %v", err)
	}
	var nilPtr *UserRegistered
	if err := em.Emit(context.Background(), nilPtr); !errors.Is(err, dispytch.ErrEncode) {
		t.Fatalf("nil pointer event: %v", err)
	}
	//lint:ignore SA1012 a nil context is what is tested
	if err := em.Emit(nil, registered(1)); !errors.Is(err, dispytch.ErrNotSent) { //nolint:staticcheck
		t.Fatalf("nil ctx: %v", err)
	}
	if err := dispytch.NewEmitter(nil).Emit(context.Background(), registered(1)); !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("nil producer: %v", err)
	}
	l := dispytch.NewListener(b, dispytch.WithLogger(nil), dispytch.ConsumerGroup("nil-logger"))
	l.Handle("user_events", "user_registered", func() {})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	if err := l.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// stuckConsumer never subscribes: it returns cause when its context ends.
type stuckConsumer struct{ cause error }

func (s stuckConsumer) Consume(ctx context.Context, _ backend.Subscription, _ backend.Inbox) error {
	<-ctx.Done()
	if s.cause != nil {
		return s.cause
	}
	return ctx.Err()
}

func (stuckConsumer) Produce(context.Context, ...*backend.Message) error { return nil }

// failingConsumer fails at once, before subscribing.
type failingConsumer struct{ err error }

func (f failingConsumer) Consume(context.Context, backend.Subscription, backend.Inbox) error {
	return f.err
}

func (failingConsumer) Produce(context.Context, ...*backend.Message) error { return nil }

// A listener that never subscribed never reports a clean run.
func TestListenerThatNeverSubscribedFails(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	newL := func(c backend.Consumer, opts ...dispytch.ListenerOption) *dispytch.Listener {
		l := dispytch.NewListener(c, append([]dispytch.ListenerOption{dispytch.WithLogger(quiet)}, opts...)...)
		l.Handle("t", "e", func() {})
		return l
	}

	// The start timeout passes: the error names the consumer's last cause.
	l := newL(stuckConsumer{cause: refused}, dispytch.StartTimeout(50*time.Millisecond))
	start := time.Now()
	err := l.Run(context.Background())
	if !errors.Is(err, dispytch.ErrNotReady) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("start timeout: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	// Ready does not block after Run returned; WaitReady says why.
	select {
	case <-l.Ready():
	default:
		t.Fatal("Ready blocks after Run returned")
	}
	if werr := l.WaitReady(context.Background()); !errors.Is(werr, dispytch.ErrNotReady) {
		t.Fatalf("WaitReady: %v", werr)
	}

	// A permanent cause ends Run at once, whatever the start timeout.
	denied := fmt.Errorf("access refused: %w", dispytch.ErrPermanent)
	l = newL(failingConsumer{err: denied}, dispytch.StartTimeout(time.Hour))
	if err := l.Run(context.Background()); !errors.Is(err, dispytch.ErrNotReady) || !errors.Is(err, dispytch.ErrPermanent) {
		t.Fatalf("permanent: %v", err)
	}

	// Run's own context ends first: still an error, not a clean shutdown.
	l = newL(stuckConsumer{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := l.Run(ctx); !errors.Is(err, dispytch.ErrNotReady) {
		t.Fatalf("ctx ended first: %v", err)
	}

	// A consumer that returns nil before subscribing is no clean run
	// either.
	l = newL(failingConsumer{})
	if err := l.Run(context.Background()); !errors.Is(err, dispytch.ErrNotReady) {
		t.Fatalf("nil before ready: %v", err)
	}
}

// Ready and WaitReady after a clean run do not block, and the listener can
// run again.
func TestReadyAfterRunReturned(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	l := dispytch.NewListener(b, dispytch.WithLogger(quiet))
	handled := make(chan struct{}, 1)
	l.Handle("user_events", "user_registered", func() { handled <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	if err := l.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("Ready blocks after Run returned")
	}
	if err := l.WaitReady(context.Background()); !errors.Is(err, dispytch.ErrClosed) {
		t.Fatalf("WaitReady after a clean run: %v", err)
	}
	// A second run works.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { errc <- l.Run(ctx) }()
	if err := dispytch.NewEmitter(b).Emit(context.Background(), registered(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the second run handled nothing")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// An attempt that ignores its context fails at its AttemptTimeout; the
// late result is ignored.
func TestAttemptTimeoutIsEnforced(t *testing.T) {
	kit := dispytchtest.New(t)
	release := make(chan struct{})
	var calls atomic.Int32
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
		calls.Add(1)
		<-release // ignores its context
		return nil
	}, dispytch.AttemptTimeout(30*time.Millisecond), dispytch.Retries(1), dispytch.RetryInterval(0), dispytch.Name("slow"))
	kit.Start()
	id := kit.Emit(registered(1))
	s := kit.Wait(id)
	close(release)
	if s.Outcome != dispytch.OutcomeDeadLettered || len(s.Failures) != 1 {
		t.Fatalf("%+v", s)
	}
	f := s.Failures[0]
	if f.Reason != dispytch.ReasonTimeout || f.Attempts != 2 || !errors.Is(f.Err, dispytch.ErrAttemptTimeout) ||
		!errors.Is(f.Err, context.DeadlineExceeded) || calls.Load() != 2 {
		t.Fatalf("%+v (%d calls)", f, calls.Load())
	}
	if st := kit.Listener.Stats(); st.Timeouts != 2 || st.Handled != 0 || st.Retries != 1 {
		t.Fatalf("%+v", st)
	}
}

// staleAcker is a delivery whose session is gone.
type staleAcker struct{ acks, nacks *atomic.Int32 }

func (a staleAcker) Ack(context.Context) error  { a.acks.Add(1); return nil }
func (a staleAcker) Nack(context.Context) error { a.nacks.Add(1); return nil }
func (staleAcker) Stale() bool                  { return true }

// oneShot delivers the given deliveries once, then waits.
type oneShot struct{ ds []*backend.Delivery }

func (o oneShot) Consume(ctx context.Context, _ backend.Subscription, in backend.Inbox) error {
	in.Ready()
	for _, d := range o.ds {
		if err := in.Deliver(ctx, d); err != nil {
			return nil
		}
	}
	<-ctx.Done()
	<-in.Done()
	return nil
}

func (oneShot) Produce(context.Context, ...*backend.Message) error { return nil }

// A stale delivery is never started.
func TestStaleDeliveryIsNotStarted(t *testing.T) {
	var acks, nacks atomic.Int32
	settled := make(chan dispytch.Settlement, 1)
	d := &backend.Delivery{Topic: "user_events", Value: mustEnvelope(t, "user_registered", `{}`), Acker: staleAcker{&acks, &nacks}}
	l := dispytch.NewListener(oneShot{ds: []*backend.Delivery{d}}, dispytch.WithLogger(quiet),
		dispytchtest.OnSettle(func(s dispytch.Settlement) { settled <- s }))
	var ran atomic.Bool
	l.Handle("user_events", "user_registered", func() { ran.Store(true) })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	if s := <-settled; s.Outcome != dispytch.OutcomeAbandoned {
		t.Fatalf("%+v", s)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if ran.Load() || acks.Load() != 0 || nacks.Load() != 0 || l.Stats().Abandoned != 1 {
		t.Fatalf("ran %v, acks %d, nacks %d, %+v", ran.Load(), acks.Load(), nacks.Load(), l.Stats())
	}
}

type lazyDB struct{ _ int }
type lazyRepo struct{}

// Singletons run only when some handler needs them, and a provider given
// to two listeners keeps no state of its own (run with -race).
func TestSingletonsAreLazyAndPerRun(t *testing.T) {
	var dials atomic.Int32
	dial := dispytch.Provide(func() (*lazyDB, error) { dials.Add(1); return &lazyDB{}, nil }, dispytch.Singleton())
	repo := dispytch.Provide(func(*lazyDB) *lazyRepo { return &lazyRepo{} })

	// The only dependant of the database is overridden: it never dials.
	kit := dispytchtest.New(t, dial, repo, dispytch.Override(dispytch.Value(&lazyRepo{})))
	kit.Listener.Handle("user_events", "user_registered", func(*lazyRepo) {})
	kit.Start()
	kit.Wait(kit.Emit(registered(1)))
	kit.Stop()
	if n := dials.Load(); n != 0 {
		t.Fatalf("unneeded singleton ran %d times", n)
	}

	// One provider, two listeners running at once: one value each.
	b := memory.New()
	defer b.Close(context.Background())
	seen := make(chan *lazyDB, 2)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 2 {
		l := dispytch.NewListener(b, dispytch.ConsumerGroup(fmt.Sprint("g", i)), dial, dispytch.WithLogger(quiet))
		l.Handle("user_events", "user_registered", func(db *lazyDB) { seen <- db })
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.Run(ctx) }()
		if err := l.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := dispytch.NewEmitter(b).Emit(context.Background(), registered(2)); err != nil {
		t.Fatal(err)
	}
	a, c := <-seen, <-seen
	cancel()
	wg.Wait()
	if a == c || dials.Load() != 2 {
		t.Fatalf("the two runs shared a value (%p %p) or dialled %d times", a, c, dials.Load())
	}
}

// Subscription reports a topic that does not parse.
func TestSubscriptionReportsBadPattern(t *testing.T) {
	l := dispytch.NewListener(memory.New())
	l.Handle("a.{x}y", "e", func() {})
	l.Handle("ok", "e", func() {})
	if _, err := l.Subscription(); !errors.Is(err, dispytch.ErrBadPattern) || !strings.Contains(err.Error(), "a.{x}y") {
		t.Fatalf("%v", err)
	}
}

// A Go listener reads JSON and msgpack envelopes whatever its codec: by the
// content type, else by the first byte.
func TestListenerReadsJSONAndMsgpack(t *testing.T) {
	for _, listenerCodec := range []codec.Codec{codec.JSON, msgpack.Codec} {
		t.Run(listenerCodec.ContentType(), func(t *testing.T) {
			kit := dispytchtest.New(t, dispytch.Codecs(listenerCodec))
			got := make(chan string, 4)
			kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) {
				got <- ev.Body.User.Email
			})
			kit.Start()
			body := map[string]any{"user": map[string]any{"id": "1", "email": "py@example.com", "name": "Ada"}, "timestamp": 1}
			// Python's json.dumps layout, no content type.
			jb, _ := json.Marshal(body)
			py := fmt.Sprintf(`{"id": "%s", "type": "user_registered", "body": %s, "timestamp": 1700000000000}`, backend.NewUUID(), jb)
			kit.Publish("user_events", []byte(strings.ReplaceAll(py, `":`, `": `)), nil)
			// Python's msgpack, no content type: a map with a uint64 timestamp.
			var buf bytes.Buffer
			enc := vm.NewEncoder(&buf)
			_ = enc.EncodeMapLen(4)
			_ = enc.EncodeString("id")
			_ = enc.EncodeString(backend.NewUUID())
			_ = enc.EncodeString("type")
			_ = enc.EncodeString("user_registered")
			_ = enc.EncodeString("body")
			_ = enc.Encode(body)
			_ = enc.EncodeString("timestamp")
			_ = enc.EncodeUint64(1700000000000)
			kit.Publish("user_events", buf.Bytes(), nil)
			// With a content type naming the codec.
			em := dispytch.NewEmitter(kit.Broker, dispytch.WithCodec(msgpack.Codec))
			if err := em.Emit(context.Background(), registered(7)); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				select {
				case e := <-got:
					if e == "" {
						t.Fatalf("message %d: empty body", i)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("only %d of 3 handled; %+v", i, kit.Settlements())
				}
			}
			if st := kit.Listener.Stats(); st.Poison != 0 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// tooLarge rejects dead letters bigger than limit, as a broker does.
type tooLarge struct {
	backend.Producer
	limit int
	mu    sync.Mutex
	sent  []*backend.Message
}

func (p *tooLarge) Produce(ctx context.Context, msgs ...*backend.Message) error {
	for _, m := range msgs {
		if len(m.Value) > p.limit {
			return fmt.Errorf("record of %d bytes: %w", len(m.Value), dispytch.ErrTooLarge)
		}
	}
	p.mu.Lock()
	p.sent = append(p.sent, msgs...)
	p.mu.Unlock()
	return nil
}

// A dead letter the broker refuses as too large is sent truncated, with
// the original's coordinates; dead-lettering that keeps failing ends with
// the fallback instead of redelivering forever.
func TestDeadLetterTooLargeAndFallback(t *testing.T) {
	dl := &tooLarge{limit: 1000}
	kit := dispytchtest.New(t, dispytch.DeadLettering(dispytch.DeadLetterConfig{Producer: dl}))
	kit.Listener.Handle("user_events", "user_registered", func() error { return errors.New("boom") }, dispytch.Name("h"))
	kit.Start()
	big := registered(1)
	big.User.Name = strings.Repeat("x", 5000)
	s := kit.Wait(kit.Emit(big))
	if s.Outcome != dispytch.OutcomeDeadLettered {
		t.Fatalf("%+v", s)
	}
	dl.mu.Lock()
	m := dl.sent[0]
	dl.mu.Unlock()
	if len(m.Value) != 0 || m.Headers[dispytch.HeaderDLTruncated] == "" || m.Headers[dispytch.HeaderDLReason] != "handler_error" ||
		m.Headers[dispytch.HeaderDLTopic] != "user_events" || m.Headers[dispytch.HeaderDLHandler] != "h" {
		t.Fatalf("truncated letter: %+v", m)
	}
	f, ok := dlq.Parse("test.dlq", m.Key, m.Value, m.Headers)
	if !ok || f.Truncated < 5000 || f.Reason != dispytch.ReasonHandler {
		t.Fatalf("%+v", f)
	}

	// Dead-lettering that always fails: after DeadLetterAttempts
	// deliveries the message is dropped, logged and counted.
	down := &tooLarge{limit: -1}
	kit2 := dispytchtest.New(t, dispytch.DeadLettering(dispytch.DeadLetterConfig{Producer: failing{down}, Attempts: 3}))
	var runs atomic.Int32
	kit2.Listener.Handle("user_events", "user_registered", func() error { runs.Add(1); return errors.New("boom") })
	kit2.Start()
	s = kit2.Wait(kit2.Emit(registered(2)))
	if s.Outcome != dispytch.OutcomeDropped || runs.Load() != 3 {
		t.Fatalf("%+v after %d runs", s, runs.Load())
	}
	if st := kit2.Listener.Stats(); st.DeadLetterDropped != 1 || st.DeadLetterErrors != 3 {
		t.Fatalf("%+v", st)
	}
}

// failing is a producer whose every publish fails transiently.
type failing struct{ backend.Producer }

func (failing) Produce(context.Context, ...*backend.Message) error {
	return errors.New("broker unreachable")
}

// Redrive makes one pass: a letter that fails again is dead-lettered anew
// and not taken again by the same pass; filters and a dry run select.
func TestRedriveEnds(t *testing.T) {
	kit := dispytchtest.New(t)
	var healthy atomic.Bool
	kit.Listener.Handle("user_events", "user_registered", func() error {
		if !healthy.Load() {
			return errors.New("db down")
		}
		return nil
	}, dispytch.Name("flaky"))
	kit.Listener.Handle("user_events", "strict", func(ev dispytch.Event[UserRegistered]) {}, dispytch.Name("strict"))
	kit.Start()
	const n = 6
	for i := range n {
		kit.Wait(kit.Emit(registered(i)))
	}
	kit.Publish("user_events", mustEnvelope(t, "strict", `{"user":{"id":"1","email":"nope"},"timestamp":1}`), nil)
	kit.WaitFor("validation failure", func(s dispytch.Settlement) bool { return s.Type == "strict" })

	q := dlq.Open(kit.Broker, "test.dlq")
	ctx := context.Background()
	if c, err := q.Count(ctx, nil); err != nil || c != n+1 {
		t.Fatalf("count %d, %v", c, err)
	}
	letters, err := q.List(ctx, &dlq.Filter{Handlers: []string{"flaky"}})
	if err != nil || len(letters) != n {
		t.Fatalf("%d letters, %v", len(letters), err)
	}
	if l := letters[0]; l.Reason != dispytch.ReasonHandler || l.Topic != "user_events" || l.Attempts != 1 ||
		l.Err == nil || l.Err.Error() != "db down" || l.Group != "test" || l.LastFailure.IsZero() {
		t.Fatalf("%+v", l)
	}
	if c, _ := q.Count(ctx, &dlq.Filter{Reasons: []dispytch.Reason{dispytch.ReasonValidation}}); c != 1 {
		t.Fatalf("validation letters: %d", c)
	}
	if c, _ := q.Count(ctx, &dlq.Filter{From: time.Now().Add(time.Hour)}); c != 0 {
		t.Fatalf("future letters: %d", c)
	}
	if m, err := q.Redrive(ctx, kit.Broker, &dlq.Filter{DryRun: true}); err != nil || m != n {
		t.Fatalf("dry run %d, %v", m, err)
	}

	// Still failing: one pass moves each letter once, and ends.
	done := make(chan int, 1)
	go func() {
		m, err := q.Redrive(ctx, kit.Broker, nil)
		if err != nil {
			t.Error(err)
		}
		done <- m
	}()
	select {
	case m := <-done:
		if m != n {
			t.Fatalf("redrove %d, want %d", m, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Redrive did not end")
	}
	kit.WaitCount(2*n+1, func(s dispytch.Settlement) bool { return s.Outcome == dispytch.OutcomeDeadLettered })
	if c, _ := q.Count(ctx, nil); c != n+1 {
		t.Fatalf("after a failing redrive: %d letters", c)
	}

	// Healthy: they are handled, the validation failure stays (skipped by
	// default), until purged.
	healthy.Store(true)
	if m, _ := q.Redrive(ctx, kit.Broker, nil); m != n {
		t.Fatalf("redrove %d", m)
	}
	kit.WaitCount(n, func(s dispytch.Settlement) bool {
		return s.Outcome == dispytch.OutcomeAcked && s.Type == "user_registered" && s.ID != ""
	})
	if c, _ := q.Count(ctx, nil); c != 1 {
		t.Fatalf("left %d", c)
	}
	if m, _ := q.Purge(ctx, &dlq.Filter{DryRun: true}); m != 1 {
		t.Fatalf("purge dry run %d", m)
	}
	if m, _ := q.Purge(ctx, nil); m != 1 {
		t.Fatalf("purged %d", m)
	}
	if c, _ := q.Count(ctx, nil); c != 0 {
		t.Fatalf("after purge %d", c)
	}
}

// Durations in logs read as durations, and an attempt cut off by shutdown
// is not logged as a retry.
func TestLogsReadable(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	kit := dispytchtest.New(t, dispytch.WithLogger(log))
	started := make(chan struct{})
	var once sync.Once
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context) error {
		once.Do(func() { close(started) })
		return errTransient
	}, dispytch.Retries(3), dispytch.RetryInterval(time.Hour))
	kit.Start()
	kit.Emit(registered(1))
	<-started
	for !strings.Contains(buf.String(), "retrying") {
		time.Sleep(time.Millisecond)
	}
	kit.Stop()
	out := buf.String()
	if !strings.Contains(out, `"retry_in":"1h0m0s"`) || !strings.Contains(out, `"timeout":"5s"`) {
		t.Fatalf("durations not readable:\n%s", out)
	}
	if !strings.Contains(out, "retry wait cut off by shutdown") || strings.Count(out, "handler failed, retrying") != 1 {
		t.Fatalf("shutdown logged as a retry:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Messages with a key published before any group subscribes are all
// delivered (the backlog used to drop all but the first of each key).
func TestMemoryBacklogKeepsKeyedMessages(t *testing.T) {
	kit := dispytchtest.New(t)
	got := make(chan int, 10)
	kit.Listener.Handle("ordered", "ordered", func(ev dispytch.Event[Ordered]) { got <- ev.Body.Seq })
	for i := range 5 {
		kit.Emit(Ordered{Key: "k", Seq: i})
	}
	kit.Start()
	for i := range 5 {
		select {
		case n := <-got:
			if n != i {
				t.Fatalf("got %d, want %d", n, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 5 keyed messages delivered", i)
		}
	}
}

// The kit returns the event's own id, and reports a listener that cannot
// start once, at once.
func TestKitEmitIDAndStartFailure(t *testing.T) {
	kit := dispytchtest.New(t)
	kit.Listener.Handle("keyed", "keyed", func() {})
	kit.Start()
	if id := kit.Emit(keyedEvent{K: "a"}); id != "own-a" {
		t.Fatalf("id %q", id)
	}
	if id := kit.Emit(keyedEvent{K: "b"}, dispytch.EventID("opt")); id != "opt" {
		t.Fatalf("id %q", id)
	}
}

type keyedEvent struct {
	K string `json:"k"`
}

func (keyedEvent) Topic() string      { return "keyed" }
func (keyedEvent) EventType() string  { return "keyed" }
func (k keyedEvent) EventID() string  { return "own-" + k.K }
func (k keyedEvent) EventKey() string { return k.K }

// recTB records what a kit reports, for testing the kit itself.
type recTB struct {
	testing.TB
	mu       sync.Mutex
	msgs     []string
	cleanups []func()
}

func (r *recTB) Helper()          {}
func (r *recTB) Log(...any)       {}
func (r *recTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recTB) add(format string, args ...any) {
	r.mu.Lock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}
func (r *recTB) Errorf(format string, args ...any) { r.add(format, args...) }
func (r *recTB) Fatalf(format string, args ...any) { r.add(format, args...); runtime.Goexit() }

func TestKitStartFailureReportedOnce(t *testing.T) {
	rec := &recTB{TB: t}
	b := memory.New()
	b.Close(context.Background()) // the listener cannot subscribe
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		kit := dispytchtest.NewOn(rec, b)
		kit.Listener.Handle("t", "e", func() {})
		kit.Start()
	}()
	<-done
	for i := len(rec.cleanups) - 1; i >= 0; i-- {
		rec.cleanups[i]()
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	if len(rec.msgs) != 1 || !strings.Contains(rec.msgs[0], "did not start") || !strings.Contains(rec.msgs[0], "closed") {
		t.Fatalf("reported %q", rec.msgs)
	}
}
