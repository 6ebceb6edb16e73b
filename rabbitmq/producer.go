package rabbitmq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Publishing.
//
// Every publisher channel is in confirm mode and lets up to ConfirmWindow
// messages await their confirm. Publishing takes a window slot, sends the
// message with the mandatory flag and queues a record of it; one goroutine
// per channel reads the confirms (amqp091 hands them over in delivery-tag
// order), pops the records and completes them. Nobody waits for a round trip
// per message: a batch, concurrent Emits and EmitAsync all fill the window,
// and the broker's (often multiple) acks complete them.
//
// A mandatory message that no queue takes comes back as basic.return, which
// RabbitMQ sends before the message's ack on the same channel; the confirm
// reader drains the returns before completing each confirm and matches them
// to the confirmed message by exchange, routing key and body, so an
// unroutable message fails with ErrUnroutable.
//
// A message whose confirm is lost with its connection is published again on
// the next connection (at-least-once: it may arrive twice), as long as its
// context allows; meanwhile the publisher waits for the connection to come
// back, and fails with an error wrapping dispytch.ErrTimeout at its
// deadline. A channel closed by a channel exception (missing exchange,
// access refused, ...) fails its messages at once: retrying would fail the
// same way.
//
// Nothing is published once the message's context is done: the check is
// made under the channel's lock, right before the basic.publish, so a
// message fails either before it was handed to the broker (an error
// wrapping dispytch.ErrNotSent: retrying cannot duplicate it) or after
// (dispytch.ErrUnconfirmed, when its confirm did not arrive in time: the
// broker may have it). pubReq.sent tells the two apart.

// pubReq is one message on its way.
type pubReq struct {
	ctx      context.Context
	exchange string
	key      string
	pub      amqp.Publishing
	done     func(error) // the caller's, called once by complete or send
	p        *producer
	slot     *pubSlot
	// sent is set once the message was handed to the broker; lost holds
	// why its last confirm did not come (the channel died), for the error
	// when its context ends before it was published again.
	sent    atomic.Bool
	lost    error
	counted bool // counted in the client's pending publishes
}

// finish reports r's outcome to its caller, once, and ends its count among
// the pending publishes Close waits for.
func (r *pubReq) finish(err error) {
	r.done(err)
	if r.counted {
		r.p.c.pending.Add(-1)
		r.p.c.signalDrained()
	}
}

type producer struct {
	c     *Client
	slots []*pubSlot
	rr    atomic.Uint64
}

func newProducer(c *Client) *producer {
	p := &producer{c: c}
	for i := range c.cfg.pubChannels {
		p.slots = append(p.slots, &pubSlot{p: p, id: i, ready: make(chan struct{}), failed: make(chan struct{})})
	}
	return p
}

// pubSlot keeps one publisher channel open on the publishing connection.
type pubSlot struct {
	p         *producer
	id        int
	startOnce sync.Once

	mu      sync.Mutex
	cur     *pubChan
	ready   chan struct{} // closed while cur is set
	failed  chan struct{} // closed (and replaced) when opening a channel failed
	lastErr error         // why the last channel died or could not be opened
}

// get returns the slot's live channel, waiting for one until ctx is done.
// A permanent failure (of the connection, or of the channel's setup: an
// exchange the client cannot use) is returned at once.
func (s *pubSlot) get(ctx context.Context) (*pubChan, error) {
	s.startOnce.Do(func() { go s.run() })
	m := s.p.c.pubConn
	for {
		if s.p.c.isClosed() {
			return nil, fmt.Errorf("rabbitmq: publish: %w", dispytch.ErrClosed)
		}
		s.mu.Lock()
		cur, ready, failed, last := s.cur, s.ready, s.failed, s.lastErr
		s.mu.Unlock()
		if cur != nil && !cur.isDead() {
			return cur, nil
		}
		if cur != nil {
			// The channel just died; run replaces it at once.
			runtime.Gosched()
			if ctx.Err() == nil {
				continue
			}
		} else {
			if err := m.lastError(); permanent(err) {
				return nil, err
			}
			if permanent(last) {
				return nil, last
			}
			m.mu.Lock()
			connFailed := m.failed
			m.mu.Unlock()
			select {
			case <-ready:
				continue
			case <-failed:
				continue
			case <-connFailed:
				continue
			case <-s.p.c.closed:
				return nil, fmt.Errorf("rabbitmq: publish: %w", dispytch.ErrClosed)
			case <-ctx.Done():
			}
		}
		err := backend.ContextError(ctx.Err())
		if cause := s.cause(); cause != nil {
			return nil, fmt.Errorf("rabbitmq: publish: not connected: %w: last error: %w", err, cause)
		}
		return nil, fmt.Errorf("rabbitmq: publish: not connected yet (no connection attempt finished): %w", err)
	}
}

