package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// DefaultGroup is the consumer group of a listener given none.
const DefaultGroup = "dispytch"

// ReasonDeliveryLimit is the reason of a dead letter the consumer wrote
// itself: the entry was delivered more often than the DeliveryLimit (a
// handler kept asking for redelivery, or consumers kept dying on it).
const ReasonDeliveryLimit dispytch.Reason = "broker_delivery_limit"

// idleReleased is the idle time (ms) an entry gets when its consumer gives
// it up: far above any MinIdle, so any consumer's next XAUTOCLAIM takes it.
const idleReleased = int64(1) << 40

// Consume implements backend.Consumer. In Streams mode it reads sub's
// streams with XREADGROUP for the group sub.Group (DefaultGroup when
// empty), creating the group on each (MKSTREAM; see StartFrom), and
// reclaims entries other consumers left pending (XAUTOCLAIM after
// MinIdle). In PubSub mode it subscribes (SUBSCRIBE, PSUBSCRIBE) and
// delivers what arrives while it is subscribed.
func (c *Client) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	switch {
	case ctx == nil:
		return errors.New("redis: consume: nil context")
	case inbox == nil:
		return errors.New("redis: consume: nil inbox")
	case c.closed.Load():
		return fmt.Errorf("redis: consume: %w", backend.ErrClosed)
	}
	if sub.Group == "" {
		sub.Group = DefaultGroup
	}
	c.wg.Add(1)
	defer c.wg.Done()
	// Close ends the reading too (what is in flight stays pending).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closedCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	if c.cfg.mode == PubSub {
		return c.consumePubSub(ctx, sub, inbox)
	}
	s := &session{
		c: c, sub: sub, group: sub.Group, inbox: inbox,
		known:    map[string]bool{},
		inflight: map[string]map[string]struct{}{},
		attempts: map[string]int{},
		changed:  make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		ackSig:   make(chan struct{}, 1),
	}
	s.consumer = c.takeConsumerName(sub.Group)
	defer c.releaseConsumerName(sub.Group, s.consumer)
	s.obs, _ = inbox.(backend.ConnObserver)
	return s.run(ctx)
}

// takeConsumerName returns the consumer name a new session of group uses:
// the client's, or, while another session of the same group on this client
// runs (two listeners of one group sharing a client), the client's with a
// suffix ("-2", "-3", ...), so that the sessions never read or claim each
// other's pending entries as their own.
func (c *Client) takeConsumerName(group string) string {
	c.namesMu.Lock()
	defer c.namesMu.Unlock()
	if c.names == nil {
		c.names = map[string]map[string]bool{}
	}
	inUse := c.names[group]
	if inUse == nil {
		inUse = map[string]bool{}
		c.names[group] = inUse
	}
	name := c.consumer
	for k := 2; inUse[name]; k++ {
		name = c.consumer + "-" + strconv.Itoa(k)
	}
	inUse[name] = true
	return name
}

func (c *Client) releaseConsumerName(group, name string) {
	c.namesMu.Lock()
	defer c.namesMu.Unlock()
	delete(c.names[group], name)
	if len(c.names[group]) == 0 {
		delete(c.names, group)
	}
}

// session is one Consume call in Streams mode.
type session struct {
	c     *Client
	sub   backend.Subscription
	group string
	inbox backend.Inbox
	obs   backend.ConnObserver
	// consumer is the session's consumer name in the group (see
	// takeConsumerName).
	consumer string

	mu       sync.Mutex
	streams  []string
	known    map[string]bool
	literal  map[string]bool
	inflight map[string]map[string]struct{} // stream -> entry IDs delivered, not yet acked
	attempts map[string]int                 // stream + "\x00" + ID -> handler attempts before a NackAfter
	acks     []*entry
	ended    bool

	changed chan struct{} // the stream set changed
	wake    chan struct{} // reclaim now (a nack)
	ackSig  chan struct{}
	down    atomic.Bool
}

var _ backend.DelayedNacker = (*entry)(nil)

// entry is one delivered stream entry: its Acknowledger.
type entry struct {
	s       *session
	stream  string
	id      string
	d       backend.Delivery
	settled atomic.Bool
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *session) disconnected(err error) {
	s.down.Store(true)
	s.c.health.Failed(err)
	if s.obs != nil {
		s.obs.Disconnected(err)
	}
}

