package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// maxPollRecords bounds the records taken from franz-go per poll.
const maxPollRecords = 4096

// Consumer consumes a listener's subscription as a Kafka consumer group. It
// implements backend.Consumer, and backend.Producer for dead letters. Each
// Consume call runs its own franz-go group client; a Consumer can serve
// several listeners (and Redrive) at once.
//
// See the package documentation for ordering, commits, rebalances and
// backpressure.
type Consumer struct {
	cfg     consumerConfig
	prod    *Producer
	ownProd bool
	stats   counters
	closed  atomic.Bool
	limits  *topicLimits // the own producer's batch limits, nil with DeadLetterWith

	smu      sync.Mutex
	sessions map[*session]struct{} // the running Consume calls, for Lag
}

type counters struct {
	pauses, redeliveries, abandoned, commits, commitErrors, maxQueued, refetched atomic.Int64
}

// Stats are a consumer's counters since it was created, over all its
// Consume calls.
type Stats struct {
	// Pauses counts how often a partition's fetching was paused because
	// its queue was full.
	Pauses int64
	// Redeliveries counts nacked records queued for redelivery.
	Redeliveries int64
	// Abandoned counts records still in flight when their partition was
	// revoked or lost, or the consumer stopped: their offsets were not
	// committed, so the partition's next owner handles them again.
	Abandoned int64
	// Commits counts successful partition offset commits; CommitErrors
	// failed ones.
	Commits, CommitErrors int64
	// MaxQueued is the most records that waited in one partition's queue
	// at once: at most about PartitionQueue's records plus two fetches of
	// a partition.
	MaxQueued int64
	// Refetched counts records at an offset below one already handed over
	// in the same assignment of their partition: franz-go moved the fetch
	// position back, as it does when it detects a truncated log. They are
	// handed over again (at-least-once).
	Refetched int64
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	return Stats{
		Pauses:       c.stats.pauses.Load(),
		Redeliveries: c.stats.redeliveries.Load(),
		Abandoned:    c.stats.abandoned.Load(),
		Commits:      c.stats.commits.Load(),
		CommitErrors: c.stats.commitErrors.Load(),
		MaxQueued:    c.stats.maxQueued.Load(),
		Refetched:    c.stats.refetched.Load(),
	}
}

// NewConsumer returns a consumer. The consumer group is the listener's
// (dispytch.Group): the one setting, which also names the group's
// dead-letter topic. Dead letters are produced with a
// producer built from the same connection options (see ProducerOptions and
// DeadLetterWith).
func NewConsumer(opts ...ConsumerOption) (*Consumer, error) {
	cfg := consumerConfig{
		commitInterval:  time.Second,
		revokeTimeout:   10 * time.Second,
		commitTimeout:   10 * time.Second,
		queueRecords:    10000,
		queueBytes:      8 << 20,
		topicRefresh:    10 * time.Second,
		redeliveryDelay: time.Second,
		dlqGroup:        DefaultDeadLetterGroup,
	}
	for _, o := range opts {
		if o != nil {
			o.applyConsumer(&cfg)
		}
	}
	if cfg.conn.log == nil {
		cfg.conn.log = slog.Default()
	}
	c := &Consumer{cfg: cfg, prod: cfg.producer}
	if c.prod == nil {
		c.limits = &topicLimits{m: map[string]int32{}}
		popts := append([]ProducerOption{
			commonOption(func(cc *connConfig) { *cc = cfg.conn }),
			producerOption(func(pc *producerConfig) { pc.batchMaxBytes = c.limits.batchMax }),
		}, cfg.producerOpts...)
		p, err := NewProducer(popts...)
		if err != nil {
			return nil, err
		}
		c.prod, c.ownProd = p, true
	}
	return c, nil
}

// defaultMaxMessageBytes is Kafka's default message.max.bytes (the
// broker's limit on a record batch, after compression).
const defaultMaxMessageBytes = 1048588

// deadLetterHeaderRoom is what the consumer's dead-letter producer allows
// above a topic's max.message.bytes, before compression: the failure
// headers a dead letter adds to a record that the broker accepted, and
// room for records that reached the broker compressed.
const deadLetterHeaderRoom = 64 << 10

