package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/dispytch/dispytch-go/backend"
)

// DefaultDeadLetterGroup is the consumer group whose committed offsets mark
// what dead-letter operations removed from a dead-letter topic (see
// Consumer.ScanDeadLetters). DeadLetterGroup changes it.
const DefaultDeadLetterGroup = "dispytch-dlq"

// keptHoldBytes bounds, per partition, the kept dead letters a scan holds in
// memory in case a later removal needs them re-appended.
const keptHoldBytes = 64 << 20

var (
	_ backend.DeadLetterStore   = (*Consumer)(nil)
	_ backend.DeadLetterCounter = (*Consumer)(nil)
)

// ScanDeadLetters implements backend.DeadLetterStore on Kafka, for
// dispytch.DeadLetters(consumer, "users.dlq") and its List, Count, Purge
// and Redrive. It reads and writes through the consumer's dead-letter
// producer's client.
//
// A Kafka topic cannot delete a record, so removal is a watermark: the
// committed offsets of a dedicated consumer group (DefaultDeadLetterGroup,
// "dispytch-dlq", or DeadLetterGroup) on the dead-letter topic. Records
// below a partition's watermark are removed; Kafka's retention deletes them
// eventually, like any record. Tools see this: kcat shows every record, and
// the watermark group's lag is what Count reports. No member ever joins
// that group; do not use its name for a listener.
//
// A scan makes one pass over what the topic holds when it starts: for each
// partition, in partition order, the records from the watermark (or the
// log start, after retention) up to the end offset listed at the start,
// oldest first. Records appended during the scan (a redriven message that
// failed again, a re-appended kept record) are not seen; no record is seen
// twice.
//
// After each fetched batch, the partition's watermark moves past the last
// record f removed. Records f kept that lie before it are first appended
// again to the end of the same partition (same key, value, headers and
// timestamp; with a client whose partitioner does not honour explicit
// partitions, to the partition the key hashes to), and the watermark moves
// only once Kafka acknowledged the copies: a kept record is never lost,
// but it moves to the end and gets a new offset. A scan that removes
// nothing (List, Count with filters, a dry run) writes nothing. Should a
// partition's kept records since its last removal exceed 64 MiB, the scan
// stops holding them and the watermark stays at the first of them: the
// records removed after that point are seen again by the next scan.
//
// The trade-off: a watermark can only hide a prefix of the log, so keeping
// a record while removing later ones costs a copy of the record; the
// alternative, a watermark stuck at the first kept record, would show
// removed (redriven, purged) letters again. Between the copy and the commit,
// and after an error, a kept record can appear twice, and a removed one can
// be seen again by a later scan: at-least-once, as the core's contract
// allows. Run one operation per dead-letter topic at a time: two concurrent
// scans would both process the same records.
//
// The deliveries f gets carry the record's key, value, headers, content
// type, partition and offset (Info.Raw is the *kgo.Record); their Acker is
// nil.
func (c *Consumer) ScanDeadLetters(ctx context.Context, dest string, f func(*backend.Delivery) (backend.DeadLetterAction, error)) error {
	if ctx == nil {
		return errors.New("kafka: scan dead letters: nil context")
	}
	if f == nil {
		return errors.New("kafka: scan dead letters: nil function")
	}
	ts, err := c.dlqTopic(ctx, dest)
	if err != nil {
		return err
	}
	for _, part := range ts.parts {
		from, to := ts.from[part], ts.end[part]
		if from >= to {
			continue
		}
		stop, err := c.scanPartition(ctx, ts, part, from, to, f)
		if err != nil {
			return err
		}
		if stop {
			return nil
		}
	}
	return nil
}

// CountDeadLetters implements backend.DeadLetterCounter: the records of
// dest above the watermark (see ScanDeadLetters), the sum over partitions
// of the end offset minus the watermark (or the log start). It counts
// offsets, so it is approximate where offsets are not records: transaction
// markers, compacted topics, records that are not dead letters.
func (c *Consumer) CountDeadLetters(ctx context.Context, dest string) (int, error) {
	if ctx == nil {
		return 0, errors.New("kafka: count dead letters: nil context")
	}
	ts, err := c.dlqTopic(ctx, dest)
	if err != nil {
		return 0, err
	}
	n := int64(0)
	for _, part := range ts.parts {
		n += max(ts.end[part]-ts.from[part], 0)
	}
	return int(n), nil
}

// dlqState is a dead-letter topic at the start of an operation.
type dlqState struct {
	topic  string
	id     [16]byte
	group  string
	cl     *kgo.Client
	adm    *kadm.Client
	parts  []int32
	leader map[int32]int32
	from   map[int32]int64 // max(watermark, log start)
	wm     map[int32]int64 // committed watermark, -1 for none
	end    map[int32]int64
}

