package dispytch

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"

	"github.com/dispytch/dispytch-go/internal/di"
	"github.com/dispytch/dispytch-go/topic"
)

// Compiling a handler into a runner, which resolves its parameters and
// calls it for one attempt. Three paths, chosen once at Run:
//   - direct: func([ctx,] Event[T]) [error], no dependencies: a type
//     switch generic in T calls it;
//   - typed: registered with Handle1..3, generic in every parameter: no
//     reflection, and none for dependencies of the common shapes;
//   - reflective: any other signature, through a plan of internal/di.

// runner runs one attempt of a handler. The attempt is passed by value and
// copied into a pooled scope, so that nothing escapes per attempt.
type runner func(ctx context.Context, a attempt) error

// scope is a pooled di.Scope with the attempt it serves.
type scope struct {
	di.Scope
	a attempt
}

// typedHandler is a handler registered with Handle1, Handle2 or Handle3.
type typedHandler interface {
	handlerFunc() any
	bind(b *binder) (runner, []*di.Provider, []string)
}

var (
	logType  = reflect.TypeFor[*slog.Logger]()
	metaType = reflect.TypeFor[Metadata]()
	errType  = reflect.TypeFor[error]()
	eventMkT = reflect.TypeFor[eventMaker]()
	segMkT   = reflect.TypeFor[segmentsMaker]()
	pkgPath  = reflect.TypeFor[Metadata]().PkgPath()
)

func isEventType(t reflect.Type) bool {
	return t.PkgPath() == pkgPath && strings.HasPrefix(t.Name(), "Event[") && reflect.PointerTo(t).Implements(eventMkT)
}

func isSegmentsType(t reflect.Type) bool {
	return t.PkgPath() == pkgPath && strings.HasPrefix(t.Name(), "Segments[") && reflect.PointerTo(t).Implements(segMkT)
}

// eventNode builds the Event[T] of an attempt.
type eventNode struct {
	em   eventMaker
	vi   *bodyValidation
	pool *sync.Pool // *Event[T], reused once the call returned
}

func newEventNode(t reflect.Type) *eventNode {
	em := reflect.New(t).Interface().(eventMaker)
	return &eventNode{em: em, vi: newBodyValidation(em.bodyType()), pool: &sync.Pool{}}
}

// binder compiles the handlers of one listener run.
type binder struct {
	g      *di.Graph
	events map[reflect.Type]*eventNode
	scopes sync.Pool // *scope
	// set per handler
	pat   *topic.Pattern
	where string
}

func (b *binder) event(t reflect.Type) *eventNode {
	if n := b.events[t]; n != nil {
		return n
	}
	n := newEventNode(t)
	b.events[t] = n
	return n
}

// specials supplies the framework's types to plans: the event's Metadata,
// Event[T] and Segments[S] (pat nil: compiling a singleton), and the
// message's *slog.Logger unless a provider supplies one.
func (b *binder) specials(pat *topic.Pattern) di.Specials {
	return func(t reflect.Type) (*di.Special, []string, bool) {
		switch {
		case t == logType && !b.g.Provides(t):
			return &di.Special{Get: func(s *di.Scope) (reflect.Value, any, error) {
				return reflect.ValueOf(s.Data.(*attempt).logger()), nil, nil
			}, Attempt: true, Desc: "the message's *slog.Logger"}, nil, true
		case t == metaType:
			return &di.Special{Get: func(s *di.Scope) (reflect.Value, any, error) {
				return reflect.ValueOf(s.Data.(*attempt).meta).Elem(), nil, nil
			}, Attempt: true, Desc: "the event's Metadata"}, nil, true
		case isEventType(t):
			n := b.event(t)
			return &di.Special{
				Get: func(s *di.Scope) (reflect.Value, any, error) {
					o, err := n.em.newEvent(s.Data.(*attempt), n.vi, n.pool)
					if err != nil {
						return reflect.Value{}, o, err
					}
					return n.em.value(o), o, nil
				},
				Release: func(o any) { n.em.release(o, n.pool) },
				Attempt: true, Desc: t.String(),
			}, nil, true
		case isSegmentsType(t):
			sm := reflect.New(t).Interface().(segmentsMaker)
			sp := &di.Special{Attempt: true, Desc: t.String()}
			if pat == nil {
				return sp, nil, true
			}
			sb, probs := newSegBinder(sm.valueType(), pat)
			if sb == nil || len(probs) > 0 {
				return nil, probs, true
			}
			sp.Get = func(s *di.Scope) (reflect.Value, any, error) {
				v, err := sm.makeSegments(s.Data.(*attempt), sb)
				return v, nil, err
			}
			return sp, nil, true
		}
		return nil, nil, false
	}
}

