package rabbitmq

import (
	"context"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
)

// DelayedRetries returns listener middleware that turns a failed handler
// attempt into a delayed retry through the broker: instead of waiting in the
// worker, it republishes the message to the group's next retry tier (see
// RetryTiers), marked for the failed handler only, and reports success to
// the listener, which acks the original. When the tier's delay has passed,
// the broker moves the message back to the group's queue, and only that
// handler runs again. A waiting retry holds no worker and no prefetch slot,
// and survives restarts.
//
// How it composes with the listener's in-process retries (dispytch.Retries):
// the middleware wraps every attempt, and acts only on a failure of attempt
// number after or later. Pass the handler's in-process attempts
// (Retries(n) makes n+1) to retry in process first, quickly, and then
// through the tiers; pass 1 to use the tiers only. When the tiers are used
// up (one pass through each, in order), the failure goes to the listener's
// failure policy: a dead letter then carries the x-death history of the
// tiers and the dispytch-dlq-* headers.
//
// Failures that retrying cannot fix (dispytch.Permanent, decode and
// validation errors) are never delayed. When the republish fails, or the
// message did not come from this client, or its group has no tiers (a
// listener without a group, DeclareTopology(false)), the error is returned
// as is, and the listener applies its own retries and policy.
//
// With handler names (dispytch.Name), only those handlers get delayed
// retries; the others keep the listener's in-process retries alone.
//
// Note that the listener counts a delayed attempt as handled in its Stats.
func (c *Client) DelayedRetries(after int, handlers ...string) dispytch.Middleware {
	after = max(after, 1)
	var only map[string]bool
	if len(handlers) > 0 {
		only = map[string]bool{}
		for _, h := range handlers {
			only[h] = true
		}
	}
	return func(next dispytch.HandlerFunc) dispytch.HandlerFunc {
		return func(ctx context.Context, call *dispytch.Call) error {
			err := next(ctx, call)
			if err == nil || call.Meta.Delivery.Attempt < after || dispytch.IsPermanent(err) {
				return err
			}
			if only != nil && !only[call.Handler.Name] {
				return err
			}
			raw, ok := call.Meta.Delivery.Raw.(amqp.Delivery)
			if !ok {
				return err
			}
			v, ok := c.sessions.Load(raw.ConsumerTag)
			if !ok {
				return err
			}
			s := v.(*session)
			if len(s.p.tiers) == 0 || s.p.dlRead {
				return err
			}
			done, _ := strconv.Atoi(call.Meta.Headers.Get(HeaderRetry))
			if done < 0 || done >= len(s.p.tiers) {
				return err
			}
			t := s.p.tiers[done]
			h := make(amqp.Table, len(raw.Headers)+3)
			for k, v := range raw.Headers {
				h[k] = v
			}
			h[HeaderRetry] = strconv.Itoa(done + 1)
			h[HeaderRetryTopic] = call.Meta.Topic
			h[dispytch.HeaderRedriveHandler] = call.Handler.Name
			pub := republishing(raw, h)
			pctx, cancel := s.ctx(context.WithoutCancel(ctx))
			defer cancel()
			if perr := c.publishAll(pctx, []*pubReq{{exchange: "", key: t.name, pub: pub}}); perr != nil {
				c.cfg.log.Warn("rabbitmq: delayed retry not scheduled; the listener handles the failure", "handler", call.Handler.Name,
					"tier", t.name, "err", perr)
				return err
			}
			c.cfg.log.Warn("rabbitmq: handler failed, delayed retry scheduled", "handler", call.Handler.Name,
				"topic", call.Meta.Topic, "id", call.Meta.ID, "retry", done+1, "of", len(s.p.tiers), "in", t.delay, "err", err)
			return nil
		}
	}
}
