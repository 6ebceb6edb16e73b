package dispytch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/internal/di"
	"github.com/dispytch/dispytch-go/internal/sched"
)

// Listener consumes messages, routes them to handlers by topic and event
// type, resolves the handlers' dependencies and settles each message with the
// broker once every handler of it succeeded or its failure was dealt with.
type Listener struct {
	consumer        Consumer
	codec           codec.Codec
	codecs          map[string]codec.Codec // by content type
	log             *slog.Logger
	settings        []setting
	providers       []*di.Provider
	specs           []*handlerSpec
	mw              []Middleware
	concurrency     int
	shutdownTimeout time.Duration
	group, delim    string
	unknown, poison FailurePolicy
	dlTopic         DeadLetterTopicFunc
	dlProducer      Producer
	validator       Validator
	orderByKey      bool
	onSettle        []func(Settlement)
	startTimeout    time.Duration
	dlAttempts      int
	dlFallback      FailurePolicy

	mu      sync.Mutex
	running bool
	ready   chan struct{} // closed when subscribed, or when Run returned
	readyOK bool          // the current (or last) Run subscribed
	runErr  error         // why the last Run ended
	stats   counters
}

// NewListener returns a listener consuming from c. Register handlers with
// Handle and AddGroup, then call Run.
func NewListener(c Consumer, opts ...ListenerOption) *Listener {
	l := &Listener{
		consumer:        c,
		codec:           codec.JSON,
		log:             slog.Default(),
		concurrency:     64,
		shutdownTimeout: 30 * time.Second,
		delim:           DefaultDelimiter,
		unknown:         Drop,
		poison:          DeadLetter,
		dlTopic:         DefaultDeadLetterTopic,
		orderByKey:      true,
		ready:           make(chan struct{}),
		startTimeout:    DefaultStartTimeout,
		dlAttempts:      5,
		dlFallback:      Drop,
	}
	if p, ok := c.(Producer); ok {
		l.dlProducer = p
	}
	for _, o := range opts {
		o.applyListener(l)
	}
	if l.validator == nil {
		l.validator = newValidator()
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.codec == nil {
		l.codec = codec.JSON
	}
	// Every listener reads JSON and msgpack, whatever its own codec, so
	// that Go and Python producers of either kind can share its topics.
	l.codecs = map[string]codec.Codec{}
	for _, c := range []codec.Codec{codec.JSON, msgpack.Codec, l.codec} {
		l.codecs[c.ContentType()] = c
	}
	return l
}

// DefaultStartTimeout is how long Run waits for the consumer's
// subscription before it gives up (see StartTimeout).
const DefaultStartTimeout = 30 * time.Second

// codecFor picks the codec a delivery was written with: the one its
// content type names, else the one its first byte shows (JSON or msgpack),
// else the listener's own.
func (l *Listener) codecFor(d *Delivery) codec.Codec {
	ct := d.ContentType
	if ct == "" && len(d.Headers) > 0 {
		ct = d.Headers[HeaderContentType]
	}
	if ct != "" {
		if c, ok := l.codecs[ct]; ok {
			return c
		}
		if i := strings.IndexByte(ct, ';'); i >= 0 {
			if c, ok := l.codecs[strings.TrimSpace(ct[:i])]; ok {
				return c
			}
		}
	}
	switch codec.Sniff(d.Value) {
	case codec.FormatJSON:
		if l.codec.ContentType() == "application/json" {
			return l.codec
		}
		return l.codecs["application/json"]
	case codec.FormatMsgpack:
		return l.codecs["application/msgpack"]
	}
	return l.codec
}

// Handle registers fn for eventType on topic, like HandlerGroup.Handle.
func (l *Listener) Handle(topic, eventType string, fn any, opts ...HandlerOption) {
	spec := newHandlerSpec(topic, eventType, fn, opts)
	l.mu.Lock()
	l.specs = append(l.specs, spec)
	l.mu.Unlock()
}

// AddGroup registers every handler of g.
func (l *Listener) AddGroup(g *HandlerGroup) {
	l.mu.Lock()
	l.specs = append(l.specs, g.specs...)
	l.mu.Unlock()
}

// Use adds middleware around every handler attempt. The first one added is
// the outermost.
func (l *Listener) Use(mw ...Middleware) {
	l.mu.Lock()
	l.mw = append(l.mw, mw...)
	l.mu.Unlock()
}

// Ready is closed once the consumer's subscription is in place, so that
// events emitted from then on reach the listener, or once Run returned, so
// that nothing waits forever on a listener that failed to start. WaitReady
// tells the two apart. Before the first Run, Ready waits for it; after Run
// returned, Ready stays closed until Run is called again.
func (l *Listener) Ready() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready
}

