// Package di is the dependency-injection machinery behind handler
// signatures: providers indexed by the type they supply, plans that resolve
// a function's parameters in dependency order (compiled once, run per
// attempt), per-attempt caching and cleanups, singletons, and typed getters
// for the reflection-free fast path.
//
// It knows nothing of events: the caller supplies the framework's own types
// (the context, the event, its metadata and segments) as Specials.
package di

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// RetShape is what a provider returns.
type RetShape uint8

const (
	// RetT is T.
	RetT RetShape = iota
	// RetTErr is (T, error).
	RetTErr
	// RetTCleanupErr is (T, func(), error), func() being a cleanup.
	RetTCleanupErr
)

var (
	ctxType     = reflect.TypeFor[context.Context]()
	errType     = reflect.TypeFor[error]()
	cleanupType = reflect.TypeFor[func()]()
)

// Provider supplies values of one type: a function, or a fixed value.
type Provider struct {
	Fn        reflect.Value // the function; invalid for a value
	Val       reflect.Value // the value of a value provider
	IsValue   bool
	Out       reflect.Type
	Ins       []reflect.Type
	Ret       RetShape
	Singleton bool
	NoCache   bool
	Override  bool
	Name, Loc string
	// Problem, when set, is why the provider is unusable.
	Problem string
}

// NewFunc describes the provider function fn, registered at loc.
func NewFunc(fn any, name, loc string) *Provider {
	p := &Provider{Name: name, Loc: loc}
	v := reflect.ValueOf(fn)
	if fn == nil || v.Kind() != reflect.Func || v.IsNil() {
		p.Name = fmt.Sprintf("%T", fn)
		p.Problem = fmt.Sprintf("provider %s at %s is not a function", p.Name, loc)
		return p
	}
	p.Fn = v
	t := v.Type()
	for i := 0; i < t.NumIn(); i++ {
		p.Ins = append(p.Ins, t.In(i))
	}
	switch {
	case t.IsVariadic():
		p.Problem = "is variadic"
	case t.NumOut() == 1 && t.Out(0) != errType:
		p.Ret = RetT
	case t.NumOut() == 2 && t.Out(1) == errType:
		p.Ret = RetTErr
	case t.NumOut() == 3 && t.Out(1) == cleanupType && t.Out(2) == errType:
		p.Ret = RetTCleanupErr
	default:
		p.Problem = fmt.Sprintf("returns %s; want T, (T, error) or (T, func(), error)", Outs(t))
	}
	if p.Problem != "" {
		p.Problem = fmt.Sprintf("provider %s (%s) %s", p.Name, p.Loc, p.Problem)
	} else {
		p.Out = t.Out(0)
	}
	return p
}

// Outs formats the results of function type t.
func Outs(t reflect.Type) string {
	var s []string
	for i := 0; i < t.NumOut(); i++ {
		s = append(s, t.Out(i).String())
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// ErrDependency marks a provider failure.
var ErrDependency = errors.New("dependency failed")

func dependencyError(p *Provider, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrDependency, p.Name, err)
}

// Special is a type the caller supplies rather than a provider.
type Special struct {
	// Get returns the value for one run. obj, when not nil, is handed to
	// Release once the function the value was passed to returned.
	Get     func(s *Scope) (v reflect.Value, obj any, err error)
	Release func(obj any)
	// Attempt marks a value that exists only per attempt (the event);
	// singletons cannot depend on it. Desc names it in that error.
	Attempt bool
	Desc    string
}

// Specials returns the special supplying t, or false. Problems found with
// t (a segments struct that does not fit the topic) are reported through
// the returned slice.
type Specials func(t reflect.Type) (*Special, []string, bool)

// Scope is the state of one attempt: the context, the caller's data, and
// the cleanups registered by providers.
type Scope struct {
	Ctx  context.Context
	Data any

	cleanups []func()
}

// AddCleanup registers f to run when the scope ends.
func (s *Scope) AddCleanup(f func()) { s.cleanups = append(s.cleanups, f) }

// End runs the cleanups in reverse order, every one even if some panic,
// and returns the first panic value (nil when none panicked). The scope
// can be reused afterwards.
func (s *Scope) End() (panicked any) {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		func() {
			defer func() {
				if r := recover(); r != nil && panicked == nil {
					panicked = fmt.Sprintf("cleanup: %v", r)
				}
			}()
			s.cleanups[i]()
		}()
	}
	clear(s.cleanups)
	s.cleanups = s.cleanups[:0]
	return panicked
}