// cause is why the slot has no channel: the connection's failure while it
// is down, else the channel's own.
func (s *pubSlot) cause() error {
	if err := s.p.c.pubConn.lastError(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// state describes a slot without a live channel for error messages: "" when
// the channel is up.
func (s *pubSlot) state() string {
	s.mu.Lock()
	up := s.cur != nil && !s.cur.isDead()
	s.mu.Unlock()
	if up {
		return ""
	}
	if err := s.cause(); err != nil {
		return fmt.Sprintf(" (disconnected: %v)", err)
	}
	return " (disconnected)"
}

func (s *pubSlot) setFailed(err error) {
	s.mu.Lock()
	s.lastErr = err
	close(s.failed)
	s.failed = make(chan struct{})
	s.mu.Unlock()
}

// run opens the channel, waits for it to die, and opens the next one.
func (s *pubSlot) run() {
	c := s.p.c
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.closed
		cancel()
	}()
	delay := c.cfg.backoffMin
	var lastLogged string
	for {
		conn, err := c.pubConn.get(ctx, false)
		if err != nil {
			return // closed
		}
		pc, err := openPubChan(c, conn)
		if err != nil {
			if !conn.IsClosed() {
				// The connection's failure explains itself; this one is
				// the channel's (an exchange the client cannot use, say).
				s.setFailed(err)
				if msg := err.Error(); msg != lastLogged {
					c.cfg.log.Warn("rabbitmq: opening publisher channel failed", "err", err, "retry_in", delay)
					lastLogged = msg
				}
			}
			select {
			case <-time.After(jitter(delay)):
			case <-ctx.Done():
				return
			}
			delay = min(2*delay, c.cfg.backoffMax)
			continue
		}
		delay, lastLogged = c.cfg.backoffMin, ""
		s.mu.Lock()
		s.cur = pc
		s.lastErr = nil
		close(s.ready)
		s.mu.Unlock()
		select {
		case <-pc.dead:
		case <-ctx.Done():
			_ = pc.ch.Close()
			<-pc.dead
			return
		}
		s.mu.Lock()
		s.cur = nil
		s.ready = make(chan struct{})
		s.lastErr = pc.err
		s.mu.Unlock()
	}
}

// pubChan is one publisher channel with its confirm window.
type pubChan struct {
	c     *Client
	ch    *amqp.Channel
	slots chan struct{} // window semaphore
	dead  chan struct{} // closed once the channel is dead and every record failed
	// blocked is set while the broker blocks the connection (a resource
	// alarm): publishing would block in a socket write, beyond any deadline,
	// so publishers wait for the channel it holds to close, or their ctx.
	blocked atomic.Pointer[blockedState]

	mu      sync.Mutex
	closed  bool
	err     error
	pending ring[*pubReq]
}

func openPubChan(c *Client, conn *amqp.Connection) (*pubChan, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := c.ensureExchanges(conn, false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	w := c.cfg.window
	pc := &pubChan{
		c:     c,
		ch:    ch,
		slots: make(chan struct{}, w),
		dead:  make(chan struct{}),
	}
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go pc.watchBlocked(blocks)
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, w+1))
	returns := ch.NotifyReturn(make(chan amqp.Return, w+1))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	go pc.confirmLoop(confirms, returns, closes)
	return pc, nil
}

type blockedState struct {
	reason    string
	unblocked chan struct{}
}

