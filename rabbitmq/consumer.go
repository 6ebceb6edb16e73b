package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Consume consumes for a listener: it declares the topology of sub (see the
// package documentation), consumes the group's queue with manual acks and
// the Prefetch limit, and hands every message to inbox. After a lost
// connection or channel, or a consumer cancelled by the broker (its queue
// was deleted), it reconnects with backoff, declares the topology again and
// resumes; deliveries of the lost channel are never acked on the new one,
// and the listener does not start those it still holds (they are stale:
// see backend.StaleChecker). When ctx is done it stops taking
// deliveries, waits for the listener to settle what it holds, closes the
// channel (the broker requeues whatever is left unacked) and returns nil.
//
// It returns at once, with the broker's reason, for a permanent failure:
// a refused login (ErrAccessRefused), a missing virtual host
// (ErrVhostNotFound), a topology the broker contradicts
// (ErrPreconditionFailed: a queue declared with other arguments, an
// exchange of a type that cannot carry the subscription). Transient
// failures (a refused connection, a queue that DeclareTopology(false)
// expects but that does not exist yet) are retried with backoff; when ctx
// ends before the subscription was ever in place, Consume returns the last
// of them with ctx's error. It also returns an error wrapping
// dispytch.ErrClosed when the client is closed.
func (c *Client) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	if ctx == nil {
		return errors.New("rabbitmq: consume: nil context")
	}
	if inbox == nil {
		return errors.New("rabbitmq: consume: nil inbox")
	}
	p, err := c.plan(sub)
	if err != nil {
		return err
	}
	log := c.cfg.log.With("group", sub.Group)
	conn, _ := inbox.(backend.ConnObserver) // the listener's health
	ready := false
	delay := c.cfg.backoffMin
	var last error // the last transient failure
	for ctx.Err() == nil {
		s, err := c.openSession(ctx, p)
		if err != nil {
			switch {
			case c.isClosed() || errors.Is(err, dispytch.ErrClosed):
				return fmt.Errorf("rabbitmq: consume: %w", dispytch.ErrClosed)
			case permanent(err):
				log.Error("rabbitmq: consumer setup failed for good", "err", err)
				return err
			case ctx.Err() != nil:
				// Ended while waiting for a connection: the connection's
				// own failure is the cause.
				if cause := c.consConn.lastError(); cause != nil {
					last = cause
				} else if !errors.Is(err, ctx.Err()) {
					last = err
				}
			default:
				last = err
				if conn != nil {
					conn.Disconnected(err)
				}
				log.Warn("rabbitmq: consumer setup failed, retrying", "err", err, "retry_in", delay)
				select {
				case <-time.After(jitter(delay)):
				case <-ctx.Done():
				}
				delay = min(2*delay, c.cfg.backoffMax)
			}
			continue
		}
		delay = c.cfg.backoffMin
		if !ready {
			inbox.Ready()
			ready = true
		} else {
			log.Info("rabbitmq: consumer resumed", "queues", s.queues)
			if conn != nil {
				conn.Reconnected()
			}
		}
		lost, why := s.serve(ctx, inbox)
		if !lost {
			// Stopping: take no more deliveries, let the listener settle
			// what it has, then close the channel, which requeues the rest
			// (what was prefetched meanwhile included). The consumer is not
			// cancelled first: with a single active consumer, that would
			// activate the next consumer while this one still holds
			// earlier messages, and break the order.
			<-inbox.Done()
			s.close()
			return nil
		}
		log.Warn("rabbitmq: consumer lost its channel, resuming", "reason", why)
		if conn != nil {
			conn.Disconnected(fmt.Errorf("rabbitmq: consume: %s", why))
		}
		s.close()
		if c.isClosed() {
			return fmt.Errorf("rabbitmq: consume: %w", dispytch.ErrClosed)
		}
	}
	<-inbox.Done()
	if ready {
		return nil
	}
	if last == nil {
		return fmt.Errorf("rabbitmq: consume: never subscribed: %w", ctx.Err())
	}
	return fmt.Errorf("rabbitmq: consume: never subscribed: %w: last error: %w", ctx.Err(), last)
}

