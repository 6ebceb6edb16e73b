package dispytch

// Processing one delivery: decode its envelope with the codec it was
// written with, route it by topic and event type, and run its handlers.

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go/codec"
)

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

// msgState is the per-message state of process, pooled.
type msgState struct {
	env  codec.Envelope
	meta Metadata
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
