package memory

import (
	"context"
	"errors"
	"fmt"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// consumeBatch is the most entries a consumer takes from its queue at once:
// one lock and one wake-up for many messages.
const consumeBatch = 32

// session is one Consume call.
type session struct {
	inflight map[*entry]struct{}
	closed   bool
}

// delivery is the Acknowledger of one delivered entry.
type delivery struct {
	d    backend.Delivery
	q    *queue
	e    *entry
	gen  uint64
	sess *session
}

func (d *delivery) Ack(context.Context) error  { return d.q.settle(d.e, d.gen, d.sess, false) }
func (d *delivery) Nack(context.Context) error { return d.q.settle(d.e, d.gen, d.sess, true) }

// Consume joins the group sub.Group ("default" when empty), creating it with
// sub's topics and patterns, and delivers its messages to inbox until ctx is
// done. Then it waits for inbox.Done and requeues whatever was left
// unsettled.
func (b *Broker) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	g, err := b.bind(sub)
	if err != nil {
		return err
	}
	sess := &session{inflight: map[*entry]struct{}{}}
	inbox.Ready()
	var cerr error
	var buf [consumeBatch]*entry
loop:
	for {
		es, err := g.q.next(ctx, sess, b.closedCh, buf[:])
		if err != nil {
			if errors.Is(err, dispytch.ErrClosed) {
				cerr = err
			}
			break
		}
		for i, e := range es {
			d := &delivery{q: &g.q, e: e, gen: e.gen, sess: sess}
			d.d = backend.Delivery{
				Topic:       e.s.topic,
				Key:         e.s.key,
				Value:       e.s.value,
				Headers:     e.s.headers,
				ContentType: e.s.contentType,
				Info: backend.DeliveryInfo{
					Redelivered:   e.deliveries > 1,
					DeliveryCount: e.deliveries,
					Partition:     -1,
					Offset:        -1,
				},
				Acker: d,
			}
			if err := inbox.Deliver(ctx, &d.d); err != nil {
				g.q.unpop(es[i:], sess)
				break loop
			}
		}
		clear(es)
	}
	if cerr == nil {
		select {
		case <-inbox.Done():
		case <-b.closedCh:
			cerr = fmt.Errorf("memory: consume: %w", dispytch.ErrClosed)
		}
	}
	g.q.release(sess)
	return cerr
}
