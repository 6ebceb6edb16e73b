package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

var errAlreadySettled = errors.New("kafka: delivery already settled")

// partition is one assigned partition: a queue of fetched records, the
// goroutine that hands them to the listener in order, and the commit
// tracking of what the listener settled.
type partition struct {
	s        *session
	topic    string
	part     int32
	okey     string // ordering key: "topic/partition"
	skip     bool   // the topic matched the regex but no pattern: skip its records
	ctx      context.Context
	cancel   context.CancelFunc
	exited   chan struct{}
	wake     chan struct{}
	maxRecs  int
	maxBytes int

	mu         sync.Mutex
	queue      []*kgo.Record
	qhead      int
	qbytes     int         // key and value bytes in the queue
	redo       []*delivery // nacked, in due order
	paused     bool
	closed     bool
	tr         tracker
	nextOffset int64 // offset after the highest record taken from the queue
	pending    int   // handed to the listener and not settled
	committed  int64 // last committed offset, -1 for none
	settled    chan struct{}
}

func newPartition(s *session, topic string, part int32) *partition {
	p := &partition{
		s:         s,
		topic:     topic,
		part:      part,
		okey:      topic + "/" + strconv.FormatInt(int64(part), 10),
		skip:      !s.sub.Matches(topic),
		exited:    make(chan struct{}),
		wake:      make(chan struct{}, 1),
		maxRecs:   s.c.cfg.queueRecords,
		maxBytes:  s.c.cfg.queueBytes,
		tr:        newTracker(),
		committed: -1,
	}
	p.ctx, p.cancel = context.WithCancel(s.ctx)
	return p
}

func (p *partition) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// push queues fetched records, and pauses fetching the partition when its
// queue is full. Called by the poll loop.
func (p *partition) push(recs []*kgo.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.queue = append(p.queue, recs...)
	for _, r := range recs {
		p.qbytes += len(r.Key) + len(r.Value)
	}
	n := int64(len(p.queue) - p.qhead)
	for max := &p.s.c.stats.maxQueued; ; {
		cur := max.Load()
		if n <= cur || max.CompareAndSwap(cur, n) {
			break
		}
	}
	if !p.paused && (int(n) >= p.maxRecs || p.qbytes >= p.maxBytes) {
		p.paused = true
		p.s.cl.PauseFetchPartitions(map[string][]int32{p.topic: {p.part}})
		p.s.c.stats.pauses.Add(1)
	}
	p.signal()
}

// run hands the partition's records to the listener, one after another.
func (p *partition) run() {
	defer close(p.exited)
	for {
		d := p.next()
		if d == nil {
			return
		}
		if err := p.s.inbox.Deliver(p.ctx, &d.d); err != nil {
			p.undeliver(d)
			return
		}
	}
}

// next waits for the next record (or a due redelivery) and returns its
// delivery, registered as pending; nil once the partition stops.
func (p *partition) next() *delivery {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if p.ctx.Err() != nil || p.closed {
			p.mu.Unlock()
			return nil
		}
		now := time.Now()
		if len(p.redo) > 0 && !p.redo[0].due.After(now) {
			old := p.redo[0]
			p.redo[0] = nil
			p.redo = p.redo[1:]
			p.pending++
			p.mu.Unlock()
			return old.redeliver()
		}
		if p.qhead < len(p.queue) {
			r := p.queue[p.qhead]
			p.queue[p.qhead] = nil
			p.qhead++
			p.qbytes -= len(r.Key) + len(r.Value)
			if p.qhead == len(p.queue) {
				p.queue, p.qhead = p.queue[:0], 0
			} else if p.qhead > 4096 && p.qhead > len(p.queue)/2 {
				p.queue = append(p.queue[:0], p.queue[p.qhead:]...)
				p.qhead = 0
			}
			if p.paused && len(p.queue)-p.qhead <= p.maxRecs/4 && p.qbytes <= p.maxBytes/4 {
				p.paused = false
				p.s.cl.ResumeFetchPartitions(map[string][]int32{p.topic: {p.part}})
			}
			if r.Offset < p.nextOffset {
				// franz-go moved the fetch position back within this
				// assignment (it does when it detects a truncated log).
				// Hand the record over again: it may be a new record at
				// an old offset. The mark cannot go back (only offsets
				// above the committed one are committed), so this
				// duplicates work but never skips any.
				p.s.c.stats.refetched.Add(1)
			}
			p.nextOffset = max(p.nextOffset, r.Offset+1)
			seq := p.tr.add(r.Offset, r.LeaderEpoch)
			if p.skip {
				p.tr.done(seq)
				p.mu.Unlock()
				continue
			}
			p.pending++
			p.mu.Unlock()
			return p.newDelivery(r, seq)
		}
		var wait <-chan time.Time
		if len(p.redo) > 0 {
			d := p.redo[0].due.Sub(now)
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			wait = timer.C
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-wait:
		case <-p.ctx.Done():
			return nil
		}
	}
}

func (p *partition) newDelivery(r *kgo.Record, seq uint64) *delivery {
	d := &delivery{p: p, seq: seq, rec: r}
	okey := p.okey
	if p.s.c.cfg.perKey {
		okey = ""
		if len(r.Key) > 0 {
			okey = p.okey + "/" + string(r.Key)
		}
	}
	hdrs, ct := deliveryHeaders(r.Headers)
	d.d = backend.Delivery{
		Topic:       r.Topic,
		Key:         r.Key,
		Value:       r.Value,
		Headers:     hdrs,
		ContentType: ct,
		OrderingKey: okey,
		Info: backend.DeliveryInfo{
			DeliveryCount: 1,
			Partition:     r.Partition,
			Offset:        r.Offset,
			Raw:           r,
		},
		Acker: d,
	}
	return d
}

