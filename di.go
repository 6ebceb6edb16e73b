package dispytch

import (
	"context"
	"fmt"
	"reflect"
	"runtime"

	"github.com/dispytch/dispytch-go/internal/di"
)

// Provider supplies values of one type to handlers and to other providers.
// Build one with Provide or Value and pass it to NewListener.
type Provider struct {
	p *di.Provider
}

// ProviderOption configures a Provider.
type ProviderOption func(*di.Provider)

// NoCache makes the provider run once for every parameter that needs it,
// instead of once per handler attempt.
func NoCache() ProviderOption { return func(p *di.Provider) { p.NoCache = true } }

// Singleton makes the provider run once, when the listener starts, and only
// if some handler needs it; its cleanup runs when Run returns. A singleton
// may depend on context.Context (Run's context), values and other
// singletons only. Its value belongs to the Run: a Provider given to two
// listeners runs once for each.
func Singleton() ProviderOption { return func(p *di.Provider) { p.Singleton = true } }

// Provide registers a provider function. Its parameters are resolved like a
// handler's (context.Context, Event[T], Metadata, Segments[S] and provided
// types), and it returns T, (T, error) or (T, func(), error), where func() is
// a cleanup that runs after the handler attempt, also when it fails or
// panics. By default it runs at most once per handler attempt.
//
//	func NewUserService(ctx context.Context, db *DB) (*UserService, func(), error)
func Provide(fn any, opts ...ProviderOption) *Provider {
	_, file, line, _ := runtime.Caller(1)
	name, loc := fmt.Sprintf("%T", fn), fmt.Sprintf("%s:%d", shortFile(file), line)
	if v := reflect.ValueOf(fn); fn != nil && v.Kind() == reflect.Func && !v.IsNil() {
		name, loc = funcInfo(v)
	}
	p := di.NewFunc(fn, name, loc)
	for _, o := range opts {
		o(p)
	}
	return &Provider{p: p}
}

// Value registers v as the value of type T for every parameter of that type.
// T may be an interface: Value[Store](pg) supplies Store.
func Value[T any](v T) *Provider {
	t := reflect.TypeFor[T]()
	rv := reflect.ValueOf(&v).Elem()
	_, file, line, _ := runtime.Caller(1)
	return &Provider{p: &di.Provider{Val: rv, IsValue: true, Out: t, Name: "Value[" + t.String() + "]", Loc: fmt.Sprintf("%s:%d", shortFile(file), line)}}
}

// Override replaces the provider of p's type, as FastAPI's
// dependency_overrides does: use it in tests to swap a real dependency for a
// fake without touching the handlers.
//
//	dispytch.Override(dispytch.Value[*UserService](fake))
func Override(p *Provider) ListenerOption {
	c := *p.p
	c.Override = true
	return &Provider{p: &c}
}

func (p *Provider) applyListener(l *Listener) { l.providers = append(l.providers, p.p) }

// GraphError lists every problem Check and Run found: handlers' signatures
// and dependencies, and invalid option values (Concurrency(0), say), which
// are reported rather than clamped. It wraps ErrInvalidGraph.
type GraphError struct {
	Problems []string
}

func (g *GraphError) Error() string {
	s := fmt.Sprintf("dispytch: %d problem(s) with the handlers, their dependencies or the options:", len(g.Problems))
	for _, p := range g.Problems {
		s += "\n  - " + p
	}
	return s
}

// Unwrap returns ErrInvalidGraph.
func (g *GraphError) Unwrap() error { return ErrInvalidGraph }

// Handle1 registers fn on r (a *Listener or *HandlerGroup) like Handle, for
// the common shape of a handler with one injected dependency. Generic in
// the handler's types, it calls fn without reflection, and so do
// dependencies supplied by Value, a singleton or a provider of the form
// func([context.Context]) D, (D, error) or (D, func(), error). Handle takes
// every other shape.
//
//	dispytch.Handle1(users, "user_events", "user_registered",
//		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
//			return svc.Welcome(ctx, ev.Body.User)
//		})
func Handle1[T, D any](r interface {
	Handle(string, string, any, ...HandlerOption)
}, topic, eventType string, fn func(context.Context, Event[T], D) error, opts ...HandlerOption) {
	r.Handle(topic, eventType, typed1[T, D]{fn}, opts...)
}

// Handle2 is Handle1 for two dependencies.
func Handle2[T, D1, D2 any](r interface {
	Handle(string, string, any, ...HandlerOption)
}, topic, eventType string, fn func(context.Context, Event[T], D1, D2) error, opts ...HandlerOption) {
	r.Handle(topic, eventType, typed2[T, D1, D2]{fn}, opts...)
}

// Handle3 is Handle1 for three dependencies.
func Handle3[T, D1, D2, D3 any](r interface {
	Handle(string, string, any, ...HandlerOption)
}, topic, eventType string, fn func(context.Context, Event[T], D1, D2, D3) error, opts ...HandlerOption) {
	r.Handle(topic, eventType, typed3[T, D1, D2, D3]{fn}, opts...)
}