func (b *binder) getScope(ctx context.Context, a *attempt) *scope {
	sc, _ := b.scopes.Get().(*scope)
	if sc == nil {
		sc = new(scope)
	}
	sc.a = *a
	sc.Ctx, sc.Data = ctx, &sc.a
	return sc
}

// endScope runs the attempt's cleanups; a cleanup that panicked fails an
// attempt that had not failed otherwise.
func (b *binder) endScope(sc *scope, err *error) {
	p := sc.End()
	sc.Ctx, sc.Data, sc.a = nil, nil, attempt{}
	b.scopes.Put(sc)
	if p != nil && *err == nil {
		*err = fmt.Errorf("%w: %v", ErrPanic, p)
	}
}

// compile builds the runner of a handler and lists the singletons it uses.
func (b *binder) compile(s *handlerSpec, pat *topic.Pattern, where string) (runner, []*di.Provider, []string) {
	b.pat, b.where = pat, where
	if th, ok := s.fnAny.(typedHandler); ok {
		return th.bind(b)
	}
	var problems []string
	t := s.fn.Type()
	retErr := false
	switch {
	case t.IsVariadic():
		problems = append(problems, where+": handler is variadic")
	case t.NumOut() == 0:
	case t.NumOut() == 1 && t.Out(0) == errType:
		retErr = true
	default:
		problems = append(problems, fmt.Sprintf("%s: handler returns %s; want error or nothing", where, di.Outs(t)))
	}
	var evType reflect.Type
	events := 0
	for i := 0; i < t.NumIn(); i++ {
		if isEventType(t.In(i)) {
			events++
			evType = t.In(i)
		}
	}
	if events > 1 {
		problems = append(problems, fmt.Sprintf("%s: handler takes %d Event parameters; want at most one", where, events))
	}
	if len(problems) > 0 {
		return nil, nil, problems
	}
	// Without dependencies, a common shape is called directly.
	if evType != nil {
		n := b.event(evType)
		if d := n.em.direct(s.fnAny); d != nil {
			return func(ctx context.Context, a attempt) (err error) {
				sc := b.getScope(ctx, &a)
				defer b.endScope(sc, &err)
				o, err := n.em.newEvent(&sc.a, n.vi, n.pool)
				if err == nil {
					err = d(ctx, o)
				}
				n.em.release(o, n.pool)
				return err
			}, nil, nil
		}
	}
	plan, probs := b.g.Compile(s.fn, b.specials(pat), where)
	if len(probs) > 0 {
		return nil, nil, probs
	}
	return func(ctx context.Context, a attempt) (err error) {
		sc := b.getScope(ctx, &a)
		defer b.endScope(sc, &err)
		out, err := plan.Call(&sc.Scope)
		if err != nil || !retErr {
			return err
		}
		if e := out[0]; !e.IsNil() {
			return e.Interface().(error)
		}
		return nil
	}, plan.Deps, nil
}

// typedEvent builds the event of a typed handler; release gives it back.
func typedEvent[T any](n *eventNode, a *attempt) (*Event[T], error) {
	o, err := n.em.newEvent(a, n.vi, n.pool)
	return o.(*Event[T]), err
}

// fast returns the reflection-free getter of a typed handler's dependency
// D, and records the singleton it reads; ok is false when D needs a plan.
func fast[D any](b *binder, seen map[reflect.Type]bool, deps *[]*di.Provider) (di.Getter[D], bool) {
	t := reflect.TypeFor[D]()
	if t == logType && !b.g.Provides(t) {
		return func(s *di.Scope) (D, error) {
			return any(s.Data.(*attempt).logger()).(D), nil
		}, true
	}
	if seen[t] {
		// The same type twice: one provider call must serve both, as
		// the plan's per-attempt cache does.
		return nil, false
	}
	seen[t] = true
	get, ok := di.Fast[D](b.g)
	if p := di.SingletonOf[D](b.g); ok && p != nil {
		*deps = append(*deps, p)
	}
	return get, ok
}

