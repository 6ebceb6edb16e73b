package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
)

// Headers the client writes next to the envelope, and reads back.
const (
	// HeaderEventID carries the envelope's event id.
	HeaderEventID = "dispytch-event-id"
	// HeaderEventType carries the envelope's event type.
	HeaderEventType = "dispytch-event-type"
	// HeaderKey carries the message key (NATS messages have none). The
	// consumer moves it into Delivery.Key.
	HeaderKey = "dispytch-key"
	// HeaderMsgID is JetStream's deduplication header: the client sets it
	// to the event id, so that the stream stores an event emitted twice
	// within its duplicate window once (see DuplicateWindow). Dead letters
	// and redriven messages, which have no event id of their own, carry
	// none.
	HeaderMsgID = jetstream.MsgIDHeader
)

// Produce implements backend.Producer: it publishes the messages and waits
// for the stream's acks. One message is published synchronously; more go
// out asynchronously within the publish window, and a failure of some
// is a *backend.BatchError. An error wraps backend.ErrNotSent when the
// message was not stored (the context was done first, the connection is
// down, no stream holds the subject, the server refused it), and
// backend.ErrUnconfirmed when it was sent but its ack did not arrive.
func (c *Client) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if ctx == nil {
		return fmt.Errorf("nats: produce: nil context: %w", backend.ErrNotSent)
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("nats: produce: message %d is nil: %w", i, backend.ErrNotSent)
		}
	}
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		return c.publish(ctx, msgs[0], true)
	}
	b := &batch{errs: make([]error, len(msgs)), reported: make([]bool, len(msgs)), left: len(msgs), done: make(chan struct{})}
	for i, m := range msgs {
		c.ProduceAsync(ctx, m, func(err error) { b.report(i, err) })
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		b.expire(msgs, ctx.Err())
	}
	for _, e := range b.errs {
		if e != nil {
			return &backend.BatchError{Errs: b.errs}
		}
	}
	return nil
}

// batch collects the answers of a Produce of several messages.
type batch struct {
	mu       sync.Mutex
	errs     []error
	reported []bool
	left     int
	closed   bool
	done     chan struct{}
}

func (b *batch) report(i int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.reported[i] {
		return
	}
	b.reported[i], b.errs[i] = true, err
	if b.left--; b.left == 0 {
		close(b.done)
	}
}

// expire reports the messages not answered when ctx ended unconfirmed.
func (b *batch) expire(msgs []*backend.Message, cause error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for i, ok := range b.reported {
		if !ok {
			b.errs[i] = fmt.Errorf("nats: publish to %s: %w: %w", msgs[i].Topic, backend.ErrUnconfirmed, backend.ContextError(cause))
		}
	}
}

// publish publishes m and waits for its ack; a subject no stream holds is
// added to the events stream (with DeclareTopology) and m published again
// once, when retry is set.
func (c *Client) publish(ctx context.Context, m *backend.Message, retry bool) error {
	if err := ctx.Err(); err != nil {
		return notSent(m, backend.ContextError(err))
	}
	if c.closed.Load() {
		return notSent(m, backend.ErrClosed)
	}
	msg, err := toMsg(m)
	if err != nil {
		return err
	}
	_, err = c.js.PublishMsg(ctx, msg, noRetry)
	if err == nil {
		return nil
	}
	if retry && noStream(err) && c.cfg.declare && ctx.Err() == nil {
		c.forget(m.Topic)
		stream := c.streamFor(m.Topic)
		if aerr := c.ensureSubjects(ctx, stream, []string{m.Topic}); aerr != nil {
			return notSent(m, fmt.Errorf("no stream holds the subject, and adding it to stream %s failed: %w", stream, aerr))
		}
		return c.publish(ctx, m, false)
	}
	return c.publishError(ctx, m, err)
}

// ProduceAsync implements backend.AsyncProducer: it publishes m without
// waiting, within the publish window (it blocks while the window is full,
// until ctx ends), and calls done with the stream's answer. done is called
// once, from the client's ack goroutine or, for a message not sent, from
// the caller's.
func (c *Client) ProduceAsync(ctx context.Context, m *backend.Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	switch {
	case ctx == nil:
		done(fmt.Errorf("nats: produce: nil context: %w", backend.ErrNotSent))
		return
	case m == nil:
		done(fmt.Errorf("nats: produce: nil message: %w", backend.ErrNotSent))
		return
	}
	if err := ctx.Err(); err != nil {
		done(notSent(m, backend.ContextError(err)))
		return
	}
	if c.closed.Load() {
		done(notSent(m, backend.ErrClosed))
		return
	}
	msg, err := toMsg(m)
	if err != nil {
		done(err)
		return
	}
	select {
	case c.window <- struct{}{}:
	case <-ctx.Done():
		done(notSent(m, backend.ContextError(ctx.Err())))
		return
	}
	if c.callbacks {
		c.pendMu.Lock()
		c.pending[msg] = asyncPub{ctx: ctx, m: m, done: done}
		c.pendMu.Unlock()
	}
	// Default retries: a subject no stream holds is tried again twice
	// (250 ms apart) before onErr adds it.
	paf, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		if c.callbacks {
			if _, ok := c.takePending(msg); !ok {
				return // a handler took it
			}
		}
		<-c.window
		done(notSent(m, c.withConnCause(err)))
		return
	}
	if !c.callbacks {
		go c.await(ctx, m, paf, done)
	}
}

// asyncPub is an asynchronous publish awaiting its ack.
type asyncPub struct {
	ctx  context.Context
	m    *backend.Message
	done func(error)
}

