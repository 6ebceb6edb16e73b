package dispytch

// Running one handler for one message: attempts, retries with backoff (in
// the worker, or in the broker when it can redeliver after a delay), the
// attempt timeout, panics.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/di"
)

// outcome is how one handler ended for one message.
type outcome struct {
	failed    *FailedMessage
	policy    FailurePolicy
	abandoned bool
	// retryAfter, when set, asks the broker to redeliver the message
	// after that long (see backend.DelayedNacker), for the next attempt.
	retryAfter time.Duration
	attempts   int // the attempts made, with retryAfter
}

// runHandler runs one handler with its retries. meta is the handler's own
// copy.
func (r *runState) runHandler(ms *msgState, h *handler, meta *Metadata) outcome {
	l, d, body := r.l, ms.d, ms.env.Body
	var first time.Time
	for attempt := d.Attempts + 1; ; attempt++ {
		meta.Delivery.Attempt = attempt
		err := r.attempt(ms.ctx, h, meta, body)
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
			r.logMeta(ms.ctx, slog.LevelInfo, h, meta, "dispytch: attempt cut off by the shutdown timeout; message left for redelivery",
				"attempt", attempt, "err", err)
			return outcome{abandoned: true}
		}
		if stale(d) {
			// The delivery's session ended while it ran (its context was
			// cancelled, say): the broker redelivers it elsewhere; neither
			// retry nor dead-letter it here.
			r.logMeta(ms.ctx, slog.LevelInfo, h, meta, "dispytch: handler failed after its delivery went stale; left to the broker's redelivery",
				"attempt", attempt, "err", err)
			return outcome{abandoned: true}
		}
		reason := reasonOf(err)
		if reason == ReasonPanic {
			l.stats.panics.Add(1)
		}
		if attempt > h.cfg.retries || !h.retryable(err) {
			l.stats.failed.Add(1)
			r.logMeta(ms.ctx, slog.LevelError, h, meta, "dispytch: handler failed",
				"attempts", attempt, "reason", string(reason), "err", err, "policy", h.cfg.policy.String())
			return outcome{policy: h.cfg.policy, failed: r.failure(d, h.info.Name, reason, err, attempt, first)}
		}
		if r.stop.Err() != nil || stale(d) {
			// Shutting down, or the delivery's session is gone: no retry
			// here; the broker redelivers the message.
			r.logMeta(ms.ctx, slog.LevelInfo, h, meta, "dispytch: handler failed; not retrying during shutdown, message left for redelivery",
				"attempt", attempt, "err", err)
			return outcome{abandoned: true}
		}
		delay := h.cfg.backoff.Delay(attempt)
		l.stats.retries.Add(1)
		if delay > 0 && ms.one && !r.ordered(d) {
			if dn, ok := d.Acker.(backend.DelayedNacker); ok && dn.CanNackAfter(delay) {
				// The broker waits, not a worker.
				r.logMeta(ms.ctx, slog.LevelWarn, h, meta, "dispytch: handler failed, retrying through the broker",
					"attempt", attempt, "retry_in", delay.String(), "err", err)
				return outcome{retryAfter: delay, attempts: attempt, failed: r.failure(d, h.info.Name, reason, err, attempt, first), policy: h.cfg.policy}
			}
		}
		r.logMeta(ms.ctx, slog.LevelWarn, h, meta, "dispytch: handler failed, retrying",
			"attempt", attempt, "retry_in", delay.String(), "err", err)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.stop.Done():
				t.Stop()
				r.logMeta(ms.ctx, slog.LevelInfo, h, meta, "dispytch: retry wait cut off by shutdown; message left for redelivery",
					"attempt", attempt)
				return outcome{abandoned: true}
			}
		}
		if stale(d) {
			return outcome{abandoned: true}
		}
	}
}

// ordered reports whether d must be handled in order with others (an
// ordering key, or a message key the listener orders by): a retry waiting
// in the broker would let later messages of its key overtake it.
func (r *runState) ordered(d *backend.Delivery) bool {
	return d.OrderingKey != "" || (r.l.orderByKey && len(d.Key) > 0)
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
func (r *runState) attempt(base context.Context, h *handler, meta *Metadata, body []byte) error {
	if h.cfg.timeout <= 0 {
		return r.call(base, h, meta, body)
	}
	ctx, cancel := context.WithTimeout(base, h.cfg.timeout)
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
		r.logMeta(base, slog.LevelWarn, h, own, "dispytch: a timed-out attempt returned late; its result is ignored",
			"attempt", own.Delivery.Attempt, "err", err)
	}()
	return fmt.Errorf("%w: %s after %s (attempt %d)", ErrAttemptTimeout, h.info.Name, h.cfg.timeout, meta.Delivery.Attempt)
}

// call runs one attempt through the middleware, recovering panics.
func (r *runState) call(ctx context.Context, h *handler, meta *Metadata, body []byte) (err error) {
	a := attempt{meta: meta, body: body, codec: meta.codec, strict: h.cfg.strict, v: r.l.validator, log: h.log}
	defer func() {
		if p := recover(); p != nil {
			r.logMeta(ctx, slog.LevelError, h, meta, "dispytch: handler panicked",
				"attempt", meta.Delivery.Attempt, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %s: %v", ErrPanic, h.info.Name, p)
		}
	}()
	if h.call == nil {
		return h.run(ctx, a)
	}
	return h.call(ctx, &Call{Handler: &h.info, Meta: meta, Body: body, a: a})
}
