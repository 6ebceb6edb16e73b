package dispytch

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/go-playground/validator/v10"

	"github.com/dispytch/dispytch-go/codec"
)

// Provider supplies values of one type to handlers and to other providers.
// Build one with Provide or Value and pass it to NewListener.
type Provider struct {
	fn        reflect.Value
	val       reflect.Value
	isValue   bool
	out       reflect.Type
	ins       []reflect.Type
	ret       retShape
	singleton bool
	noCache   bool
	override  bool
	name, loc string
	problem   string

	// words holds the value of a Value of a word kind.
	words iword
}

// constSlot holds the value of a Value or a singleton for one compile of a
// listener (one Run): a Provider given to two listeners keeps no state of
// its own.
type constSlot struct {
	v reflect.Value
	w iword // the value's words on the word path
	// ready is set once a singleton's value is in the slot.
	ready bool
}

type retShape uint8

const (
	retT retShape = iota
	retTErr
	retTCleanupErr
)

// ProviderOption configures a Provider.
type ProviderOption func(*Provider)

// NoCache makes the provider run once for every parameter that needs it,
// instead of once per handler attempt.
func NoCache() ProviderOption { return func(p *Provider) { p.noCache = true } }

// Singleton makes the provider run once, when the listener starts; its
// cleanup runs when Run returns. A singleton may depend on context.Context
// (Run's context), values and other singletons only.
func Singleton() ProviderOption { return func(p *Provider) { p.singleton = true } }

var (
	ctxType       = reflect.TypeFor[context.Context]()
	metaType      = reflect.TypeFor[Metadata]()
	errType       = reflect.TypeFor[error]()
	cleanupType   = reflect.TypeFor[func()]()
	eventMakerT   = reflect.TypeFor[eventMaker]()
	segMakerT     = reflect.TypeFor[segmentsMaker]()
	validatorT    = reflect.TypeFor[interface{ Validate() error }]()
	textUnmarshal = reflect.TypeFor[encoding.TextUnmarshaler]()
	pkgPath       = reflect.TypeFor[Metadata]().PkgPath()
)

