package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Consumption. A listener's group is one durable pull consumer (named
// after the group, with . * > and white space as _) on the events stream,
// with explicit acks, filtered on the listener's subjects. Several
// listeners of a group, in one process or many, pull from the same
// consumer and share its messages; every group gets every message. A new
// group starts with the messages published after it was created (see
// DeliverAll).
//
// Deliveries are acked once every handler succeeded or the message was
// dead-lettered (then terminated, so the server neither redelivers it nor
// counts it as acked). A retry that would wait goes back to the server
// with NakWithDelay (backend.DelayedNacker), holding no worker. While a
// handler runs, its delivery gets an InProgress signal every third of
// AckWait, so the server does not redeliver it meanwhile. Redelivered and
// DeliveryCount come from the message's metadata.
//
// Recovery: nats.go reconnects by itself, and the pull subscription goes
// on after a reconnect or a server restart. When the consumer is deleted
// under a running listener, or the pull subscription fails otherwise, the
// listener sets it up again with backoff (recreating the consumer from the
// first sequence it had not settled). Acks of deliveries from before a
// reconnect still count: JetStream deliveries are not tied to a
// connection.
//
// nats-server before 2.10 takes one filter subject per consumer: a
// listener with several subjects then gets a consumer without a filter
// (every subject of the stream) and skips, acking them, the messages of
// subjects it does not consume.

// ReasonMaxDeliver is the dead-letter reason of a message delivered more
// often than MaxDeliver allows.
const ReasonMaxDeliver dispytch.Reason = "max_deliver"

// run is one Consume call.
type run struct {
	c       *Client
	sub     backend.Subscription
	inbox   backend.Inbox
	obs     backend.ConnObserver
	group   string
	durable string
	stream  string
	dlTopic string
	filters []string
	batch   int
	pending int

	mu       sync.Mutex
	inflight map[*delivery]struct{}
	attempts map[uint64]int // stream sequence -> attempts made, of a NakWithDelay'd message
	lastSeq  uint64
	created  time.Time // when the stream was created, as first seen

	down    atomic.Bool
	stopped atomic.Bool // the listener stopped taking deliveries
	warned  atomic.Bool
}

// Consume implements backend.Consumer (see the package documentation).
func (c *Client) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	switch {
	case ctx == nil:
		return errors.New("nats: consume: nil context")
	case inbox == nil:
		return errors.New("nats: consume: nil inbox")
	}
	fs, err := filters(sub)
	if err != nil {
		return err
	}
	stream := c.streamFor(fs[0])
	for _, f := range fs[1:] {
		if c.streamFor(f) != stream {
			return fmt.Errorf("nats: consume: subjects %v are in streams %s and %s: a listener consumes one stream: %w", fs, c.cfg.stream, c.cfg.dlStream, backend.ErrPermanent)
		}
	}
	group := sub.Group
	if group == "" {
		group = "dispytch"
	}
	conc := max(sub.Concurrency, 1)
	r := &run{
		c: c, sub: sub, inbox: inbox, group: group, durable: durableName(group), stream: stream,
		dlTopic: group + ".dlq", filters: fs,
		inflight: map[*delivery]struct{}{}, attempts: map[uint64]int{},
	}
	r.obs, _ = inbox.(backend.ConnObserver)
	r.batch = c.cfg.batch
	if r.batch == 0 {
		r.batch = min(max(conc, 64), 256)
	}
	r.pending = c.cfg.maxAckPending
	if r.pending == 0 {
		r.pending = conc + max(conc, 64) + r.batch
	}
	c.obsMu.Lock()
	c.observers[r] = struct{}{}
	c.obsMu.Unlock()
	defer func() {
		c.obsMu.Lock()
		delete(c.observers, r)
		c.obsMu.Unlock()
	}()

	stopTicker := r.keepAlive()
	defer stopTicker()

	ready := false
	var lastErr error
	wait := c.cfg.backoffMin
	for ctx.Err() == nil && !r.stopped.Load() {
		if c.nc.IsClosed() {
			// Nothing can be settled any more: the server redelivers
			// what was in flight after AckWait.
			return fmt.Errorf("nats: consume: %w", c.closedErr())
		}
		cons, err := r.setup(ctx)
		if err == nil {
			wait = c.cfg.backoffMin
			if !ready {
				ready = true
				inbox.Ready()
			} else {
				r.reconnected()
			}
			err = r.consume(ctx, cons)
			if err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, backend.ErrPermanent) {
			return err
		}
		// The stream may have been deleted or changed: check its subjects
		// again on the next try.
		for _, f := range append([]string{r.dlTopic}, r.filters...) {
			c.forget(f)
		}
		err = c.withConnCause(err)
		lastErr = err
		c.cfg.log.Warn("nats: subscription lost; setting it up again", "group", group, "err", err, "retry_in", wait.String())
		r.disconnected(err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-inbox.Done():
		}
		t.Stop()
		wait = min(2*wait, c.cfg.backoffMax)
	}
	if !ready {
		if lastErr != nil {
			return lastErr
		}
		return ctx.Err()
	}
	r.drain()
	return nil
}

