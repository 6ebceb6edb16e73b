package dispytch

import (
	"context"
	"reflect"
	"unsafe"
)

// Calling providers and handlers without reflect.Value.Call.
//
// reflect.Value.Call was a third of the framework's own cost per event for
// a handler with one injected dependency (two calls: the provider and the
// handler, ~0.35 µs each with their allocations). Most DI graphs pass only
// pointer-like values (pointers, maps, channels, funcs) and interfaces
// (context.Context, a Store), so a plan whose every value is one of those
// calls its functions through a function type of the same shape: every
// pointer-like parameter or result is passed as an unsafe.Pointer (one
// pointer word) and every interface as a struct of two pointer words. Go's
// calling convention assigns both forms exactly as it assigns the declared
// types (one integer register, or two, or the same stack words), so the
// callee receives what it was declared to receive. The Event[T] parameter
// keeps its real type: the callers are generic in T. Other shapes (struct
// or string dependencies, Metadata, Segments, Event parameters of
// providers, more than three dependencies) keep the reflective path.
//
// The words are real pointers in unsafe.Pointer fields, so the garbage
// collector sees them.

// word is a pointer-like value: pointer, map, channel, func or
// unsafe.Pointer.
type word = unsafe.Pointer

// iword is an interface value, or a word in its first field.
type iword struct{ a, b unsafe.Pointer }

type wordish interface{ word | iword }

// wkind says how a type is passed as words.
type wkind uint8

const (
	wNone wkind = iota // not as words
	wOne               // one pointer word
	wTwo               // an interface: two words
)

func wordKind(t reflect.Type) wkind {
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return wOne
	case reflect.Interface:
		return wTwo
	}
	return wNone
}

// wordsOf returns the words of v, whose type has a word kind.
func wordsOf(v reflect.Value) iword {
	st := reflect.New(v.Type())
	st.Elem().Set(v)
	p := st.UnsafePointer()
	if wordKind(v.Type()) == wOne {
		return iword{a: *(*word)(p)}
	}
	return *(*iword)(p)
}

// funcWord returns the function value held by f as a word.
func funcWord(f any) word { return (*[2]word)(unsafe.Pointer(&f))[1] }

func get[A wordish](w *iword) A { return *(*A)(unsafe.Pointer(w)) }

func put[A wordish](a A) (w iword) {
	*(*A)(unsafe.Pointer(&w)) = a
	return w
}

// provCall calls the provider fn with the arguments in; it returns the
// value, the cleanup (nil without one) and the error.
type provCall func(fn word, in []iword, ret retShape) (iword, word, error)

func prov0[R wordish](fn word, _ []iword, ret retShape) (iword, word, error) {
	switch ret {
	case retT:
		return put((*(*func() R)(unsafe.Pointer(&fn)))()), nil, nil
	case retTErr:
		r, err := (*(*func() (R, error))(unsafe.Pointer(&fn)))()
		return put(r), nil, err
	}
	r, c, err := (*(*func() (R, word, error))(unsafe.Pointer(&fn)))()
	return put(r), c, err
}

func prov1[A, R wordish](fn word, in []iword, ret retShape) (iword, word, error) {
	a := get[A](&in[0])
	switch ret {
	case retT:
		return put((*(*func(A) R)(unsafe.Pointer(&fn)))(a)), nil, nil
	case retTErr:
		r, err := (*(*func(A) (R, error))(unsafe.Pointer(&fn)))(a)
		return put(r), nil, err
	}
	r, c, err := (*(*func(A) (R, word, error))(unsafe.Pointer(&fn)))(a)
	return put(r), c, err
}

func prov2[A, B, R wordish](fn word, in []iword, ret retShape) (iword, word, error) {
	a, b := get[A](&in[0]), get[B](&in[1])
	switch ret {
	case retT:
		return put((*(*func(A, B) R)(unsafe.Pointer(&fn)))(a, b)), nil, nil
	case retTErr:
		r, err := (*(*func(A, B) (R, error))(unsafe.Pointer(&fn)))(a, b)
		return put(r), nil, err
	}
	r, c, err := (*(*func(A, B) (R, word, error))(unsafe.Pointer(&fn)))(a, b)
	return put(r), c, err
}

func prov3[A, B, C, R wordish](fn word, in []iword, ret retShape) (iword, word, error) {
	a, b, c3 := get[A](&in[0]), get[B](&in[1]), get[C](&in[2])
	switch ret {
	case retT:
		return put((*(*func(A, B, C) R)(unsafe.Pointer(&fn)))(a, b, c3)), nil, nil
	case retTErr:
		r, err := (*(*func(A, B, C) (R, error))(unsafe.Pointer(&fn)))(a, b, c3)
		return put(r), nil, err
	}
	r, c, err := (*(*func(A, B, C) (R, word, error))(unsafe.Pointer(&fn)))(a, b, c3)
	return put(r), c, err
}