// topicLimits are the batch limits of the consumer's own dead-letter
// producer, by topic: each topic's max.message.bytes (as the broker
// reports it) plus deadLetterHeaderRoom. franz-go's own default is
// 1,000,012 bytes, below Kafka's 1,048,588: a record of about 1 MB that
// the broker accepted could not be dead-lettered by a default franz-go
// producer.
type topicLimits struct {
	mu sync.Mutex
	m  map[string]int32 // max.message.bytes by topic
}

// batchMax is the producer's ProducerBatchMaxBytesFn. franz-go calls it
// once per partition, when it first produces to the partition:
// Consumer.Produce has looked the topic up by then.
func (t *topicLimits) batchMax(topic string) int32 {
	t.mu.Lock()
	limit, ok := t.m[topic]
	t.mu.Unlock()
	if !ok {
		limit = defaultMaxMessageBytes
	}
	return min(limit, 64<<20) + deadLetterHeaderRoom
}

// lookup learns the max.message.bytes of the topics not known yet from
// the brokers (the topic's config, which falls back to the broker's); on
// failure it keeps Kafka's default.
func (t *topicLimits) lookup(ctx context.Context, cl *kgo.Client, msgs []*backend.Message) {
	var missing []string
	t.mu.Lock()
	for _, m := range msgs {
		if m == nil {
			continue
		}
		if _, ok := t.m[m.Topic]; !ok && !slices.Contains(missing, m.Topic) {
			missing = append(missing, m.Topic)
		}
	}
	t.mu.Unlock()
	if len(missing) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(lctx, missing...)
	found := map[string]int32{}
	if err == nil {
		for _, rc := range rcs {
			if rc.Err != nil {
				continue
			}
			for _, cfg := range rc.Configs {
				if cfg.Key == "max.message.bytes" && cfg.Value != nil {
					if n, err := strconv.ParseInt(*cfg.Value, 10, 32); err == nil && n > 0 {
						found[rc.Name] = int32(n)
					}
				}
			}
		}
	}
	t.mu.Lock()
	for _, topic := range missing {
		if n, ok := found[topic]; ok {
			t.m[topic] = n
		} else if _, ok := t.m[topic]; !ok && err == nil {
			// Unknown topic or no such config: Kafka's default. (On a
			// failed lookup nothing is stored, so the next produce asks
			// again; franz-go uses the default meanwhile.)
			t.m[topic] = defaultMaxMessageBytes
		}
	}
	t.mu.Unlock()
}

// Backend returns "kafka".
func (c *Consumer) Backend() string { return BackendName }

// Producer returns the producer the consumer publishes dead letters with.
func (c *Consumer) Producer() *Producer { return c.prod }

// Produce publishes with the consumer's producer; the listener uses it for
// dead letters. The consumer's own producer accepts, for each topic, a
// record batch up to the topic's max.message.bytes (looked up once per
// topic) plus 64 KiB of room before compression, so that a record the
// broker accepted can be dead-lettered with its failure headers; a dead
// letter the broker still refuses fails with dispytch.ErrTooLarge, and the
// listener then sends it truncated, with the original's coordinates.
func (c *Consumer) Produce(ctx context.Context, msgs ...*backend.Message) error {
	if c.limits != nil && ctx != nil && c.prod.cl != nil {
		c.limits.lookup(ctx, c.prod.cl, msgs)
	}
	return c.prod.Produce(ctx, msgs...)
}

// Close closes the consumer's own dead-letter producer (not one given with
// DeadLetterWith), as Producer.Close does: bounded by ctx, or by the
// producer's close timeout when ctx has no deadline, so it cannot hang.
// Consume calls made afterwards fail with dispytch.ErrClosed. Call it after
// every Consume returned: a running Consume keeps its own client, which it
// closes when its context ends.
func (c *Consumer) Close(ctx context.Context) error {
	c.closed.Store(true)
	if c.ownProd {
		return c.prod.Close(ctx)
	}
	return nil
}

type tp struct {
	topic string
	part  int32
}

