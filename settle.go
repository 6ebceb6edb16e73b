package dispytch

// Settling: ack, nack or dead-letter a message once its handlers are
// done, and report the outcome.

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/dispytch/dispytch-go/codec"
)

// deadLetterTimeout bounds one dead-lettering.
const deadLetterTimeout = 30 * time.Second

// outcome is how one handler ended for one message.
type outcome struct {
	failed    *FailedMessage
	policy    FailurePolicy
	abandoned bool
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