// WaitReady waits until the listener's subscription is in place and returns
// nil, or returns why it is not: the error Run returned (wrapping
// ErrNotReady when it never subscribed), ErrClosed when Run returned after
// a clean run, or ctx's error.
func (l *Listener) WaitReady(ctx context.Context) error {
	select {
	case <-l.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.running && l.readyOK:
		return nil
	case l.runErr != nil:
		return l.runErr
	}
	return fmt.Errorf("dispytch: listener is not running: %w", ErrClosed)
}

// Subscription returns what the listener consumes: the literal topics and
// the patterns of its handlers, for backends that subscribe natively. It
// returns an error wrapping ErrBadPattern when a topic does not parse.
func (l *Listener) Subscription() (Subscription, error) {
	c, err := l.compile()
	if c == nil || c.patternErr != nil {
		if c != nil {
			err = c.patternErr
		}
		return Subscription{}, err
	}
	return l.subscription(c), nil
}

func (l *Listener) subscription(c *compiled) Subscription {
	sub := c.rt.subscription(l.group, l.delim)
	sub.Concurrency = l.concurrency
	return sub
}

// Check builds the handlers and their dependency graph as Run would, and
// returns the same error Run would, without consuming anything.
func (l *Listener) Check() error {
	_, err := l.compile()
	return err
}

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats { return l.stats.snapshot() }

// Run consumes until ctx is done, then shuts down gracefully: it stops
// taking messages, waits up to the shutdown timeout for the handlers in
// flight, acks what finished and leaves the rest unacked for redelivery. It
// returns nil after a clean shutdown.
//
// Before consuming anything, Run checks every handler and provider, and
// returns a *GraphError (wrapping ErrInvalidGraph) listing all problems. It
// then resolves singleton providers, whose cleanups run when Run returns.
func (l *Listener) Run(ctx context.Context) (err error) {
	if ctx == nil {
		return errors.New("dispytch: Run with a nil context")
	}
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return errors.New("dispytch: listener is already running")
	}
	l.running, l.readyOK, l.runErr = true, false, nil
	select {
	case <-l.ready:
		l.ready = make(chan struct{}) // closed by the previous Run
	default:
	}
	ready := l.ready
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running, l.runErr = false, err
		select {
		case <-l.ready:
		default:
			close(l.ready)
		}
		l.mu.Unlock()
	}()

	c, err := l.compile()
	if err != nil {
		return err
	}
	cleanup, err := c.resolveSingletons(ctx, l.log)
	if err != nil {
		return err
	}
	defer cleanup()

	r := &runState{
		l:       l,
		c:       c,
		stop:    ctx,
		done:    make(chan struct{}),
		readyCh: make(chan struct{}),
	}
	r.msgs.New = func() any { return new(msgState) }
	r.hard, r.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer r.hardCancel()
	r.sched = sched.New(l.concurrency, max(l.concurrency, readyQueue), perKeyQueue, r.process)

	sub := l.subscription(c)
	l.log.Info("dispytch: listener starting", "subscription", sub.String(), "handlers", c.nhandlers, "concurrency", l.concurrency)
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	errc := make(chan error, 1)
	go func() { errc <- l.consumer.Consume(cctx, sub, r) }()

	// Wait for the subscription. A listener that never subscribed returns
	// an error, whatever ended the wait.
	var startTimer <-chan time.Time
	if l.startTimeout > 0 {
		t := time.NewTimer(l.startTimeout)
		defer t.Stop()
		startTimer = t.C
	}
	var cerr error
	consumerDone, subscribed := false, false
	select {
	case <-r.readyCh:
		subscribed = true
	case cerr = <-errc:
		consumerDone = true
	case <-startTimer:
	case <-ctx.Done():
	}
	if subscribed {
		l.mu.Lock()
		l.readyOK = true
		close(ready)
		l.mu.Unlock()
		select {
		case <-ctx.Done():
		case cerr = <-errc:
			consumerDone = true
			if cerr == nil && ctx.Err() == nil {
				cerr = errors.New("dispytch: consumer stopped")
			}
		}
	} else {
		ccancel()
	}
	r.shutdown()
	if !consumerDone {
		t := time.NewTimer(l.shutdownTimeout + 5*time.Second)
		select {
		case cerr = <-errc:
		case <-t.C:
			cerr = errors.New("dispytch: consumer did not stop after the shutdown")
		}
		t.Stop()
	}
	if !subscribed {
		cause := cerr
		switch {
		case cause == nil && ctx.Err() != nil:
			cause = ctx.Err()
		case cause == nil:
			cause = fmt.Errorf("no subscription after the start timeout (%s)", l.startTimeout)
		case errors.Is(cause, context.Canceled) && ctx.Err() == nil:
			// Cancelled by the start timeout: say so.
			cause = fmt.Errorf("no subscription after the start timeout (%s): %w", l.startTimeout, cause)
		}
		err := fmt.Errorf("%w: %w", ErrNotReady, cause)
		l.log.Error("dispytch: listener never subscribed", "subscription", sub.String(), "err", err)
		return err
	}
	if cerr != nil && ctx.Err() != nil && errors.Is(cerr, ctx.Err()) {
		cerr = nil
	}
	if cerr != nil {
		return fmt.Errorf("dispytch: consumer: %w", cerr)
	}
	l.log.Info("dispytch: listener stopped")
	return nil
}

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
	b := &binder{g: g, events: map[reflect.Type]*eventNode{}}
	var patternErr error
	var needed []*di.Provider // singletons handlers need directly
	routes := map[string]*route{}
	needDL := l.poison == DeadLetter || l.unknown == DeadLetter
	names := map[string]string{}
	c := &compiled{g: g, splans: map[*di.Provider]*di.Plan{}, nhandlers: len(specs), types: map[string]string{}}
	for _, s := range specs {
		where := fmt.Sprintf("handler %s (%s) for %s/%s", s.fname, s.loc, s.topic, s.eventType)
		pat, err := ParsePattern(s.topic, l.delim)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			if patternErr == nil {
				patternErr = fmt.Errorf("%s: %w", where, err)
			}
			continue
		}
		cfg := defaultHandlerConfig()
		for _, st := range l.settings {
			st(&cfg)
		}
		for _, st := range s.group {
			st(&cfg)
		}
		for _, o := range s.opts {
			o.applyHandler(&cfg)
		}
		if cfg.name == "" {
			cfg.name = s.fname
		}
		needDL = needDL || cfg.policy == DeadLetter
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
		problems = append(problems, fmt.Sprintf("the dead-letter policy is in use but there is no producer for dead letters: consumer %T is not a Producer; pass DeadLetterProducer, or choose OnFailure(Redeliver or Drop) and PoisonPolicy", l.consumer))
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
	call HandlerFunc // run inside the middleware; nil without middleware
}

