package dispytch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/internal/di"
	"github.com/dispytch/dispytch-go/internal/sched"
	"github.com/dispytch/dispytch-go/topic"
)

// Listener consumes messages, routes them to handlers by topic and event
// type, resolves the handlers' dependencies and settles each message with the
// broker once every handler of it succeeded or its failure was dealt with.
type Listener struct {
	consumer        backend.Consumer
	codec           codec.Codec
	codecs          map[string]codec.Codec // by content type
	lookup          codec.Lookup           // codecByType
	formats         []codec.EnvelopeFormat // read besides Dispytch's envelope
	log             *slog.Logger
	settings        []HandlerOption
	providers       []*di.Provider
	specs           []*handlerSpec
	mw              []Middleware
	concurrency     int
	shutdownTimeout time.Duration
	group, delim    string
	unknown, poison FailurePolicy
	dlTopic         func(*FailedMessage) string
	extraCodecs     []codec.Codec
	problems        []string // invalid option values, reported by Check and Run
	dlProducer      backend.Producer
	validator       structValidator
	orderByKey      bool
	msgObs          []MessageObserver
	startTimeout    time.Duration
	dlAttempts      int
	dlFallback      FailurePolicy

	mu      sync.Mutex
	running bool
	ready   chan struct{} // closed when subscribed, or when Run returned
	readyOK bool          // the current (or last) Run subscribed
	runErr  error         // why the last Run ended
	stats   counters
	health  listenerHealth
}

// NewListener returns a listener consuming from c. Register handlers with
// Handle and AddGroup, then call Run.
func NewListener(c backend.Consumer, opts ...ListenerOption) *Listener {
	l := &Listener{
		consumer:        c,
		codec:           codec.JSON,
		log:             slog.Default(),
		concurrency:     64,
		shutdownTimeout: 30 * time.Second,
		delim:           topic.DefaultDelimiter,
		unknown:         PolicyDrop,
		poison:          PolicyDeadLetter,
		dlTopic:         defaultDeadLetterTopic,
		orderByKey:      true,
		ready:           make(chan struct{}),
		startTimeout:    30 * time.Second,
		dlAttempts:      5,
		dlFallback:      PolicyDrop,
	}
	if p, ok := c.(backend.Producer); ok {
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
	for _, c := range append([]codec.Codec{codec.JSON, msgpack.Codec}, l.extraCodecs...) {
		l.codecs[c.ContentType()] = c
	}
	l.lookup = l.codecByType
	return l
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
func (l *Listener) Subscription() (backend.Subscription, error) {
	c, err := l.compile()
	if c == nil || c.patternErr != nil {
		if c != nil {
			err = c.patternErr
		}
		return backend.Subscription{}, err
	}
	return l.subscription(c), nil
}

func (l *Listener) subscription(c *compiled) backend.Subscription {
	sub := c.rt.subscription(l.group, l.delim)
	sub.Concurrency = l.concurrency
	return sub
}

// Handlers describes the registered handlers, in registration order: their
// topics, event types, body and segment types and settings. Tools build on
// it (AsyncAPI documents, the CLI).
func (l *Listener) Handlers() []HandlerInfo {
	l.mu.Lock()
	specs := append([]*handlerSpec(nil), l.specs...)
	l.mu.Unlock()
	out := make([]HandlerInfo, 0, len(specs))
	for _, s := range specs {
		cfg := l.handlerConfig(s)
		info := HandlerInfo{Name: cfg.name, Topic: s.topic, EventType: s.eventType, Location: s.loc, Retries: cfg.retries, Policy: cfg.policy}
		t := s.fn.Type()
		for i := 0; i < t.NumIn(); i++ {
			switch in := t.In(i); {
			case isEventType(in):
				info.Body = reflect.New(in).Interface().(eventMaker).bodyType()
			case isSegmentsType(in):
				info.Segments = reflect.New(in).Interface().(segmentsMaker).valueType()
			}
		}
		out = append(out, info)
	}
	return out
}

// Check builds the handlers and their dependency graph as Run would, and
// returns the same error Run would, without consuming anything.
//
// Codecs that keep schemas in a registry (codec.SchemaChecker) check the
// handlers' body types against it too: Check fails with the registry's
// reason when a schema is incompatible with its subject.
func (l *Listener) Check() error {
	if _, err := l.compile(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), schemaCheckTimeout)
	defer cancel()
	return l.checkSchemas(ctx)
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
		l.health.stopped(err)
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
	if err := l.checkSchemas(ctx); err != nil {
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
	l.health.starting(r)
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
	if !subscribed && !consumerDone {
		// select picks at random among ready cases: a subscription in
		// place counts, whatever else happened meanwhile.
		select {
		case <-r.readyCh:
			subscribed = true
		default:
		}
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