func (pc *pubChan) watchBlocked(blocks <-chan amqp.Blocking) {
	for b := range blocks { // closed with the connection
		if b.Active {
			if pc.blocked.Load() == nil {
				pc.blocked.Store(&blockedState{reason: b.Reason, unblocked: make(chan struct{})})
				pc.c.cfg.log.Warn("rabbitmq: the broker blocks publishing", "reason", b.Reason)
			}
		} else if st := pc.blocked.Swap(nil); st != nil {
			close(st.unblocked)
			pc.c.cfg.log.Info("rabbitmq: the broker unblocked publishing")
		}
	}
	if st := pc.blocked.Swap(nil); st != nil {
		close(st.unblocked)
	}
}

func (pc *pubChan) isDead() bool {
	select {
	case <-pc.dead:
		return true
	default:
		return false
	}
}

// errRetry marks a message that never got a verdict because its channel
// died; produce republishes it.
type errRetry struct{ cause error }

func (e *errRetry) Error() string {
	if e.cause == nil {
		return ErrConnectionLost.Error()
	}
	return ErrConnectionLost.Error() + ": " + e.cause.Error()
}
func (e *errRetry) Unwrap() []error { return []error{ErrConnectionLost, e.cause} }

// publish sends r on the channel. An error means r was not sent and its done
// will not be called.
func (pc *pubChan) publish(r *pubReq) error {
	if st := pc.blocked.Load(); st != nil {
		select {
		case <-st.unblocked:
		case <-pc.dead:
			return &errRetry{cause: pc.deadErr()}
		case <-r.ctx.Done():
			return fmt.Errorf("rabbitmq: publish: the broker blocks publishing (%s): %w", st.reason, backend.ContextError(r.ctx.Err()))
		}
	}
	select {
	case pc.slots <- struct{}{}:
	case <-pc.dead:
		return &errRetry{cause: pc.deadErr()}
	case <-r.ctx.Done():
		return fmt.Errorf("rabbitmq: publish: waiting for a slot in the confirm window: %w", backend.ContextError(r.ctx.Err()))
	}
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		<-pc.slots
		return &errRetry{cause: pc.err}
	}
	if err := r.ctx.Err(); err != nil {
		// The last moment to find out: nothing goes out once ctx is done.
		pc.mu.Unlock()
		<-pc.slots
		return fmt.Errorf("rabbitmq: publish: %w", backend.ContextError(err))
	}
	if err := pc.ch.Publish(r.exchange, r.key, true, false, r.pub); err != nil {
		pc.mu.Unlock()
		<-pc.slots
		// Headers were validated by spec: what fails here is the channel or
		// the socket.
		return &errRetry{cause: err}
	}
	r.sent.Store(true)
	pc.pending.push(r)
	pc.mu.Unlock()
	return nil
}

func (pc *pubChan) deadErr() error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.err
}

func (pc *pubChan) confirmLoop(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	var returned []amqp.Return
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if len(returned) >= cap(pc.slots) {
				returned = returned[1:] // never matched: cannot grow without bound
			}
			returned = append(returned, r)
		case cf, ok := <-confirms:
			if !ok {
				pc.fail(closes)
				return
			}
			// The return of a message precedes its ack: take every return
			// that is already there before completing this confirm.
		drain:
			for returns != nil {
				select {
				case r, ok := <-returns:
					if !ok {
						returns = nil
						break drain
					}
					returned = append(returned, r)
				default:
					break drain
				}
			}
			pc.mu.Lock()
			r, ok := pc.pending.pop()
			pc.mu.Unlock()
			if !ok {
				continue // cannot happen: one confirm per publish
			}
			var err error
			switch {
			case !cf.Ack:
				err = fmt.Errorf("%w (exchange %q, routing key %q)", ErrNacked, r.exchange, r.key)
			case len(returned) > 0:
				for i, ret := range returned {
					if ret.Exchange == r.exchange && ret.RoutingKey == r.key && bytes.Equal(ret.Body, r.pub.Body) {
						err = unroutable(r.exchange, r.key, ret)
						returned = append(returned[:i], returned[i+1:]...)
						break
					}
				}
			}
			<-pc.slots
			r.complete(err)
		}
	}
}