// reflective compiles a typed handler on the reflective path, when one of
// its dependencies needs a plan.
func (b *binder) reflective(fn any, where string) (runner, []*di.Provider, []string) {
	plan, probs := b.g.Compile(reflect.ValueOf(fn), b.specials(b.pat), where)
	if len(probs) > 0 {
		return nil, nil, probs
	}
	return func(ctx context.Context, a attempt) (err error) {
		sc := b.getScope(ctx, &a)
		defer b.endScope(sc, &err)
		out, err := plan.Call(&sc.Scope)
		if err != nil {
			return err
		}
		if e := out[0]; !e.IsNil() {
			return e.Interface().(error)
		}
		return nil
	}, plan.Deps, nil
}

// runTyped runs one attempt of a typed handler: its scope, its event, and
// call, built once at bind time, which gets the dependencies and calls the
// handler.
func runTyped[T any](b *binder, n *eventNode, ctx context.Context, a attempt, call func(context.Context, *di.Scope, *Event[T]) error) (err error) {
	sc := b.getScope(ctx, &a)
	defer b.endScope(sc, &err)
	ev, err := typedEvent[T](n, &sc.a)
	defer n.em.release(ev, n.pool)
	if err != nil {
		return err
	}
	return call(ctx, &sc.Scope, ev)
}

type typed1[T, D any] struct {
	fn func(context.Context, Event[T], D) error
}

func (h typed1[T, D]) handlerFunc() any { return h.fn }

func (h typed1[T, D]) bind(b *binder) (runner, []*di.Provider, []string) {
	var deps []*di.Provider
	seen := map[reflect.Type]bool{}
	get, ok := fast[D](b, seen, &deps)
	if !ok {
		return b.reflective(h.fn, b.where)
	}
	n := b.event(reflect.TypeFor[Event[T]]())
	call := func(ctx context.Context, sc *di.Scope, ev *Event[T]) error {
		d, err := get(sc)
		if err != nil {
			return err
		}
		return h.fn(ctx, *ev, d)
	}
	return func(ctx context.Context, a attempt) error { return runTyped(b, n, ctx, a, call) }, deps, nil
}

type typed2[T, D1, D2 any] struct {
	fn func(context.Context, Event[T], D1, D2) error
}

func (h typed2[T, D1, D2]) handlerFunc() any { return h.fn }

func (h typed2[T, D1, D2]) bind(b *binder) (runner, []*di.Provider, []string) {
	var deps []*di.Provider
	seen := map[reflect.Type]bool{}
	get1, ok1 := fast[D1](b, seen, &deps)
	get2, ok2 := fast[D2](b, seen, &deps)
	if !ok1 || !ok2 {
		return b.reflective(h.fn, b.where)
	}
	n := b.event(reflect.TypeFor[Event[T]]())
	call := func(ctx context.Context, sc *di.Scope, ev *Event[T]) error {
		d1, err := get1(sc)
		if err != nil {
			return err
		}
		d2, err := get2(sc)
		if err != nil {
			return err
		}
		return h.fn(ctx, *ev, d1, d2)
	}
	return func(ctx context.Context, a attempt) error { return runTyped(b, n, ctx, a, call) }, deps, nil
}

type typed3[T, D1, D2, D3 any] struct {
	fn func(context.Context, Event[T], D1, D2, D3) error
}

func (h typed3[T, D1, D2, D3]) handlerFunc() any { return h.fn }

func (h typed3[T, D1, D2, D3]) bind(b *binder) (runner, []*di.Provider, []string) {
	var deps []*di.Provider
	seen := map[reflect.Type]bool{}
	get1, ok1 := fast[D1](b, seen, &deps)
	get2, ok2 := fast[D2](b, seen, &deps)
	get3, ok3 := fast[D3](b, seen, &deps)
	if !ok1 || !ok2 || !ok3 {
		return b.reflective(h.fn, b.where)
	}
	n := b.event(reflect.TypeFor[Event[T]]())
	call := func(ctx context.Context, sc *di.Scope, ev *Event[T]) error {
		d1, err := get1(sc)
		if err != nil {
			return err
		}
		d2, err := get2(sc)
		if err != nil {
			return err
		}
		d3, err := get3(sc)
		if err != nil {
			return err
		}
		return h.fn(ctx, *ev, d1, d2, d3)
	}
	return func(ctx context.Context, a attempt) error { return runTyped(b, n, ctx, a, call) }, deps, nil
}
