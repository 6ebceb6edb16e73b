package dispytch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/memory"
)

type DB struct{ name string }

type Repo struct{ db *DB }

type UserService struct {
	repo  *Repo
	actor string
}

type Store interface{ Name() string }

type pgStore struct{}

func (pgStore) Name() string { return "pg" }

// journal records provider calls and cleanups in order.
type journal struct {
	mu  sync.Mutex
	log []string
}

func (j *journal) add(s string) { j.mu.Lock(); j.log = append(j.log, s); j.mu.Unlock() }
func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.log, " ")
}

func TestDINestingCachingCleanup(t *testing.T) {
	j := &journal{}
	var dbs, repos atomic.Int32
	newDB := func() (*DB, func(), error) {
		dbs.Add(1)
		j.add("db")
		return &DB{name: "main"}, func() { j.add("close-db") }, nil
	}
	newRepo := func(ctx context.Context, db *DB) (*Repo, func(), error) {
		repos.Add(1)
		j.add("repo")
		return &Repo{db: db}, func() { j.add("close-repo") }, nil
	}
	// Context-aware: the service knows the event it serves.
	newService := func(r *Repo, m dispytch.Metadata, ev dispytch.Event[UserRegistered]) *UserService {
		j.add("svc")
		return &UserService{repo: r, actor: m.Type + ":" + ev.Body.User.ID}
	}
	kit := dispytchtest.New(t,
		dispytch.Provide(newDB),
		dispytch.Provide(newRepo),
		dispytch.Provide(newService),
		dispytch.Value[Store](pgStore{}))
	var actor, store atomic.Value
	// The repo is needed twice (directly and through the service): built once.
	kit.Listener.Handle("user_events", "user_registered", func(svc *UserService, r *Repo, s Store) {
		if svc.repo != r {
			panic("repo not cached within the attempt")
		}
		actor.Store(svc.actor)
		store.Store(s.Name())
		j.add("handler")
	})
	kit.Start()
	kit.Wait(kit.Emit(registered(7)))
	if got := j.String(); got != "db repo svc handler close-repo close-db" {
		t.Fatalf("order: %s", got)
	}
	if actor.Load() != "user_registered:u7" || store.Load() != "pg" {
		t.Fatal(actor.Load(), store.Load())
	}
	kit.Wait(kit.Emit(registered(8)))
	if dbs.Load() != 2 || repos.Load() != 2 {
		t.Fatalf("per-attempt scope: %d dbs %d repos", dbs.Load(), repos.Load())
	}
}

func TestDINoCacheAndSingleton(t *testing.T) {
	var fresh, single, singleClosed atomic.Int32
	type Counter struct{ n int32 }
	type Pool struct{}
	kit := dispytchtest.New(t,
		dispytch.Provide(func() *Counter { return &Counter{n: fresh.Add(1)} }, dispytch.NoCache()),
		dispytch.Provide(func(ctx context.Context) (*Pool, func(), error) {
			single.Add(1)
			return &Pool{}, func() { singleClosed.Add(1) }, nil
		}, dispytch.Singleton()))
	var pools sync.Map
	kit.Listener.Handle("user_events", "user_registered", func(a, b *Counter, p *Pool) error {
		if a == b {
			return errors.New("NoCache provider shared")
		}
		pools.Store(p, true)
		return nil
	})
	kit.Start()
	for i := range 3 {
		if s := kit.Wait(kit.Emit(registered(i))); s.Outcome != dispytch.OutcomeAcked {
			t.Fatal(s.Failures[0].Err)
		}
	}
	kit.Stop()
	n := 0
	pools.Range(func(any, any) bool { n++; return true })
	if fresh.Load() != 6 || single.Load() != 1 || singleClosed.Load() != 1 || n != 1 {
		t.Fatalf("fresh %d singletons %d closed %d pools %d", fresh.Load(), single.Load(), singleClosed.Load(), n)
	}
}

