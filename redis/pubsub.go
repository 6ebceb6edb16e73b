package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// psSession is one Consume call in PubSub mode.
type psSession struct {
	c     *Client
	sub   backend.Subscription
	inbox backend.Inbox
	obs   backend.ConnObserver
	lit   map[string]bool
	globs []string // one per pattern, in sub.Patterns order

	mu      sync.Mutex
	again   []*psEntry // nacked, to be delivered again
	againCh chan struct{}
	down    bool
}

// psEntry is the Acknowledger of one pub/sub message.
type psEntry struct {
	s     *psSession
	d     backend.Delivery
	count int
}

var _ backend.DeadLetterer = (*psEntry)(nil)

func (c *Client) consumePubSub(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	s := &psSession{c: c, sub: sub, inbox: inbox, lit: map[string]bool{}, againCh: make(chan struct{}, 1)}
	s.obs, _ = inbox.(backend.ConnObserver)
	for _, t := range sub.Topics {
		s.lit[t] = true
	}
	var uniq []string
	seen := map[string]bool{}
	for _, p := range sub.Patterns {
		g := Glob(p)
		s.globs = append(s.globs, g)
		if !seen[g] {
			seen[g] = true
			uniq = append(uniq, g)
		}
	}
	var ps *goredis.PubSub
	var last error
	for n := 0; ; n++ {
		var err error
		ps, err = s.subscribe(ctx, uniq)
		if err == nil {
			break
		}
		if isPermanent(err) {
			return err
		}
		last = err
		s.disconnect(err)
		if !backoff(ctx, n) {
			return last
		}
	}
	s.reconnect()
	inbox.Ready()

	rctx, stop := context.WithCancel(context.Background())
	msgs := make(chan *goredis.Message)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.receive(rctx, ps, msgs) }()
	closePS := context.AfterFunc(ctx, func() { stop(); _ = ps.Close() })
	defer closePS()
loop:
	for {
		var d *backend.Delivery
		select {
		case <-ctx.Done():
			break loop
		case <-c.closedCh:
			break loop
		case m := <-msgs:
			d = s.delivery(m)
		case <-s.againCh:
			s.mu.Lock()
			if len(s.again) > 0 {
				e := s.again[0]
				s.again = s.again[1:]
				d = &e.d
			}
			if len(s.again) > 0 {
				signal(s.againCh)
			}
			s.mu.Unlock()
		}
		if d == nil {
			continue
		}
		if err := inbox.Deliver(ctx, d); err != nil {
			break
		}
	}
	stop()
	_ = ps.Close()
	wg.Wait()
	select {
	case <-inbox.Done():
	case <-c.closedCh:
		return fmt.Errorf("redis: consume: %w", backend.ErrClosed)
	}
	return nil
}

// subscribe subscribes to the literal topics and the globs and waits for
// Redis's confirmations.
func (s *psSession) subscribe(ctx context.Context, globs []string) (*goredis.PubSub, error) {
	ps := s.c.rc.Subscribe(ctx)
	want := 0
	if len(s.sub.Topics) > 0 {
		if err := ps.Subscribe(ctx, s.sub.Topics...); err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("redis: SUBSCRIBE: %w", err)
		}
		want += len(s.sub.Topics)
	}
	if len(globs) > 0 {
		if err := ps.PSubscribe(ctx, globs...); err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("redis: PSUBSCRIBE: %w", err)
		}
		want += len(globs)
	}
	for got := 0; got < want; {
		m, err := ps.ReceiveTimeout(ctx, 10*time.Second)
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("redis: subscribe: %w", err)
		}
		if _, ok := m.(*goredis.Subscription); ok {
			got++
		}
	}
	return ps, nil
}

func (s *psSession) disconnect(err error) {
	s.c.health.Failed(err)
	s.mu.Lock()
	s.down = true
	s.mu.Unlock()
	if s.obs != nil {
		s.obs.Disconnected(err)
	}
}