// session is one Consume call.
type session struct {
	c     *Consumer
	ctx   context.Context
	sub   backend.Subscription
	group string
	inbox backend.Inbox
	cl    *kgo.Client
	log   *slog.Logger
	ready sync.Once
	// readyFlag is set once Ready was called.
	readyFlag atomic.Bool

	// clSet is closed once cl is set: franz-go may call back before
	// kgo.NewClient returned.
	clSet chan struct{}
	// conn follows the session's connections, for the listener's health.
	conn backend.ConnTracker

	mu    sync.Mutex
	parts map[tp]*partition

	// causeMu guards cause: the last error seen while not subscribed (a
	// refused connection, a failed join), returned when ctx ends before
	// Ready; fatal is a permanent one, which ends Consume at once.
	causeMu sync.Mutex
	cause   error
	fatal   error
}

// Consume joins the consumer group and hands the subscription's records to
// inbox until ctx is done: literal topics by name, patterns through a
// regex subscription whose topics are re-matched in-process. Then it stops
// fetching, waits for inbox.Done, commits what was settled, leaves the group
// and returns nil.
func (c *Consumer) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	group := sub.Group
	if group == "" {
		return fmt.Errorf("kafka: consume %s: %w (%w)", sub.String(), ErrNoGroup, dispytch.ErrPermanent)
	}
	if len(sub.Topics) == 0 && len(sub.Patterns) == 0 {
		return fmt.Errorf("kafka: consume (group %q): the subscription has no topics: %w", group, dispytch.ErrPermanent)
	}
	if ctx == nil || inbox == nil {
		return fmt.Errorf("kafka: consume (group %q): nil context or inbox: %w", group, dispytch.ErrPermanent)
	}
	if c.closed.Load() {
		return fmt.Errorf("kafka: consume (group %q): the consumer is closed: %w", group, dispytch.ErrClosed)
	}
	s := &session{
		c:     c,
		ctx:   ctx,
		sub:   sub,
		group: group,
		inbox: inbox,
		log:   c.cfg.conn.log.With("group", group),
		parts: map[tp]*partition{},
		clSet: make(chan struct{}),
	}
	cl, err := kgo.NewClient(s.kgoOpts()...)
	if err != nil {
		return fmt.Errorf("kafka: consume: %w", err)
	}
	s.cl = cl
	close(s.clSet)
	s.log.Debug("kafka: consuming", "subscription", sub.String())
	c.smu.Lock()
	if c.sessions == nil {
		c.sessions = map[*session]struct{}{}
	}
	c.sessions[s] = struct{}{}
	c.smu.Unlock()
	defer func() {
		c.smu.Lock()
		delete(c.sessions, s)
		c.smu.Unlock()
	}()

	perr := s.poll(ctx)

	// Stop handing over records, let the listener finish, then commit.
	s.mu.Lock()
	parts := make([]*partition, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.Unlock()
	for _, p := range parts {
		p.stop()
	}
	if perr == nil {
		<-inbox.Done()
	}
	s.closeAll()
	// Leave the group within the commit timeout: Close alone waits for
	// the leave however long an unreachable coordinator takes.
	lctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.commitTimeout)
	_ = cl.LeaveGroupContext(lctx)
	cancel()
	cl.Close()
	return perr
}

// fetchMaxWait is the consumer's default fetch wait (see kgoOpts).
const fetchMaxWait = 100 * time.Millisecond

func (s *session) kgoOpts() []kgo.Opt {
	cfg := &s.c.cfg
	conn := cfg.conn
	if conn.clientID == "" {
		conn.clientID = "dispytch"
	}
	opts := conn.kgoOpts()
	start := kgo.NewOffset().AtStart()
	if cfg.start == Latest {
		start = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.WithHooks(sessionHooks{s}),
		kgo.AdjustFetchOffsetsFn(s.adjustOffsets),
		kgo.ConsumerGroup(s.group),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.ConsumeResetOffset(start),
		kgo.MetadataMaxAge(cfg.topicRefresh),
		kgo.MetadataMinAge(min(cfg.topicRefresh, 5*time.Second)),
		// How long a fetch waits at the broker for new records. A
		// resumed partition waits for the fetch in flight to its broker
		// (franz-go starts one fetch per broker at a time), and that
		// fetch long-polls when the other partitions are at their end:
		// with Kafka's 500ms (franz-go's 5s), each pause of a partition
		// whose queue filled cost up to that long idle. 100ms bounds
		// the stall, at the price of an idle consumer fetching ten
		// times a second per broker. kafka.ClientOptions(
		// kgo.FetchMaxWait(d)) overrides it.
		kgo.FetchMaxWait(fetchMaxWait),
	)
	if len(s.sub.Patterns) == 0 {
		opts = append(opts, kgo.ConsumeTopics(s.sub.Topics...))
	} else {
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics(s.regexps()...))
	}
	return append(opts, conn.extra...)
}