// session is one channel consuming for one Consume call.
type session struct {
	c          *Client
	p          *plan
	ch         *amqp.Channel
	queues     []string
	tags       []string
	deliveries <-chan amqp.Delivery
	closes     chan *amqp.Error
	cancels    chan string
	dead       chan struct{}  // closed once the channel is closed
	wg         sync.WaitGroup // forwarders when several queues are read
	stopFwd    chan struct{}  // closed by close: forwarders give up
	closeOnce  sync.Once
}

// ctx returns a context cancelled when parent is done or the session's
// channel dies: publishing on behalf of a delivery (a dead letter, a delayed
// retry) is pointless once the delivery can no longer be acked, since the
// broker redelivers it.
func (s *session) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-s.dead:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// stale reports whether the session's channel is gone: as soon as amqp091
// marks it closed (before the close notification went round), so that
// deliveries buffered from it are not started while the broker gives them
// to another consumer.
func (s *session) stale() bool { return s.ch.IsClosed() || s.isDead() }

func (s *session) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

func (c *Client) openSession(ctx context.Context, p *plan) (*session, error) {
	conn, err := c.consConn.get(ctx, true)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: consume: open channel: %w", err)
	}
	s := &session{
		c:       c,
		p:       p,
		ch:      ch,
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
		cancels: ch.NotifyCancel(make(chan string, 4)),
		dead:    make(chan struct{}),
		stopFwd: make(chan struct{}),
	}
	deadSignal := ch.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		<-deadSignal // a value, or closed when the channel shuts down
		close(s.dead)
	}()
	fail := func(err error) (*session, error) {
		_ = ch.Close()
		return nil, err
	}
	queues, err := c.declare(conn, ch, p)
	if err != nil {
		return fail(err)
	}
	s.queues = queues
	if err := ch.Qos(p.prefetch, 0, false); err != nil {
		return fail(fmt.Errorf("rabbitmq: consume: set prefetch: %w", err))
	}
	var outs []<-chan amqp.Delivery
	for _, q := range queues {
		tag := "dispytch-" + p.group + "-" + backend.NewUUID()[:8]
		d, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			s.close()
			return nil, declareError(fmt.Sprintf("consume %q", q), err)
		}
		s.tags = append(s.tags, tag)
		outs = append(outs, d)
	}
	if len(outs) == 1 {
		s.deliveries = outs[0]
	} else {
		merged := make(chan amqp.Delivery)
		for _, o := range outs {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				for d := range o {
					select {
					case merged <- d:
					case <-s.stopFwd:
						return
					}
				}
			}()
		}
		go func() {
			s.wg.Wait()
			close(merged)
		}()
		s.deliveries = merged
	}
	return s, nil
}

// serve hands deliveries to inbox. It returns lost=false when the consumer
// must stop (ctx done, listener stopping), or lost=true with the reason when
// the channel or the consumer is gone.
func (s *session) serve(ctx context.Context, inbox backend.Inbox) (lost bool, why string) {
	for {
		select {
		case <-ctx.Done():
			return false, ""
		case d, ok := <-s.deliveries:
			if !ok {
				select {
				case tag := <-s.cancels:
					return true, "consumer " + tag + " cancelled by the broker (queue deleted?)"
				case e := <-s.closes:
					return true, fmt.Sprint("channel closed: ", e)
				case <-time.After(50 * time.Millisecond):
					return true, "delivery stream ended"
				}
			}
			if s.stale() {
				// Delivered by a dead channel: the broker requeued it
				// already, handling it now would only duplicate it.
				continue
			}
			dv := s.delivery(d)
			if err := inbox.Deliver(ctx, &dv.d); err != nil {
				return false, ""
			}
		case tag := <-s.cancels:
			// amqp091 also ends the consumer's delivery stream; with several
			// queues the others would go on, so resume all of them.
			return true, "consumer " + tag + " cancelled by the broker (queue deleted?)"
		}
	}
}

func (s *session) close() {
	s.closeOnce.Do(func() {
		close(s.stopFwd)
		_ = s.ch.Close()
	})
}

