// Package memory is an embedded, in-process message broker: topics with
// pattern subscriptions, consumer groups (competing consumers within a
// group, fan-out across groups), acks and nacks with redelivery, per-key
// ordering, and bounded queues with backpressure. The quickstart and the test
// kit run on it; it needs no server.
//
// # Semantics
//
// A group is created the first time a consumer subscribes with its name, and
// lives as long as the broker: messages keep queueing for it while no
// consumer of it runs (like a durable RabbitMQ queue). A message published to
// a topic is copied to every group whose subscription matches the topic.
// When no group matches yet, the message is retained on the topic and handed
// to the first group that subscribes to it, so nothing emitted before the
// listener starts is lost.
//
// Within a group, a message with a key is not delivered while an earlier
// message with the same key is unsettled, so each key is processed in order,
// also across redeliveries. Messages without a key are delivered in publish
// order to whichever consumer is free. A nacked message, and every unsettled
// message of a consumer whose Consume returned, is redelivered with
// Redelivered set.
//
// Every group queue and topic backlog holds at most the configured capacity
// (default 65536 messages); Produce blocks while a target is full, until its
// context is done (an error wrapping dispytch.ErrTimeout on a deadline).
//
// Close makes Produce and Consume return errors wrapping dispytch.ErrClosed,
// wakes everything blocked, and drops all queued messages.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Broker is the in-memory broker. It is both a backend.Producer and a
// backend.Consumer. The zero value is not usable; call New.
type Broker struct {
	capacity int

	mu       sync.RWMutex // guards topology: groups, backlogs, routes
	closed   bool
	closedCh chan struct{}
	groups   map[string]*group
	backlogs map[string]*queue // topic -> messages no group claimed yet
	routes   map[string][]*group
}

// Option configures a Broker.
type Option func(*Broker)

// Capacity bounds every group queue and topic backlog to n messages
// (default 65536). Raise it for large in-memory backlogs; each queued
// message costs its envelope plus about 150 bytes, and GOMEMLIMIT keeps the
// garbage collector from letting the heap double on top.
func Capacity(n int) Option { return func(b *Broker) { b.capacity = max(n, 1) } }