// undeliver takes back a delivery the listener did not accept.
func (p *partition) undeliver(d *delivery) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending--
	// A first delivery is the newest record: forget it, the next owner
	// fetches it again. A redelivery keeps its place in the tracker,
	// unsettled, so the mark stays before it.
	if d.d.Info.DeliveryCount == 1 {
		p.tr.dropLast(d.seq)
	}
	p.notifySettledLocked()
}

func (p *partition) notifySettledLocked() {
	if p.pending == 0 && p.settled != nil {
		close(p.settled)
		p.settled = nil
	}
}

// settle records an ack (true) or a nack of d.
func (p *partition) settle(d *delivery, ack bool) error {
	if !d.settledFlag.CompareAndSwap(false, true) {
		return errAlreadySettled
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("kafka: %s/%d at offset %d: partition revoked or consumer stopped: %w",
			p.topic, p.part, d.rec.Offset, dispytch.ErrClosed)
	}
	p.pending--
	if ack {
		p.tr.done(d.seq)
	} else {
		d.due = time.Now().Add(p.s.c.cfg.redeliveryDelay)
		p.redo = append(p.redo, d)
		p.s.c.stats.redeliveries.Add(1)
		p.signal()
	}
	p.notifySettledLocked()
	return nil
}

// isStale reports whether the partition stopped: revoked, lost, or the
// session ended.
func (p *partition) isStale() bool { return p.ctx.Err() != nil }

// abandon forgets a delivery the listener will not settle because it is
// stale: it is no longer pending, and the tracker keeps it unsettled, so
// the commit mark stays before it.
func (p *partition) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return // close counted it
	}
	p.pending--
	p.s.c.stats.abandoned.Add(1)
	p.notifySettledLocked()
}

// stop makes the partition's goroutine stop handing over records and waits
// for it to exit. From then on its deliveries are stale.
func (p *partition) stop() {
	p.cancel()
	<-p.exited
}

// waitSettled waits until every delivery handed over was settled, or one of
// the channels fires. It reports whether all settled.
func (p *partition) waitSettled(timeout <-chan time.Time, done <-chan struct{}) bool {
	p.mu.Lock()
	if p.pending == 0 {
		p.mu.Unlock()
		return true
	}
	if p.settled == nil {
		p.settled = make(chan struct{})
	}
	ch := p.settled
	p.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-timeout:
	case <-done:
	}
	return false
}

// mark returns the offset to commit when it moved past the committed one.
func (p *partition) mark() (kgo.EpochOffset, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.markLocked()
}

func (p *partition) markLocked() (kgo.EpochOffset, bool) {
	if p.tr.mark < 0 || p.tr.mark <= p.committed {
		return kgo.EpochOffset{}, false
	}
	return kgo.EpochOffset{Epoch: p.tr.markEpoch, Offset: p.tr.mark}, true
}

// close ends the partition's session: later acks fail with ErrClosed. It
// resumes fetching if it was paused, so that a later assignment of the same
// partition starts unpaused, and returns the offset still to commit.
func (p *partition) close() (kgo.EpochOffset, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return kgo.EpochOffset{}, false
	}
	p.closed = true
	if p.paused {
		p.paused = false
		p.s.cl.ResumeFetchPartitions(map[string][]int32{p.topic: {p.part}})
	}
	abandoned := p.pending
	p.queue, p.qhead, p.qbytes, p.redo = nil, 0, 0, nil
	if abandoned > 0 {
		p.s.c.stats.abandoned.Add(int64(abandoned))
	}
	return p.markLocked()
}

func (p *partition) setCommitted(off int64) {
	p.mu.Lock()
	if off > p.committed {
		p.committed = off
	}
	p.mu.Unlock()
}

// delivery is one record handed to the listener, and its Acknowledger.
type delivery struct {
	d           backend.Delivery
	p           *partition
	seq         uint64
	rec         *kgo.Record
	due         time.Time
	settledFlag atomic.Bool
}

// Ack marks the record done; the partition's offset is committed past it
// once every earlier record is done too.
func (d *delivery) Ack(context.Context) error { return d.p.settle(d, true) }

// Nack hands the record to the partition's goroutine to be delivered again
// after the redelivery delay.
func (d *delivery) Nack(context.Context) error { return d.p.settle(d, false) }

// Stale reports whether the record's partition was revoked or lost, or the
// consumer's session ended (backend.StaleChecker): the record belongs to
// the partition's next owner, or to the next run, so the listener does not
// start it, or retry it. A delivery reported stale is abandoned: it no
// longer holds back the revoke's drain, and its offset is not committed.
func (d *delivery) Stale() bool {
	if !d.p.isStale() {
		return false
	}
	if d.settledFlag.CompareAndSwap(false, true) {
		d.p.abandon()
	}
	return true
}

var _ backend.StaleChecker = (*delivery)(nil)

// redeliver returns a fresh delivery of the same record.
func (d *delivery) redeliver() *delivery {
	nd := &delivery{p: d.p, seq: d.seq, rec: d.rec}
	nd.d = d.d
	nd.d.Acker = nd
	nd.d.Info.Redelivered = true
	nd.d.Info.DeliveryCount = d.d.Info.DeliveryCount + 1
	nd.d.Info.Attempt = 0
	return nd
}