// drain waits for the listener to settle what it accepted, and returns
// what it left to the server for redelivery.
func (r *run) drain() {
	<-r.inbox.Done()
	r.mu.Lock()
	left := make([]*delivery, 0, len(r.inflight))
	for d := range r.inflight {
		left = append(left, d)
	}
	r.mu.Unlock()
	for _, d := range left {
		if d.settle() {
			_ = d.msg.Nak()
		}
	}
}

// setup makes the streams hold the subscription's subjects and the
// group's dead-letter subject, and the group's consumer exist.
func (r *run) setup(ctx context.Context) (jetstream.Consumer, error) {
	c := r.c
	if err := c.ensureSubjects(ctx, r.stream, r.filters); err != nil {
		return nil, err
	}
	if c.cfg.declare && r.stream == c.cfg.stream {
		if err := c.ensureSubjects(ctx, c.cfg.dlStream, []string{r.dlTopic}); err != nil {
			return nil, err
		}
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       r.durable,
		Description:   "dispytch group " + r.group,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.ackWait,
		MaxAckPending: r.pending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if c.cfg.deliverAll {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	switch {
	case len(r.filters) == 1:
		cfg.FilterSubject = r.filters[0]
	case c.multiFilter():
		cfg.FilterSubjects = r.filters
	default:
		if r.warned.CompareAndSwap(false, true) {
			c.cfg.log.Info("nats: the server ("+c.nc.ConnectedServerVersion()+") takes one filter subject per consumer (2.10 takes several): the group's consumer gets every subject of the stream and skips the others",
				"group", r.group, "subjects", r.filters)
		}
	}
	st, err := c.js.Stream(ctx, r.stream)
	if err != nil {
		return nil, streamError(r.stream, "look up", err)
	}
	r.mu.Lock()
	if created := st.CachedInfo().Created; r.created.IsZero() {
		r.created = created
	} else if !created.Equal(r.created) {
		// The stream was deleted and created again: its sequences start
		// over, and everything it holds is new to the group.
		r.created, r.lastSeq = created, 0
		clear(r.attempts)
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	r.mu.Unlock()
	for try := 0; ; try++ {
		existing, err := c.js.Consumer(ctx, r.stream, r.durable)
		if err == nil {
			info := existing.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.DeliverPolicy, info.OptStartSeq, info.OptStartTime
			if sameConsumer(info, cfg) {
				return existing, nil
			}
			cons, err := c.js.UpdateConsumer(ctx, r.stream, cfg)
			if err != nil {
				return nil, consumerError(r.durable, "update", err)
			}
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, consumerError(r.durable, "look up", err)
		}
		r.mu.Lock()
		if seq := r.resumeSeq(); seq > 0 {
			// The consumer was deleted under the listener: start its new
			// one where this listener's settled deliveries end, so that
			// what was published meanwhile is not skipped.
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		}
		r.mu.Unlock()
		cons, err := c.js.CreateConsumer(ctx, r.stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) && try < 3 {
			continue
		}
		if err != nil {
			return nil, consumerError(r.durable, "create", err)
		}
		return cons, nil
	}
}

func sameConsumer(a, b jetstream.ConsumerConfig) bool {
	return a.AckPolicy == b.AckPolicy && a.AckWait == b.AckWait && a.MaxAckPending == b.MaxAckPending &&
		a.MaxDeliver == b.MaxDeliver && a.FilterSubject == b.FilterSubject &&
		strings.Join(a.FilterSubjects, " ") == strings.Join(b.FilterSubjects, " ")
}

func consumerError(name, what string, err error) error {
	err = fmt.Errorf("nats: %s consumer %s: %w", what, name, err)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 404 && apiErr.Code != 408 {
		return fmt.Errorf("%w: %w", backend.ErrPermanent, err)
	}
	return err
}

// resumeSeq is the stream sequence a recreated consumer starts at: the
// lowest of the deliveries not settled, or the one after the last seen;
// 0 before any delivery. r.mu is held.
func (r *run) resumeSeq() uint64 {
	if r.lastSeq == 0 {
		return 0
	}
	seq := r.lastSeq + 1
	for d := range r.inflight {
		if d.seq > 0 {
			seq = min(seq, d.seq)
		}
	}
	return seq
}

// consume pulls messages and hands them to the inbox until ctx ends (nil)
// or the subscription fails (its error).
func (r *run) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(
		jetstream.PullMaxMessages(r.batch),
		jetstream.PullExpiry(10*time.Second),
		jetstream.PullHeartbeat(2*time.Second),
		jetstream.WithMessagesErrOnMissingHeartbeat(true),
	)
	if err != nil {
		return consumerError(r.durable, "pull from", err)
	}
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.inbox.Done():
			cancel()
		case <-stopCtx.Done():
		}
	}()
	next := jetstream.NextContext(stopCtx)
	for {
		msg, err := it.Next(next)
		if err != nil {
			if stopCtx.Err() != nil {
				r.release(it)
				return nil
			}
			it.Stop()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) && r.c.nc.IsClosed() {
				return fmt.Errorf("nats: consume: connection closed: %w", backend.ErrClosed)
			}
			return fmt.Errorf("nats: consume from %s: %w", r.durable, err)
		}
		d := r.delivery(ctx, msg)
		if d == nil {
			continue
		}
		if err := r.inbox.Deliver(stopCtx, &d.bd); err != nil {
			if d.settle() {
				_ = msg.Nak()
			}
			if errors.Is(err, backend.ErrStopping) {
				r.stopped.Store(true)
			}
			r.release(it)
			return nil
		}
	}
}

