package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
)

// Delayed retries through the broker. With RetryTiers, a delivery is a
// backend.DelayedNacker: when a handler's retry would wait, the listener
// hands it the retry instead of holding a worker for the wait. The message
// is republished to the group's retry tier whose delay is the shortest not
// shorter than the wait asked for (the longest tier when none is that
// long), with the attempts made so far in the dispytch-retry header, and
// the original is acked; when the tier's TTL passes, the broker moves the
// message back to the group's queue, and the listener numbers its attempts
// after the ones already made, so that Retries(n) holds across deliveries.
// A waiting retry holds no worker and no prefetch slot, and survives
// restarts. The listener does this only for a message with one handler and
// no ordering key (SingleActiveConsumer groups keep their retries in the
// worker, to stay in order).

// tierFor returns the tier for a wait of d, or false without tiers.
func (x *delivery) tierFor(d time.Duration) (tier, bool) {
	p := x.s.p
	if len(p.tiers) == 0 || p.dlRead {
		return tier{}, false
	}
	best := p.tiers[len(p.tiers)-1]
	for _, t := range p.tiers {
		if t.delay >= d && t.delay < best.delay {
			best = t
		}
	}
	return best, true
}

// CanNackAfter reports whether the group has retry tiers.
func (x *delivery) CanNackAfter(d time.Duration) bool {
	_, ok := x.tierFor(d)
	return ok
}

// NackAfter republishes the message to the retry tier for d and acks the
// original once the broker confirmed the copy.
func (x *delivery) NackAfter(ctx context.Context, d time.Duration, attempts int) error {
	t, ok := x.tierFor(d)
	if !ok {
		return errors.ErrUnsupported
	}
	if x.s.isDead() {
		return x.settleErr("delayed retry", amqp.ErrClosed)
	}
	raw, _ := x.d.Info.Raw.(amqp.Delivery)
	h := make(amqp.Table, len(raw.Headers)+2)
	for k, v := range raw.Headers {
		h[k] = v
	}
	h[HeaderRetry] = strconv.Itoa(attempts)
	h[HeaderRetryTopic] = x.d.Topic
	ctx, cancel := x.s.ctx(ctx)
	defer cancel()
	if err := x.s.c.publishAll(ctx, []*pubReq{{exchange: "", key: t.name, pub: republishing(raw, h)}}); err != nil {
		return err
	}
	return x.Ack(ctx)
}

var _ backend.DelayedNacker = (*delivery)(nil)
