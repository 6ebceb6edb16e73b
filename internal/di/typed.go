package di

import (
	"context"
	"reflect"
)

// Getter returns the value of type D for one attempt.
type Getter[D any] func(s *Scope) (D, error)

// Fast returns a getter of D that needs no reflection, or false: a value
// or singleton is read from its slot, and a provider of one of the common
// shapes (no parameters, or only a context; returning D, (D, error) or
// (D, func(), error)) is called directly. Anything else (a provider with
// dependencies of its own, a framework type) needs a plan, which keeps the
// per-attempt caching of shared dependencies.
func Fast[D any](g *Graph) (Getter[D], bool) {
	t := reflect.TypeFor[D]()
	if t == ctxType {
		return func(s *Scope) (D, error) { return any(s.Ctx).(D), nil }, true
	}
	p := g.provs[t]
	if p == nil {
		return nil, false
	}
	if p.IsValue || p.Singleton {
		slot := g.Slot(p)
		return func(*Scope) (D, error) {
			d, _ := slot.Iface.(D)
			return d, nil
		}, true
	}
	if p.NoCache {
		return nil, false
	}
	switch f := p.Fn.Interface().(type) {
	case func() D:
		return func(*Scope) (D, error) { return f(), nil }, true
	case func() (D, error):
		return func(*Scope) (D, error) {
			d, err := f()
			return wrapErr(p, d, err)
		}, true
	case func(context.Context) D:
		return func(s *Scope) (D, error) { return f(s.Ctx), nil }, true
	case func(context.Context) (D, error):
		return func(s *Scope) (D, error) {
			d, err := f(s.Ctx)
			return wrapErr(p, d, err)
		}, true
	case func() (D, func(), error):
		return func(s *Scope) (D, error) {
			d, c, err := f()
			return withCleanup(p, s, d, c, err)
		}, true
	case func(context.Context) (D, func(), error):
		return func(s *Scope) (D, error) {
			d, c, err := f(s.Ctx)
			return withCleanup(p, s, d, c, err)
		}, true
	}
	return nil, false
}

// SingletonOf returns the singleton provider of D, or nil.
func SingletonOf[D any](g *Graph) *Provider {
	if p := g.provs[reflect.TypeFor[D]()]; p != nil && p.Singleton && !p.IsValue {
		return p
	}
	return nil
}

func wrapErr[D any](p *Provider, d D, err error) (D, error) {
	if err != nil {
		return d, dependencyError(p, err)
	}
	return d, nil
}

func withCleanup[D any](p *Provider, s *Scope, d D, c func(), err error) (D, error) {
	if c != nil {
		s.AddCleanup(c)
	}
	if err != nil {
		return d, dependencyError(p, err)
	}
	return d, nil
}