// Provide registers a provider function. Its parameters are resolved like a
// handler's (context.Context, Event[T], Metadata, Segments[S] and provided
// types), and it returns T, (T, error) or (T, func(), error), where func() is
// a cleanup that runs after the handler attempt, also when it fails or
// panics. By default it runs at most once per handler attempt.
//
//	func NewUserService(ctx context.Context, db *DB) (*UserService, func(), error)
func Provide(fn any, opts ...ProviderOption) *Provider {
	p := &Provider{}
	v := reflect.ValueOf(fn)
	if fn == nil || v.Kind() != reflect.Func || v.IsNil() {
		_, file, line, _ := runtime.Caller(1)
		p.name, p.loc = fmt.Sprintf("%T", fn), fmt.Sprintf("%s:%d", shortFile(file), line)
		p.problem = fmt.Sprintf("provider %s at %s is not a function", p.name, p.loc)
		return p
	}
	p.fn = v
	p.name, p.loc = funcInfo(v)
	t := v.Type()
	for i := 0; i < t.NumIn(); i++ {
		p.ins = append(p.ins, t.In(i))
	}
	switch {
	case t.IsVariadic():
		p.problem = "is variadic"
	case t.NumOut() == 1 && t.Out(0) != errType:
		p.ret = retT
	case t.NumOut() == 2 && t.Out(1) == errType:
		p.ret = retTErr
	case t.NumOut() == 3 && t.Out(1) == cleanupType && t.Out(2) == errType:
		p.ret = retTCleanupErr
	default:
		p.problem = fmt.Sprintf("returns %s; want T, (T, error) or (T, func(), error)", outs(t))
	}
	if p.problem != "" {
		p.problem = fmt.Sprintf("provider %s (%s) %s", p.name, p.loc, p.problem)
	} else {
		p.out = t.Out(0)
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func outs(t reflect.Type) string {
	var s []string
	for i := 0; i < t.NumOut(); i++ {
		s = append(s, t.Out(i).String())
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// Value registers v as the value of type T for every parameter of that type.
// T may be an interface: Value[Store](pg) supplies Store.
func Value[T any](v T) *Provider {
	t := reflect.TypeFor[T]()
	rv := reflect.ValueOf(&v).Elem()
	_, file, line, _ := runtime.Caller(1)
	p := &Provider{val: rv, isValue: true, out: t, name: "Value[" + t.String() + "]", loc: fmt.Sprintf("%s:%d", shortFile(file), line)}
	if wordKind(t) != wNone {
		p.words = wordsOf(rv)
	}
	return p
}

// Override replaces the provider of p's type, as FastAPI's
// dependency_overrides does: use it in tests to swap a real dependency for a
// fake without touching the handlers.
//
//	dispytch.Override(dispytch.Value[*UserService](fake))
func Override(p *Provider) ListenerOption {
	c := *p
	c.override = true
	return &c
}

func (p *Provider) applyListener(l *Listener) { l.providers = append(l.providers, p) }

// eventMaker is implemented by *Event[T].
type eventMaker interface {
	makeEvent(a *attempt, vi *bodyValidation, pool *sync.Pool) (reflect.Value, any, error)
	wordCall(form hform, deps []wkind) handlerCall
	reset(o any)
	bodyType() reflect.Type
	direct(fn any) directCall
}

// directCall calls a handler of a common shape without reflection; ev is
// the *Event[T] built for the attempt.
type directCall func(ctx context.Context, ev any) error

// segmentsMaker is implemented by *Segments[S].
type segmentsMaker interface {
	makeSegments(a *attempt, b *segBinder) (reflect.Value, error)
	valueType() reflect.Type
}

// Segments binds the topic's wildcard segments into a struct S, converting
// them to the field types and validating them with `validate` tags. A field
// takes the segment named by its `segment` tag, or the one whose name equals
// the field's name ignoring case and underscores (UserID takes {user_id}).
// A value that does not convert or validate fails the attempt with
// ErrValidation, before the handler runs.
//
//	func(ev dispytch.Event[Note], seg dispytch.Segments[struct {
//		UserID int `segment:"user_id" validate:"gt=0"`
//	}]) error
type Segments[S any] struct {
	Value S
}

func (*Segments[S]) valueType() reflect.Type { return reflect.TypeFor[S]() }

func (*Segments[S]) makeSegments(a *attempt, b *segBinder) (reflect.Value, error) {
	s := new(Segments[S])
	if err := b.bind(reflect.ValueOf(&s.Value).Elem(), a.meta.seg); err != nil {
		return reflect.Value{}, err
	}
	if err := b.vi.check(a.v, &s.Value); err != nil {
		return reflect.Value{}, err
	}
	return reflect.ValueOf(s).Elem(), nil
}

func (*Event[T]) bodyType() reflect.Type { return reflect.TypeFor[T]() }

func (*Event[T]) makeEvent(a *attempt, vi *bodyValidation, pool *sync.Pool) (reflect.Value, any, error) {
	ev, _ := pool.Get().(*Event[T])
	if ev == nil {
		ev = new(Event[T])
	}
	ev.Metadata = *a.meta
	if err := decodeBody(a, &ev.Body); err != nil {
		return reflect.Value{}, ev, err
	}
	if err := vi.check(a.v, &ev.Body); err != nil {
		return reflect.Value{}, ev, err
	}
	return reflect.ValueOf(ev).Elem(), ev, nil
}

func (*Event[T]) reset(o any) { *o.(*Event[T]) = Event[T]{} }

// direct returns a reflection-free caller when fn is one of the common
// handler shapes, func([context.Context,] Event[T]) [error], or nil.
func (*Event[T]) direct(fn any) directCall {
	switch f := fn.(type) {
	case func(Event[T]) error:
		return func(_ context.Context, ev any) error { return f(*ev.(*Event[T])) }
	case func(context.Context, Event[T]) error:
		return func(ctx context.Context, ev any) error { return f(ctx, *ev.(*Event[T])) }
	case func(Event[T]):
		return func(_ context.Context, ev any) error { f(*ev.(*Event[T])); return nil }
	case func(context.Context, Event[T]):
		return func(ctx context.Context, ev any) error { f(ctx, *ev.(*Event[T])); return nil }
	}
	return nil
}

func decodeBody(a *attempt, v any) error {
	if p, ok := v.(*[]byte); ok {
		// The body as it is on the wire, checked when the codec can.
		if bv, ok := a.codec.(codec.BodyValidator); ok && !bv.ValidBody(a.body) {
			return fmt.Errorf("%w: body of %q is not valid %s", ErrDecode, a.meta.Type, a.codec.ContentType())
		}
		*p = append([]byte(nil), a.body...)
		return nil
	}
	if err := a.codec.Unmarshal(a.body, v, a.strict); err != nil {
		return fmt.Errorf("%w: body of %q into %T: %w", ErrDecode, a.meta.Type, v, err)
	}
	return nil
}

// bodyValidation says how to validate a body or segments type, decided once.
type bodyValidation struct {
	tags   bool // run the validator
	deref  bool // T is a pointer to a struct
	method bool // T or *T has Validate() error
}

func newBodyValidation(t reflect.Type) *bodyValidation {
	vi := &bodyValidation{}
	st := t
	if st.Kind() == reflect.Pointer {
		st, vi.deref = st.Elem(), true
	}
	if st.Kind() == reflect.Struct {
		vi.tags = hasValidateTags(st, map[reflect.Type]bool{})
	} else {
		vi.deref = false
	}
	vi.method = t.Implements(validatorT) || reflect.PointerTo(t).Implements(validatorT)
	return vi
}

func hasValidateTags(t reflect.Type, seen map[reflect.Type]bool) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("validate"); ok {
			return true
		}
		if hasValidateTags(f.Type, seen) {
			return true
		}
	}
	return false
}

// check validates *ptr (ptr is a *T).
func (vi *bodyValidation) check(v *validator.Validate, ptr any) error {
	if vi.tags {
		target := ptr
		if vi.deref {
			rv := reflect.ValueOf(ptr).Elem()
			if rv.IsNil() {
				return fmt.Errorf("%w: body is null", ErrValidation)
			}
			target = rv.Interface()
		}
		if err := v.Struct(target); err != nil {
			return fmt.Errorf("%w: %w", ErrValidation, err)
		}
	}
	if vi.method {
		var err error
		if m, ok := ptr.(interface{ Validate() error }); ok {
			err = m.Validate()
		} else if m, ok := reflect.ValueOf(ptr).Elem().Interface().(interface{ Validate() error }); ok {
			err = m.Validate()
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrValidation, err)
		}
	}
	return nil
}

// segBinder binds segment values into the fields of a struct.
type segBinder struct {
	fields []segField
	vi     *bodyValidation
}

type segField struct {
	index []int
	name  string
	pos   int // index into the pattern's wildcard values
	conv  func(s string, dst reflect.Value) error
}

func (b *segBinder) bind(dst reflect.Value, m *segmentMatch) error {
	for i := range b.fields {
		f := &b.fields[i]
		s := m.vals[f.pos]
		if err := f.conv(s, dst.FieldByIndex(f.index)); err != nil {
			return fmt.Errorf("%w: segment %q = %q: %w", ErrValidation, f.name, s, err)
		}
	}
	return nil
}

func normName(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", ""))
}

// newSegBinder compiles the binding of struct t to the wildcards of pat.
func newSegBinder(t reflect.Type, pat *Pattern) (*segBinder, []string) {
	if t.Kind() != reflect.Struct {
		return nil, []string{fmt.Sprintf("Segments[%s]: %s is not a struct", t, t)}
	}
	b := &segBinder{vi: newBodyValidation(t)}
	var problems []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, tagged := f.Tag.Lookup("segment")
		if name == "-" {
			continue
		}
		pos := -1
		for j, n := range pat.names {
			if n == "" {
				continue
			}
			if (tagged && n == name) || (!tagged && normName(n) == normName(f.Name)) {
				pos, name = j, n
				break
			}
		}
		if pos < 0 {
			want := name
			if !tagged {
				want = f.Name
			}
			problems = append(problems, fmt.Sprintf("Segments[%s]: field %s wants segment %q, but topic %q has no such wildcard", t, f.Name, want, pat.String()))
			continue
		}
		conv, err := segConverter(f.Type)
		if err != nil {
			problems = append(problems, fmt.Sprintf("Segments[%s]: field %s: %v", t, f.Name, err))
			continue
		}
		b.fields = append(b.fields, segField{index: f.Index, name: name, pos: pos, conv: conv})
	}
	return b, problems
}