// delivery is one message handed to the listener, and its Acknowledger.
type delivery struct {
	d   backend.Delivery
	s   *session
	tag uint64
}

func (s *session) delivery(d amqp.Delivery) *delivery {
	p := s.p
	fromTier := !p.dlRead && d.Exchange == "" && d.Headers[HeaderRetryTopic] != nil
	h, key := headersFromTable(d.Headers, fromTier || p.dlRead)
	topic := d.RoutingKey
	switch {
	case fromTier:
		topic = h[HeaderRetryTopic]
	case p.dlRead:
		h = brokerDeadLetterHeaders(h, d)
	}
	count := 0
	if v, ok := d.Headers["x-delivery-count"]; ok {
		if s, ok := formatHeader(v); ok {
			if n, err := strconv.Atoi(s); err == nil {
				count = n + 1
			}
		}
	} else if p.quorum {
		count = 1
	}
	attempts := 0
	if fromTier {
		if v, err := strconv.Atoi(h[HeaderRetry]); err == nil && v > 0 {
			attempts = v
		}
	}
	x := &delivery{s: s, tag: d.DeliveryTag}
	x.d = backend.Delivery{
		Attempts:    attempts,
		Topic:       topic,
		Key:         key,
		Value:       d.Body,
		Headers:     h,
		ContentType: d.ContentType,
		OrderingKey: p.orderingKey,
		Info: backend.DeliveryInfo{
			Redelivered:   d.Redelivered,
			DeliveryCount: count,
			Partition:     -1,
			Offset:        -1,
			Raw:           d,
		},
		Acker: x,
	}
	return x
}

// Reasons of dead letters the broker dead-lettered itself, as a scan of a
// dead-letter queue reads them from the x-death header; a dlq.Filter
// selects them:
//
//	dlq.Open(client, "billing.dlq").Redrive(ctx, client,
//		&dlq.Filter{Reasons: []dispytch.Reason{rabbitmq.ReasonDeliveryLimit}})
const (
	// ReasonDeliveryLimit: a quorum queue delivered the message more often
	// than its DeliveryLimit (the Redeliver policy kept failing).
	ReasonDeliveryLimit dispytch.Reason = "broker_delivery_limit"
	// ReasonExpired: the message's TTL passed in a queue.
	ReasonExpired dispytch.Reason = "broker_expired"
	// ReasonMaxLen: a queue's length limit pushed it out.
	ReasonMaxLen dispytch.Reason = "broker_maxlen"
	// ReasonRejected: a consumer rejected it without requeue.
	ReasonRejected dispytch.Reason = "broker_rejected"
)

// brokerDeadLetterHeaders gives a message the broker dead-lettered on its
// own (x-death: rejected, expired, maxlen, delivery_limit) the dead-letter
// headers the client writes itself, so that Redrive can send it back.
func brokerDeadLetterHeaders(h map[string]string, d amqp.Delivery) map[string]string {
	if h[dispytch.HeaderDLTopic] != "" {
		return h
	}
	deaths := Deaths(d.Headers)
	if len(deaths) == 0 {
		return h
	}
	topic := h[HeaderRetryTopic]
	if topic == "" && len(deaths[0].RoutingKeys) > 0 {
		topic = deaths[0].RoutingKeys[0]
	}
	if topic == "" {
		return h
	}
	if h == nil {
		h = map[string]string{}
	}
	h[dispytch.HeaderDLTopic] = topic
	h[dispytch.HeaderDLReason] = "broker_" + deaths[0].Reason // see ReasonDeliveryLimit
	h[dispytch.HeaderDLError] = fmt.Sprintf("dead-lettered by the broker from queue %q: %s (count %d)", deaths[0].Queue, deaths[0].Reason, deaths[0].Count)
	return h
}

func (x *delivery) settleErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if x.s.stale() || errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq: %s: the channel of this delivery is closed, the broker redelivers it: %w", op, dispytch.ErrClosed)
	}
	return fmt.Errorf("rabbitmq: %s: %w", op, err)
}