func (c *Client) takePending(msg *nats.Msg) (asyncPub, bool) {
	c.pendMu.Lock()
	p, ok := c.pending[msg]
	if ok {
		delete(c.pending, msg)
	}
	c.pendMu.Unlock()
	return p, ok
}

// onAck is the JetStream context's ack handler.
func (c *Client) onAck(_ jetstream.JetStream, msg *nats.Msg, _ *jetstream.PubAck) {
	p, ok := c.takePending(msg)
	if !ok {
		return
	}
	<-c.window
	p.done(nil)
}

// onErr is the JetStream context's error handler. It runs on the
// connection's reply goroutine: a publish to add a missing subject goes
// on another.
func (c *Client) onErr(_ jetstream.JetStream, msg *nats.Msg, err error) {
	p, ok := c.takePending(msg)
	if !ok {
		return
	}
	<-c.window
	if noStream(err) && c.cfg.declare && p.ctx.Err() == nil && !c.closed.Load() {
		go c.retryNoStream(p.ctx, p.m, p.done)
		return
	}
	p.done(c.publishError(p.ctx, p.m, err))
}

// retryNoStream adds the subject of a message no stream took to its
// stream and publishes it again, once.
func (c *Client) retryNoStream(ctx context.Context, m *backend.Message, done func(error)) {
	c.forget(m.Topic)
	stream := c.streamFor(m.Topic)
	if aerr := c.ensureSubjects(ctx, stream, []string{m.Topic}); aerr != nil {
		done(notSent(m, fmt.Errorf("no stream holds the subject, and adding it to stream %s failed: %w", stream, aerr)))
		return
	}
	done(c.publish(ctx, m, false))
}

// await waits for one asynchronous publish's ack.
func (c *Client) await(ctx context.Context, m *backend.Message, paf jetstream.PubAckFuture, done func(error)) {
	var err error
	select {
	case <-paf.Ok():
	case err = <-paf.Err():
	case <-ctx.Done():
		err = fmt.Errorf("nats: publish to %s: %w: %w", m.Topic, backend.ErrUnconfirmed, backend.ContextError(ctx.Err()))
		<-c.window
		done(err)
		return
	}
	<-c.window
	if err != nil && noStream(err) && c.cfg.declare && ctx.Err() == nil {
		c.retryNoStream(ctx, m, done)
		return
	}
	if err != nil {
		err = c.publishError(ctx, m, err)
	}
	done(err)
}

// withConnCause adds the connection's last error (a refused login, say)
// to err while the client is not connected.
func (c *Client) withConnCause(err error) error {
	if c.nc.IsConnected() {
		return err
	}
	if last := c.lastError(); last != nil && !errors.Is(err, last) {
		return fmt.Errorf("%w (not connected: %w)", err, last)
	}
	return fmt.Errorf("%w (not connected: %s)", err, strings.ToLower(c.nc.Status().String()))
}

// noRetry makes a synchronous publish to a subject no stream holds fail at
// once (publish then adds the subject).
var noRetry = jetstream.WithRetryAttempts(0)

func noStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

func notSent(m *backend.Message, err error) error {
	return fmt.Errorf("nats: publish to %s: %w: %w", m.Topic, backend.ErrNotSent, err)
}

// publishError classifies a failed publish.
func (c *Client) publishError(ctx context.Context, m *backend.Message, err error) error {
	err = c.withConnCause(err)
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		return fmt.Errorf("nats: publish to %s: %w: %w: %w", m.Topic, backend.ErrTooLarge, backend.ErrNotSent, err)
	case noStream(err):
		return notSent(m, fmt.Errorf("no stream holds the subject: %w", err))
	case errors.As(err, &apiErr):
		// The stream answered: it did not store the message.
		return notSent(m, err)
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrBadSubject), errors.Is(err, jetstream.ErrJetStreamPublisherClosed):
		return notSent(m, err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", err, cerr)
	}
	return fmt.Errorf("nats: publish to %s: %w: %w", m.Topic, backend.ErrUnconfirmed, backend.ContextError(err))
}

// toMsg builds the NATS message of m.
func toMsg(m *backend.Message) (*nats.Msg, error) {
	if err := checkSubject(m.Topic, false); err != nil {
		return nil, fmt.Errorf("nats: publish: %w: %w: %w", err, backend.ErrPermanent, backend.ErrNotSent)
	}
	for _, o := range m.Options {
		if o != nil && o.Backend() != BackendName {
			return nil, fmt.Errorf("nats: publish to %s: %w: %s", m.Topic, backend.ErrForeignOption, o.Backend())
		}
	}
	n := len(m.Headers) + 5
	h := make(nats.Header, n)
	// One backing array for every header's value.
	vals := make([]string, 0, n)
	set := func(k, v string) {
		vals = append(vals, headerValue(v))
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for k, v := range m.Headers {
		if k == "" || strings.HasPrefix(k, "Nats-") {
			continue // the server's own headers are not the event's
		}
		set(k, v)
	}
	if m.ID != "" {
		set(HeaderEventID, m.ID)
		h[HeaderMsgID] = h[HeaderEventID]
	}
	if m.Type != "" {
		set(HeaderEventType, m.Type)
	}
	if m.ContentType != "" {
		set(backend.HeaderContentType, m.ContentType)
	}
	if m.Key != nil {
		set(HeaderKey, string(m.Key))
	}
	return &nats.Msg{Subject: m.Topic, Data: m.Value, Header: h}, nil
}

// headerValue makes v safe for a NATS header line: line breaks become
// spaces.
func headerValue(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	return strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v)
}