func segConverter(t reflect.Type) (func(string, reflect.Value) error, error) {
	if reflect.PointerTo(t).Implements(textUnmarshal) {
		return func(s string, dst reflect.Value) error {
			return dst.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
		}, nil
	}
	switch t.Kind() {
	case reflect.String:
		return func(s string, dst reflect.Value) error { dst.SetString(s); return nil }, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseInt(s, 10, bits)
			if err != nil {
				return err
			}
			dst.SetInt(n)
			return nil
		}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseUint(s, 10, bits)
			if err != nil {
				return err
			}
			dst.SetUint(n)
			return nil
		}, nil
	case reflect.Float32, reflect.Float64:
		bits := t.Bits()
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseFloat(s, bits)
			if err != nil {
				return err
			}
			dst.SetFloat(n)
			return nil
		}, nil
	case reflect.Bool:
		return func(s string, dst reflect.Value) error {
			n, err := strconv.ParseBool(s)
			if err != nil {
				return err
			}
			dst.SetBool(n)
			return nil
		}, nil
	}
	return nil, fmt.Errorf("cannot convert a segment to %s", t)
}

// ---- the compiled plan ----

type nodeKind uint8

const (
	nCtx nodeKind = iota
	nMeta
	nEvent
	nSegments
	nProvider
	nConst
)