func (s *psSession) reconnect() {
	s.c.health.Succeeded()
	s.mu.Lock()
	was := s.down
	s.down = false
	s.mu.Unlock()
	if was && s.obs != nil {
		s.obs.Reconnected()
	}
}

// receive reads the subscription; go-redis reconnects and subscribes again
// by itself after an error.
func (s *psSession) receive(ctx context.Context, ps *goredis.PubSub, out chan<- *goredis.Message) {
	for n := 0; ctx.Err() == nil; {
		m, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, goredis.ErrClosed) {
				return
			}
			s.disconnect(fmt.Errorf("redis: pub/sub: %w", err))
			n++
			backoff(ctx, n)
			continue
		}
		n = 0
		switch m := m.(type) {
		case *goredis.Subscription:
			s.reconnect()
		case *goredis.Message:
			if !s.wanted(m) {
				continue
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}
}

// wanted drops what a glob matched and the pattern does not, and the
// duplicates of a message that several subscriptions match: a literal
// topic's message comes from SUBSCRIBE, a pattern's from the first
// pattern that matches it.
func (s *psSession) wanted(m *goredis.Message) bool {
	if m.Pattern == "" {
		return s.lit[m.Channel]
	}
	if s.lit[m.Channel] {
		return false
	}
	for i, p := range s.sub.Patterns {
		if _, ok := p.AppendMatch(nil, m.Channel); ok {
			return s.globs[i] == m.Pattern
		}
	}
	return false
}

func (s *psSession) delivery(m *goredis.Message) *backend.Delivery {
	e := &psEntry{s: s, count: 1}
	vals, framed, err := decodeFrame([]byte(m.Payload))
	switch {
	case framed && err == nil:
		e.d = *toDelivery(m.Channel, goredis.XMessage{Values: vals})
	default:
		// A bare envelope (Python's form), or a broken frame, which the
		// listener then dead-letters as undecodable.
		e.d = backend.Delivery{Topic: m.Channel, Value: []byte(m.Payload)}
	}
	e.d.Info = backend.DeliveryInfo{DeliveryCount: 1, Partition: -1, Offset: -1, Raw: m}
	e.d.Acker = e
	return &e.d
}

// Ack does nothing: pub/sub has no acknowledgements.
func (e *psEntry) Ack(context.Context) error { return nil }

// Nack delivers the message again from this process (Redis keeps no copy),
// up to the DeliveryLimit, after which it is dead-lettered to the group's
// dead-letter stream. A nacked message not yet delivered again when the
// listener stops is lost.
func (e *psEntry) Nack(ctx context.Context) error {
	s := e.s
	n := &psEntry{s: s, count: e.count + 1, d: e.d}
	n.d.Acker = n
	n.d.Info.Redelivered = true
	n.d.Info.DeliveryCount = n.count
	if lim := s.c.cfg.deliveryLimit; lim > 0 && n.count > lim {
		now := time.Now()
		fm := &dispytch.FailedMessage{
			Topic: e.d.Topic, Value: e.d.Value, Group: s.sub.Group, Reason: ReasonDeliveryLimit,
			Err:      fmt.Errorf("delivered %d times, more than the delivery limit %d", n.count, lim),
			Attempts: n.count, FirstFailure: now, LastFailure: now, Partition: -1, Offset: -1,
		}
		return e.DeadLetter(ctx, []*backend.Message{fm.Message(s.sub.Group + ".dlq")})
	}
	s.mu.Lock()
	s.again = append(s.again, n)
	s.mu.Unlock()
	signal(s.againCh)
	return nil
}

// DeadLetter implements backend.DeadLetterer: in PubSub mode, dead letters
// still go to streams (XADD to "<group>.dlq"), where they last and the
// dead-letter operations find them.
func (e *psEntry) DeadLetter(ctx context.Context, letters []*backend.Message) error {
	c := e.s.c
	pipe := c.rc.Pipeline()
	for _, m := range letters {
		pipe.Do(ctx, c.xaddCmd(m)...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis: dead-letter: %w", err)
	}
	return nil
}