func (s *session) reconnected() {
	s.c.health.Succeeded()
	if s.down.CompareAndSwap(true, false) && s.obs != nil {
		s.obs.Reconnected()
	}
}

// backoff waits before a retry; false when ctx ended.
func backoff(ctx context.Context, n int) bool {
	d := min(100*time.Millisecond<<min(n, 6), 5*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *session) run(ctx context.Context) error {
	s.literal = map[string]bool{}
	for _, t := range s.sub.Topics {
		s.literal[t] = true
	}
	// Subscribe: the groups on the literal streams and on the streams the
	// patterns match now.
	var last error
	for n := 0; ; n++ {
		err := s.setup(ctx)
		if err == nil {
			break
		}
		if isPermanent(err) || errors.Is(err, backend.ErrPermanent) {
			return err
		}
		last = err
		s.disconnected(err)
		if !backoff(ctx, n) {
			if last == nil {
				last = ctx.Err()
			}
			return last
		}
	}
	s.reconnected()
	s.inbox.Ready()

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.heartbeat(bg) }()
	go func() { defer wg.Done(); s.acker(bg) }()
	if len(s.sub.Patterns) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.discover(bg) }()
	}
	cerr := s.read(ctx)
	if cerr == nil {
		select {
		case <-s.inbox.Done():
		case <-s.c.closedCh:
			cerr = fmt.Errorf("redis: consume: %w", backend.ErrClosed)
		}
	}
	stopBG()
	wg.Wait()
	s.finish()
	return cerr
}

// setup creates the group on every stream of the subscription.
func (s *session) setup(ctx context.Context) error {
	start := "0"
	if s.c.cfg.start == Latest {
		start = "$"
	}
	for _, t := range s.sub.Topics {
		if err := s.ensureGroup(ctx, t, start, true); err != nil {
			return err
		}
	}
	found, err := s.scan(ctx)
	if err != nil {
		return err
	}
	for _, t := range found {
		if err := s.ensureGroup(ctx, t, start, false); err != nil && !isNoKey(err) {
			return err
		}
	}
	if s.c.cfg.consumer != "" {
		// A named consumer takes back what its previous run left pending.
		for _, t := range s.snapshot() {
			if err := s.releaseOwn(ctx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func isNoKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "requires the key to exist")
}

// ensureGroup creates the group on stream (unless it exists) and adds the
// stream to the session's set.
func (s *session) ensureGroup(ctx context.Context, stream, start string, mk bool) error {
	var err error
	if mk {
		err = s.c.rc.XGroupCreateMkStream(ctx, stream, s.group, start).Err()
	} else {
		err = s.c.rc.XGroupCreate(ctx, stream, s.group, start).Err()
	}
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		if isPermanent(err) {
			return fmt.Errorf("redis: consume: create group %s on stream %s: %w: %w", s.group, stream, backend.ErrPermanent, err)
		}
		return fmt.Errorf("redis: consume: create group %s on stream %s: %w", s.group, stream, err)
	}
	s.mu.Lock()
	if !s.known[stream] {
		s.known[stream] = true
		s.streams = append(s.streams, stream)
		sort.Strings(s.streams)
		signal(s.changed)
	}
	s.mu.Unlock()
	return nil
}

// holds reports whether entry id of stream was delivered by this session
// and is not settled yet.
func (s *session) holds(stream, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inflight[stream][id]
	return ok
}

func (s *session) forget(stream string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[stream] {
		delete(s.known, stream)
		s.streams = slices.DeleteFunc(s.streams, func(t string) bool { return t == stream })
	}
}

func (s *session) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.streams)
}

