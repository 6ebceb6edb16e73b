package dispytch

// Compiling a listener's handlers at Run: routes by topic pattern and
// event type, a runner per handler (invoke.go), middleware, and the
// singletons some handler needs.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/dispytch/dispytch-go/internal/di"
	"github.com/dispytch/dispytch-go/topic"
)

// compiled is the listener's routing and plans, built by compile.
type compiled struct {
	rt         *router
	types      map[string]string // the event types handled, for interning
	g          *di.Graph
	singletons []*di.Provider // the singletons some handler needs, in order
	splans     map[*di.Provider]*di.Plan
	nhandlers  int
	patternErr error // the first topic that did not parse
	handlers   []*handler
}

func (l *Listener) compile() (*compiled, error) {
	l.mu.Lock()
	specs := append([]*handlerSpec(nil), l.specs...)
	mws := append([]Middleware(nil), l.mw...)
	l.mu.Unlock()

	g, problems := di.NewGraph(l.providers)
	problems = append(problems, l.problems...)
	b := &binder{g: g, events: map[reflect.Type]*eventNode{}}
	var patternErr error
	var needed []*di.Provider // singletons handlers need directly
	routes := map[string]*route{}
	needDL := l.poison == PolicyDeadLetter || l.unknown == PolicyDeadLetter
	names := map[string]string{}
	c := &compiled{g: g, splans: map[*di.Provider]*di.Plan{}, nhandlers: len(specs), types: map[string]string{}}
	for _, s := range specs {
		where := fmt.Sprintf("handler %s (%s) for %s/%s", s.fname, s.loc, s.topic, s.eventType)
		pat, err := topic.Parse(s.topic, l.delim)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			if patternErr == nil {
				patternErr = fmt.Errorf("%s: %w", where, err)
			}
			continue
		}
		cfg := l.handlerConfig(s)
		for _, pr := range cfg.problems {
			problems = append(problems, fmt.Sprintf("%s: %s", where, pr))
		}
		needDL = needDL || cfg.policy == PolicyDeadLetter
		run, sdeps, probs := b.compile(s, pat, where)
		problems = append(problems, probs...)
		needed = append(needed, sdeps...)
		key := pat.String() + "\x00" + s.eventType + "\x00" + cfg.name
		if prev, dup := names[key]; dup {
			problems = append(problems, fmt.Sprintf("%s: another handler for the same topic and event type is named %q (%s); give one a Name", where, cfg.name, prev))
		}
		names[key] = s.loc
		r := routes[pat.String()]
		if r == nil {
			r = &route{pattern: pat, byType: map[string][]*handler{}}
			routes[pat.String()] = r
		}
		h := &handler{
			info: HandlerInfo{Name: cfg.name, Topic: s.topic, EventType: s.eventType, Location: s.loc, Retries: cfg.retries, Policy: cfg.policy},
			cfg:  cfg,
			run:  run,
			log:  l.log.With("group", l.group, "handler", cfg.name),
		}
		h.call = chain(h, mws)
		r.byType[s.eventType] = append(r.byType[s.eventType], h)
		c.handlers = append(c.handlers, h)
	}
	c.patternErr = patternErr
	for _, r := range routes {
		for t := range r.byType {
			c.types[t] = t
		}
	}
	// Every singleton is checked, but only those some handler needs,
	// directly or through other singletons, run at Run.
	deps := map[*di.Provider][]*di.Provider{}
	for _, p := range g.Singletons() {
		pl, probs := g.CompileSingleton(p, b.specials(nil))
		problems = append(problems, probs...)
		c.splans[p], deps[p] = pl, pl.Deps
	}
	order, probs := di.TopoSingletons(deps)
	problems = append(problems, probs...)
	use := map[*di.Provider]bool{}
	for len(needed) > 0 {
		p := needed[len(needed)-1]
		needed = needed[:len(needed)-1]
		if !use[p] {
			use[p] = true
			needed = append(needed, deps[p]...)
		}
	}
	for _, p := range order {
		if use[p] {
			c.singletons = append(c.singletons, p)
		}
	}
	if len(specs) == 0 {
		problems = append(problems, "no handlers registered")
	}
	if needDL && l.dlProducer == nil {
		problems = append(problems, fmt.Sprintf("the dead-letter policy is in use but there is no producer for dead letters: consumer %T is not a backend.Producer; pass DeadLetterProducer, or choose OnFailure(Redeliver or Drop) and PoisonPolicy", l.consumer))
	}
	var rs []*route
	for _, r := range routes {
		rs = append(rs, r)
	}
	c.rt = newRouter(rs)
	if len(problems) > 0 {
		return c, &GraphError{Problems: problems}
	}
	return c, nil
}

// handlerConfig is s's settings: the listener's, then its group's, then
// its own.
func (l *Listener) handlerConfig(s *handlerSpec) handlerConfig {
	cfg := defaultHandlerConfig()
	for _, o := range l.settings {
		o.applyHandler(&cfg)
	}
	for _, o := range s.group {
		o.applyHandler(&cfg)
	}
	for _, o := range s.opts {
		o.applyHandler(&cfg)
	}
	if cfg.name == "" {
		cfg.name = s.fname
	}
	return cfg
}

// chain wraps the handler in the middleware; nil without middleware (the
// listener then runs the handler directly).
func chain(h *handler, mws []Middleware) HandlerFunc {
	if len(mws) == 0 {
		return nil
	}
	f := HandlerFunc(func(ctx context.Context, c *Call) error {
		return h.run(ctx, c.a)
	})
	for i := len(mws) - 1; i >= 0; i-- {
		f = mws[i](f)
	}
	return f
}

// resolveSingletons runs the singletons some handler needs, in order, and
// returns a function running their cleanups in reverse.
func (c *compiled) resolveSingletons(ctx context.Context, log *slog.Logger) (func(), error) {
	cleanup, err := c.g.Resolve(ctx, c.singletons, c.splans, func(p any) {
		log.Error("dispytch: singleton cleanup panicked", "panic", p)
	})
	if err != nil {
		if errors.Is(err, di.ErrPanic) {
			err = fmt.Errorf("%w: %w", ErrPanic, err)
		}
		return nil, fmt.Errorf("dispytch: %w", err)
	}
	return cleanup, nil
}

// handler is a compiled handler.
type handler struct {
	info HandlerInfo
	cfg  handlerConfig
	run  runner
	call HandlerFunc  // run inside the middleware; nil without middleware
	log  *slog.Logger // the listener's, with the group and the handler's name
}

func (h *handler) retryable(err error) bool {
	if isPermanent(err) {
		return false
	}
	if len(h.cfg.retryIf) == 0 {
		return true
	}
	for _, f := range h.cfg.retryIf {
		if f(err) {
			return true
		}
	}
	return false
}