func selProv0(out wkind) provCall {
	if out == wOne {
		return prov0[word]
	}
	return prov0[iword]
}

func selProv1[A wordish](out wkind) provCall {
	if out == wOne {
		return prov1[A, word]
	}
	return prov1[A, iword]
}

func selProv2[A, B wordish](out wkind) provCall {
	if out == wOne {
		return prov2[A, B, word]
	}
	return prov2[A, B, iword]
}

func selProv3[A, B, C wordish](out wkind) provCall {
	if out == wOne {
		return prov3[A, B, C, word]
	}
	return prov3[A, B, C, iword]
}

// provThunk returns the caller of a provider with parameters of kinds ins
// (at most three) and a value of kind out, or nil.
func provThunk(ins []wkind, out wkind) provCall {
	k := func(i int) bool { return ins[i] == wOne }
	switch len(ins) {
	case 0:
		return selProv0(out)
	case 1:
		if k(0) {
			return selProv1[word](out)
		}
		return selProv1[iword](out)
	case 2:
		switch {
		case k(0) && k(1):
			return selProv2[word, word](out)
		case k(0):
			return selProv2[word, iword](out)
		case k(1):
			return selProv2[iword, word](out)
		}
		return selProv2[iword, iword](out)
	case 3:
		switch {
		case k(0) && k(1) && k(2):
			return selProv3[word, word, word](out)
		case k(0) && k(1):
			return selProv3[word, word, iword](out)
		case k(0) && k(2):
			return selProv3[word, iword, word](out)
		case k(0):
			return selProv3[word, iword, iword](out)
		case k(1) && k(2):
			return selProv3[iword, word, word](out)
		case k(1):
			return selProv3[iword, word, iword](out)
		case k(2):
			return selProv3[iword, iword, word](out)
		}
		return selProv3[iword, iword, iword](out)
	}
	return nil
}

// hform is a handler's form around its Event parameter: whether
// context.Context comes first, and whether it returns an error.
type hform uint8

const (
	hPlain  hform = iota // func(Event[T], deps...)
	hErr                 // func(Event[T], deps...) error
	hCtx                 // func(context.Context, Event[T], deps...)
	hCtxErr              // func(context.Context, Event[T], deps...) error
)

// handlerCall calls the handler fn with ctx, the *Event[T] ev and the
// dependencies deps.
type handlerCall func(fn word, ctx context.Context, ev any, deps []iword) error

func hand1[T any, A wordish](form hform) handlerCall {
	switch form {
	case hPlain:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			(*(*func(Event[T], A))(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]))
			return nil
		}
	case hErr:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			return (*(*func(Event[T], A) error)(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]))
		}
	case hCtx:
		return func(fn word, ctx context.Context, ev any, d []iword) error {
			(*(*func(context.Context, Event[T], A))(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]))
			return nil
		}
	}
	return func(fn word, ctx context.Context, ev any, d []iword) error {
		return (*(*func(context.Context, Event[T], A) error)(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]))
	}
}

func hand2[T any, A, B wordish](form hform) handlerCall {
	switch form {
	case hPlain:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			(*(*func(Event[T], A, B))(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]))
			return nil
		}
	case hErr:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			return (*(*func(Event[T], A, B) error)(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]))
		}
	case hCtx:
		return func(fn word, ctx context.Context, ev any, d []iword) error {
			(*(*func(context.Context, Event[T], A, B))(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]))
			return nil
		}
	}
	return func(fn word, ctx context.Context, ev any, d []iword) error {
		return (*(*func(context.Context, Event[T], A, B) error)(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]))
	}
}

func hand3[T any, A, B, C wordish](form hform) handlerCall {
	switch form {
	case hPlain:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			(*(*func(Event[T], A, B, C))(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]), get[C](&d[2]))
			return nil
		}
	case hErr:
		return func(fn word, _ context.Context, ev any, d []iword) error {
			return (*(*func(Event[T], A, B, C) error)(unsafe.Pointer(&fn)))(*ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]), get[C](&d[2]))
		}
	case hCtx:
		return func(fn word, ctx context.Context, ev any, d []iword) error {
			(*(*func(context.Context, Event[T], A, B, C))(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]), get[C](&d[2]))
			return nil
		}
	}
	return func(fn word, ctx context.Context, ev any, d []iword) error {
		return (*(*func(context.Context, Event[T], A, B, C) error)(unsafe.Pointer(&fn)))(ctx, *ev.(*Event[T]), get[A](&d[0]), get[B](&d[1]), get[C](&d[2]))
	}
}