// release stops pulling and returns the messages pulled but not handed
// over to the server at once.
func (r *run) release(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				it.Stop()
			}
			return
		}
		_ = msg.Nak()
	}
}

// delivery builds the delivery of msg, or settles msg itself and returns
// nil: a subject the listener does not consume is acked, a message
// delivered more than MaxDeliver times dead-lettered.
func (r *run) delivery(ctx context.Context, msg jetstream.Msg) *delivery {
	md, err := msg.Metadata()
	if err != nil {
		r.c.cfg.log.Warn("nats: delivery without JetStream metadata; terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil
	}
	if !r.sub.Matches(msg.Subject()) {
		_ = msg.Ack()
		return nil
	}
	seq := md.Sequence.Stream
	if limit := r.c.cfg.maxDeliver; limit > 0 && md.NumDelivered > uint64(limit) {
		r.deadLetterMax(ctx, msg, md)
		return nil
	}
	d := &delivery{r: r, msg: msg, seq: seq, since: time.Now()}
	d.bd = backend.Delivery{
		Topic: msg.Subject(),
		Value: msg.Data(),
		Info: backend.DeliveryInfo{
			Redelivered:   md.NumDelivered > 1,
			DeliveryCount: int(md.NumDelivered),
			Partition:     -1,
			Offset:        -1,
			Raw:           msg,
		},
		Acker: d,
	}
	d.bd.Headers, d.bd.Key, d.bd.ContentType = fromHeader(msg.Headers())
	r.mu.Lock()
	if n, ok := r.attempts[seq]; ok {
		d.bd.Attempts = n
		delete(r.attempts, seq)
	}
	r.inflight[d] = struct{}{}
	r.lastSeq = max(r.lastSeq, seq)
	r.mu.Unlock()
	return d
}

// deadLetterMax dead-letters a message delivered more often than
// MaxDeliver, and terminates it; when the dead letter cannot be stored,
// the message is returned for a later try.
func (r *run) deadLetterMax(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) {
	h, key, ct := fromHeader(msg.Headers())
	now := time.Now()
	f := &dispytch.FailedMessage{
		Topic: msg.Subject(), Key: key, Value: msg.Data(), Headers: h, Group: r.sub.Group,
		Reason: ReasonMaxDeliver, Attempts: int(md.NumDelivered) - 1,
		Err:          fmt.Errorf("delivered %d times, MaxDeliver is %d", md.NumDelivered, r.c.cfg.maxDeliver),
		FirstFailure: md.Timestamp, LastFailure: now, Partition: -1, Offset: -1,
	}
	dl := f.Message(r.dlTopic)
	dl.ContentType = ct
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.c.Produce(pctx, dl); err != nil {
		r.c.cfg.log.Error("nats: a message over MaxDeliver could not be dead-lettered; returned for redelivery", "subject", msg.Subject(), "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	r.c.cfg.log.Warn("nats: message delivered more often than MaxDeliver; dead-lettered", "subject", msg.Subject(), "deliveries", md.NumDelivered, "dlq", r.dlTopic)
	_ = msg.Term()
}

// keepAlive sends InProgress for the deliveries held longer than a third
// of AckWait, every third of AckWait, until the returned function is
// called.
func (r *run) keepAlive() func() {
	every := r.c.cfg.ackWait / 3
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				r.mu.Lock()
				var due []*delivery
				for d := range r.inflight {
					if now.Sub(d.since) >= every {
						due = append(due, d)
					}
				}
				r.mu.Unlock()
				for _, d := range due {
					if !d.settled.Load() {
						_ = d.msg.InProgress()
					}
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (r *run) disconnected(err error) {
	r.down.Store(true)
	if r.obs != nil {
		r.obs.Disconnected(err)
	}
}

func (r *run) reconnected() {
	if r.down.CompareAndSwap(true, false) && r.obs != nil {
		r.obs.Reconnected()
	}
}

// fromHeader converts NATS headers into dispytch headers: the key and the
// content type apart, the server's Nats-* headers and the event id and
// type headers (the envelope has them) left out.
func fromHeader(h nats.Header) (map[string]string, []byte, string) {
	if len(h) == 0 {
		return nil, nil, ""
	}
	var key []byte
	var ct string
	var out map[string]string // made for the first header the event keeps
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch {
		case k == HeaderKey:
			key = []byte(vs[0])
		case k == backend.HeaderContentType:
			ct = vs[0]
		case strings.HasPrefix(k, "Nats-"):
			// The server's own (Nats-Msg-Id, ...). The event id and type
			// headers stay: the header envelope format reads them.
		default:
			if out == nil {
				out = make(map[string]string, len(h))
			}
			out[k] = vs[0]
		}
	}
	return out, key, ct
}

// delivery is one message handed to the listener, and its Acknowledger.
type delivery struct {
	bd      backend.Delivery
	r       *run
	msg     jetstream.Msg
	seq     uint64
	since   time.Time
	settled atomic.Bool
}

// settle marks d settled and forgets it; false when it was already.
func (d *delivery) settle() bool {
	if !d.settled.CompareAndSwap(false, true) {
		return false
	}
	d.r.mu.Lock()
	delete(d.r.inflight, d)
	d.r.mu.Unlock()
	return true
}

var errSettled = errors.New("nats: delivery already settled")

func (d *delivery) ackErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, nats.ErrConnectionClosed) {
		err = fmt.Errorf("%w: %w", backend.ErrClosed, err)
	}
	return fmt.Errorf("nats: %s %s (stream sequence %d): %w", what, d.bd.Topic, d.seq, err)
}

// Ack acknowledges the delivery.
func (d *delivery) Ack(context.Context) error {
	if !d.settle() {
		return errSettled
	}
	return d.ackErr("ack", d.msg.Ack())
}

// Nack returns the delivery to the server for redelivery at once.
func (d *delivery) Nack(context.Context) error {
	if !d.settle() {
		return errSettled
	}
	return d.ackErr("nak", d.msg.Nak())
}

// CanNackAfter reports whether a wait of delay goes to the server: any
// wait of MinServerDelay or longer. A shorter one costs a worker less than
// the round trip, and stays in it.
func (d *delivery) CanNackAfter(delay time.Duration) bool { return delay >= MinServerDelay }

// MinServerDelay is the shortest retry wait handed to the server with
// NakWithDelay; shorter waits run in the listener's worker.
const MinServerDelay = 20 * time.Millisecond

// NackAfter returns the delivery with NakWithDelay; the attempts made are
// kept by the listener's consumer, which numbers the redelivery's after
// them when it comes back to it (the count starts again in another
// process, bounded by MaxDeliver).
func (d *delivery) NackAfter(_ context.Context, delay time.Duration, attempts int) error {
	if !d.settle() {
		return errSettled
	}
	d.r.mu.Lock()
	if len(d.r.attempts) > 100000 {
		clear(d.r.attempts)
	}
	d.r.attempts[d.seq] = attempts
	d.r.mu.Unlock()
	if err := d.msg.NakWithDelay(delay); err != nil {
		d.r.mu.Lock()
		delete(d.r.attempts, d.seq)
		d.r.mu.Unlock()
		return d.ackErr("nak with delay", err)
	}
	return nil
}

// DeadLetter implements backend.DeadLetterer: it stores the dead letters
// (waiting for the stream's acks) and terminates the delivery, so that the
// server does not deliver it again.
func (d *delivery) DeadLetter(ctx context.Context, letters []*backend.Message) error {
	if d.settled.Load() {
		return errSettled
	}
	if err := d.r.c.Produce(ctx, letters...); err != nil {
		return err
	}
	if !d.settle() {
		return errSettled
	}
	if err := d.msg.Term(); err != nil {
		d.r.c.cfg.log.Log(ctx, slog.LevelWarn, "nats: terminating a dead-lettered delivery failed; it may be delivered again", "err", err)
	}
	return nil
}

var (
	_ backend.Acknowledger  = (*delivery)(nil)
	_ backend.DelayedNacker = (*delivery)(nil)
	_ backend.DeadLetterer  = (*delivery)(nil)
)