// Slot holds the value of a value provider or a singleton for one graph
// (one run of a listener): a provider given to two listeners keeps no
// state of its own.
type Slot struct {
	V     reflect.Value
	Iface any // V.Interface(), for typed getters
	Ready bool
}

// Graph is the providers of one listener run.
type Graph struct {
	provs map[reflect.Type]*Provider
	slots map[*Provider]*Slot
}

// NewGraph indexes providers by type, reporting bad signatures and types
// with two providers. Overrides replace.
func NewGraph(ps []*Provider) (*Graph, []string) {
	var problems []string
	m := map[reflect.Type]*Provider{}
	over := map[reflect.Type]*Provider{}
	for _, p := range ps {
		if p.Problem != "" {
			problems = append(problems, p.Problem)
			continue
		}
		target := m
		if p.Override {
			target = over
		}
		if prev := target[p.Out]; prev != nil {
			problems = append(problems, fmt.Sprintf("two providers for %s: %s (%s) and %s (%s)", p.Out, prev.Name, prev.Loc, p.Name, p.Loc))
			continue
		}
		target[p.Out] = p
	}
	for t, p := range over {
		m[t] = p
	}
	sort.Strings(problems)
	return &Graph{provs: m, slots: map[*Provider]*Slot{}}, problems
}

// Slot returns the graph's slot of a value or singleton provider.
func (g *Graph) Slot(p *Provider) *Slot {
	if s := g.slots[p]; s != nil {
		return s
	}
	s := &Slot{}
	if p.IsValue {
		s.V, s.Iface, s.Ready = p.Val, p.Val.Interface(), true
	}
	g.slots[p] = s
	return s
}

// Singletons returns the graph's singleton providers, in registration
// order of their locations.
// Provides reports whether a provider supplies t.
func (g *Graph) Provides(t reflect.Type) bool { return g.provs[t] != nil }

func (g *Graph) Singletons() []*Provider {
	var out []*Provider
	for _, p := range g.provs {
		if p.Singleton && !p.IsValue {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Loc < out[j].Loc })
	return out
}

type nodeKind uint8

const (
	nCtx nodeKind = iota
	nSpecial
	nProvider
	nConst
)

type node struct {
	kind    nodeKind
	args    []int
	prov    *Provider
	special *Special
	slot    *Slot
}

// Plan resolves the parameters of one function into nodes in dependency
// order and calls it. Running it never inspects types.
type Plan struct {
	nodes   []node
	fn      reflect.Value
	args    []int
	maxArgs int
	pool    sync.Pool // *scratch
	// Deps are the singletons the plan uses directly.
	Deps []*Provider
}

type scratch struct {
	vals   []reflect.Value
	args   []reflect.Value
	pooled []any
}

func (p *Plan) getScratch() *scratch {
	if s, ok := p.pool.Get().(*scratch); ok {
		return s
	}
	return &scratch{
		vals:   make([]reflect.Value, len(p.nodes)),
		args:   make([]reflect.Value, p.maxArgs),
		pooled: make([]any, len(p.nodes)),
	}
}

func (p *Plan) putScratch(s *scratch) {
	for i, o := range s.pooled {
		if o != nil {
			p.nodes[i].special.Release(o)
			s.pooled[i] = nil
		}
	}
	clear(s.vals)
	clear(s.args)
	p.pool.Put(s)
}