// scan lists the streams that match the subscription's patterns: SCAN
// MATCH <glob> TYPE stream on every master, then the pattern itself.
func (s *session) scan(ctx context.Context) ([]string, error) {
	if len(s.sub.Patterns) == 0 {
		return nil, nil
	}
	globs := map[string]bool{}
	for _, p := range s.sub.Patterns {
		globs[Glob(p)] = true
	}
	var mu sync.Mutex
	var out []string
	scanOne := func(ctx context.Context, rc goredis.Cmdable) error {
		for g := range globs {
			var cursor uint64
			for {
				keys, next, err := rc.ScanType(ctx, cursor, g, 1000, "stream").Result()
				if err != nil {
					return fmt.Errorf("redis: consume: scan for %s: %w", g, err)
				}
				mu.Lock()
				for _, k := range keys {
					if s.sub.Matches(k) && !s.literal[k] {
						out = append(out, k)
					}
				}
				mu.Unlock()
				if cursor = next; cursor == 0 {
					break
				}
			}
		}
		return nil
	}
	var err error
	if cc, ok := s.c.rc.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return scanOne(ctx, n) })
	} else {
		err = scanOne(ctx, s.c.rc)
	}
	slices.Sort(out)
	return slices.Compact(out), err
}

// discover picks up new streams that match the patterns, every
// StreamRefresh. Streams found after the start begin at their first entry.
func (s *session) discover(ctx context.Context) {
	t := time.NewTicker(s.c.cfg.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		found, err := s.scan(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.c.cfg.log.Warn("redis: scanning for new streams failed", "group", s.group, "err", err)
			}
			continue
		}
		for _, st := range found {
			s.mu.Lock()
			k := s.known[st]
			s.mu.Unlock()
			if !k {
				if err := s.ensureGroup(ctx, st, "0", false); err != nil && !isNoKey(err) && ctx.Err() == nil {
					s.c.cfg.log.Warn("redis: creating the group on a new stream failed", "group", s.group, "stream", st, "err", err)
				}
			}
		}
	}
}

// read is the delivery loop: XREADGROUP for new entries, XAUTOCLAIM for
// entries left pending, until ctx ends. It returns nil then, or an error
// it cannot recover from.
func (s *session) read(ctx context.Context) error {
	cfg := &s.c.cfg
	nextReclaim := time.Now() // at once: what others left behind
	fails := 0
	history := false
	for ctx.Err() == nil {
		if history {
			// A read failed: its reply, and the entries it gave this
			// consumer, may be lost. Read them again from the consumer's
			// own pending entries.
			stop, err := s.readHistory(ctx)
			if stop {
				return nil
			}
			if err == nil {
				history = false
			}
		}
		select {
		case <-s.wake:
			nextReclaim = time.Now()
		default:
		}
		if !time.Now().Before(nextReclaim) {
			stop, err := s.reclaim(ctx)
			if stop {
				return nil
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.disconnected(err)
				fails++
				backoff(ctx, fails)
				continue
			}
			nextReclaim = time.Now().Add(cfg.reclaimEvery)
		}
		streams := s.snapshot()
		if len(streams) == 0 {
			t := time.NewTimer(time.Until(nextReclaim))
			select {
			case <-ctx.Done():
			case <-s.changed:
			case <-s.wake:
				nextReclaim = time.Now()
			case <-t.C:
			}
			t.Stop()
			continue
		}
		groups := [][]string{streams}
		if s.c.cluster {
			groups = bySlot(streams)
		}
		block := min(cfg.block, max(time.Until(nextReclaim), time.Millisecond))
		if len(groups) > 1 {
			block = max(block/time.Duration(len(groups)), 10*time.Millisecond)
		}
		for _, g := range groups {
			args := make([]string, 0, 2*len(g))
			args = append(args, g...)
			for range g {
				args = append(args, ">")
			}
			res, err := s.c.rc.XReadGroup(ctx, &goredis.XReadGroupArgs{
				Group: s.group, Consumer: s.consumer, Streams: args, Count: int64(cfg.batch), Block: block,
			}).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				if ctx.Err() != nil {
					return nil
				}
				if strings.HasPrefix(err.Error(), "NOGROUP") {
					s.regroup(ctx, g)
					continue
				}
				if isPermanent(err) {
					return fmt.Errorf("redis: consume: XREADGROUP: %w: %w", backend.ErrPermanent, err)
				}
				s.disconnected(fmt.Errorf("redis: consume: XREADGROUP: %w", err))
				history = true
				fails++
				backoff(ctx, fails)
				break
			}
			fails = 0
			if s.down.Load() {
				s.reconnected()
			}
			for _, st := range res {
				s.hold(st.Stream, st.Messages)
			}
			for _, st := range res {
				for i, m := range st.Messages {
					e := s.newEntry(st.Stream, m, 1)
					if err := s.inbox.Deliver(ctx, &e.d); err != nil {
						s.unsettle(e)
						s.releaseMsgs(st.Stream, st.Messages[i:])
						return nil
					}
				}
			}
		}
	}
	return nil
}