func TestDICleanupOnFailureAndPanic(t *testing.T) {
	var opened, closed atomic.Int32
	type Tx struct{}
	kit := dispytchtest.New(t, dispytch.Provide(func() (*Tx, func(), error) {
		opened.Add(1)
		return &Tx{}, func() { closed.Add(1) }, nil
	}))
	kit.Listener.Handle("user_events", "user_registered", func(_ *Tx, ev dispytch.Event[UserRegistered]) error {
		if ev.Body.Timestamp == 1 {
			panic("boom")
		}
		return errors.New("fail")
	}, dispytch.Retries(2), dispytch.RetryInterval(0))
	kit.Start()
	s := kit.Wait(kit.Emit(registered(1)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonPanic || s.Failures[0].Attempts != 3 {
		t.Fatalf("%+v", s.Failures[0])
	}
	s = kit.Wait(kit.Emit(registered(2)))
	if s.Failures[0].Reason != dispytch.ReasonHandler {
		t.Fatalf("%+v", s.Failures[0])
	}
	if opened.Load() != 6 || closed.Load() != 6 {
		t.Fatalf("opened %d closed %d", opened.Load(), closed.Load())
	}
}

func TestDICleanupUnderConcurrency(t *testing.T) {
	type Conn struct{ id int64 }
	var next, live, maxLive atomic.Int64
	var mu sync.Mutex
	closedIDs := map[int64]bool{}
	kit := dispytchtest.New(t, dispytch.Concurrency(16), dispytch.Provide(func() (*Conn, func(), error) {
		c := &Conn{id: next.Add(1)}
		l := live.Add(1)
		for {
			m := maxLive.Load()
			if l <= m || maxLive.CompareAndSwap(m, l) {
				break
			}
		}
		return c, func() {
			mu.Lock()
			if closedIDs[c.id] {
				panic("cleanup ran twice")
			}
			closedIDs[c.id] = true
			mu.Unlock()
			live.Add(-1)
		}, nil
	}))
	kit.Listener.Handle("user_events", "user_registered", func(c *Conn, ev dispytch.Event[UserRegistered]) error {
		if ev.Body.Timestamp%3 == 0 {
			return dispytch.Permanent(errors.New("no"))
		}
		return nil
	})
	kit.Start()
	const n = 500
	for i := range n {
		kit.Emit(registered(i))
	}
	kit.WaitCount(n, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(closedIDs) != n || live.Load() != 0 {
		t.Fatalf("closed %d of %d, live %d", len(closedIDs), n, live.Load())
	}
	if maxLive.Load() < 2 {
		t.Logf("note: only %d attempts overlapped", maxLive.Load())
	}
}

func TestDIOverride(t *testing.T) {
	real := &UserService{actor: "real"}
	fake := &UserService{actor: "fake"}
	kit := dispytchtest.New(t,
		dispytch.Provide(func() *UserService { return real }),
		dispytch.Override(dispytch.Value(fake)))
	var got atomic.Value
	kit.Listener.Handle("user_events", "user_registered", func(s *UserService) { got.Store(s.actor) })
	kit.Start()
	kit.Wait(kit.Emit(registered(1)))
	if got.Load() != "fake" {
		t.Fatal(got.Load())
	}
}

type A struct{}
type B struct{}
type C struct{}

func TestDIGraphErrors(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	// Something waits on the topic: a failing Run must consume none of it.
	if err := dispytch.NewEmitter(b).Emit(context.Background(), registered(1)); err != nil {
		t.Fatal(err)
	}
	l := dispytch.NewListener(b,
		dispytch.Provide(func(*B) *A { return nil }),
		dispytch.Provide(func(*A) *B { return nil }),                                         // cycle A → B → A
		dispytch.Provide(func() *C { return nil }),                                           // two providers for *C
		dispytch.Provide(func() (*C, error) { return nil, nil }),                             //
		dispytch.Provide(func() (*DB, string) { return nil, "" }),                            // bad signature
		dispytch.Provide(42),                                                                 // not a function
		dispytch.Provide(func(dispytch.Metadata) *Repo { return nil }, dispytch.Singleton()), // singleton needing an event
	)
	l.Handle("user_events", "user_registered", func(*A) {})
	l.Handle("user_events", "user_registered", func(*UserService) {}, dispytch.Name("needs-service"))
	l.Handle("user_events", "user_registered", func() int { return 0 }, dispytch.Name("bad-return"))
	l.Handle("user_events", "user_registered", func(dispytch.Event[A], dispytch.Event[B]) {}, dispytch.Name("two-events"))
	l.Handle("user.{id}", "x", func(dispytch.Segments[struct{ Missing int }]) {})
	err := l.Run(context.Background())
	var ge *dispytch.GraphError
	if !errors.As(err, &ge) || !errors.Is(err, dispytch.ErrInvalidGraph) {
		t.Fatalf("Run: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"dependency cycle: *dispytch_test.A → *dispytch_test.B → *dispytch_test.A",
		"two providers for *dispytch_test.C",
		"returns (*dispytch_test.DB, string)",
		"provider int",
		"a singleton cannot depend on the event's Metadata",
		"no provider for *dispytch_test.UserService",
		"handler returns (int)",
		"2 Event parameters",
		"field Missing wants segment",
		"di_test.go:", // locations
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if len(ge.Problems) < 9 {
		t.Errorf("only %d problems: %s", len(ge.Problems), msg)
	}
	if n := b.Retained("user_events"); n != 1 {
		t.Fatalf("Run consumed despite errors: %d retained", n)
	}
	if _, ok := b.GroupStats("default"); ok {
		t.Fatal("Run subscribed despite errors")
	}
}

func TestHandlePanicsOnProgrammerErrors(t *testing.T) {
	l := dispytch.NewListener(memory.New())
	for name, f := range map[string]func(){
		"not a func":  func() { l.Handle("t", "e", 5) },
		"nil func":    func() { l.Handle("t", "e", (func())(nil)) },
		"bad pattern": func() { l.Handle("t.{x", "e", func() {}) },
		"rest middle": func() { l.Handle("t.{x...}.y", "e", func() {}) },
		"no topic":    func() { dispytch.NewHandlerGroup("", "").Handle("", "e", func() {}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func ExampleOverride() {
	type Mailer interface{ Send(to string) error }
	var fake fakeMailer
	l := dispytch.NewListener(memory.New(),
		dispytch.Override(dispytch.Value[Mailer](&fake)))
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered], m Mailer) error {
		return m.Send(ev.Body.User.Email)
	})
	fmt.Println(l.Check())
	// Output: <nil>
}

type fakeMailer struct{ sent []string }

func (f *fakeMailer) Send(to string) error { f.sent = append(f.sent, to); return nil }

func TestDICleanupPanicRunsTheRest(t *testing.T) {
	type X struct{}
	type Y struct{}
	var yClosed atomic.Bool
	kit := dispytchtest.New(t,
		dispytch.Provide(func() (*Y, func(), error) { return &Y{}, func() { yClosed.Store(true) }, nil }),
		dispytch.Provide(func(*Y) (*X, func(), error) { return &X{}, func() { panic("close x") }, nil }))
	kit.Listener.Handle("user_events", "user_registered", func(*X) {})
	kit.Start()
	s := kit.Wait(kit.Emit(registered(1)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonPanic || !yClosed.Load() {
		t.Fatalf("%+v, y closed %v", s, yClosed.Load())
	}
}

// The handler shapes of the word path (no reflect.Value.Call): the event
// after an optional context, then up to three pointer-like or interface
// dependencies. The same graph features must hold on it: nesting,
// per-attempt caching, NoCache, singletons, values, cleanups in reverse
// order, provider errors and panics.
// The same graph through Handle (reflection), with every kind of provider.
func TestDIReflectivePath(t *testing.T) {
	j := &journal{}
	type Tx struct{ n int32 }
	type Pool struct{}
	var txs, pools atomic.Int32
	newDB := func() (*DB, func(), error) {
		j.add("db")
		return &DB{name: "main"}, func() { j.add("close-db") }, nil
	}
	newRepo := func(ctx context.Context, db *DB) (*Repo, func(), error) {
		if ctx == nil {
			return nil, nil, errors.New("no context")
		}
		j.add("repo")
		return &Repo{db: db}, func() { j.add("close-repo") }, nil
	}
	newService := func(r *Repo, s Store) (*UserService, error) {
		if s.Name() == "broken" {
			return nil, errors.New("store is broken")
		}
		j.add("svc")
		return &UserService{repo: r, actor: s.Name()}, nil
	}
	store := &swappableStore{name: "pg"}
	kit := dispytchtest.New(t,
		dispytch.Provide(newDB),
		dispytch.Provide(newRepo),
		dispytch.Provide(newService),
		dispytch.Provide(func() *Tx { return &Tx{n: txs.Add(1)} }, dispytch.NoCache()),
		dispytch.Provide(func(context.Context) *Pool { pools.Add(1); return &Pool{} }, dispytch.Singleton()),
		dispytch.Value[Store](store))
	var seen atomic.Value
	kit.Listener.Handle("user_events", "user_registered", func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService, r *Repo, s Store) error {
		if svc.repo != r || ctx == nil {
			return errors.New("repo not cached within the attempt")
		}
		if ev.Body.Timestamp == 13 {
			panic("unlucky")
		}
		seen.Store(ev.Body.User.ID + "/" + svc.actor + "/" + s.Name())
		j.add("handler")
		return nil
	})
	kit.Listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered], a, b *Tx, p *Pool) {
		if a == b || p == nil {
			panic("NoCache provider shared, or no singleton")
		}
	}, dispytch.Name("tx"))
	kit.Start()
	if s := kit.Wait(kit.Emit(registered(7))); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s.Failures)
	}
	if got := j.String(); got != "db repo svc handler close-repo close-db" {
		t.Fatalf("order: %s", got)
	}
	if seen.Load() != "u7/pg/pg" || txs.Load() != 2 || pools.Load() != 1 {
		t.Fatal(seen.Load(), txs.Load(), pools.Load())
	}
	s := kit.Wait(kit.Emit(registered(13)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonPanic {
		t.Fatalf("panic: %+v", s.Failures)
	}
	store.name = "broken"
	s = kit.Wait(kit.Emit(registered(8)))
	if s.Outcome != dispytch.OutcomeDeadLettered || s.Failures[0].Reason != dispytch.ReasonDependency ||
		!strings.Contains(s.Failures[0].Err.Error(), "store is broken") {
		t.Fatalf("provider error: %+v", s.Failures)
	}
	// Every cleanup ran, also after the panic and the provider error.
	if got := j.String(); strings.Count(got, "close-db") != 3 || strings.Count(got, "close-repo") != 3 {
		t.Fatalf("cleanups: %s", got)
	}
}

// swappableStore is a Store whose name the test changes between events
// (handled one at a time).
type swappableStore struct{ name string }

func (s *swappableStore) Name() string { return s.name }

type Clock struct{ now int64 }

// Handlers registered with Handle1..3 run without reflection for the common
// provider shapes, and fall back to a plan (keeping per-attempt caching)
// for the rest; cleanups, errors and panics behave as on the reflective
// path.
func TestDITypedHandlers(t *testing.T) {
	j := &journal{}
	type Pool struct{ id int }
	var pools, clocks atomic.Int32
	store := &swappableStore{name: "pg"}
	kit := dispytchtest.New(t,
		dispytch.Value[Store](store),
		dispytch.Provide(func(context.Context) (*Pool, func(), error) {
			pools.Add(1)
			return &Pool{id: 1}, func() { j.add("close-pool") }, nil
		}, dispytch.Singleton()),
		dispytch.Provide(func(ctx context.Context) (*Clock, func(), error) {
			if ctx == nil {
				return nil, nil, errors.New("no context")
			}
			clocks.Add(1)
			j.add("clock")
			return &Clock{now: 42}, func() { j.add("close-clock") }, nil
		}),
		dispytch.Provide(func() (*DB, error) { j.add("db"); return &DB{name: "main"}, nil }),
		dispytch.Provide(func(db *DB) *Repo { j.add("repo"); return &Repo{db: db} }),
		dispytch.Provide(func(r *Repo, s Store) (*UserService, error) {
			if s.Name() == "broken" {
				return nil, errors.New("store is broken")
			}
			return &UserService{repo: r, actor: s.Name()}, nil
		}))
	var seen atomic.Value
	dispytch.Handle3(kit.Listener, "user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], s Store, p *Pool, c *Clock) error {
			if ev.Body.Timestamp == 13 {
				panic("unlucky")
			}
			seen.Store(fmt.Sprint(ev.Body.User.ID, "/", s.Name(), "/", p.id, "/", c.now))
			j.add("fast")
			return nil
		}, dispytch.Name("fast"))
	// A dependency with dependencies of its own, and the same type twice:
	// the plan runs, and *Repo is built once per attempt.
	dispytch.Handle2(kit.Listener, "user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService, r *Repo) error {
			if svc.repo != r {
				return errors.New("repo not cached within the attempt")
			}
			return nil
		}, dispytch.Name("planned"))
	dispytch.Handle2(kit.Listener, "user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], a, b *Clock) error {
			if a != b {
				return errors.New("the same dependency twice was built twice")
			}
			return nil
		}, dispytch.Name("twice"))
	kit.Start()
	if s := kit.Wait(kit.Emit(registered(7))); s.Outcome != dispytch.OutcomeAcked {
		t.Fatalf("%+v", s.Failures)
	}
	if seen.Load() != "u7/pg/1/42" || pools.Load() != 1 {
		t.Fatal(seen.Load(), pools.Load())
	}
	if got := j.String(); strings.Count(got, "clock") != 4 || strings.Count(got, "close-clock") != 2 || strings.Count(got, "repo") != 1 {
		t.Fatalf("journal: %s", got)
	}
	s := kit.Wait(kit.Emit(registered(13)))
	if len(s.Failures) != 1 || s.Failures[0].Reason != dispytch.ReasonPanic || s.Failures[0].Handler != "fast" {
		t.Fatalf("panic: %+v", s.Failures)
	}
	if got := j.String(); strings.Count(got, "close-clock") != 4 {
		t.Fatalf("cleanup after a panic: %s", got)
	}
	store.name = "broken"
	s = kit.Wait(kit.Emit(registered(8)))
	if len(s.Failures) != 1 || s.Failures[0].Handler != "planned" || s.Failures[0].Reason != dispytch.ReasonDependency ||
		!strings.Contains(s.Failures[0].Err.Error(), "store is broken") {
		t.Fatalf("provider error: %+v", s.Failures)
	}
	kit.Stop()
	if !strings.HasSuffix(j.String(), "close-pool") {
		t.Fatalf("singleton cleanup: %s", j.String())
	}

	// A missing provider is reported with the handler's own location.
	l := dispytch.NewListener(memory.New())
	dispytch.Handle1(l, "t", "e", func(context.Context, dispytch.Event[UserRegistered], *Clock) error { return nil })
	err := l.Check()
	if !errors.Is(err, dispytch.ErrInvalidGraph) || !strings.Contains(err.Error(), "no provider for *dispytch_test.Clock") ||
		!strings.Contains(err.Error(), "di_test.go") {
		t.Fatalf("%v", err)
	}
}

// Invalid option values are reported by Check, not clamped.
func TestInvalidOptionsReported(t *testing.T) {
	l := dispytch.NewListener(memory.New(), dispytch.Concurrency(0), dispytch.StartTimeout(-time.Second),
		dispytch.Delimiter(""), dispytch.DeadLettering(dispytch.DeadLetterConfig{Attempts: -1}))
	l.Handle("t", "e", func() {}, dispytch.Retries(-2))
	err := l.Check()
	var ge *dispytch.GraphError
	if !errors.As(err, &ge) || !errors.Is(err, dispytch.ErrInvalidGraph) {
		t.Fatalf("%v", err)
	}
	for _, want := range []string{"Concurrency(0)", "StartTimeout(-1s)", `Delimiter("")`, "Attempts -1", "Retries(-2)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported:\n%v", want, err)
		}
	}
}