// Call resolves the parameters in sc and calls the function. Provider
// cleanups are registered on sc (the caller ends it); values of specials
// are released once the function returned.
func (p *Plan) Call(sc *Scope) ([]reflect.Value, error) {
	s := p.getScratch()
	defer p.putScratch(s)
	vals := s.vals
	for i := range p.nodes {
		n := &p.nodes[i]
		switch n.kind {
		case nCtx:
			vals[i] = reflect.ValueOf(&sc.Ctx).Elem()
		case nSpecial:
			v, obj, err := n.special.Get(sc)
			s.pooled[i] = obj
			if err != nil {
				return nil, err
			}
			vals[i] = v
		case nConst:
			vals[i] = n.slot.V
		case nProvider:
			args := s.args[:len(n.args)]
			for j, k := range n.args {
				args[j] = vals[k]
			}
			res := n.prov.Fn.Call(args)
			switch n.prov.Ret {
			case RetTErr:
				if e := res[1]; !e.IsNil() {
					return nil, dependencyError(n.prov, e.Interface().(error))
				}
			case RetTCleanupErr:
				if c := res[1]; !c.IsNil() {
					sc.AddCleanup(c.Interface().(func()))
				}
				if e := res[2]; !e.IsNil() {
					return nil, dependencyError(n.prov, e.Interface().(error))
				}
			}
			vals[i] = res[0]
		}
	}
	args := s.args[:len(p.args)]
	for j, k := range p.args {
		args[j] = vals[k]
	}
	return p.fn.Call(args), nil
}

// compiler resolves one plan.
type compiler struct {
	g         *Graph
	specials  Specials
	singleton bool
	where     string
	p         *Plan
	cache     map[reflect.Type]int
	stack     []reflect.Type
	problems  []string
}

func (c *compiler) problem(format string, args ...any) {
	c.problems = append(c.problems, c.where+": "+fmt.Sprintf(format, args...))
}

func (c *compiler) add(n node) int {
	c.p.nodes = append(c.p.nodes, n)
	return len(c.p.nodes) - 1
}

func (c *compiler) cached(t reflect.Type, n node) int {
	i := c.add(n)
	c.cache[t] = i
	return i
}

// resolve returns the node supplying t, adding it and what it needs.
func (c *compiler) resolve(t reflect.Type, chain string) (int, bool) {
	if i, ok := c.cache[t]; ok {
		return i, true
	}
	if t == ctxType {
		return c.cached(t, node{kind: nCtx}), true
	}
	if sp, probs, ok := c.specials(t); ok {
		for _, pr := range probs {
			c.problem("%s", pr)
		}
		if sp == nil || len(probs) > 0 {
			return -1, false
		}
		if c.singleton && sp.Attempt {
			c.problem("%s: a singleton cannot depend on %s", chain, sp.Desc)
			return -1, false
		}
		return c.cached(t, node{kind: nSpecial, special: sp}), true
	}
	prov := c.g.provs[t]
	if prov == nil {
		c.problem("%s: no provider for %s", chain, t)
		return -1, false
	}
	if prov.IsValue {
		return c.cached(t, node{kind: nConst, prov: prov, slot: c.g.Slot(prov)}), true
	}
	for _, s := range c.stack {
		if s == t {
			c.problem("%s: dependency cycle: %s", chain, cycleText(c.stack, t))
			return -1, false
		}
	}
	if prov.Singleton {
		c.p.Deps = append(c.p.Deps, prov)
		return c.cached(t, node{kind: nConst, prov: prov, slot: c.g.Slot(prov)}), true
	}
	if c.singleton {
		c.problem("%s: a singleton cannot depend on %s, which %s provides per attempt", chain, t, prov.Name)
		return -1, false
	}
	c.stack = append(c.stack, t)
	defer func() { c.stack = c.stack[:len(c.stack)-1] }()
	args := make([]int, len(prov.Ins))
	ok := true
	for i, in := range prov.Ins {
		a, good := c.resolve(in, chain+" → "+in.String())
		args[i], ok = a, ok && good
	}
	if !ok {
		return -1, false
	}
	n := node{kind: nProvider, prov: prov, args: args}
	if prov.NoCache {
		return c.add(n), true
	}
	return c.cached(t, n), true
}

func cycleText(stack []reflect.Type, t reflect.Type) string {
	var s []string
	start := 0
	for i, x := range stack {
		if x == t {
			start = i
			break
		}
	}
	for _, x := range stack[start:] {
		s = append(s, x.String())
	}
	return strings.Join(append(s, t.String()), " → ")
}