// Stale implements backend.StaleChecker: it reports true once the
// delivery's channel is gone. The broker then redelivers the message
// (possibly to another consumer: with a single active consumer, to the
// next one), so the listener must not start it here.
func (x *delivery) Stale() bool { return x.s.stale() }

// StaleDone is closed once the delivery's channel is gone; see Stale. (For
// a listener that cancels a running handler whose delivery went stale.)
func (x *delivery) StaleDone() <-chan struct{} { return x.s.dead }

// Ack acknowledges the delivery on the channel it came from.
func (x *delivery) Ack(context.Context) error {
	return x.settleErr("ack", x.s.ch.Ack(x.tag, false))
}

// Nack returns the delivery to its queue (basic.nack with requeue). Quorum
// queues count it towards DeliveryLimit.
func (x *delivery) Nack(context.Context) error {
	return x.settleErr("nack", x.s.ch.Nack(x.tag, false, true))
}

// DeadLetter publishes one dead letter per failed handler to the group's
// dead-letter queue, through the dead-letter exchange: the original body,
// properties and AMQP headers (x-death included) plus the dispytch-dlq-*
// failure headers. Once the broker confirmed them, it acks the original.
func (x *delivery) DeadLetter(ctx context.Context, letters []*backend.Message) error {
	p := x.s.p
	if p.dlRead {
		return errors.New("rabbitmq: a message read from a dead-letter queue has no dead-letter queue of its own; it is nacked for redelivery")
	}
	if x.s.isDead() {
		return x.settleErr("dead-letter", amqp.ErrClosed)
	}
	ctx, cancel := x.s.ctx(ctx)
	defer cancel()
	raw, _ := x.d.Info.Raw.(amqp.Delivery)
	reqs := make([]*pubReq, 0, len(letters))
	for _, dl := range letters {
		t := make(amqp.Table, len(raw.Headers)+len(dl.Headers))
		for k, v := range raw.Headers {
			t[k] = v
		}
		for k, v := range dl.Headers {
			if strings.HasPrefix(k, "dispytch-dlq-") {
				t[k] = v
			}
		}
		delete(t, dispytch.HeaderRedriveHandler)
		delete(t, dispytch.HeaderRedriveGroup)
		delete(t, HeaderRetryTopic)
		pub := republishing(raw, t)
		reqs = append(reqs, &pubReq{exchange: x.s.c.dlx, key: p.dlQueue, pub: pub})
	}
	if err := x.s.c.publishAll(ctx, reqs); err != nil {
		return fmt.Errorf("rabbitmq: dead-letter to %q: %w", p.dlQueue, err)
	}
	return x.Ack(ctx)
}

// publishAll publishes prepared requests through one channel and waits for
// their confirms.
func (c *Client) publishAll(ctx context.Context, reqs []*pubReq) error {
	errs := make(chan error, len(reqs))
	slot := c.pub.slot()
	for _, r := range reqs {
		r.ctx = ctx
		r.done = func(err error) { errs <- err }
		c.pub.send(r, slot)
	}
	var first error
	for range reqs {
		select {
		case err := <-errs:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: rabbitmq: waiting for the publisher confirms: %w", dispytch.ErrUnconfirmed, backend.ContextError(ctx.Err()))
		}
	}
	return first
}

var _ interface {
	backend.DeadLetterer
	backend.StaleChecker
	backend.StaleNotifier
	backend.DelayedNacker
} = (*delivery)(nil)

// republishing is a persistent copy of a delivered message, with its
// properties and body, under new headers (dead letters, delayed retries).
func republishing(raw amqp.Delivery, headers amqp.Table) amqp.Publishing {
	return amqp.Publishing{
		Headers:         headers,
		ContentType:     raw.ContentType,
		ContentEncoding: raw.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        raw.Priority,
		CorrelationId:   raw.CorrelationId,
		ReplyTo:         raw.ReplyTo,
		MessageId:       raw.MessageId,
		Timestamp:       raw.Timestamp,
		Type:            raw.Type,
		UserId:          raw.UserId,
		AppId:           raw.AppId,
		Body:            raw.Body,
	}
}
