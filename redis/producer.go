package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
)

// Stream entry fields. An entry carries the envelope under FieldData and,
// for tools that filter without decoding it, the event's id, type and
// content type; the message key and every header follow as their own
// fields.
const (
	FieldData        = "data"
	FieldID          = "id"
	FieldType        = "type"
	FieldContentType = "content-type"
	FieldKey         = "key"
	// FieldHeaderPrefix prefixes a header's name: header "x-tenant" is
	// field "h:x-tenant".
	FieldHeaderPrefix = "h:"
)

// fields returns the stream entry's fields of m, as XADD writes them.
func (c *Client) fields(m *backend.Message) []any {
	return appendFields(make([]any, 0, 10+2*len(m.Headers)), m)
}

// appendFields appends the entry's field-value pairs of m to v: the id,
// type, content type, key and headers next to the envelope, so that tools
// can filter without decoding it.
func appendFields(v []any, m *backend.Message) []any {
	if m.ID != "" {
		v = append(v, FieldID, m.ID)
	}
	if m.Type != "" {
		v = append(v, FieldType, m.Type)
	}
	if m.ContentType != "" {
		v = append(v, FieldContentType, m.ContentType)
	}
	if len(m.Key) > 0 {
		v = append(v, FieldKey, m.Key)
	}
	for k, hv := range m.Headers {
		v = append(v, FieldHeaderPrefix+k, hv)
	}
	return append(v, FieldData, m.Value)
}

// xaddCmd builds the XADD command's arguments in one slice (fewer
// allocations than go-redis's XAddArgs), with the topic's trimming.
func (c *Client) xaddCmd(m *backend.Message) []any {
	t, ok := c.cfg.trim[m.Topic]
	if !ok {
		t = c.cfg.trimAll
	}
	args := make([]any, 0, 16+2*len(m.Headers))
	args = append(args, "xadd", m.Topic)
	if !t.zero() {
		op := "~"
		if t.Exact {
			op = "="
		}
		if t.MaxLen > 0 {
			args = append(args, "maxlen", op, t.MaxLen)
		} else {
			args = append(args, "minid", op, strconv.FormatInt(time.Now().Add(-t.MaxAge).UnixMilli(), 10))
		}
	}
	args = append(args, "*")
	return appendFields(args, m)
}

// cmdable is what queue sends on: the client or one of its pipelines.
type cmdable interface {
	Publish(ctx context.Context, channel string, message any) *goredis.IntCmd
	Do(ctx context.Context, args ...any) *goredis.Cmd
}

func (c *Client) queue(ctx context.Context, p cmdable, m *backend.Message) goredis.Cmder {
	if c.cfg.mode == PubSub {
		if c.cfg.psFrame {
			return p.Publish(ctx, m.Topic, c.encodeFrame(m))
		}
		return p.Publish(ctx, m.Topic, m.Value)
	}
	return p.Do(ctx, c.xaddCmd(m)...)
}

// check refuses what cannot be sent.
func (c *Client) check(ctx context.Context, m *backend.Message) error {
	switch {
	case m == nil:
		return fmt.Errorf("redis: emit: nil message: %w", backend.ErrNotSent)
	case m.Topic == "":
		return fmt.Errorf("redis: emit: empty topic: %w", backend.ErrNotSent)
	case c.closed.Load():
		return fmt.Errorf("redis: emit to %s: %w: %w", m.Topic, backend.ErrClosed, backend.ErrNotSent)
	case ctx.Err() != nil:
		return fmt.Errorf("redis: emit to %s: %w: %w", m.Topic, backend.ErrNotSent, backend.ContextError(ctx.Err()))
	}
	return nil
}

// Produce implements backend.Producer: XADD (Streams) or PUBLISH (PubSub)
// for each message, in one pipeline, and waits for Redis's replies. An
// error wraps ErrNotSent when Redis cannot have stored the message (the
// context was done before, the connection could not be made, Redis
// refused the command), ErrUnconfirmed when the reply did not arrive.
func (c *Client) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if ctx == nil {
		return fmt.Errorf("redis: emit: nil context: %w", backend.ErrNotSent)
	}
	if len(msgs) == 1 {
		m := msgs[0]
		if err := c.check(ctx, m); err != nil {
			return err
		}
		cmd := c.queue(ctx, c.rc, m)
		c.health.observe(cmd.Err())
		return c.result(ctx, m.Topic, cmd)
	}
	errs := make([]error, len(msgs))
	cmds := make([]goredis.Cmder, len(msgs))
	failed := false
	pipe := c.rc.Pipeline()
	for i, m := range msgs {
		if errs[i] = c.check(ctx, m); errs[i] != nil {
			failed = true
			continue
		}
		cmds[i] = c.queue(ctx, pipe, m)
	}
	if pipe.Len() > 0 {
		_, err := pipe.Exec(ctx)
		c.health.observe(err)
	}
	for i, cmd := range cmds {
		if cmd != nil {
			if errs[i] = c.result(ctx, msgs[i].Topic, cmd); errs[i] != nil {
				failed = true
			}
		}
	}
	if failed {
		return &backend.BatchError{Errs: errs}
	}
	return nil
}