// fail marks the channel dead and fails every message awaiting a confirm.
func (pc *pubChan) fail(closes <-chan *amqp.Error) {
	var cause error
	select {
	case e, ok := <-closes:
		if ok && e != nil {
			cause = e
		}
	case <-time.After(100 * time.Millisecond):
	}
	if cause == nil {
		cause = errors.New("channel closed")
	}
	pc.mu.Lock()
	pc.closed = true
	pc.err = cause
	var rs []*pubReq
	for {
		r, ok := pc.pending.pop()
		if !ok {
			break
		}
		rs = append(rs, r)
	}
	pc.mu.Unlock()
	close(pc.dead)
	_ = pc.ch.Close()
	var err error
	if isChannelException(cause) {
		err = fmt.Errorf("rabbitmq: publisher channel closed by the broker: %w", publishError(cause))
	} else {
		err = &errRetry{cause: cause}
	}
	for _, r := range rs {
		select {
		case <-pc.slots:
		default:
		}
		r.complete(err)
	}
}

// spec turns a dispytch message into an AMQP publishing.
func (c *Client) spec(m *backend.Message) (exchange string, pub amqp.Publishing, err error) {
	if m == nil {
		return "", pub, fmt.Errorf("rabbitmq: publish: nil message: %w", dispytch.ErrNotSent)
	}
	if m.Topic == "" {
		return "", pub, fmt.Errorf("rabbitmq: publish: empty topic: %w", dispytch.ErrNotSent)
	}
	s := pubSpec{pub: amqp.Publishing{DeliveryMode: amqp.Persistent}}
	for _, o := range m.Options {
		po, ok := o.(PublishOption)
		if !ok {
			if o == nil {
				return "", pub, fmt.Errorf("rabbitmq: publish: nil backend option: %w", dispytch.ErrNotSent)
			}
			return "", pub, fmt.Errorf("%w: %s option %T given to a rabbitmq producer (%w)", dispytch.ErrForeignOption, o.Backend(), o, dispytch.ErrNotSent)
		}
		po(&s)
	}
	exchange = c.cfg.exchanges[0]
	if s.exchange != "" {
		known := false
		for _, x := range c.cfg.exchanges {
			known = known || x == s.exchange
		}
		if !known {
			return "", pub, fmt.Errorf("%w: %q (configured: %v; add it to rabbitmq.Exchanges) (%w)", ErrUnknownExchange, s.exchange, c.cfg.exchanges, dispytch.ErrNotSent)
		}
		exchange = s.exchange
	}
	pub = s.pub
	pub.Body = m.Value
	pub.Headers = headersToTable(m.Headers, m.Key, s.pub.Headers)
	if pub.Headers != nil && len(s.pub.Headers) > 0 {
		if err := pub.Headers.Validate(); err != nil {
			return "", pub, fmt.Errorf("rabbitmq: publish: headers: %w (%w)", err, dispytch.ErrNotSent)
		}
	}
	if pub.ContentType == "" {
		if m.ContentType != "" {
			pub.ContentType = m.ContentType
		} else if ct := m.Headers[backend.HeaderContentType]; ct != "" {
			pub.ContentType = ct
		} else {
			pub.ContentType = sniffContentType(m.Value)
		}
	}
	return exchange, pub, nil
}

// sniffContentType recognises the envelopes of the JSON and msgpack codecs
// (an object, a map), and returns "" for anything else.
func sniffContentType(b []byte) string {
	for _, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c == '{':
			return "application/json"
		case c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf:
			return "application/msgpack"
		}
		return ""
	}
	return ""
}

// unroutable is the error of a mandatory message that no queue took, with
// what to do about it.
func unroutable(exchange, key string, ret amqp.Return) error {
	return fmt.Errorf("%w: no queue is bound for routing key %q on exchange %q (%d %s): start a listener of the consuming group first, "+
		"or declare the group's queue and bindings with Client.DeclareGroup(ctx, group, %q)",
		dispytch.ErrUnroutable, key, exchange, ret.ReplyCode, ret.ReplyText, key)
}