type node struct {
	kind   nodeKind
	args   []int
	prov   *Provider
	event  eventMaker
	vi     *bodyValidation
	seg    segmentsMaker
	binder *segBinder
	pool   *sync.Pool // reusable *Event[T] of an event node
	slot   *constSlot // the value of a constant node
	// The word path of a provider node (see di_words.go).
	pcall provCall
	pfn   word
}

// release gives a pooled object back once the call it served returned: the
// handler got a copy of the value, so the object is free again.
func (n *node) release(o any) {
	n.event.reset(o)
	n.pool.Put(o)
}

// plan is a handler (or a singleton provider) with its dependencies resolved
// into nodes in dependency order. Running it never inspects types.
type plan struct {
	nodes   []node
	fn      reflect.Value
	args    []int
	retErr  bool
	maxArgs int
	pool    sync.Pool // *scratch
	// direct, when set, calls the handler without reflection; it takes the
	// event built by node evNode.
	direct directCall
	evNode int
	// hcall, when set, runs the plan on its word path (di_words.go): it
	// calls the handler hfn with the event of node evNode and the values
	// of nodes hdeps.
	hcall handlerCall
	hfn   word
	hdeps []int
}

// errDependency marks a provider failure.
var errDependency = errors.New("dependency failed")

func dependencyError(p *Provider, err error) error {
	return fmt.Errorf("%w: %s: %w", errDependency, p.name, err)
}

