package dispytch

// Processing one delivery: decode its envelope with the codec it was
// written with, route it by topic and event type, tell the observers, and
// run its handlers.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// codecFor picks the codec a delivery was written with: the one its
// content type names, else the one its first byte shows (JSON or msgpack),
// else the listener's own.
func (l *Listener) codecFor(d *backend.Delivery) codec.Codec {
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

// msgState is the per-message state of process, pooled.
type msgState struct {
	d       *backend.Delivery
	env     codec.Envelope
	frame   codec.Frame // d, for envelope formats other than Dispytch's
	decoded bool
	meta    Metadata
	// ctx is the handlers' base context: the run's, or what the message
	// observers made of it (a span, say).
	ctx   context.Context
	ends  []func(Settlement) // the message observers' ends
	start time.Time          // set when observers need the duration
	one   bool               // the message has exactly one handler
	hname string             // its handlers' names, for logs
}

// handlerMatch is a handler of a message and the route that matched it.
type handlerMatch struct {
	h *handler
	m *routeMatch
}

// What process does with a message, decided before anything is run.
const (
	doRun = iota
	doPoison
	doSkip
	doNoHandler
)

func (r *runState) process(d *backend.Delivery) {
	ms := r.msgs.Get().(*msgState)
	defer func() {
		ends := ms.ends[:0]
		*ms = msgState{ends: ends}
		r.msgs.Put(ms)
		r.l.stats.finished.Add(1)
		r.inflight.Done()
	}()
	ms.d, ms.ctx = d, r.hard
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
		if len(r.l.msgObs) > 0 {
			r.observe(ms, nil, handlerMatch{}, nil, 0)
		}
		r.report(ms, OutcomeAbandoned, nil, nil)
		return
	}
	if sn, ok := d.Acker.(backend.StaleNotifier); ok {
		// The handlers' context ends when the delivery goes stale.
		ctx, cancel := context.WithCancel(ms.ctx)
		defer cancel()
		go func() {
			select {
			case <-sn.StaleDone():
				cancel()
			case <-ctx.Done():
			}
		}()
		ms.ctx = ctx
	}
	l := r.l
	env := &ms.env
	var cd codec.Codec
	var err error
	if f := l.formatOf(ms, d); f != nil {
		// Header mode, CloudEvents: the format finds the body's codec.
		cd, err = f.Decode(&ms.frame, env, l.lookup)
	} else {
		cd = l.codecFor(d)
		if ic, ok := cd.(codec.InterningDecoder); ok {
			err = ic.DecodeEnvelopeInterned(d.Value, env, r.c.types)
		} else {
			err = cd.DecodeEnvelope(d.Value, env)
		}
	}

	// Decide.
	do, target := doRun, ""
	var one handlerMatch
	var many []handlerMatch
	n := 0
	if err != nil {
		do = doPoison
	} else {
		ms.decoded = true
		matches := r.c.rt.match(d.Topic)
		if len(d.Headers) > 0 {
			target = d.Headers[HeaderRedriveHandler]
			if _, dl := d.Headers[HeaderDLReason]; dl && !literalMatch(matches) {
				// A dead letter reached a pattern subscription (its topic
				// happens to match). Handling it as a new event would
				// loop; leave it to whoever reads the dead-letter topic.
				do = doSkip
			} else if g, ok := d.Headers[HeaderRedriveGroup]; ok && g != l.group {
				// Redriven for another group's handler: not ours to run.
				do = doSkip
			}
		}
		if do == doRun {
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
				do = doNoHandler
			}
		}
	}
	if len(l.msgObs) > 0 {
		r.observe(ms, err, one, many, n)
	}

	switch do {
	case doPoison:
		l.stats.poison.Add(1)
		r.logMsg(ms, slog.LevelWarn, "", "dispytch: undecodable message", "err", err, "policy", l.poison.String())
		r.settle(ms, []outcome{{policy: l.poison, failed: r.failure(d, "", ReasonDecode, fmt.Errorf("%w: envelope: %w", ErrDecode, err), 1, time.Now())}})
		return
	case doSkip:
		l.stats.skippedDeadLetters.Add(1)
		r.logMsg(ms, slog.LevelDebug, "", "dispytch: skipping a dead letter, or a message redriven for another group")
		r.ack(ms, OutcomeSkipped)
		return
	case doNoHandler:
		l.stats.unhandled.Add(1)
		reason := fmt.Errorf("%w: event type %q on topic %q", ErrNoHandler, env.Type, d.Topic)
		policy := l.unknown
		if target != "" {
			// A redriven message names a handler that is gone: never drop
			// it quietly.
			reason = fmt.Errorf("%w: redriven to handler %q, which is not registered for %q on %q", ErrNoHandler, target, env.Type, d.Topic)
			policy = PolicyDeadLetter
			r.logMsg(ms, slog.LevelWarn, target, "dispytch: redriven message for an unknown handler")
		} else if policy == PolicyDrop {
			r.logMsg(ms, slog.LevelDebug, "", "dispytch: no handler")
			r.ack(ms, OutcomeUnhandled)
			return
		}
		r.settle(ms, []outcome{{policy: policy, failed: r.failure(d, target, ReasonNoHandler, reason, 1, time.Now())}})
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
		ms.one, ms.hname = true, one.h.info.Name
		meta.seg = one.m.seg
		o := r.runHandler(ms, one.h, meta)
		if o.failed == nil && !o.abandoned && o.retryAfter == 0 {
			r.ack(ms, OutcomeAcked)
			return
		}
		r.settle(ms, []outcome{o})
		return
	}
	r.runMany(ms, many)
}

// runMany runs several handlers of one message concurrently, each with its
// own copy of the metadata (their attempt numbers and segments differ), and
// settles the message. It is apart from process so that the single-handler
// path allocates nothing for it.
func (r *runState) runMany(ms *msgState, many []handlerMatch) {
	n := len(many)
	outs := make([]outcome, n)
	metas := make([]Metadata, n)
	names := make([]string, n)
	for i, m := range many {
		names[i] = m.h.info.Name
	}
	ms.hname = strings.Join(names, ",")
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		metas[i] = ms.meta
		metas[i].seg = many[i].m.seg
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			outs[i] = r.runHandler(ms, many[i].h, &metas[i])
		}(i)
	}
	ms.meta.seg = many[0].m.seg
	outs[0] = r.runHandler(ms, many[0].h, &ms.meta)
	wg.Wait()
	r.settle(ms, outs)
}

// stale reports whether d's session ended (see backend.StaleChecker).
func stale(d *backend.Delivery) bool {
	sc, ok := d.Acker.(backend.StaleChecker)
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

func (r *runState) failure(d *backend.Delivery, handler string, reason Reason, err error, attempts int, first time.Time) *FailedMessage {
	return &FailedMessage{
		Topic: d.Topic, Key: d.Key, Value: d.Value, Headers: d.Headers, Group: r.l.group,
		Reason: reason, Err: err, Handler: handler, Attempts: attempts,
		FirstFailure: first, LastFailure: time.Now(),
		Partition: d.Info.Partition, Offset: d.Info.Offset,
	}
}