// readHistory delivers again the entries pending on this consumer that
// it does not hold (XREADGROUP from 0).
func (s *session) readHistory(ctx context.Context) (stop bool, err error) {
	for _, st := range s.snapshot() {
		from := "0"
		for {
			res, err := s.c.rc.XReadGroup(ctx, &goredis.XReadGroupArgs{
				Group: s.group, Consumer: s.consumer, Streams: []string{st, from}, Count: int64(s.c.cfg.batch), Block: -1,
			}).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return false, err
			}
			if len(res) == 0 || len(res[0].Messages) == 0 {
				break
			}
			msgs := res[0].Messages
			counts, err := s.counts(ctx, st, msgs)
			if err != nil {
				return false, err
			}
			for i, m := range msgs {
				if s.holds(st, m.ID) || len(m.Values) == 0 { // held here, or deleted from the stream
					continue
				}
				e := s.newEntry(st, m, max(counts[m.ID], 2))
				if err := s.inbox.Deliver(ctx, &e.d); err != nil {
					s.unsettle(e)
					s.releaseMsgs(st, msgs[i:])
					return true, nil
				}
			}
			from = msgs[len(msgs)-1].ID
		}
	}
	return false, nil
}

func bySlot(streams []string) [][]string {
	m := map[int][]string{}
	var order []int
	for _, t := range streams {
		sl := slot(t)
		if _, ok := m[sl]; !ok {
			order = append(order, sl)
		}
		m[sl] = append(m[sl], t)
	}
	out := make([][]string, 0, len(order))
	for _, sl := range order {
		out = append(out, m[sl])
	}
	return out
}

// regroup re-creates the group on streams that lost it (deleted and
// written again, or the group destroyed); a stream of a pattern that no
// longer exists is dropped.
func (s *session) regroup(ctx context.Context, streams []string) {
	for _, st := range streams {
		lit := s.literal[st]
		if err := s.ensureGroup(ctx, st, "0", lit); err != nil {
			if isNoKey(err) {
				s.forget(st)
				continue
			}
			s.c.cfg.log.Warn("redis: re-creating the consumer group failed", "group", s.group, "stream", st, "err", err)
		}
	}
}

func (s *session) newEntry(stream string, m goredis.XMessage, count int64) *entry {
	e := &entry{s: s, stream: stream, id: m.ID}
	e.d = *toDelivery(stream, m)
	e.d.Info.Redelivered = count > 1
	e.d.Info.DeliveryCount = int(count)
	e.d.Acker = e
	s.mu.Lock()
	ids := s.inflight[stream]
	if ids == nil {
		ids = map[string]struct{}{}
		s.inflight[stream] = ids
	}
	ids[m.ID] = struct{}{}
	s.mu.Unlock()
	return e
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// unsettle forgets an in-flight entry without acking it.
func (s *session) unsettle(e *entry) {
	s.mu.Lock()
	delete(s.inflight[e.stream], e.id)
	s.mu.Unlock()
}

// reclaim takes over entries pending longer than MinIdle on any consumer
// of the group (XAUTOCLAIM), and delivers them again with their delivery
// count, or dead-letters those past the DeliveryLimit. stop reports that
// the inbox refused a delivery.
func (s *session) reclaim(ctx context.Context) (stop bool, err error) {
	cfg := &s.c.cfg
	for _, st := range s.snapshot() {
		cursor := "0-0"
		for round := 0; round < 4; round++ {
			msgs, next, err := s.c.rc.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream: st, Group: s.group, Consumer: s.consumer, MinIdle: cfg.minIdle, Start: cursor, Count: int64(cfg.batch),
			}).Result()
			if err != nil {
				if strings.HasPrefix(err.Error(), "NOGROUP") {
					s.regroup(ctx, []string{st})
					break
				}
				return false, fmt.Errorf("redis: consume: XAUTOCLAIM on %s: %w", st, err)
			}
			if len(msgs) > 0 {
				counts, err := s.counts(ctx, st, msgs)
				if err != nil {
					return false, err
				}
				for i, m := range msgs {
					if s.holds(st, m.ID) {
						continue // still being handled here
					}
					n := max(counts[m.ID], 2)
					if cfg.deliveryLimit > 0 && n > int64(cfg.deliveryLimit) {
						if err := s.deadLetterLimit(ctx, st, m, n); err != nil {
							return false, err
						}
						continue
					}
					e := s.newEntry(st, m, n)
					s.mu.Lock()
					if a, ok := s.attempts[st+"\x00"+m.ID]; ok {
						e.d.Attempts = a
						delete(s.attempts, st+"\x00"+m.ID)
					}
					s.mu.Unlock()
					if err := s.inbox.Deliver(ctx, &e.d); err != nil {
						s.unsettle(e)
						s.releaseMsgs(st, msgs[i:])
						return true, nil
					}
				}
			}
			if cursor = next; cursor == "0-0" || cursor == "" {
				break
			}
		}
	}
	return false, nil
}