// New returns an empty broker.
func New(opts ...Option) *Broker {
	b := &Broker{
		capacity: 1 << 16,
		closedCh: make(chan struct{}),
		groups:   map[string]*group{},
		backlogs: map[string]*queue{},
		routes:   map[string][]*group{},
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Backend returns "memory".
func (b *Broker) Backend() string { return "memory" }

// stored is one published message, shared by every group it was routed to.
type stored struct {
	topic       string
	key         []byte
	skey        string // key as a string, made once for all groups
	value       []byte
	headers     map[string]string
	contentType string
	first       entry // the entry of the first group, in the same allocation
}

// entry returns the queue entry of the i-th group the message goes to.
func (s *stored) entry(i int) *entry {
	e := &s.first
	if i > 0 {
		e = new(entry)
	}
	*e = entry{s: s, key: s.skey}
	return e
}

// Produce publishes msgs in order. It returns once every message is queued
// for every group its topic routes to (or retained on the topic). A message
// is queued whole or not at all, so every error wraps dispytch.ErrNotSent:
// nothing is published once ctx is done, and a message waiting for room
// in a full queue when ctx ends is not published.
func (b *Broker) Produce(ctx context.Context, msgs ...*backend.Message) error {
	var errs []error
	for i, m := range msgs {
		if err := b.publish(ctx, m); err != nil {
			if len(msgs) == 1 {
				return err
			}
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = err
		}
	}
	if errs != nil {
		return &backend.BatchError{Errs: errs}
	}
	return nil
}

func (b *Broker) publish(ctx context.Context, m *backend.Message) error {
	if m == nil {
		return fmt.Errorf("memory: nil message: %w", dispytch.ErrNotSent)
	}
	if m.Topic == "" {
		return fmt.Errorf("memory: empty topic: %w", dispytch.ErrNotSent)
	}
	if len(m.Options) > 0 {
		return fmt.Errorf("%w: %T (%w)", dispytch.ErrForeignOption, m.Options[0], dispytch.ErrNotSent)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: publish to %q: %w: %w", m.Topic, dispytch.ErrNotSent, backend.ContextError(err))
	}
	s := &stored{topic: m.Topic, key: m.Key, skey: string(m.Key), value: m.Value, headers: m.Headers, contentType: m.ContentType}
	for {
		b.mu.RLock()
		if b.closed {
			b.mu.RUnlock()
			return fmt.Errorf("memory: publish: %w (%w)", dispytch.ErrClosed, dispytch.ErrNotSent)
		}
		targets, ok := b.routes[m.Topic]
		if !ok {
			b.mu.RUnlock()
			b.mu.Lock()
			b.route(m.Topic)
			b.mu.Unlock()
			continue
		}
		var full *queue
		if len(targets) == 0 {
			q := b.backlogs[m.Topic]
			if q == nil {
				b.mu.RUnlock()
				b.mu.Lock()
				if b.backlogs[m.Topic] == nil && len(b.route(m.Topic)) == 0 {
					b.backlogs[m.Topic] = newBacklog(b.capacity)
				}
				b.mu.Unlock()
				continue
			}
			if q.tryPush(s.entry(0)) {
				b.mu.RUnlock()
				return nil
			}
			full = q
		} else if len(targets) == 1 {
			if targets[0].q.tryPush(s.entry(0)) {
				b.mu.RUnlock()
				return nil
			}
			full = &targets[0].q
		} else {
			// Reserve a slot in every target, then push: a message reaches
			// all of its groups or none.
			reserved := 0
			for _, g := range targets {
				if !g.q.reserve() {
					full = &g.q
					break
				}
				reserved++
			}
			if full == nil {
				for i, g := range targets {
					g.q.pushReserved(s.entry(i))
				}
				b.mu.RUnlock()
				return nil
			}
			for _, g := range targets[:reserved] {
				g.q.unreserve()
			}
		}
		space := full.spaceChan()
		b.mu.RUnlock()
		select {
		case <-space:
		case <-b.closedCh:
			return fmt.Errorf("memory: publish: %w (%w)", dispytch.ErrClosed, dispytch.ErrNotSent)
		case <-ctx.Done():
			return fmt.Errorf("memory: publish to %q: queue full: %w: %w", m.Topic, dispytch.ErrNotSent, backend.ContextError(ctx.Err()))
		}
	}
}

// route computes and caches the groups of topic. b.mu must be held for
// writing.
func (b *Broker) route(topic string) []*group {
	if gs, ok := b.routes[topic]; ok {
		return gs
	}
	var gs []*group
	for _, g := range b.groups {
		if g.sub.Matches(topic) {
			gs = append(gs, g)
		}
	}
	b.routes[topic] = gs
	return gs
}

// group is a consumer group: one queue shared by its consumers.
type group struct {
	name string
	sub  backend.Subscription
	q    queue
}

// bind creates or extends the group and claims the backlogs it matches.
func (b *Broker) bind(sub backend.Subscription) (*group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("memory: consume: %w", dispytch.ErrClosed)
	}
	name := sub.Group
	if name == "" {
		name = "default"
	}
	g := b.groups[name]
	if g == nil {
		g = &group{name: name, sub: backend.Subscription{Group: name, Delimiter: sub.Delimiter}}
		g.q.init(b.capacity)
		b.groups[name] = g
	}
	// Union of every subscription made with this group's name.
	for _, t := range sub.Topics {
		if !contains(g.sub.Topics, t) {
			g.sub.Topics = append(g.sub.Topics, t)
		}
	}
	for _, p := range sub.Patterns {
		dup := false
		for _, q := range g.sub.Patterns {
			dup = dup || (q.String() == p.String() && q.Delimiter() == p.Delimiter())
		}
		if !dup {
			g.sub.Patterns = append(g.sub.Patterns, p)
		}
	}
	clear(b.routes)
	for topic, bl := range b.backlogs {
		if g.sub.Matches(topic) {
			g.q.claim(bl)
			delete(b.backlogs, topic)
		}
	}
	return g, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Close shuts the broker down: nothing is in flight in an embedded broker,
// so ctx is not waited on (it is there so that every backend closes alike).
// See the package documentation.
func (b *Broker) Close(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.closedCh)
	}
	return nil
}