func (h *handler) retryable(err error) bool {
	if IsPermanent(err) {
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

// runState is one Run: it is the consumer's Inbox.
type runState struct {
	l     *Listener
	c     *compiled
	sched *sched.Scheduler[*Delivery]

	stop       context.Context // Run's context: done means shut down
	hard       context.Context // handlers' context: cancelled at the shutdown timeout
	hardCancel context.CancelFunc

	readyCh   chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	stopping  atomic.Bool
	inflight  sync.WaitGroup
	msgs      sync.Pool // *msgState
	settleMu  sync.RWMutex
	abandoned atomic.Bool
}

func (r *runState) Ready() {
	r.readyOnce.Do(func() { close(r.readyCh) })
}

func (r *runState) Done() <-chan struct{} { return r.done }

func (r *runState) Deliver(ctx context.Context, d *Delivery) error {
	if r.stopping.Load() {
		return ErrStopping
	}
	key := d.OrderingKey
	if key == "" && r.l.orderByKey && len(d.Key) > 0 {
		key = string(d.Key)
	}
	r.inflight.Add(1)
	r.l.stats.received.Add(1)
	if err := r.sched.Submit(ctx, key, d); err != nil {
		r.inflight.Done()
		r.l.stats.received.Add(-1)
		if errors.Is(err, sched.ErrClosed) {
			return ErrStopping
		}
		return err
	}
	return nil
}

// shutdown stops intake, waits for in-flight work up to the timeout and
// abandons the rest; then closes done.
func (r *runState) shutdown() {
	r.stopping.Store(true)
	r.sched.Close()
	r.l.log.Info("dispytch: listener stopping", "in_flight", r.l.Stats().InFlight, "timeout", r.l.shutdownTimeout.String())
	drained := make(chan struct{})
	go func() {
		r.inflight.Wait()
		close(drained)
	}()
	t := time.NewTimer(r.l.shutdownTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		// New settlements bail out; settlements under way (a dead-letter
		// publish stuck on a broker outage, say) are cancelled; then wait
		// for them, so that nothing is settled after Done.
		r.abandoned.Store(true)
		r.hardCancel()
		r.settleMu.Lock()
		r.settleMu.Unlock()
		r.l.log.Warn("dispytch: shutdown timeout: leaving unfinished messages unacked for redelivery",
			"in_flight", r.l.Stats().InFlight, "timeout", r.l.shutdownTimeout.String())
	}
	close(r.done)
}

// readyQueue is the least number of deliveries that wait for a free worker
// (Concurrency of them when that is more). With a queue only as deep as a
// small Concurrency, the consumer and the workers hand over one delivery per
// wake-up and throughput halves. Deliveries still waiting when shutdown
// begins are not started: they are left unacked for redelivery, so a deeper
// queue does not lengthen shutdown.
const readyQueue = 64

// perKeyQueue bounds the deliveries waiting behind a busy ordering key
// (a Kafka partition whose record is being handled). Busy keys are at most
// Concurrency, so at most Concurrency*perKeyQueue deliveries wait.
const perKeyQueue = 32

// deadLetterTimeout bounds one dead-lettering.
const deadLetterTimeout = 30 * time.Second

// msgState is the per-message state of process, pooled.
type msgState struct {
	env  codec.Envelope
	meta Metadata
}

// outcome is how one handler ended for one message.
type outcome struct {
	failed    *FailedMessage
	policy    FailurePolicy
	abandoned bool
}

func (r *runState) process(d *Delivery) {
	ms := r.msgs.Get().(*msgState)
	defer func() {
		*ms = msgState{}
		r.msgs.Put(ms)
		r.l.stats.finished.Add(1)
		r.inflight.Done()
	}()
	if r.stopping.Load() {
		// Shutdown began before this delivery started: leave it unacked
		// for redelivery rather than start new work.
		r.l.stats.abandoned.Add(1)
		return
	}
	if stale(d) {
		// Its channel or partition is gone: the broker gives the message
		// to another consumer, which must be the only one to run it.
		r.l.stats.abandoned.Add(1)
		r.report(d, nil, Abandoned, nil, nil)
		return
	}
	l := r.l
	env := &ms.env
	var err error
	cd := l.codecFor(d)
	if ic, ok := cd.(codec.InterningDecoder); ok {
		err = ic.DecodeEnvelopeInterned(d.Value, env, r.c.types)
	} else {
		err = cd.DecodeEnvelope(d.Value, env)
	}
	if err != nil {
		l.stats.poison.Add(1)
		l.log.Warn("dispytch: undecodable message", "topic", d.Topic, "err", err, "policy", l.poison.String())
		r.settle(d, nil, []outcome{{policy: l.poison, failed: r.failure(d, "", ReasonDecode, fmt.Errorf("%w: envelope: %w", ErrDecode, err), 1, time.Now())}})
		return
	}
	matches := r.c.rt.match(d.Topic)
	if len(d.Headers) > 0 && IsDeadLetter(d.Headers) && !literalMatch(matches) {
		// A dead letter reached a pattern subscription (its topic happens
		// to match). Handling it as a new event would loop; leave it to
		// whoever consumes the dead-letter topic by name.
		l.stats.skippedDeadLetters.Add(1)
		l.log.Debug("dispytch: skipping a dead letter matched by a pattern", "topic", d.Topic)
		r.ack(d, env, Skipped)
		return
	}
	target := ""
	if len(d.Headers) > 0 {
		target = d.Headers[HeaderRedriveHandler]
		if g, ok := d.Headers[HeaderRedriveGroup]; ok && g != l.group {
			// Redriven for another group's handler: not ours to run.
			l.stats.skippedDeadLetters.Add(1)
			r.ack(d, env, Skipped)
			return
		}
	}
	var one handlerMatch
	var many []handlerMatch
	n := 0
	for i := range matches {
		for _, h := range matches[i].r.byType[env.Type] {
			if target != "" && h.info.Name != target {
				continue
			}
			if n == 0 {
				one.h, one.m = h, &matches[i]
			} else {
				if n == 1 {
					many = append(many, one)
				}
				many = append(many, handlerMatch{h, &matches[i]})
			}
			n++
		}
	}
	if n == 0 {
		l.stats.unhandled.Add(1)
		reason := fmt.Errorf("%w: event type %q on topic %q", ErrNoHandler, env.Type, d.Topic)
		if target != "" {
			reason = fmt.Errorf("%w: redriven to handler %q, which is not registered for %q on %q", ErrNoHandler, target, env.Type, d.Topic)
		}
		policy := l.unknown
		if target != "" {
			// A redriven message names a handler that is gone: never drop
			// it quietly.
			policy = DeadLetter
			l.log.Warn("dispytch: redriven message for an unknown handler", "topic", d.Topic, "type", env.Type, "handler", target)
		} else if policy == Drop {
			l.log.Debug("dispytch: no handler", "topic", d.Topic, "type", env.Type, "id", env.ID)
			r.ack(d, env, Unhandled)
			return
		}
		r.settle(d, env, []outcome{{policy: policy, failed: r.failure(d, target, ReasonNoHandler, reason, 1, time.Now())}})
		return
	}
	ms.meta = Metadata{
		ID:        env.ID,
		Type:      env.Type,
		Topic:     d.Topic,
		Timestamp: time.UnixMilli(env.Timestamp),
		Headers:   d.Headers,
		Delivery:  d.Info,
	}
	meta := &ms.meta
	meta.Delivery.Key = d.Key
	meta.codec = cd
	if n == 1 {
		meta.seg = one.m.seg
		o := r.runHandler(one.h, meta, env.Body, d)
		if o.failed == nil && !o.abandoned {
			r.ack(d, env, Acked)
			return
		}
		r.settle(d, env, []outcome{o})
		return
	}
	r.runMany(d, env, meta, many)
}

// handlerMatch is a handler of a message and the route that matched it.
type handlerMatch struct {
	h *handler
	m *routeMatch
}

// runMany runs several handlers of one message concurrently, each with its
// own copy of the metadata (their attempt numbers and segments differ), and
// settles the message. It is apart from process so that the single-handler
// path allocates nothing for it.
func (r *runState) runMany(d *Delivery, env *codec.Envelope, meta *Metadata, many []handlerMatch) {
	n := len(many)
	outs := make([]outcome, n)
	metas := make([]Metadata, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		metas[i] = *meta
		metas[i].seg = many[i].m.seg
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			outs[i] = r.runHandler(many[i].h, &metas[i], env.Body, d)
		}(i)
	}
	meta.seg = many[0].m.seg
	outs[0] = r.runHandler(many[0].h, meta, env.Body, d)
	wg.Wait()
	r.settle(d, env, outs)
}

// stale reports whether d's session ended (see StaleChecker).
func stale(d *Delivery) bool {
	sc, ok := d.Acker.(StaleChecker)
	return ok && sc.Stale()
}

func literalMatch(ms []routeMatch) bool {
	for _, m := range ms {
		if m.seg == nil {
			return true
		}
	}
	return false
}

func (r *runState) failure(d *Delivery, handler string, reason Reason, err error, attempts int, first time.Time) *FailedMessage {
	return &FailedMessage{
		Topic: d.Topic, Key: d.Key, Value: d.Value, Headers: d.Headers, Group: r.l.group,
		Reason: reason, Err: err, Handler: handler, Attempts: attempts,
		FirstFailure: first, LastFailure: time.Now(),
		Partition: d.Info.Partition, Offset: d.Info.Offset,
	}
}

// runHandler runs one handler with its retries. meta is the handler's own
// copy.
func (r *runState) runHandler(h *handler, meta *Metadata, body []byte, d *Delivery) outcome {
	l := r.l
	var first time.Time
	for attempt := 1; ; attempt++ {
		meta.Delivery.Attempt = attempt
		err := r.attempt(h, meta, body)
		if err == nil {
			l.stats.handled.Add(1)
			return outcome{}
		}
		if first.IsZero() {
			first = time.Now()
		}
		if r.hard.Err() != nil {
			// The shutdown timeout passed while the handler ran: its
			// failure is most likely the cancellation. Leave the message
			// for redelivery.
			l.log.Info("dispytch: attempt cut off by the shutdown timeout; message left for redelivery",
				"handler", h.info.Name, "topic", meta.Topic, "type", meta.Type, "id", meta.ID, "attempt", attempt, "err", err)
			return outcome{abandoned: true}
		}
		reason := reasonOf(err)
		if reason == ReasonPanic {
			l.stats.panics.Add(1)
		}
		if attempt > h.cfg.retries || !h.retryable(err) {
			l.stats.failed.Add(1)
			l.log.Error("dispytch: handler failed", "handler", h.info.Name, "topic", meta.Topic, "type", meta.Type,
				"id", meta.ID, "attempts", attempt, "reason", string(reason), "err", err, "policy", h.cfg.policy.String())
			return outcome{policy: h.cfg.policy, failed: r.failure(d, h.info.Name, reason, err, attempt, first)}
		}
		if r.stop.Err() != nil || stale(d) {
			// Shutting down, or the delivery's session is gone: no retry
			// here; the broker redelivers the message.
			l.log.Info("dispytch: handler failed; not retrying during shutdown, message left for redelivery",
				"handler", h.info.Name, "topic", meta.Topic, "type", meta.Type, "id", meta.ID, "attempt", attempt, "err", err)
			return outcome{abandoned: true}
		}
		delay := h.cfg.backoff.Delay(attempt)
		l.stats.retries.Add(1)
		l.log.Warn("dispytch: handler failed, retrying", "handler", h.info.Name, "topic", meta.Topic, "type", meta.Type,
			"id", meta.ID, "attempt", attempt, "retry_in", delay.String(), "err", err)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.stop.Done():
				t.Stop()
				l.log.Info("dispytch: retry wait cut off by shutdown; message left for redelivery",
					"handler", h.info.Name, "topic", meta.Topic, "id", meta.ID)
				return outcome{abandoned: true}
			}
		}
		if stale(d) {
			return outcome{abandoned: true}
		}
	}
}

