package dispytch

// Settling: ack, nack or dead-letter a message once its handlers are
// done, and report the outcome to the observers.

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/dispytch/dispytch-go/backend"
)

// deadLetterTimeout bounds one dead-lettering.
const deadLetterTimeout = 30 * time.Second

// settle acks, nacks, delays or dead-letters a message according to its
// handlers' outcomes.
func (r *runState) settle(ms *msgState, outs []outcome) {
	d := ms.d
	var dls, fails []*FailedMessage
	redeliver, dropped := false, false
	for _, o := range outs {
		if o.abandoned {
			r.l.stats.abandoned.Add(1)
			r.report(ms, OutcomeAbandoned, nil, nil)
			return
		}
	}
	if len(outs) == 1 && outs[0].retryAfter > 0 {
		r.nackAfter(ms, outs[0])
		return
	}
	for _, o := range outs {
		if o.failed == nil {
			continue
		}
		fails = append(fails, o.failed)
		switch o.policy {
		case PolicyDeadLetter:
			dls = append(dls, o.failed)
		case PolicyRedeliver:
			redeliver = true
		case PolicyDrop:
			dropped = true
			r.l.stats.dropped.Add(1)
			r.logMsg(ms, slog.LevelError, o.failed.Handler, "dispytch: dropping failed message",
				"reason", string(o.failed.Reason), "err", o.failed.Err)
		}
	}
	switch {
	case redeliver:
		r.nack(ms, fails)
	case len(dls) > 0:
		r.deadLetter(ms, dls, fails)
	case dropped:
		r.settleWith(ms, OutcomeDropped, fails, d.Acker.Ack)
	default:
		r.ack(ms, OutcomeAcked)
	}
}

// Outcome is how the listener settled a message.
type Outcome uint8

const (
	// OutcomeAcked: every handler succeeded; the message was acked.
	OutcomeAcked Outcome = iota
	// OutcomeDeadLettered: a handler failed for good and the message went
	// to the dead-letter topic, then was acked.
	OutcomeDeadLettered
	// OutcomeRedelivered: the message was nacked for redelivery.
	OutcomeRedelivered
	// OutcomeRetryLater: a handler failed and its retry waits in the
	// broker (see backend.DelayedNacker), which redelivers the message.
	OutcomeRetryLater
	// OutcomeDropped: a handler failed for good and the PolicyDrop policy
	// acked the message.
	OutcomeDropped
	// OutcomeUnhandled: no handler for its event type; acked.
	OutcomeUnhandled
	// OutcomeSkipped: a dead letter reached a pattern subscription, or a
	// message was redriven for another group; acked.
	OutcomeSkipped
	// OutcomeAbandoned: left unsettled (shutdown, a lost session), for
	// redelivery.
	OutcomeAbandoned
	// OutcomeSettleFailed: acking or dead-lettering failed; the message
	// was nacked or left to the broker for redelivery.
	OutcomeSettleFailed
)

var outcomeNames = [...]string{"acked", "dead_lettered", "redelivered", "retry_later", "dropped", "unhandled", "skipped", "abandoned", "settle_failed"}

// String returns the outcome's label: "acked", "dead_lettered", ….
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Final reports whether the message is done with for good; false for the
// outcomes after which the broker delivers it again.
func (o Outcome) Final() bool {
	switch o {
	case OutcomeRedelivered, OutcomeRetryLater, OutcomeAbandoned, OutcomeSettleFailed:
		return false
	}
	return true
}

// Settlement reports how one message was settled.
type Settlement struct {
	Topic string
	// ID and Type are the envelope's; empty when the payload did not
	// decode.
	ID, Type string
	Outcome  Outcome
	// Failures are the handlers that failed for good (or the decode
	// failure), whatever the policy did with them; for OutcomeRetryLater,
	// the failure that is retried.
	Failures []*FailedMessage
	// Err is the error that made settling fail (OutcomeSettleFailed).
	Err error
	// Duration is the time from taking the message to settling it; set
	// for observers and OnSettle hooks only.
	Duration time.Duration
}

func (r *runState) report(ms *msgState, o Outcome, fails []*FailedMessage, err error) {
	if len(ms.ends) == 0 {
		return
	}
	s := Settlement{Topic: ms.d.Topic, Outcome: o, Failures: fails, Err: err, Duration: time.Since(ms.start)}
	if ms.decoded {
		s.ID, s.Type = ms.env.ID, ms.env.Type
	}
	for i := len(ms.ends) - 1; i >= 0; i-- {
		ms.ends[i](s)
	}
}

// settleWith settles the message with f unless the run abandoned its
// deliveries.
func (r *runState) settleWith(ms *msgState, o Outcome, fails []*FailedMessage, f func(context.Context) error) {
	r.settleMu.RLock()
	defer r.settleMu.RUnlock()
	if r.abandoned.Load() {
		r.report(ms, OutcomeAbandoned, fails, nil)
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
		r.logMsg(ms, level, ms.hname, "dispytch: settling failed; the broker will redeliver", "outcome", o.String(), "err", err)
		r.report(ms, OutcomeSettleFailed, fails, err)
		return
	}
	r.report(ms, o, fails, nil)
}

func (r *runState) ack(ms *msgState, o Outcome) {
	r.settleWith(ms, o, nil, ms.d.Acker.Ack)
}

func (r *runState) nack(ms *msgState, fails []*FailedMessage) {
	r.l.stats.redelivered.Add(1)
	r.settleWith(ms, OutcomeRedelivered, fails, ms.d.Acker.Nack)
}