// send publishes r, waiting for a channel of slot, and republishes it
// after a connection loss while r.ctx allows (see complete). r.done is
// called exactly once.
func (p *producer) send(r *pubReq, slot *pubSlot) {
	r.p, r.slot = p, slot
	if !r.counted {
		r.counted = true
		p.c.pending.Add(1)
	}
	for {
		if err := r.ctx.Err(); err != nil {
			if r.lost != nil {
				r.finish(r.finalErr(fmt.Errorf("rabbitmq: publish: %w: %w", backend.ContextError(err), r.lost)))
			} else {
				r.finish(r.finalErr(fmt.Errorf("rabbitmq: publish: %w", backend.ContextError(err))))
			}
			return
		}
		pc, err := slot.get(r.ctx)
		if err != nil {
			r.finish(r.finalErr(err))
			return
		}
		err = pc.publish(r)
		if err == nil {
			return // the confirm loop calls r.complete
		}
		if r.retriable(err) {
			continue
		}
		r.finish(r.finalErr(err))
		return
	}
}

// complete is called by the confirm loop with the broker's verdict, or when
// the channel died before one.
func (r *pubReq) complete(err error) {
	if err != nil && r.retriable(err) {
		// The confirm was lost with the connection: publish again.
		r.lost = err
		go r.p.send(r, r.slot)
		return
	}
	r.finish(r.finalErr(err))
}

// retriable reports an error that only says the channel died, for a message
// whose context and client are still alive.
func (r *pubReq) retriable(err error) bool {
	var re *errRetry
	return errors.As(err, &re) && r.ctx.Err() == nil && !r.p.c.isClosed()
}

// finalErr is the error r fails with. The broker's verdicts (a nack, a
// basic.return) are returned as they are; every other failure says whether
// r was handed to the broker: dispytch.ErrUnconfirmed when it was,
// dispytch.ErrNotSent when it was not.
func (r *pubReq) finalErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNacked) || errors.Is(err, dispytch.ErrUnroutable) ||
		errors.Is(err, dispytch.ErrNotSent) || errors.Is(err, dispytch.ErrUnconfirmed) {
		return err
	}
	var re *errRetry
	if errors.As(err, &re) {
		switch {
		case r.p.c.isClosed():
			err = fmt.Errorf("rabbitmq: publish: %w: %w", dispytch.ErrClosed, err)
		case r.ctx.Err() != nil:
			err = fmt.Errorf("%w: %w", backend.ContextError(r.ctx.Err()), err)
		}
	}
	if r.sent.Load() {
		return fmt.Errorf("%w: %w", dispytch.ErrUnconfirmed, err)
	}
	return fmt.Errorf("%w: %w", dispytch.ErrNotSent, err)
}

func (p *producer) slot() *pubSlot {
	if len(p.slots) == 1 {
		return p.slots[0]
	}
	return p.slots[p.rr.Add(1)%uint64(len(p.slots))]
}

// ProduceAsync publishes m and calls done once with the outcome: nil after
// the broker confirmed it, an error wrapping dispytch.ErrUnroutable when no
// queue took it, ErrNacked, or an error wrapping dispytch.ErrNotSent or
// dispytch.ErrUnconfirmed (see Produce). It blocks only while the confirm
// window is full or the connection is down. done runs on the client's
// confirm goroutine and must not block.
func (c *Client) ProduceAsync(ctx context.Context, m *backend.Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if ctx == nil {
		done(fmt.Errorf("rabbitmq: publish with a nil context: %w", dispytch.ErrNotSent))
		return
	}
	exchange, pub, err := c.spec(m)
	if err != nil {
		done(err)
		return
	}
	c.pub.send(&pubReq{ctx: ctx, exchange: exchange, key: m.Topic, pub: pub, done: done}, c.pub.slot())
}