// counts reads the delivery counts of claimed entries from the group's
// pending entries list.
func (s *session) counts(ctx context.Context, stream string, msgs []goredis.XMessage) (map[string]int64, error) {
	s.mu.Lock()
	extra := len(s.inflight[stream])
	s.mu.Unlock()
	pend, err := s.c.rc.XPendingExt(ctx, &goredis.XPendingExtArgs{
		Stream: stream, Group: s.group, Start: msgs[0].ID, End: msgs[len(msgs)-1].ID,
		Count: int64(len(msgs) + extra + 16), Consumer: s.consumer,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: consume: XPENDING on %s: %w", stream, err)
	}
	out := make(map[string]int64, len(pend))
	for _, p := range pend {
		out[p.ID] = p.RetryCount
	}
	return out, nil
}

// deadLetterLimit moves an entry delivered more than DeliveryLimit times
// to the group's dead-letter stream, then acks it.
func (s *session) deadLetterLimit(ctx context.Context, stream string, m goredis.XMessage, n int64) error {
	e := s.newEntry(stream, m, n)
	defer s.unsettle(e)
	now := time.Now()
	fm := &dispytch.FailedMessage{
		Topic: stream, Key: e.d.Key, Value: e.d.Value, Headers: e.d.Headers, Group: s.group,
		Reason:   ReasonDeliveryLimit,
		Err:      fmt.Errorf("delivered %d times, more than the delivery limit %d", n, s.c.cfg.deliveryLimit),
		Attempts: int(n), FirstFailure: now, LastFailure: now, Partition: -1, Offset: -1,
	}
	dl := fm.Message(s.group + ".dlq")
	dl.ContentType = e.d.ContentType
	if err := s.c.rc.Do(ctx, s.c.xaddCmd(dl)...).Err(); err != nil {
		return fmt.Errorf("redis: consume: dead-letter %s/%s: %w", stream, m.ID, err)
	}
	if err := s.c.rc.XAck(ctx, stream, s.group, m.ID).Err(); err != nil {
		return fmt.Errorf("redis: consume: ack dead-lettered %s/%s: %w", stream, m.ID, err)
	}
	s.c.cfg.log.Warn("redis: entry dead-lettered after too many deliveries", "group", s.group, "stream", stream,
		"entry", m.ID, "delivery_count", n, "limit", s.c.cfg.deliveryLimit)
	return nil
}

// heartbeat keeps the session's in-flight entries from looking idle
// (XCLAIM to itself, JUSTID), every MinIdle/3.
func (s *session) heartbeat(ctx context.Context) {
	t := time.NewTicker(max(s.c.cfg.minIdle/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		todo := map[string][]string{}
		for st, ids := range s.inflight {
			for id := range ids {
				todo[st] = append(todo[st], id)
			}
		}
		s.mu.Unlock()
		for st, ids := range todo {
			for chunk := range slices.Chunk(ids, 512) {
				args := []any{"XCLAIM", st, s.group, s.consumer, 0}
				for _, id := range chunk {
					args = append(args, id)
				}
				args = append(args, "JUSTID")
				if err := s.c.rc.Do(ctx, args...).Err(); err != nil && ctx.Err() == nil {
					s.c.cfg.log.Debug("redis: keeping in-flight entries alive failed", "group", s.group, "stream", st, "err", err)
				}
			}
		}
	}
}

// release gives entries up: XCLAIM to itself with a huge idle time, so
// that any consumer's next XAUTOCLAIM takes them.
func (s *session) release(ctx context.Context, stream string, ids []string) error {
	for chunk := range slices.Chunk(ids, 512) {
		args := []any{"XCLAIM", stream, s.group, s.consumer, 0}
		for _, id := range chunk {
			args = append(args, id)
		}
		args = append(args, "IDLE", idleReleased, "JUSTID")
		if err := s.c.rc.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redis: release pending entries of %s: %w", stream, err)
		}
	}
	return nil
}

// hold marks entries read and not yet delivered as in flight, so that
// the heartbeat keeps them while the inbox is full.
func (s *session) hold(stream string, msgs []goredis.XMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.inflight[stream]
	if ids == nil {
		ids = map[string]struct{}{}
		s.inflight[stream] = ids
	}
	for _, m := range msgs {
		ids[m.ID] = struct{}{}
	}
}

// releaseMsgs gives up entries that were read and not delivered.
func (s *session) releaseMsgs(stream string, msgs []goredis.XMessage) {
	ids := make([]string, len(msgs))
	s.mu.Lock()
	for i, m := range msgs {
		ids[i] = m.ID
		delete(s.inflight[stream], m.ID)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.release(ctx, stream, ids); err != nil {
		s.c.cfg.log.Warn("redis: releasing undelivered entries failed; they are reclaimed after MinIdle", "group", s.group, "err", err)
	}
}

// releaseOwn releases what this consumer name has pending on stream (left
// by an earlier run under the same name).
func (s *session) releaseOwn(ctx context.Context, stream string) error {
	for {
		pend, err := s.c.rc.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: stream, Group: s.group, Start: "-", End: "+", Count: 512, Consumer: s.consumer, Idle: time.Millisecond,
		}).Result()
		if err != nil {
			return fmt.Errorf("redis: consume: XPENDING on %s: %w", stream, err)
		}
		var ids []string
		for _, p := range pend {
			if p.Idle < time.Duration(idleReleased/2)*time.Millisecond {
				ids = append(ids, p.ID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		if err := s.release(ctx, stream, ids); err != nil {
			return err
		}
		if len(pend) < 512 {
			return nil
		}
	}
}

// Ack queues an XACK: the session's acker sends them in batches, one
// XACK per stream. An entry whose XACK did not reach Redis stays pending
// and is delivered again (at-least-once).
func (e *entry) Ack(context.Context) error {
	if !e.settled.CompareAndSwap(false, true) {
		return errors.New("redis: ack: delivery already settled")
	}
	s := e.s
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return fmt.Errorf("redis: ack %s/%s: the consumer stopped; the entry stays pending: %w", e.stream, e.id, backend.ErrClosed)
	}
	s.acks = append(s.acks, e)
	s.mu.Unlock()
	signal(s.ackSig)
	return nil
}

// Nack gives the entry up for redelivery: it looks idle at once, and the
// group's next XAUTOCLAIM (this consumer's, right away) delivers it again
// with a higher delivery count.
func (e *entry) Nack(ctx context.Context) error {
	if !e.settled.CompareAndSwap(false, true) {
		return errors.New("redis: nack: delivery already settled")
	}
	s := e.s
	s.unsettle(e)
	if err := s.release(ctx, e.stream, []string{e.id}); err != nil {
		return fmt.Errorf("redis: nack %s/%s: %w (it is reclaimed after MinIdle)", e.stream, e.id, err)
	}
	signal(s.wake)
	return nil
}

// ackLinger is how long the acker waits for more acks when fewer than a
// read's worth are queued: one XACK then covers many entries, which saves
// Redis (and the client) a command per handled entry. Acks are
// asynchronous anyway: one lost with a crash is a redelivery.
const ackLinger = 2 * time.Millisecond

// minNackAfter is the shortest wait handed to Redis: a shorter one costs
// less in the worker than the round trips of a release and a reclaim.
const minNackAfter = 50 * time.Millisecond

// CanNackAfter implements backend.DelayedNacker: a wait from 50ms up to
// MinIdle is handed to Redis (see NackAfter); shorter ones stay in the
// worker.
func (e *entry) CanNackAfter(d time.Duration) bool {
	return d >= minNackAfter && d <= e.s.c.cfg.minIdle
}

// NackAfter implements backend.DelayedNacker: the entry is given up with
// an idle time of MinIdle−d, so that the group's XAUTOCLAIM takes it again
// once d has passed (this consumer's right then, or another's); no worker
// waits. The attempts made so far go with the redelivery when this
// consumer reclaims it. Each such retry counts towards DeliveryLimit.
func (e *entry) NackAfter(ctx context.Context, d time.Duration, attempts int) error {
	if !e.settled.CompareAndSwap(false, true) {
		return errors.New("redis: nack: delivery already settled")
	}
	s := e.s
	s.unsettle(e)
	idle := max(s.c.cfg.minIdle-d, 0).Milliseconds()
	err := s.c.rc.Do(ctx, "XCLAIM", e.stream, s.group, s.consumer, 0, e.id, "IDLE", idle, "JUSTID").Err()
	if err != nil {
		return fmt.Errorf("redis: nack %s/%s: %w (it is reclaimed after MinIdle)", e.stream, e.id, err)
	}
	s.mu.Lock()
	s.attempts[e.stream+"\x00"+e.id] = attempts
	s.mu.Unlock()
	time.AfterFunc(d+5*time.Millisecond, func() { signal(s.wake) })
	return nil
}

// acker sends the queued acks.
func (s *session) acker(ctx context.Context) {
	linger := time.NewTimer(ackLinger)
	linger.Stop()
	for fails := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-s.ackSig:
		}
		s.mu.Lock()
		few := len(s.acks) < s.c.cfg.batch
		s.mu.Unlock()
		if few {
			linger.Reset(ackLinger)
			select {
			case <-ctx.Done():
				return
			case <-linger.C:
			}
		}
		if err := s.flushAcks(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.c.cfg.log.Warn("redis: XACK failed; retrying", "group", s.group, "err", err)
			fails++
			backoff(ctx, fails)
			signal(s.ackSig)
			continue
		}
		fails = 0
	}
}