// attempt is the state of one handler attempt.
type attempt struct {
	meta   *Metadata
	body   []byte
	codec  codec.Codec
	strict bool
	v      *validator.Validate
}

// scratch is the reusable state of one run of a plan.
type scratch struct {
	a        attempt
	vals     []reflect.Value
	args     []reflect.Value
	pooled   []any // per node: an object to give back to the node's pool
	cleanups []func()
	words    []iword // per node: its value on the word path
	win      []iword // arguments on the word path
}

func (p *plan) getScratch() *scratch {
	if s, ok := p.pool.Get().(*scratch); ok {
		return s
	}
	return &scratch{
		vals:   make([]reflect.Value, len(p.nodes)),
		args:   make([]reflect.Value, p.maxArgs),
		pooled: make([]any, len(p.nodes)),
		words:  make([]iword, len(p.nodes)),
		win:    make([]iword, p.maxArgs),
	}
}

func (p *plan) putScratch(s *scratch) {
	for i, o := range s.pooled {
		if o != nil {
			p.nodes[i].release(o)
			s.pooled[i] = nil
		}
	}
	clear(s.vals)
	clear(s.args)
	clear(s.words)
	clear(s.win)
	clear(s.cleanups)
	s.cleanups = s.cleanups[:0]
	s.a = attempt{}
	p.pool.Put(s)
}

// run resolves the dependencies and calls the function. Cleanups run in
// reverse order before it returns, also when something panics (the panic
// continues after them).
func (p *plan) run(ctx context.Context, a attempt) (out []reflect.Value, err error) {
	s := p.getScratch()
	s.a = a
	defer func() {
		// Every cleanup runs even if one panics; the first panic is raised
		// again afterwards, so the attempt fails with ErrPanic.
		var panicked any
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
		p.putScratch(s)
		if panicked != nil {
			panic(panicked)
		}
	}()
	if p.hcall != nil {
		return nil, p.runWords(ctx, s)
	}
	vals := s.vals
	for i := range p.nodes {
		n := &p.nodes[i]
		switch n.kind {
		case nCtx:
			vals[i] = reflect.ValueOf(ctx)
		case nMeta:
			vals[i] = reflect.ValueOf(s.a.meta).Elem()
		case nEvent:
			v, obj, err := n.event.makeEvent(&s.a, n.vi, n.pool)
			s.pooled[i] = obj
			if err != nil {
				return nil, err
			}
			vals[i] = v
		case nSegments:
			v, err := n.seg.makeSegments(&s.a, n.binder)
			if err != nil {
				return nil, err
			}
			vals[i] = v
		case nConst:
			vals[i] = n.slot.v
		case nProvider:
			args := s.args[:len(n.args)]
			for j, k := range n.args {
				args[j] = vals[k]
			}
			res := n.prov.fn.Call(args)
			switch n.prov.ret {
			case retTErr:
				if e := res[1]; !e.IsNil() {
					return nil, dependencyError(n.prov, e.Interface().(error))
				}
			case retTCleanupErr:
				if c := res[1]; !c.IsNil() {
					s.cleanups = append(s.cleanups, c.Interface().(func()))
				}
				if e := res[2]; !e.IsNil() {
					return nil, dependencyError(n.prov, e.Interface().(error))
				}
			}
			vals[i] = res[0]
		}
	}
	if p.direct != nil {
		return nil, p.direct(ctx, s.pooled[p.evNode])
	}
	args := s.args[:len(p.args)]
	for j, k := range p.args {
		args[j] = vals[k]
	}
	out = p.fn.Call(args)
	if p.retErr {
		if e := out[0]; !e.IsNil() {
			return out, e.Interface().(error)
		}
	}
	return out, nil
}

func (p *plan) setMaxArgs() {
	p.maxArgs = len(p.args)
	for _, n := range p.nodes {
		p.maxArgs = max(p.maxArgs, len(n.args))
	}
}