func (c *Consumer) dlqTopic(ctx context.Context, dest string) (*dlqState, error) {
	if dest == "" {
		return nil, errors.New("kafka: dead letters: empty topic name")
	}
	if c.prod == nil || c.prod.cl == nil {
		return nil, fmt.Errorf("kafka: dead letters %q: %w", dest, errNilClient)
	}
	cl := c.prod.cl
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, dest)
	if err != nil {
		return nil, fmt.Errorf("kafka: dead letters %q: metadata: %w", dest, backend.ContextError(err))
	}
	td, ok := md.Topics[dest]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return nil, fmt.Errorf("%w: %q: no dead-letter topic of that name", ErrUnknownTopic, dest)
	}
	if td.Err != nil {
		return nil, fmt.Errorf("kafka: dead letters %q: %w", dest, td.Err)
	}
	ts := &dlqState{topic: dest, id: td.ID, group: c.cfg.dlqGroup, cl: cl, adm: adm,
		leader: map[int32]int32{}, from: map[int32]int64{}, wm: map[int32]int64{}, end: map[int32]int64{}}
	for p, pd := range td.Partitions {
		ts.parts = append(ts.parts, p)
		ts.leader[p] = pd.Leader
	}
	slices.Sort(ts.parts)
	ends, err := adm.ListEndOffsets(ctx, dest)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: dead letters %q: end offsets: %w", dest, backend.ContextError(err))
	}
	starts, err := adm.ListStartOffsets(ctx, dest)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: dead letters %q: start offsets: %w", dest, backend.ContextError(err))
	}
	wms, err := adm.FetchOffsets(ctx, ts.group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, fmt.Errorf("kafka: dead letters %q: watermark of group %q: %w", dest, ts.group, backend.ContextError(err))
	}
	for _, p := range ts.parts {
		e, _ := ends.Lookup(dest, p)
		s, _ := starts.Lookup(dest, p)
		ts.end[p] = e.Offset
		ts.wm[p] = -1
		from := s.Offset
		if o, ok := wms.Lookup(dest, p); ok && o.Err == nil && o.At >= 0 {
			ts.wm[p] = o.At
			from = max(from, o.At)
		}
		ts.from[p] = max(from, 0)
	}
	return ts, nil
}

// partScan is one partition's pass: what f decided and what is applied.
type partScan struct {
	c    *Consumer
	ts   *dlqState
	part int32

	committed int64         // the watermark in the group
	target    int64         // the watermark the decisions allow, -1 for none yet
	kept      []*kgo.Record // kept records after the last removal
	keptBytes int
	frozenAt  int64         // the first kept record that is not held, -1
	reappend  []*kgo.Record // kept records before the last removal, to copy
}

func (c *Consumer) scanPartition(ctx context.Context, ts *dlqState, part int32, from, to int64, f func(*backend.Delivery) (backend.DeadLetterAction, error)) (stop bool, err error) {
	ps := &partScan{c: c, ts: ts, part: part, committed: ts.wm[part], target: -1, frozenAt: -1}
	pos := from
	stale := 0
	for pos < to {
		recs, next, err := ps.fetch(ctx, pos)
		if err != nil {
			return false, errors.Join(err, ps.apply(ctx))
		}
		if next <= pos && len(recs) == 0 {
			if stale++; stale > 5 {
				return false, errors.Join(fmt.Errorf("kafka: dead letters %q partition %d: no progress fetching at offset %d (end %d)", ts.topic, part, pos, to), ps.apply(ctx))
			}
			continue
		}
		stale = 0
		for _, r := range recs {
			if r.Offset < pos || r.Offset >= to {
				continue
			}
			hdrs, ct := deliveryHeaders(r.Headers)
			d := &backend.Delivery{
				Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: hdrs, ContentType: ct,
				Info: backend.DeliveryInfo{DeliveryCount: 1, Partition: r.Partition, Offset: r.Offset, Raw: r},
			}
			action, ferr := f(d)
			if ferr != nil {
				aerr := ps.apply(ctx)
				if errors.Is(ferr, backend.ErrStopScan) {
					return true, aerr
				}
				return false, errors.Join(ferr, aerr)
			}
			if action == backend.ActionRemove {
				ps.remove(r)
			} else {
				ps.keep(r)
			}
		}
		pos = max(pos, next)
		if err := ps.apply(ctx); err != nil {
			return false, err
		}
	}
	return false, nil
}

func (ps *partScan) remove(r *kgo.Record) {
	if ps.frozenAt < 0 {
		ps.reappend = append(ps.reappend, ps.kept...)
		ps.kept, ps.keptBytes = nil, 0
	}
	ps.target = r.Offset + 1
}

func (ps *partScan) keep(r *kgo.Record) {
	if ps.frozenAt >= 0 {
		return
	}
	size := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if ps.keptBytes+size > keptHoldBytes {
		ps.frozenAt = r.Offset
		if len(ps.kept) > 0 {
			ps.frozenAt = ps.kept[0].Offset
		}
		ps.kept, ps.keptBytes = nil, 0
		return
	}
	ps.kept = append(ps.kept, r)
	ps.keptBytes += size
}