func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, ErrPanic):
		return ReasonPanic
	case errors.Is(err, ErrAttemptTimeout):
		return ReasonTimeout
	case errors.Is(err, ErrDecode):
		return ReasonDecode
	case errors.Is(err, ErrValidation):
		return ReasonValidation
	case errors.Is(err, di.ErrDependency):
		return ReasonDependency
	}
	return ReasonHandler
}

// attempt runs one attempt through the middleware, recovering panics. With
// an AttemptTimeout, the attempt fails at the timeout even when the handler
// ignores its context: the handler's goroutine goes on until it returns,
// and its late result is ignored.
func (r *runState) attempt(h *handler, meta *Metadata, body []byte) error {
	if h.cfg.timeout <= 0 {
		return r.call(r.hard, h, meta, body)
	}
	ctx, cancel := context.WithTimeout(r.hard, h.cfg.timeout)
	defer cancel()
	// The goroutine may outlive this attempt: it gets its own metadata,
	// since the caller's is reused for the next attempt and message.
	own := new(Metadata)
	*own = *meta
	done := make(chan error, 1)
	go func() { done <- r.call(ctx, h, own, body) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	if r.hard.Err() != nil {
		// Shutdown cut it off; runHandler leaves the message for
		// redelivery.
		return r.hard.Err()
	}
	r.l.stats.timeouts.Add(1)
	go func() {
		err := <-done
		r.l.log.Warn("dispytch: a timed-out attempt returned late; its result is ignored", "handler", h.info.Name,
			"topic", own.Topic, "id", own.ID, "attempt", own.Delivery.Attempt, "err", err)
	}()
	return fmt.Errorf("%w: %s after %s (attempt %d)", ErrAttemptTimeout, h.info.Name, h.cfg.timeout, meta.Delivery.Attempt)
}

// call runs one attempt through the middleware, recovering panics.
func (r *runState) call(ctx context.Context, h *handler, meta *Metadata, body []byte) (err error) {
	a := attempt{meta: meta, body: body, codec: meta.codec, strict: h.cfg.strict, v: r.l.validator}
	defer func() {
		if p := recover(); p != nil {
			r.l.log.Error("dispytch: handler panicked", "handler", h.info.Name, "topic", meta.Topic,
				"id", meta.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %s: %v", ErrPanic, h.info.Name, p)
		}
	}()
	if h.call == nil {
		return h.run(ctx, a)
	}
	return h.call(ctx, &Call{Handler: &h.info, Meta: meta, Body: body, a: a})
}

// settle acks, nacks or dead-letters d according to its handlers' outcomes.
// env is nil for an undecodable payload.
func (r *runState) settle(d *Delivery, env *codec.Envelope, outs []outcome) {
	var dls, fails []*FailedMessage
	redeliver, dropped := false, false
	for _, o := range outs {
		if o.abandoned {
			r.l.stats.abandoned.Add(1)
			r.report(d, env, Abandoned, nil, nil)
			return
		}
	}
	for _, o := range outs {
		if o.failed == nil {
			continue
		}
		fails = append(fails, o.failed)
		switch o.policy {
		case DeadLetter:
			dls = append(dls, o.failed)
		case Redeliver:
			redeliver = true
		case Drop:
			dropped = true
			r.l.stats.dropped.Add(1)
			r.l.log.Error("dispytch: dropping failed message", "topic", d.Topic, "handler", o.failed.Handler,
				"reason", string(o.failed.Reason), "err", o.failed.Err)
		}
	}
	switch {
	case redeliver:
		r.nack(d, env, fails)
	case len(dls) > 0:
		r.deadLetter(d, env, dls, fails)
	case dropped:
		r.settleWith(d, env, Dropped, fails, d.Acker.Ack)
	default:
		r.ack(d, env, Acked)
	}
}

// Outcome is how the listener settled a message.
type Outcome uint8

const (
	// Acked: every handler succeeded; the message was acked.
	Acked Outcome = iota
	// DeadLettered: a handler failed for good and the message went to the
	// dead-letter topic, then was acked.
	DeadLettered
	// Redelivered: the message was nacked for redelivery.
	Redelivered
	// Dropped: a handler failed for good and the Drop policy acked the
	// message.
	Dropped
	// Unhandled: no handler for its event type; acked (UnknownEvent(Drop)).
	Unhandled
	// Skipped: a dead letter reached a pattern subscription; acked.
	Skipped
	// Abandoned: left unsettled at shutdown, for redelivery.
	Abandoned
	// SettleFailed: acking or dead-lettering failed; the message was nacked
	// or left to the broker for redelivery.
	SettleFailed
)

var outcomeNames = [...]string{"acked", "dead-lettered", "redelivered", "dropped", "unhandled", "skipped", "abandoned", "settle-failed"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Settlement reports how one message was settled; see OnSettle.
type Settlement struct {
	Topic string
	// ID and Type are the envelope's; empty when the payload did not
	// decode.
	ID, Type string
	Outcome  Outcome
	// Failures are the handlers that failed for good (or the decode
	// failure), whatever the policy did with them.
	Failures []*FailedMessage
	// Err is the error that made settling fail (Outcome SettleFailed).
	Err error
}

// OnSettle calls f after every message the listener settled or abandoned,
// from the goroutine that handled it. Use it for metrics and tests; it must
// be fast and must not block. Several hooks run in the order given. A
// nacked message may be redelivered and settled again before its
// Redelivered settlement is reported.
func OnSettle(f func(Settlement)) ListenerOption {
	return listenerOptionFunc(func(l *Listener) { l.onSettle = append(l.onSettle, f) })
}

func (r *runState) report(d *Delivery, env *codec.Envelope, o Outcome, fails []*FailedMessage, err error) {
	if len(r.l.onSettle) == 0 {
		return
	}
	s := Settlement{Topic: d.Topic, Outcome: o, Failures: fails, Err: err}
	if env != nil {
		s.ID, s.Type = env.ID, env.Type
	}
	for _, f := range r.l.onSettle {
		f(s)
	}
}

// settleWith settles d with f unless the run abandoned its deliveries.
func (r *runState) settleWith(d *Delivery, env *codec.Envelope, o Outcome, fails []*FailedMessage, f func(context.Context) error) {
	r.settleMu.RLock()
	defer r.settleMu.RUnlock()
	if r.abandoned.Load() {
		r.report(d, env, Abandoned, fails, nil)
		return
	}
	if err := f(r.hard); err != nil {
		r.l.stats.ackErrors.Add(1)
		level := slog.LevelError
		if errors.Is(err, ErrClosed) {
			// The delivery's session ended (a Kafka revoke, a lost AMQP
			// channel): the broker redelivers it, as at-least-once expects.
			level = slog.LevelInfo
		}
		r.l.log.Log(r.hard, level, "dispytch: settling failed; the broker will redeliver", "topic", d.Topic, "outcome", o.String(), "err", err)
		r.report(d, env, SettleFailed, fails, err)
		return
	}
	r.report(d, env, o, fails, nil)
}

func (r *runState) ack(d *Delivery, env *codec.Envelope, o Outcome) {
	r.settleWith(d, env, o, nil, d.Acker.Ack)
}

func (r *runState) nack(d *Delivery, env *codec.Envelope, fails []*FailedMessage) {
	r.l.stats.redelivered.Add(1)
	r.settleWith(d, env, Redelivered, fails, d.Acker.Nack)
}

func (r *runState) deadLetter(d *Delivery, env *codec.Envelope, dls, fails []*FailedMessage) {
	r.settleMu.RLock()
	defer r.settleMu.RUnlock()
	if r.abandoned.Load() {
		r.report(d, env, Abandoned, fails, nil)
		return
	}
	for _, f := range dls {
		f.DeadLetterTopic = r.l.dlTopic(f)
	}
	// A dead-letter publish is bounded: during a broker outage the message
	// goes back for redelivery instead of holding a worker forever.
	ctx, cancel := context.WithTimeout(r.hard, deadLetterTimeout)
	defer cancel()
	err := r.publishDeadLetters(ctx, d, dls, false)
	if errors.Is(err, ErrTooLarge) {
		// The broker took the original but not the dead letter, which
		// adds headers: send it without the original's value and headers,
		// keeping its coordinates, so that it can be found at its source.
		r.l.log.Warn("dispytch: dead letter too large; sending it truncated", "topic", d.Topic,
			"partition", d.Info.Partition, "offset", d.Info.Offset, "bytes", len(d.Value), "err", err)
		err = r.publishDeadLetters(ctx, d, dls, true)
	}
	if err == nil {
		r.l.stats.deadLettered.Add(int64(len(dls)))
		r.report(d, env, DeadLettered, fails, nil)
		return
	}
	r.l.stats.deadLetterErrors.Add(1)
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrPermanent) || d.Info.DeliveryCount >= r.l.dlAttempts {
		// Retrying cannot help, or it did not: the last resort applies,
		// so that the message does not hold its partition forever.
		r.deadLetterFailed(d, env, fails, err)
		return
	}
	r.l.log.Error("dispytch: dead-lettering failed; message left for redelivery", "topic", d.Topic,
		"delivery_count", d.Info.DeliveryCount, "err", err)
	if nerr := d.Acker.Nack(r.hard); nerr != nil {
		r.l.log.Error("dispytch: nack failed", "topic", d.Topic, "err", nerr)
	}
	r.report(d, env, SettleFailed, fails, err)
}

// publishDeadLetters stores the dead letters of d, and acks d when the
// listener published them itself.
func (r *runState) publishDeadLetters(ctx context.Context, d *Delivery, dls []*FailedMessage, truncated bool) error {
	if dler, ok := d.Acker.(DeadLetterer); ok && !truncated {
		return dler.DeadLetter(ctx, dls)
	}
	msgs := make([]*Message, len(dls))
	for i, f := range dls {
		if truncated {
			msgs[i] = f.truncatedMessage(f.DeadLetterTopic)
		} else {
			msgs[i] = f.Message(f.DeadLetterTopic)
		}
	}
	if err := r.l.dlProducer.Produce(ctx, msgs...); err != nil {
		return err
	}
	if aerr := d.Acker.Ack(r.hard); aerr != nil {
		// The dead letter is safe; the original may come back and be
		// dead-lettered twice, which at-least-once allows.
		r.l.stats.ackErrors.Add(1)
		r.l.log.Error("dispytch: ack after dead-lettering failed", "topic", d.Topic, "err", aerr)
	}
	return nil
}

// deadLetterFailed applies the last resort to a message that could not be
// dead-lettered (DeadLetterFallback).
func (r *runState) deadLetterFailed(d *Delivery, env *codec.Envelope, fails []*FailedMessage, err error) {
	l := r.l
	attrs := []any{"topic", d.Topic, "partition", d.Info.Partition, "offset", d.Info.Offset,
		"delivery_count", d.Info.DeliveryCount, "err", err}
	if env != nil {
		attrs = append(attrs, "id", env.ID, "type", env.Type)
	}
	if l.dlFallback == Redeliver {
		l.log.Error("dispytch: dead-lettering failed for good; redelivering (DeadLetterFallback(Redeliver))", attrs...)
		r.nack(d, env, fails)
		return
	}
	l.stats.deadLetterDropped.Add(1)
	l.stats.dropped.Add(1)
	l.log.Error("dispytch: dead-lettering failed for good; message dropped (DeadLetterFallback(Drop))", attrs...)
	r.settleWith(d, env, Dropped, fails, d.Acker.Ack)
}