// ConnStatus implements backend.ConnReporter: the broker is in the
// process, so it is ready until Close.
func (b *Broker) ConnStatus() backend.ConnStatus {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return backend.ConnStatus{State: backend.ConnClosed, Err: fmt.Errorf("memory: %w", dispytch.ErrClosed)}
	}
	return backend.ConnStatus{State: backend.ConnReady}
}

// GroupStats describes one consumer group's queue.
type GroupStats struct {
	// Ready counts messages waiting for delivery (including those held back
	// behind an unsettled message with the same key).
	Ready int
	// Unacked counts messages taken by consumers (delivered, or among the
	// up to 32 a consumer takes at once) and not yet settled.
	Unacked int
	// Redelivered counts redeliveries so far.
	Redelivered int64
}

// GroupStats returns the state of the named group's queue, and false when
// there is no such group.
func (b *Broker) GroupStats(name string) (GroupStats, bool) {
	b.mu.RLock()
	g := b.groups[name]
	b.mu.RUnlock()
	if g == nil {
		return GroupStats{}, false
	}
	return g.q.stats(), true
}

// Retained returns how many messages are retained on topic because no group
// subscribes to it yet.
func (b *Broker) Retained(topic string) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if q := b.backlogs[topic]; q != nil {
		return q.stats().Ready
	}
	return 0
}

// ScanDeadLetters implements backend.DeadLetterStore for the messages
// retained on topic dest, which is where dead letters stay while no group
// subscribes to their topic. Kept messages stay in their order, ahead of
// any that arrived during the scan.
func (b *Broker) ScanDeadLetters(ctx context.Context, dest string, f func(*backend.Delivery) (backend.DeadLetterAction, error)) error {
	b.mu.RLock()
	closed, q := b.closed, b.backlogs[dest]
	b.mu.RUnlock()
	if closed {
		return fmt.Errorf("memory: scan %q: %w", dest, dispytch.ErrClosed)
	}
	if q == nil {
		return nil
	}
	es := q.takeAll()
	var kept []*entry
	defer func() {
		b.mu.Lock()
		if b.backlogs[dest] == q || b.closed {
			q.putBack(kept)
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// A group claimed the topic during the scan: the kept messages
		// go where the topic's messages now go.
		for _, e := range kept {
			_ = b.publish(context.WithoutCancel(ctx), &backend.Message{Topic: e.s.topic, Key: e.s.key, Value: e.s.value, Headers: e.s.headers, ContentType: e.s.contentType})
		}
	}()
	for i, e := range es {
		if err := ctx.Err(); err != nil {
			kept = append(kept, es[i:]...)
			return backend.ContextError(err)
		}
		d := &backend.Delivery{
			Topic: e.s.topic, Key: e.s.key, Value: e.s.value, Headers: e.s.headers, ContentType: e.s.contentType,
			Info: backend.DeliveryInfo{Partition: -1, Offset: -1},
		}
		act, err := f(d)
		if err != nil || act != backend.ActionRemove {
			kept = append(kept, e)
		}
		if err != nil {
			kept = append(kept, es[i+1:]...)
			if errors.Is(err, backend.ErrStopScan) {
				return nil
			}
			return err
		}
	}
	return nil
}

// CountDeadLetters implements backend.DeadLetterCounter: the messages
// retained on topic dest.
func (b *Broker) CountDeadLetters(_ context.Context, dest string) (int, error) {
	return b.Retained(dest), nil
}