// Compile builds the plan of function fn (a handler); sp supplies the
// framework's types and where names fn in problems.
func (g *Graph) Compile(fn reflect.Value, sp Specials, where string) (*Plan, []string) {
	c := &compiler{g: g, specials: sp, where: where, p: &Plan{fn: fn}, cache: map[reflect.Type]int{}}
	t := fn.Type()
	for i := 0; i < t.NumIn(); i++ {
		in := t.In(i)
		a, _ := c.resolve(in, fmt.Sprintf("parameter %d (%s)", i+1, in))
		c.p.args = append(c.p.args, a)
	}
	c.p.setMaxArgs()
	return c.p, c.problems
}

// CompileSingleton builds the plan of singleton provider p.
func (g *Graph) CompileSingleton(p *Provider, sp Specials) (*Plan, []string) {
	c := &compiler{g: g, specials: sp, singleton: true, where: fmt.Sprintf("singleton %s (%s)", p.Name, p.Loc), p: &Plan{fn: p.Fn}, cache: map[reflect.Type]int{}}
	c.stack = []reflect.Type{p.Out}
	for i, in := range p.Ins {
		a, _ := c.resolve(in, fmt.Sprintf("parameter %d (%s)", i+1, in))
		c.p.args = append(c.p.args, a)
	}
	c.p.setMaxArgs()
	return c.p, c.problems
}

func (p *Plan) setMaxArgs() {
	p.maxArgs = len(p.args)
	for _, n := range p.nodes {
		p.maxArgs = max(p.maxArgs, len(n.args))
	}
}

// Resolve runs the singleton plans in order (order lists them after what
// they need), storing their values in the graph's slots, and returns a
// function running their cleanups in reverse. onPanic reports a cleanup
// that panicked.
func (g *Graph) Resolve(ctx context.Context, order []*Provider, plans map[*Provider]*Plan, onPanic func(any)) (func(), error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			func() {
				defer func() {
					if p := recover(); p != nil {
						onPanic(p)
					}
				}()
				cleanups[i]()
			}()
		}
	}
	for _, p := range order {
		out, err := runSingleton(ctx, plans[p])
		if err == nil {
			switch p.Ret {
			case RetTErr:
				if e := out[1]; !e.IsNil() {
					err = e.Interface().(error)
				}
			case RetTCleanupErr:
				if f := out[1]; !f.IsNil() {
					cleanups = append(cleanups, f.Interface().(func()))
				}
				if e := out[2]; !e.IsNil() {
					err = e.Interface().(error)
				}
			}
		}
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("singleton %s (%s): %w", p.Name, p.Loc, err)
		}
		s := g.Slot(p)
		s.V, s.Iface, s.Ready = out[0], out[0].Interface(), true
	}
	return cleanup, nil
}

// ErrPanic wraps a panic in a singleton provider.
var ErrPanic = errors.New("panicked")

func runSingleton(ctx context.Context, pl *Plan) (out []reflect.Value, err error) {
	sc := &Scope{Ctx: ctx}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, p)
		}
		// Singleton plans have no per-attempt providers, so no
		// cleanups; end the scope all the same.
		sc.End()
	}()
	return pl.Call(sc)
}

// TopoSingletons orders singletons so that each comes after what it needs.
func TopoSingletons(deps map[*Provider][]*Provider) ([]*Provider, []string) {
	var order []*Provider
	var problems []string
	state := map[*Provider]int{} // 1 visiting, 2 done
	var visit func(p *Provider, path []*Provider)
	visit = func(p *Provider, path []*Provider) {
		switch state[p] {
		case 2:
			return
		case 1:
			var names []string
			for _, q := range append(path, p) {
				names = append(names, q.Out.String())
			}
			problems = append(problems, fmt.Sprintf("singleton dependency cycle: %v", names))
			return
		}
		state[p] = 1
		for _, d := range deps[p] {
			visit(d, append(path, p))
		}
		state[p] = 2
		order = append(order, p)
	}
	var keys []*Provider
	for p := range deps {
		keys = append(keys, p)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Loc < keys[j].Loc })
	for _, p := range keys {
		visit(p, nil)
	}
	return order, problems
}