// handlerThunk returns the caller of a handler of form with dependencies of
// kinds deps (one to three), or nil.
func handlerThunk[T any](form hform, deps []wkind) handlerCall {
	k := func(i int) bool { return deps[i] == wOne }
	switch len(deps) {
	case 1:
		if k(0) {
			return hand1[T, word](form)
		}
		return hand1[T, iword](form)
	case 2:
		switch {
		case k(0) && k(1):
			return hand2[T, word, word](form)
		case k(0):
			return hand2[T, word, iword](form)
		case k(1):
			return hand2[T, iword, word](form)
		}
		return hand2[T, iword, iword](form)
	case 3:
		switch {
		case k(0) && k(1) && k(2):
			return hand3[T, word, word, word](form)
		case k(0) && k(1):
			return hand3[T, word, word, iword](form)
		case k(0) && k(2):
			return hand3[T, word, iword, word](form)
		case k(0):
			return hand3[T, word, iword, iword](form)
		case k(1) && k(2):
			return hand3[T, iword, word, word](form)
		case k(1):
			return hand3[T, iword, word, iword](form)
		case k(2):
			return hand3[T, iword, iword, word](form)
		}
		return hand3[T, iword, iword, iword](form)
	}
	return nil
}

func (*Event[T]) wordCall(form hform, deps []wkind) handlerCall {
	return handlerThunk[T](form, deps)
}

// compileWords sets up the word path of a handler plan when every value in
// it can be passed as words.
func (p *plan) compileWords(fn reflect.Value) {
	if p.direct != nil {
		return
	}
	t := fn.Type()
	form, i := hPlain, 0
	if t.NumIn() > 0 && t.In(0) == ctxType {
		form, i = hCtx, 1
	}
	if p.retErr {
		form++
	}
	if i >= len(p.args) || p.args[i] < 0 || p.nodes[p.args[i]].kind != nEvent {
		return
	}
	evNode, deps := p.args[i], p.args[i+1:]
	if len(deps) == 0 || len(deps) > 3 {
		return
	}
	kinds := make([]wkind, len(p.nodes))
	for j := range p.nodes {
		n := &p.nodes[j]
		switch n.kind {
		case nCtx:
			kinds[j] = wTwo
		case nEvent:
			// Only the handler's own Event parameter.
		case nConst:
			kinds[j] = wordKind(n.prov.out)
		case nProvider:
			kinds[j] = wordKind(n.prov.out)
			if len(n.args) > 3 {
				return
			}
			ins := make([]wkind, len(n.args))
			for a, k := range n.args {
				if ins[a] = kinds[k]; ins[a] == wNone {
					return
				}
			}
			n.pcall, n.pfn = provThunk(ins, kinds[j]), funcWord(n.prov.fn.Interface())
		}
		if kinds[j] == wNone && j != evNode {
			return
		}
	}
	dk := make([]wkind, len(deps))
	for j, k := range deps {
		if k == evNode || kinds[k] == wNone {
			return
		}
		dk[j] = kinds[k]
	}
	p.hcall = p.nodes[evNode].event.wordCall(form, dk)
	p.hfn, p.hdeps, p.evNode = funcWord(fn.Interface()), deps, evNode
}

// runWords is run's word path: p.hcall is set.
func (p *plan) runWords(ctx context.Context, s *scratch) error {
	words := s.words
	for i := range p.nodes {
		n := &p.nodes[i]
		switch n.kind {
		case nCtx:
			words[i] = *(*iword)(unsafe.Pointer(&ctx))
		case nEvent:
			_, obj, err := n.event.makeEvent(&s.a, n.vi, n.pool)
			s.pooled[i] = obj
			if err != nil {
				return err
			}
		case nConst:
			words[i] = n.slot.w
		case nProvider:
			in := s.win[:len(n.args)]
			for j, k := range n.args {
				in[j] = words[k]
			}
			out, c, err := n.pcall(n.pfn, in, n.prov.ret)
			if c != nil {
				s.cleanups = append(s.cleanups, *(*func())(unsafe.Pointer(&c)))
			}
			if err != nil {
				return dependencyError(n.prov, err)
			}
			words[i] = out
		}
	}
	deps := s.win[:len(p.hdeps)]
	for j, k := range p.hdeps {
		deps[j] = words[k]
	}
	return p.hcall(p.hfn, ctx, s.pooled[p.evNode], deps)
}