// compiler resolves one plan.
type compiler struct {
	provs     map[reflect.Type]*Provider
	pattern   *Pattern // nil for singletons
	singleton bool
	where     string
	p         *plan
	cache     map[reflect.Type]int
	stack     []reflect.Type
	problems  []string
	deps      []*Provider // singletons a singleton (or handler) depends on
	slots     map[*Provider]*constSlot
}

// slot returns the compile's slot for a Value or singleton provider.
func (c *compiler) slot(p *Provider) *constSlot {
	if s := c.slots[p]; s != nil {
		return s
	}
	s := &constSlot{}
	if p.isValue {
		s.v, s.w, s.ready = p.val, p.words, true
	}
	c.slots[p] = s
	return s
}

func (c *compiler) problem(format string, args ...any) {
	c.problems = append(c.problems, c.where+": "+fmt.Sprintf(format, args...))
}

func (c *compiler) add(n node) int {
	c.p.nodes = append(c.p.nodes, n)
	return len(c.p.nodes) - 1
}

// resolve returns the node supplying t, adding it (and what it needs).
func (c *compiler) resolve(t reflect.Type, chain string) (int, bool) {
	if i, ok := c.cache[t]; ok {
		return i, true
	}
	ctxOnly := func(what string) (int, bool) {
		c.problem("%s: a singleton cannot depend on %s", chain, what)
		return -1, false
	}
	switch {
	case t == ctxType:
		return c.cached(t, node{kind: nCtx}), true
	case t == metaType:
		if c.singleton {
			return ctxOnly("the event's Metadata")
		}
		return c.cached(t, node{kind: nMeta}), true
	case t.PkgPath() == pkgPath && strings.HasPrefix(t.Name(), "Event[") && reflect.PointerTo(t).Implements(eventMakerT):
		if c.singleton {
			return ctxOnly(t.String())
		}
		em := reflect.New(t).Interface().(eventMaker)
		return c.cached(t, node{kind: nEvent, event: em, vi: newBodyValidation(em.bodyType()), pool: &sync.Pool{}}), true
	case t.PkgPath() == pkgPath && strings.HasPrefix(t.Name(), "Segments[") && reflect.PointerTo(t).Implements(segMakerT):
		if c.singleton {
			return ctxOnly(t.String())
		}
		sm := reflect.New(t).Interface().(segmentsMaker)
		b, probs := newSegBinder(sm.valueType(), c.pattern)
		for _, pr := range probs {
			c.problem("%s", pr)
		}
		if b == nil || len(probs) > 0 {
			return -1, false
		}
		return c.cached(t, node{kind: nSegments, seg: sm, binder: b}), true
	}
	prov := c.provs[t]
	if prov == nil {
		c.problem("%s: no provider for %s", chain, t)
		return -1, false
	}
	if prov.isValue {
		return c.cached(t, node{kind: nConst, prov: prov, slot: c.slot(prov)}), true
	}
	for _, s := range c.stack {
		if s == t {
			c.problem("%s: dependency cycle: %s", chain, cycleText(c.stack, t))
			return -1, false
		}
	}
	if prov.singleton {
		c.deps = append(c.deps, prov)
		return c.cached(t, node{kind: nConst, prov: prov, slot: c.slot(prov)}), true
	}
	if c.singleton {
		c.problem("%s: a singleton cannot depend on %s, which %s provides per attempt", chain, t, prov.name)
		return -1, false
	}
	c.stack = append(c.stack, t)
	defer func() { c.stack = c.stack[:len(c.stack)-1] }()
	args := make([]int, len(prov.ins))
	ok := true
	for i, in := range prov.ins {
		a, good := c.resolve(in, chain+" → "+in.String())
		args[i], ok = a, ok && good
	}
	if !ok {
		return -1, false
	}
	n := node{kind: nProvider, prov: prov, args: args}
	if prov.noCache {
		return c.add(n), true
	}
	return c.cached(t, n), true
}

