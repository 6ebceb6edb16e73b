package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
)

// Dead-letter queues as a backend.DeadLetterStore.
//
// A scan makes one pass over what the queue holds when it starts: the
// number of ready messages a passive queue.declare reports. It takes them
// one by one with basic.get, without auto-ack, from the head of the queue.
// A message to remove is acked at once. A message to keep stays unacked,
// held by the scan's channel, so that the pass does not take it again; at
// the end of the pass every kept message is nacked back with requeue, and
// the channel is closed, which waits until the broker processed every ack
// and nack. A classic queue puts a requeued message back at its place; a
// quorum queue (RabbitMQ 3.10) puts it at the end, behind the messages that
// arrived meanwhile, and applies the requeue asynchronously: the scan waits
// until the broker counts the kept messages as ready again (up to 2 s), so
// that a Count or a scan right after it sees them. Messages that
// arrive during the scan (a redriven letter that failed again, dead-lettered
// anew) queue up behind those counted at the start, so the pass ends before
// it reaches them.
//
// Limits: a kept message is unacked for the length of the pass, so another
// consumer of the queue does not see it meanwhile, and the broker holds all
// kept messages in memory until the end of the pass (the client holds only
// their delivery tags). basic.get costs a round trip per message, a few
// thousand messages a second. A nack counts as a delivery on a quorum
// queue (x-delivery-count): do not give dead-letter queues a delivery
// limit, or messages kept by repeated scans are eventually dropped or
// dead-lettered by the broker. Messages held unacked by another consumer
// when the scan starts are not counted and not seen. If the connection is
// lost during a pass, the broker requeues what the scan held, and removals
// whose acks it had not processed come back (at-least-once).

// ScanDeadLetters implements backend.DeadLetterStore: it calls f with each
// message the queue dest holds when the scan starts, oldest first, each
// once, and never one that arrived during the scan (see above). A message
// f removes is acked; one it keeps stays in the queue (at its place in a
// classic queue, at the end of a quorum queue). The deliveries
// carry the message's headers (x-death as the dispytch-dlq-* headers of a
// message the broker dead-lettered itself, see the package documentation),
// key, body, content type, and the AMQP delivery in Info.Raw; Topic is
// dest. An error from f, or ctx ending, stops the pass: the message and
// those not yet seen stay. A missing queue is an error wrapping
// ErrQueueNotFound.
func (c *Client) ScanDeadLetters(ctx context.Context, dest string, f func(*backend.Delivery) (backend.DeadLetterAction, error)) (err error) {
	switch {
	case ctx == nil:
		return errors.New("rabbitmq: scan dead letters: nil context")
	case f == nil:
		return errors.New("rabbitmq: scan dead letters: nil function")
	case dest == "":
		return errors.New("rabbitmq: scan dead letters: no queue name")
	}
	ch, n, err := c.openScan(ctx, dest)
	if err != nil {
		return err
	}
	var kept uint64 // the last kept delivery tag; every unacked tag up to it is kept
	nkept := 0
	defer func() {
		if nkept > 0 {
			if rerr := requeueKept(ch, dest, kept, nkept); rerr != nil && err == nil {
				err = rerr
			}
		}
		// Close waits for close-ok: by then the broker applied every ack
		// and nack sent before it.
		if cerr := ch.Close(); cerr != nil && err == nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("rabbitmq: scan %q: %w", dest, cerr)
		}
	}()
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rabbitmq: scan %q: stopped after %d of %d messages: %w", dest, i, n, backend.ContextError(err))
		}
		d, ok, err := ch.Get(dest, false)
		if err != nil {
			return fmt.Errorf("rabbitmq: scan %q: basic.get: %w", dest, err)
		}
		if !ok {
			return nil // others took the rest
		}
		act, ferr := f(scanDelivery(dest, d))
		if ferr != nil || act != backend.ActionRemove {
			kept = d.DeliveryTag
			nkept++
		} else if aerr := ch.Ack(d.DeliveryTag, false); aerr != nil {
			return fmt.Errorf("rabbitmq: scan %q: ack: %w", dest, aerr)
		}
		if ferr != nil {
			if errors.Is(ferr, backend.ErrStopScan) {
				return nil
			}
			return ferr
		}
	}
	return nil
}

// requeueKept nacks the nkept messages a scan kept (every unacked tag up to
// last) back to q, and waits until the broker counts them as ready again,
// up to requeueWait: a quorum queue applies a requeue asynchronously,
// after the nack, and a Count or scan right after this one would miss the
// messages meanwhile. (The wait ends early when others take messages of q:
// the count then never gets there.)
func requeueKept(ch *amqp.Channel, q string, last uint64, nkept int) error {
	before, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		return nil // the queue or the channel is gone: the broker requeues on close
	}
	if err := ch.Nack(last, true, true); err != nil {
		return fmt.Errorf("rabbitmq: scan %q: requeue the kept messages: %w (the broker requeues them when the channel closes)", q, err)
	}
	deadline := time.Now().Add(requeueWait)
	for {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil || st.Messages >= before.Messages+nkept || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(5 * time.Millisecond) // the broker has no signal for it
	}
}

// requeueWait bounds how long a scan waits for its kept messages to be
// counted as ready again.
const requeueWait = 2 * time.Second

// openScan opens a channel for a scan of q and returns it with the number
// of messages q holds.
func (c *Client) openScan(ctx context.Context, q string) (*amqp.Channel, int, error) {
	conn, err := c.consConn.get(ctx, true)
	if err != nil {
		return nil, 0, fmt.Errorf("rabbitmq: dead letters %q: %w", q, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, 0, fmt.Errorf("rabbitmq: dead letters %q: open channel: %w", q, err)
	}
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		if ae := amqpError(err); ae != nil && ae.Code == amqp.NotFound {
			return nil, 0, fmt.Errorf("%w: %q: %s", ErrQueueNotFound, q, describe(err))
		}
		return nil, 0, fmt.Errorf("rabbitmq: dead letters %q: %w", q, declareError("inspect queue", err))
	}
	return ch, st.Messages, nil
}

// CountDeadLetters implements backend.DeadLetterCounter: the messages
// ready in queue dest (those held unacked by a consumer are not counted).
// A missing queue is an error wrapping ErrQueueNotFound.
func (c *Client) CountDeadLetters(ctx context.Context, dest string) (int, error) {
	switch {
	case ctx == nil:
		return 0, errors.New("rabbitmq: count dead letters: nil context")
	case dest == "":
		return 0, errors.New("rabbitmq: count dead letters: no queue name")
	}
	ch, n, err := c.openScan(ctx, dest)
	if err != nil {
		return 0, err
	}
	_ = ch.Close()
	return n, nil
}

// scanDelivery is the delivery a scan hands over for a message of dest.
func scanDelivery(dest string, d amqp.Delivery) *backend.Delivery {
	h, key := headersFromTable(d.Headers, true)
	h = brokerDeadLetterHeaders(h, d)
	return &backend.Delivery{
		Topic:       dest,
		Key:         key,
		Value:       d.Body,
		Headers:     h,
		ContentType: d.ContentType,
		Info: backend.DeliveryInfo{
			Redelivered: d.Redelivered,
			Partition:   -1,
			Offset:      -1,
			Raw:         d,
		},
	}
}