// regexps are the regex subscription of a subscription with patterns: its
// literal topics, quoted, and its patterns.
func (s *session) regexps() []string {
	res := make([]string, 0, len(s.sub.Topics)+len(s.sub.Patterns))
	for _, t := range s.sub.Topics {
		res = append(res, "^"+regexp.QuoteMeta(t)+"$")
	}
	for _, p := range s.sub.Patterns {
		res = append(res, p.Regexp())
	}
	return res
}

// readyWithoutTopics marks a regex subscription ready when no topic of the
// cluster matches it yet: franz-go joins the group only once one does, and
// then, starting at the earliest offset, consumes the new topic from its
// first record, so everything emitted from now on is consumed. (With
// Latest it would not be: records written before the join are skipped.)
func (s *session) readyWithoutTopics(ctx context.Context) {
	if len(s.sub.Patterns) == 0 || s.c.cfg.start != Earliest || s.isReady() {
		return
	}
	res := s.regexps()
	rxs := make([]*regexp.Regexp, 0, len(res))
	for _, r := range res {
		rx, err := regexp.Compile(r)
		if err != nil {
			return
		}
		rxs = append(rxs, rx)
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(s.cl).ListTopics(lctx)
	if err != nil {
		return // the cause is recorded by the hooks
	}
	for _, t := range topics.Names() {
		for _, rx := range rxs {
			if rx.MatchString(t) {
				return // franz-go joins for it
			}
		}
	}
	s.log.Debug("kafka: no topic matches the subscription yet; ready, and waiting for one", "subscription", s.sub.String())
	s.markReady()
}

// poll is the poll loop: it routes fetched records to their partitions'
// queues and commits periodically, both while rebalances are blocked, so
// that it never touches a partition being revoked. It returns nil when ctx
// ends after the subscription was in place, the last cause when it ends
// before, and a permanent cause at once.
func (s *session) poll(ctx context.Context) error {
	interval := s.c.cfg.commitInterval
	lastCommit := time.Now()
	errLog := map[string]time.Time{}
	var lastTopicCheck time.Time
	for {
		if !s.isReady() && len(s.sub.Patterns) > 0 && time.Since(lastTopicCheck) >= time.Second {
			lastTopicCheck = time.Now()
			s.readyWithoutTopics(ctx)
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		fs := s.cl.PollRecords(pctx, maxPollRecords)
		cancel()
		if fs.IsClientClosed() {
			s.cl.AllowRebalance()
			return fmt.Errorf("kafka: consume (group %q): %w", s.group, dispytch.ErrClosed)
		}
		fs.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			where := "group " + strconv.Quote(s.group)
			if topic != "" {
				where = fmt.Sprintf("%s/%d", topic, part)
			}
			s.noteErr(fmt.Errorf("kafka: consume %s: %w", where, err))
			key := topic + "\x00" + err.Error()
			if t, ok := errLog[key]; !ok || time.Since(t) > 30*time.Second {
				errLog[key] = time.Now()
				s.log.Warn("kafka: fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		fetched := false
		fs.EachPartition(func(f kgo.FetchTopicPartition) {
			if len(f.Records) > 0 {
				s.partition(f.Topic, f.Partition).push(f.Records)
				s.markReady()
				fetched = true
			}
		})
		if fetched {
			s.connOK()
		}
		if time.Since(lastCommit) >= interval {
			s.commit("periodic", s.snapshot())
			lastCommit = time.Now()
		}
		s.cl.AllowRebalance()
		if err := s.fatalErr(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			if !s.isReady() {
				return s.lastCause(ctx)
			}
			return nil
		}
	}
}

// isFatal reports errors that retrying cannot fix: refused credentials
// (SASL, TLS verification), missing permissions, an invalid group id.
func isFatal(err error) bool {
	if isAuthRefusal(err) {
		return true
	}
	for _, e := range []error{
		kerr.GroupAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.InvalidGroupID,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// noteErr records err as the last cause, and as the fatal one when it is
// permanent.
func (s *session) noteErr(err error) {
	s.causeMu.Lock()
	defer s.causeMu.Unlock()
	s.cause = err
	if s.fatal == nil && isFatal(err) {
		s.fatal = fmt.Errorf("%w (%w)", err, dispytch.ErrPermanent)
	}
}

func (s *session) fatalErr() error {
	s.causeMu.Lock()
	defer s.causeMu.Unlock()
	return s.fatal
}

// lastCause is why the session never subscribed: the last error seen, or
// ctx's error.
func (s *session) lastCause(ctx context.Context) error {
	s.causeMu.Lock()
	defer s.causeMu.Unlock()
	if s.cause != nil {
		return fmt.Errorf("%w (while joining group %q: %w)", s.cause, s.group, backend.ContextError(ctx.Err()))
	}
	return fmt.Errorf("kafka: consume: group %q not joined: %w", s.group, backend.ContextError(ctx.Err()))
}

// sessionHooks are the franz-go hooks of a session's client: they record
// why the group is not joined.
type sessionHooks struct{ s *session }

var (
	_ kgo.HookBrokerConnect    = sessionHooks{}
	_ kgo.HookGroupManageError = sessionHooks{}
)

// OnBrokerConnect records a failed connection.
func (h sessionHooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		err = fmt.Errorf("kafka: consume (group %q): broker %s: %w", h.s.group, net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
		h.s.noteErr(err)
		h.s.connFailed(err)
		return
	}
	h.s.connOK()
}

// OnGroupManageError records why the group session failed.
func (h sessionHooks) OnGroupManageError(err error) {
	if !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("kafka: consume: group %q: %w", h.s.group, err)
		h.s.noteErr(err)
		h.s.connFailed(err)
	}
}

// markReady tells the listener the subscription is in place, once.
func (s *session) markReady() {
	s.ready.Do(func() {
		s.readyFlag.Store(true)
		s.inbox.Ready()
	})
}

func (s *session) isReady() bool { return s.readyFlag.Load() }

// partition returns the partition's state, creating and starting it if the
// poll loop sees a partition before its assignment callback.
func (s *session) partition(topic string, part int32) *partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tp{topic, part}
	p := s.parts[k]
	if p == nil {
		p = newPartition(s, topic, part)
		s.parts[k] = p
		go p.run()
	}
	return p
}

func (s *session) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	for topic, parts := range assigned {
		for _, part := range parts {
			k := tp{topic, part}
			if s.parts[k] != nil {
				continue
			}
			p := newPartition(s, topic, part)
			s.parts[k] = p
			go p.run()
		}
	}
	owned := len(s.parts)
	s.mu.Unlock()
	s.connOK()
	s.log.Debug("kafka: partitions assigned", "assigned", assigned)
	// A member the group gave no partitions is subscribed: it gets its
	// share at the next rebalance. One with partitions is ready once their
	// start offsets are known (adjustOffsets).
	if owned == 0 {
		s.markReady()
	}
}

// adjustOffsets runs when the group is joined and its committed offsets
// are fetched, right before fetching begins: from then on, a record
// produced to an assigned partition will be consumed, so the listener is
// told it is ready. With Latest, it first turns "latest" into concrete end
// offsets (resolveLatest).
func (s *session) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	defer s.markReady()
	if s.c.cfg.start == Latest {
		return s.resolveLatest(ctx, offsets)
	}
	return offsets, nil
}

// resolveLatest turns "latest" into concrete end offsets for partitions
// without a committed offset, so that a record produced once the listener
// reports ready is never skipped.
func (s *session) resolveLatest(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var topics []string
	for t, ps := range offsets {
		for _, o := range ps {
			if o.EpochOffset().Offset < 0 {
				topics = append(topics, t)
				break
			}
		}
	}
	if len(topics) == 0 {
		return offsets, nil
	}
	select {
	case <-s.clSet:
	case <-ctx.Done():
		return offsets, nil
	}
	ends, err := kadm.NewClient(s.cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		s.log.Warn("kafka: listing end offsets failed; starting at latest as franz-go resolves it", "err", err)
		return offsets, nil
	}
	for t, ps := range offsets {
		for part, o := range ps {
			if o.EpochOffset().Offset >= 0 {
				continue
			}
			if e, ok := ends.Lookup(t, part); ok && e.Err == nil {
				ps[part] = kgo.NewOffset().At(e.Offset)
			}
		}
	}
	return offsets, nil
}

// take removes the given partitions from the session.
func (s *session) take(which map[string][]int32) []*partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*partition
	for topic, parts := range which {
		for _, part := range parts {
			k := tp{topic, part}
			if p := s.parts[k]; p != nil {
				out = append(out, p)
				delete(s.parts, k)
			}
		}
	}
	return out
}

// onRevoked drains the revoked partitions (bounded by the revoke timeout),
// commits what they finished and forgets them. Records still in flight
// after the timeout are abandoned to the partitions' next owner.
func (s *session) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	parts := s.take(revoked)
	if len(parts) == 0 {
		return
	}
	for _, p := range parts {
		p.stop()
	}
	t := time.NewTimer(s.c.cfg.revokeTimeout)
	defer t.Stop()
	for _, p := range parts {
		if !p.waitSettled(t.C, s.inbox.Done()) {
			break
		}
	}
	offsets := map[*partition]kgo.EpochOffset{}
	for _, p := range parts {
		if eo, ok := p.close(); ok {
			offsets[p] = eo
		}
	}
	s.log.Debug("kafka: partitions revoked", "revoked", revoked)
	s.commit("revoke", offsets)
}