func (c *compiler) cached(t reflect.Type, n node) int {
	i := c.add(n)
	c.cache[t] = i
	return i
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

// compileHandler builds the plan of a handler function. It also returns the
// singletons the handler needs directly.
func compileHandler(fn reflect.Value, where string, pat *Pattern, provs map[reflect.Type]*Provider, slots map[*Provider]*constSlot) (*plan, []*Provider, []string) {
	c := &compiler{provs: provs, pattern: pat, where: where, p: &plan{fn: fn}, cache: map[reflect.Type]int{}, slots: slots}
	t := fn.Type()
	switch {
	case t.IsVariadic():
		c.problem("handler is variadic")
	case t.NumOut() == 0:
	case t.NumOut() == 1 && t.Out(0) == errType:
		c.p.retErr = true
	default:
		c.problem("handler returns %s; want error or nothing", outs(t))
	}
	events := 0
	for i := 0; i < t.NumIn(); i++ {
		in := t.In(i)
		if in.PkgPath() == pkgPath && strings.HasPrefix(in.Name(), "Event[") {
			events++
		}
		a, _ := c.resolve(in, fmt.Sprintf("parameter %d (%s)", i+1, in))
		c.p.args = append(c.p.args, a)
	}
	if events > 1 {
		c.problem("handler takes %d Event parameters; want at most one", events)
	}
	c.p.setMaxArgs()
	// Common shapes skip reflection on every call.
	for i, n := range c.p.nodes {
		if n.kind == nEvent && len(c.problems) == 0 {
			if d := n.event.direct(fn.Interface()); d != nil {
				c.p.direct, c.p.evNode = d, i
			}
		}
	}
	if len(c.problems) == 0 {
		c.p.compileWords(fn)
	}
	return c.p, c.deps, c.problems
}

// compileSingleton builds the plan of a singleton provider, and lists the
// singletons it depends on.
func compileSingleton(p *Provider, provs map[reflect.Type]*Provider, slots map[*Provider]*constSlot) (*plan, []*Provider, []string) {
	c := &compiler{provs: provs, singleton: true, where: fmt.Sprintf("singleton %s (%s)", p.name, p.loc), p: &plan{fn: p.fn}, cache: map[reflect.Type]int{}, slots: slots}
	c.stack = []reflect.Type{p.out}
	for i, in := range p.ins {
		a, _ := c.resolve(in, fmt.Sprintf("parameter %d (%s)", i+1, in))
		c.p.args = append(c.p.args, a)
	}
	c.p.setMaxArgs()
	return c.p, c.deps, c.problems
}

// GraphError lists every problem found in the handlers' dependencies.
// It wraps ErrInvalidGraph.
type GraphError struct {
	Problems []string
}

func (g *GraphError) Error() string {
	return fmt.Sprintf("dispytch: %d dependency problem(s):\n  - %s", len(g.Problems), strings.Join(g.Problems, "\n  - "))
}

// Unwrap returns ErrInvalidGraph.
func (g *GraphError) Unwrap() error { return ErrInvalidGraph }

// providerMap indexes providers by type, reporting bad signatures and
// types with two providers. Overrides replace.
func providerMap(ps []*Provider) (map[reflect.Type]*Provider, []string) {
	var problems []string
	m := map[reflect.Type]*Provider{}
	over := map[reflect.Type]*Provider{}
	for _, p := range ps {
		if p.problem != "" {
			problems = append(problems, p.problem)
			continue
		}
		target := m
		if p.override {
			target = over
		}
		if prev := target[p.out]; prev != nil {
			problems = append(problems, fmt.Sprintf("two providers for %s: %s (%s) and %s (%s)", p.out, prev.name, prev.loc, p.name, p.loc))
			continue
		}
		target[p.out] = p
	}
	for t, p := range over {
		m[t] = p
	}
	sort.Strings(problems)
	return m, problems
}