// nackAfter hands a failed attempt's retry to the broker. If the broker
// cannot take it, the message is nacked for an immediate redelivery.
func (r *runState) nackAfter(ms *msgState, o outcome) {
	dn := ms.d.Acker.(backend.DelayedNacker)
	fails := []*FailedMessage{o.failed}
	r.settleWith(ms, OutcomeRetryLater, fails, func(ctx context.Context) error {
		err := dn.NackAfter(ctx, o.retryAfter, o.attempts)
		if err == nil {
			r.l.stats.retriesLater.Add(1)
			return nil
		}
		r.logMsg(ms, slog.LevelWarn, o.failed.Handler, "dispytch: the broker did not take the delayed retry; redelivering now", "err", err)
		r.l.stats.redelivered.Add(1)
		return ms.d.Acker.Nack(ctx)
	})
}

func (r *runState) deadLetter(ms *msgState, dls, fails []*FailedMessage) {
	d := ms.d
	r.settleMu.RLock()
	defer r.settleMu.RUnlock()
	if r.abandoned.Load() {
		r.report(ms, OutcomeAbandoned, fails, nil)
		return
	}
	for _, f := range dls {
		f.DeadLetterTopic = r.l.dlTopic(f)
	}
	// A dead-letter publish is bounded: during a broker outage the message
	// goes back for redelivery instead of holding a worker forever.
	ctx, cancel := context.WithTimeout(r.hard, deadLetterTimeout)
	defer cancel()
	err := r.publishDeadLetters(ctx, ms, dls, false)
	if errors.Is(err, ErrTooLarge) {
		// The broker took the original but not the dead letter, which
		// adds headers: send it without the original's value and headers,
		// keeping its coordinates, so that it can be found at its source.
		r.logMsg(ms, slog.LevelWarn, ms.hname, "dispytch: dead letter too large; sending it truncated",
			"partition", d.Info.Partition, "offset", d.Info.Offset, "bytes", len(d.Value), "err", err)
		err = r.publishDeadLetters(ctx, ms, dls, true)
	}
	if err == nil {
		r.l.stats.deadLettered.Add(int64(len(dls)))
		r.report(ms, OutcomeDeadLettered, fails, nil)
		return
	}
	r.l.stats.deadLetterErrors.Add(1)
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrPermanent) || d.Info.DeliveryCount >= r.l.dlAttempts {
		// Retrying cannot help, or it did not: the last resort applies,
		// so that the message does not hold its partition forever.
		r.deadLetterFailed(ms, fails, err)
		return
	}
	r.logMsg(ms, slog.LevelError, ms.hname, "dispytch: dead-lettering failed; message left for redelivery",
		"delivery_count", d.Info.DeliveryCount, "err", err)
	if nerr := d.Acker.Nack(r.hard); nerr != nil {
		r.logMsg(ms, slog.LevelError, ms.hname, "dispytch: nack failed", "err", nerr)
	}
	r.report(ms, OutcomeSettleFailed, fails, err)
}

// publishDeadLetters stores the dead letters of d, and acks d when the
// listener published them itself.
func (r *runState) publishDeadLetters(ctx context.Context, ms *msgState, dls []*FailedMessage, truncated bool) error {
	d := ms.d
	msgs := make([]*backend.Message, len(dls))
	for i, f := range dls {
		if truncated {
			msgs[i] = f.truncatedMessage(f.DeadLetterTopic)
		} else {
			msgs[i] = f.Message(f.DeadLetterTopic)
		}
	}
	if dler, ok := d.Acker.(backend.DeadLetterer); ok && !truncated {
		return dler.DeadLetter(ctx, msgs)
	}
	if err := r.l.dlProducer.Produce(ctx, msgs...); err != nil {
		return err
	}
	if aerr := d.Acker.Ack(r.hard); aerr != nil {
		// The dead letter is safe; the original may come back and be
		// dead-lettered twice, which at-least-once allows.
		r.l.stats.ackErrors.Add(1)
		r.logMsg(ms, slog.LevelError, ms.hname, "dispytch: ack after dead-lettering failed", "err", aerr)
	}
	return nil
}

// deadLetterFailed applies the last resort to a message that could not be
// dead-lettered (DeadLetterFallback).
func (r *runState) deadLetterFailed(ms *msgState, fails []*FailedMessage, err error) {
	l, d := r.l, ms.d
	attrs := []any{"partition", d.Info.Partition, "offset", d.Info.Offset, "delivery_count", d.Info.DeliveryCount, "err", err}
	if l.dlFallback == PolicyRedeliver {
		r.logMsg(ms, slog.LevelError, ms.hname, "dispytch: dead-lettering failed for good; redelivering (DeadLetterFallback(PolicyRedeliver))", attrs...)
		r.l.stats.redelivered.Add(1)
		// settleMu is held: call the acker directly.
		if nerr := d.Acker.Nack(r.hard); nerr != nil {
			r.l.stats.ackErrors.Add(1)
		}
		r.report(ms, OutcomeRedelivered, fails, nil)
		return
	}
	l.stats.deadLetterDropped.Add(1)
	l.stats.dropped.Add(1)
	r.logMsg(ms, slog.LevelError, ms.hname, "dispytch: dead-lettering failed for good; message dropped (DeadLetterFallback(PolicyDrop))", attrs...)
	if aerr := d.Acker.Ack(r.hard); aerr != nil {
		r.l.stats.ackErrors.Add(1)
		r.report(ms, OutcomeSettleFailed, fails, aerr)
		return
	}
	r.report(ms, OutcomeDropped, fails, nil)
}