// flushAcks sends the queued acks in one pipeline; on failure they stay
// queued.
func (s *session) flushAcks(ctx context.Context) error {
	s.mu.Lock()
	acks := s.acks
	s.acks = nil
	s.mu.Unlock()
	if len(acks) == 0 {
		return nil
	}
	by := map[string][]string{}
	for _, e := range acks {
		by[e.stream] = append(by[e.stream], e.id)
	}
	pipe := s.c.rc.Pipeline()
	for st, ids := range by {
		pipe.XAck(ctx, st, s.group, ids...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.mu.Lock()
		s.acks = append(acks, s.acks...)
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	for _, e := range acks {
		delete(s.inflight[e.stream], e.id)
	}
	s.mu.Unlock()
	return nil
}

// finish ends the session: the last acks go out, what is still in flight
// is released for the group's other consumers, and the consumer leaves
// the group's streams where it has nothing pending.
func (s *session) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	if err := s.flushAcks(ctx); err != nil {
		s.c.cfg.log.Warn("redis: the last XACKs failed; those entries are delivered again", "group", s.group, "err", err)
	}
	s.mu.Lock()
	left := map[string][]string{}
	for st, ids := range s.inflight {
		for id := range ids {
			left[st] = append(left[st], id)
		}
	}
	s.inflight = map[string]map[string]struct{}{}
	s.mu.Unlock()
	for st, ids := range left {
		if err := s.release(ctx, st, ids); err != nil {
			s.c.cfg.log.Warn("redis: releasing unsettled entries failed; they are reclaimed after MinIdle", "group", s.group, "err", err)
		}
	}
	for _, st := range s.snapshot() {
		if len(left[st]) > 0 {
			continue
		}
		pend, err := s.c.rc.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: st, Group: s.group, Start: "-", End: "+", Count: 1, Consumer: s.consumer,
		}).Result()
		if err == nil && len(pend) == 0 {
			_ = s.c.rc.XGroupDelConsumer(ctx, st, s.group, s.consumer).Err()
		}
	}
}