// Produce publishes msgs to their topics (the routing keys) on the client's
// first exchange, or the one the Exchange option names, and returns once the
// broker confirmed all of them. A batch is published in order through one
// channel, pipelined within the confirm window.
//
// Nothing is published once ctx is done. A message that was not handed to
// the broker fails with an error wrapping dispytch.ErrNotSent (ctx was done
// first, the client is not connected, the broker refused the connection
// or the exchange); one handed to the broker whose confirm did not arrive
// before ctx ended fails with dispytch.ErrUnconfirmed (the broker may have
// it). Both wrap the cause: dispytch.ErrTimeout for a deadline, the last
// connection error, ErrAccessRefused, ErrVhostNotFound,
// ErrPreconditionFailed, dispytch.ErrClosed. Broker verdicts are errors of
// their own: dispytch.ErrUnroutable (no queue is bound for the topic),
// ErrNacked. A bad message fails with dispytch.ErrForeignOption or
// ErrUnknownExchange. For a batch with some failed messages the error is
// a *backend.BatchError, whose NotSent and Unconfirmed tell which.
func (c *Client) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if ctx == nil {
		return fmt.Errorf("rabbitmq: publish with a nil context: %w", dispytch.ErrNotSent)
	}
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		exchange, pub, err := c.spec(msgs[0])
		if err != nil {
			return err
		}
		ch := make(chan error, 1)
		slot := c.pub.slot()
		r := &pubReq{ctx: ctx, exchange: exchange, key: msgs[0].Topic, pub: pub, done: func(err error) { ch <- err }}
		c.pub.send(r, slot)
		select {
		case err := <-ch:
			return err
		case <-ctx.Done():
			select {
			case err := <-ch:
				return err
			default:
			}
			// send returned without a verdict: the message was handed to
			// the broker, and its confirm is still due.
			return fmt.Errorf("%w: rabbitmq: waiting for the publisher confirm%s: %w", dispytch.ErrUnconfirmed, slot.state(), backend.ContextError(ctx.Err()))
		}
	}
	b := &batch{errs: make([]error, len(msgs)), left: len(msgs), done: make(chan struct{})}
	reqs := make([]*pubReq, len(msgs))
	for i, m := range msgs {
		exchange, pub, err := c.spec(m)
		if err != nil {
			b.errs[i] = err
			b.left--
			continue
		}
		reqs[i] = &pubReq{ctx: ctx, exchange: exchange, key: m.Topic, pub: pub, done: b.doneFunc(i)}
	}
	if b.left == 0 {
		close(b.done)
	}
	slot := c.pub.slot()
	for _, r := range reqs {
		if r != nil {
			c.pub.send(r, slot)
		}
	}
	select {
	case <-b.done:
	case <-ctx.Done():
	}
	state := slot.state()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	var n int
	for i := range b.errs {
		if b.errs[i] == nil && b.pending(i, reqs) {
			b.errs[i] = fmt.Errorf("%w: rabbitmq: waiting for the publisher confirm%s: %w", dispytch.ErrUnconfirmed, state, backend.ContextError(ctx.Err()))
		}
		if b.errs[i] != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return &backend.BatchError{Errs: append([]error(nil), b.errs...)}
}

// batch collects the outcomes of a Produce call.
type batch struct {
	mu       sync.Mutex
	errs     []error
	settled  []bool
	left     int
	done     chan struct{}
	finished bool
}

func (b *batch) doneFunc(i int) func(error) {
	return func(err error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.finished {
			return
		}
		if b.settled == nil {
			b.settled = make([]bool, len(b.errs))
		}
		b.settled[i] = true
		b.errs[i] = err
		b.left--
		if b.left == 0 {
			close(b.done)
		}
	}
}

// pending reports whether message i was sent and has no outcome yet.
func (b *batch) pending(i int, reqs []*pubReq) bool {
	return reqs[i] != nil && (b.settled == nil || !b.settled[i])
}

// ring is a growable FIFO.
type ring[T any] struct {
	buf        []T
	head, size int
}

func (r *ring[T]) push(v T) {
	if r.size == len(r.buf) {
		n := max(16, 2*len(r.buf))
		buf := make([]T, n)
		for i := 0; i < r.size; i++ {
			buf[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = buf, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

func (r *ring[T]) pop() (T, bool) {
	var zero T
	if r.size == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return v, true
}