// apply copies the kept records the watermark is about to pass and then
// commits the watermark.
func (ps *partScan) apply(ctx context.Context) error {
	target := ps.target
	if ps.frozenAt >= 0 {
		target = min(target, ps.frozenAt)
	}
	if target <= ps.committed {
		return nil
	}
	if len(ps.reappend) > 0 {
		if err := ps.copyKept(ctx); err != nil {
			return err
		}
	}
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: ps.ts.topic, Partition: ps.part, At: target, LeaderEpoch: -1})
	resp, err := ps.ts.adm.CommitOffsets(ctx, ps.ts.group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: dead letters %q partition %d: moving the watermark (group %q) to %d: %w",
			ps.ts.topic, ps.part, ps.ts.group, target, backend.ContextError(err))
	}
	ps.committed = target
	return nil
}

// copyKept appends the kept records before the watermark to the end of
// their partition, and returns once Kafka acknowledged every copy.
func (ps *partScan) copyKept(ctx context.Context) error {
	p := ps.c.prod
	msgs := make([]*backend.Message, len(ps.reappend))
	for i, r := range ps.reappend {
		opts := make([]backend.Option, 0, len(r.Headers)+3)
		opts = append(opts, verbatimOption{}, timestampOption(r.Timestamp))
		if p.manual {
			opts = append(opts, partitionOption(r.Partition))
		}
		for _, h := range r.Headers {
			opts = append(opts, headerOption{key: h.Key, value: h.Value})
		}
		msgs[i] = &backend.Message{Topic: r.Topic, Key: r.Key, Value: r.Value, Options: opts}
	}
	if err := ps.c.Produce(ctx, msgs...); err != nil {
		return fmt.Errorf("kafka: dead letters %q partition %d: keeping %d letters (copying them to the end): %w",
			ps.ts.topic, ps.part, len(msgs), err)
	}
	ps.reappend = nil
	return nil
}

// fetch reads records of the partition from offset pos, from its leader.
// It returns the records and the offset to fetch next.
func (ps *partScan) fetch(ctx context.Context, pos int64) ([]*kgo.Record, int64, error) {
	ts := ps.ts
	var last error
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, pos, fmt.Errorf("kafka: dead letters %q partition %d: %w (last error: %w)", ts.topic, ps.part, backend.ContextError(ctx.Err()), last)
			case <-t.C:
			}
			if err := ps.refreshLeader(ctx); err != nil {
				last = err
				continue
			}
		}
		recs, next, retry, err := ps.fetchOnce(ctx, pos)
		if err == nil {
			return recs, next, nil
		}
		if !retry || ctx.Err() != nil {
			return nil, pos, err
		}
		last = err
	}
	return nil, pos, last
}

func (ps *partScan) fetchOnce(ctx context.Context, pos int64) (recs []*kgo.Record, next int64, retry bool, err error) {
	ts := ps.ts
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 0
	req.MinBytes = 1
	req.MaxBytes = 32 << 20
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = ts.topic, ts.id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = ps.part, pos, 8<<20
	rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	wrap := func(e error) error {
		return fmt.Errorf("kafka: dead letters %q partition %d: fetch at offset %d: %w", ts.topic, ps.part, pos, e)
	}
	kresp, err := ts.cl.Broker(int(ts.leader[ps.part])).Request(ctx, req)
	if err != nil {
		return nil, pos, ctx.Err() == nil, wrap(backend.ContextError(err))
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, pos, kerr.IsRetriable(err), wrap(err)
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.Topic != ts.topic && t.TopicID != ts.id {
			continue
		}
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if p.Partition != ps.part {
				continue
			}
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				if errors.Is(err, kerr.OffsetOutOfRange) && p.LogStartOffset > pos {
					// Retention removed records: go on at the log start.
					return nil, p.LogStartOffset, false, nil
				}
				return nil, pos, kerr.IsRetriable(err), wrap(err)
			}
			fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: pos, Topic: ts.topic, Partition: ps.part},
				p, kgo.DefaultDecompressor(), nil)
			if fp.Err != nil {
				return nil, pos, false, wrap(fp.Err)
			}
			return fp.Records, next, false, nil
		}
	}
	return nil, pos, true, wrap(errors.New("the response has no such partition"))
}

func (ps *partScan) refreshLeader(ctx context.Context) error {
	md, err := ps.ts.adm.Metadata(ctx, ps.ts.topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[ps.ts.topic]
	if !ok || td.Err != nil {
		return fmt.Errorf("kafka: dead letters %q: metadata: %v", ps.ts.topic, td.Err)
	}
	if pd, ok := td.Partitions[ps.part]; ok && pd.Leader >= 0 {
		ps.ts.leader[ps.part] = pd.Leader
	}
	return nil
}
