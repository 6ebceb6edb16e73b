package dispytch

import (
	"context"
	"time"

	"github.com/dispytch/dispytch-go/backend"
)

// MessageObserver observes each message a listener takes, from receipt to
// settlement.
type MessageObserver interface {
	// ObserveMessage is called once the message's envelope is decoded (or
	// failed to decode) and routed, before any handler runs. The context
	// it returns is the base of every handler attempt's context (carrying
	// a span, say); end is called once with the settlement.
	ObserveMessage(ctx context.Context, m *MessageInfo) (_ context.Context, end func(Settlement))
}

// EmitObserver observes each message an emitter sends.
type EmitObserver interface {
	// ObserveEmit is called with the encoded message before it is handed
	// to the producer; it may add headers (m.Headers, created when nil),
	// such as a trace context. end is called once with the outcome.
	ObserveEmit(ctx context.Context, m *backend.Message) (_ context.Context, end func(error))
}

// MessageInfo describes a message to a MessageObserver.
type MessageInfo struct {
	// Topic is the concrete topic; Patterns are the topics (patterns) of
	// the handlers it was routed to, as registered: labels of bounded
	// cardinality.
	Topic    string
	Patterns []string
	// Handlers names the handlers it was routed to.
	Handlers []string
	// ID and Type are the envelope's; empty when it did not decode (Err).
	ID, Type string
	Err      error
	// Group is the listener's consumer group.
	Group string
	// Backend names the consumer's backend ("kafka"), when it is a
	// backend.Named.
	Backend string
	Key     []byte
	Headers map[string]string
	// Size is the message's size in bytes.
	Size int
	// Delivery holds Redelivered, DeliveryCount, Partition, Offset, Raw.
	Delivery backend.DeliveryInfo
}

// Observe registers an observer, the seam that tracing, metrics and logs
// are built on: o implements MessageObserver, EmitObserver or both (each
// handler attempt is observed by Middleware), and the same value can be
// given to listeners and emitters alike. Observers are called on the goroutine
// handling the message or the emit, and must be fast; a listener or
// emitter without observers pays nothing for them. Several observers nest
// in the order given: the first one's context is the outermost.
func Observe(o any) interface {
	ListenerOption
	EmitterOption
} {
	return observeOption{
		l: func(l *Listener) {
			if mo, ok := o.(MessageObserver); ok {
				l.msgObs = append(l.msgObs, mo)
			}
		},
		e: func(e *Emitter) {
			if eo, ok := o.(EmitObserver); ok {
				e.obs = append(e.obs, eo)
			}
		},
	}
}

// observeOption is a ListenerOption and an EmitterOption; see Observe.
type observeOption struct {
	l func(*Listener)
	e func(*Emitter)
}

func (o observeOption) applyListener(l *Listener) { o.l(l) }
func (o observeOption) applyEmitter(e *Emitter)   { o.e(e) }

// observe tells the message observers about a message about to be run.
func (r *runState) observe(ms *msgState, decodeErr error, one handlerMatch, many []handlerMatch, n int) {
	d := ms.d
	info := &MessageInfo{
		Topic: d.Topic, Group: r.l.group, Key: d.Key, Headers: d.Headers, Size: len(d.Value),
		Delivery: d.Info, Err: decodeErr,
	}
	if n, ok := r.l.consumer.(backend.Named); ok {
		info.Backend = n.Backend()
	}
	if ms.decoded {
		info.ID, info.Type = ms.env.ID, ms.env.Type
	}
	add := func(m handlerMatch) {
		info.Patterns = append(info.Patterns, m.m.r.pattern.String())
		info.Handlers = append(info.Handlers, m.h.info.Name)
	}
	switch {
	case n == 1:
		add(one)
	case n > 1:
		for _, m := range many {
			add(m)
		}
	}
	ms.start = time.Now()
	ctx := ms.ctx
	for _, o := range r.l.msgObs {
		var end func(Settlement)
		ctx, end = o.ObserveMessage(ctx, info)
		if end != nil {
			ms.ends = append(ms.ends, end)
		}
	}
	ms.ctx = ctx
}