// result is the outcome of one emit command. A PUBLISH that no subscriber
// received fails with ErrUnroutable (not on a Cluster, whose PUBLISH
// counts the subscribers of one node only).
func (c *Client) result(ctx context.Context, topic string, cmd goredis.Cmder) error {
	if err := cmd.Err(); err != nil {
		return emitErr(ctx, topic, err)
	}
	if ic, ok := cmd.(*goredis.IntCmd); ok && ic.Val() == 0 && !c.cluster {
		return fmt.Errorf("redis: publish to %s: no subscriber received it: %w", topic, backend.ErrUnroutable)
	}
	return nil
}

// isReplyError reports an error reply from Redis (not a network error).
func isReplyError(err error) bool {
	var re goredis.Error
	if !errors.As(err, &re) {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne)
}

// permanentReplies are error replies that retrying cannot fix.
var permanentReplies = []string{"NOPERM", "NOAUTH", "WRONGPASS", "WRONGTYPE", "READONLY", "ERR unknown command"}

func isPermanent(err error) bool {
	if !isReplyError(err) {
		return false
	}
	s := err.Error()
	for _, p := range permanentReplies {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// emitErr classifies the error of one emit command.
func emitErr(ctx context.Context, topic string, err error) error {
	if err == nil {
		return nil
	}
	var oe *net.OpError
	switch {
	case errors.Is(err, goredis.ErrClosed):
		return fmt.Errorf("redis: emit to %s: %w: %w: %w", topic, backend.ErrClosed, backend.ErrNotSent, err)
	case isPermanent(err):
		return fmt.Errorf("redis: emit to %s: %w: %w: %w", topic, backend.ErrPermanent, backend.ErrNotSent, err)
	case isReplyError(err):
		return fmt.Errorf("redis: emit to %s: %w: %w", topic, backend.ErrNotSent, err)
	case errors.As(err, &oe) && oe.Op == "dial":
		return fmt.Errorf("redis: emit to %s: %w: %w", topic, backend.ErrNotSent, err)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", backend.ContextError(ctx.Err()), err)
	}
	return fmt.Errorf("redis: emit to %s: %w: %w", topic, backend.ErrUnconfirmed, backend.ContextError(err))
}

// asyncQueue batches ProduceAsync's messages into pipelines.
type asyncQueue struct {
	c      *Client
	ch     chan asyncItem
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

type asyncItem struct {
	ctx  context.Context
	m    *backend.Message
	done func(error)
}

// asyncFlushers is the number of pipelines in flight at once; asyncBatch
// the most messages per pipeline.
const (
	asyncFlushers = 4
	asyncBatch    = 512
)

func newAsyncQueue(c *Client) *asyncQueue {
	q := &asyncQueue{c: c, ch: make(chan asyncItem, 4*asyncBatch), stop: make(chan struct{})}
	for range asyncFlushers {
		q.wg.Add(1)
		go q.flusher()
	}
	return q
}

// ProduceAsync implements backend.AsyncProducer: messages queue up and go
// out in pipelines of up to 512 (four in flight at once); done gets each
// one's reply. It blocks while the queue is full.
func (c *Client) ProduceAsync(ctx context.Context, m *backend.Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if ctx == nil {
		done(fmt.Errorf("redis: emit: nil context: %w", backend.ErrNotSent))
		return
	}
	if err := c.check(ctx, m); err != nil {
		done(err)
		return
	}
	q := c.async
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		done(fmt.Errorf("redis: emit to %s: %w: %w", m.Topic, backend.ErrClosed, backend.ErrNotSent))
		return
	}
	select {
	case q.ch <- asyncItem{ctx, m, done}:
	case <-ctx.Done():
		done(fmt.Errorf("redis: emit to %s: %w: %w", m.Topic, backend.ErrNotSent, backend.ContextError(ctx.Err())))
	}
}

func (q *asyncQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.stop)
	}
	q.mu.Unlock()
	q.wg.Wait()
}

func (q *asyncQueue) flusher() {
	defer q.wg.Done()
	batch := make([]asyncItem, 0, asyncBatch)
	for {
		select {
		case it := <-q.ch:
			batch = append(batch[:0], it)
		case <-q.stop:
			for {
				select {
				case it := <-q.ch:
					q.send(append(batch[:0], it))
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < asyncBatch {
			select {
			case it := <-q.ch:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		q.send(batch)
		clear(batch)
	}
}

func (q *asyncQueue) send(batch []asyncItem) {
	c := q.c
	pipe := c.rc.Pipeline()
	cmds := make([]goredis.Cmder, len(batch))
	for i, it := range batch {
		if it.ctx.Err() != nil {
			it.done(fmt.Errorf("redis: emit to %s: %w: %w", it.m.Topic, backend.ErrNotSent, backend.ContextError(it.ctx.Err())))
			continue
		}
		cmds[i] = c.queue(context.Background(), pipe, it.m)
	}
	if pipe.Len() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pipe.Exec(ctx)
	c.health.observe(err)
	for i, cmd := range cmds {
		if cmd != nil {
			batch[i].done(c.result(ctx, batch[i].m.Topic, cmd))
		}
	}
}