// onLost forgets the lost partitions without committing: another member may
// own them already.
func (s *session) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	parts := s.take(lost)
	for _, p := range parts {
		p.stop()
		p.close()
	}
	if len(parts) > 0 {
		s.log.Warn("kafka: partitions lost; their in-flight records will be handled again by their next owner", "lost", lost)
	}
}

// closeAll ends every partition at shutdown and commits what was settled.
func (s *session) closeAll() {
	s.mu.Lock()
	parts := make([]*partition, 0, len(s.parts))
	for k, p := range s.parts {
		parts = append(parts, p)
		delete(s.parts, k)
	}
	s.mu.Unlock()
	offsets := map[*partition]kgo.EpochOffset{}
	for _, p := range parts {
		p.stop()
		if eo, ok := p.close(); ok {
			offsets[p] = eo
		}
	}
	s.commit("shutdown", offsets)
}

// snapshot returns the offsets to commit of the open partitions.
func (s *session) snapshot() map[*partition]kgo.EpochOffset {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[*partition]kgo.EpochOffset
	for _, p := range s.parts {
		if eo, ok := p.mark(); ok {
			if out == nil {
				out = map[*partition]kgo.EpochOffset{}
			}
			out[p] = eo
		}
	}
	return out
}

// commit commits offsets synchronously.
func (s *session) commit(why string, offsets map[*partition]kgo.EpochOffset) {
	if len(offsets) == 0 {
		return
	}
	req := make(map[string]map[int32]kgo.EpochOffset, len(offsets))
	byTP := make(map[tp]*partition, len(offsets))
	for p, eo := range offsets {
		m := req[p.topic]
		if m == nil {
			m = map[int32]kgo.EpochOffset{}
			req[p.topic] = m
		}
		m[p.part] = eo
		byTP[tp{p.topic, p.part}] = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.commitTimeout)
	defer cancel()
	s.cl.CommitOffsetsSync(ctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.c.stats.commitErrors.Add(1)
			s.log.Warn("kafka: offset commit failed", "why", why, "err", err)
			return
		}
		for _, t := range resp.Topics {
			for _, rp := range t.Partitions {
				p := byTP[tp{t.Topic, rp.Partition}]
				if p == nil {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					s.c.stats.commitErrors.Add(1)
					s.log.Warn("kafka: offset commit failed", "why", why, "topic", t.Topic, "partition", rp.Partition, "err", err)
					continue
				}
				s.c.stats.commits.Add(1)
				p.setCommitted(req[t.Topic][rp.Partition].Offset)
			}
		}
	})
}
