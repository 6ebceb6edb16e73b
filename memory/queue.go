package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/dispytch/dispytch-go"
)

// entry is a message in one group's queue.
type entry struct {
	s          *stored
	key        string
	deliveries int
	gen        uint64 // bumped on every delivery; stale acks are ignored
	owner      *session
}

// queue holds a group's messages. A message with a key is "ready" only
// while no earlier message with its key is unsettled; the later ones wait in
// the key's own FIFO.
type queue struct {
	mu          sync.Mutex
	cap         int
	count       int // held entries plus reservations
	ready       ring[*entry]
	keys        map[string]*ring[*entry] // present while the key has an active entry
	unacked     int
	redelivered int64
	spaceCh     chan struct{} // closed when space frees up; nil without waiters
	readyCh     chan struct{} // closed when an entry becomes ready; nil without waiters
	plain       bool          // a backlog: no per-key holding
}

// newBacklog returns a topic backlog: a plain FIFO, since no consumer
// settles anything there (keys are held back only in group queues).
func newBacklog(capacity int) *queue {
	q := &queue{plain: true}
	q.init(capacity)
	return q
}

func (q *queue) init(capacity int) {
	q.cap = capacity
	q.keys = map[string]*ring[*entry]{}
}

func (q *queue) reserve() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.count >= q.cap {
		return false
	}
	q.count++
	return true
}

func (q *queue) unreserve() {
	q.mu.Lock()
	q.count--
	q.signalSpace()
	q.mu.Unlock()
}

func (q *queue) pushReserved(e *entry) {
	q.mu.Lock()
	q.enqueue(e)
	q.mu.Unlock()
}

func (q *queue) tryPush(e *entry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.count >= q.cap {
		return false
	}
	q.count++
	q.enqueue(e)
	return true
}

// enqueue adds a new entry; q.mu held, count already includes it.
func (q *queue) enqueue(e *entry) {
	if e.key != "" && !q.plain {
		if w, active := q.keys[e.key]; active {
			w.push(e)
			return
		}
		q.keys[e.key] = &ring[*entry]{}
	}
	q.ready.push(e)
	q.signalReady()
}

func (q *queue) signalReady() {
	if q.readyCh != nil {
		close(q.readyCh)
		q.readyCh = nil
	}
}

func (q *queue) signalSpace() {
	if q.spaceCh != nil {
		close(q.spaceCh)
		q.spaceCh = nil
	}
}

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// spaceChan returns a channel closed once the queue has room.
func (q *queue) spaceChan() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.count < q.cap {
		return closedCh
	}
	if q.spaceCh == nil {
		q.spaceCh = make(chan struct{})
	}
	return q.spaceCh
}

// claim moves the entries of a topic backlog into q.
func (q *queue) claim(bl *queue) {
	bl.mu.Lock()
	var es []*entry
	for bl.ready.len() > 0 {
		es = append(es, bl.ready.pop())
	}
	bl.count = 0
	bl.signalSpace()
	bl.mu.Unlock()
	q.mu.Lock()
	for _, e := range es {
		q.count++
		q.enqueue(e)
	}
	q.mu.Unlock()
}

// takeAll removes every entry of a backlog, in order.
func (q *queue) takeAll() []*entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	es := make([]*entry, 0, q.ready.len())
	for q.ready.len() > 0 {
		es = append(es, q.ready.pop())
	}
	q.count -= len(es)
	q.signalSpace()
	return es
}

// putBack returns entries taken by takeAll to the front of a backlog, in
// their order, before anything that arrived meanwhile.
func (q *queue) putBack(es []*entry) {
	if len(es) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := len(es) - 1; i >= 0; i-- {
		q.ready.pushFront(es[i])
	}
	q.count += len(es)
	q.signalReady()
}

// next waits for ready entries and hands up to len(buf) of them to sess,
// in order, in buf.
func (q *queue) next(ctx context.Context, sess *session, closed <-chan struct{}, buf []*entry) ([]*entry, error) {
	for {
		q.mu.Lock()
		if q.ready.len() > 0 {
			n := min(len(buf), q.ready.len())
			for i := range n {
				e := q.ready.pop()
				e.deliveries++
				e.gen++
				e.owner = sess
				sess.inflight[e] = struct{}{}
				buf[i] = e
			}
			q.unacked += n
			q.mu.Unlock()
			return buf[:n], nil
		}
		if q.readyCh == nil {
			q.readyCh = make(chan struct{})
		}
		ch := q.readyCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-closed:
			return nil, fmt.Errorf("memory: consume: %w", dispytch.ErrClosed)
		}
	}
}

// settle acks (requeue false) or requeues an entry delivered as gen.
func (q *queue) settle(e *entry, gen uint64, sess *session, requeue bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e.gen != gen || e.owner != sess || sess.closed {
		return fmt.Errorf("memory: delivery already settled or its consumer stopped: %w", dispytch.ErrClosed)
	}
	delete(sess.inflight, e)
	e.owner = nil
	q.unacked--
	if requeue {
		q.redelivered++
		q.ready.push(e)
		q.signalReady()
		return nil
	}
	q.count--
	q.signalSpace()
	if e.key != "" {
		w := q.keys[e.key]
		if w.len() > 0 {
			q.ready.push(w.pop())
			q.signalReady()
		} else {
			delete(q.keys, e.key)
		}
	}
	return nil
}

// unpop returns entries that were never handed over to the front, in
// their order.
func (q *queue) unpop(es []*entry, sess *session) {
	q.mu.Lock()
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		delete(sess.inflight, e)
		e.owner = nil
		e.deliveries--
		q.unacked--
		q.ready.pushFront(e)
	}
	q.signalReady()
	q.mu.Unlock()
}

// release requeues everything sess left unsettled.
func (q *queue) release(sess *session) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	sess.closed = true
	n := 0
	for e := range sess.inflight {
		e.owner = nil
		q.unacked--
		q.redelivered++
		q.ready.pushFront(e)
		n++
	}
	clear(sess.inflight)
	if n > 0 {
		q.signalReady()
	}
	return n
}

func (q *queue) stats() GroupStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	waiting := 0
	for _, w := range q.keys {
		waiting += w.len()
	}
	return GroupStats{Ready: q.ready.len() + waiting, Unacked: q.unacked, Redelivered: q.redelivered}
}

// ring is a growable FIFO.
type ring[T any] struct {
	buf        []T
	head, size int
}

func (r *ring[T]) len() int { return r.size }

func (r *ring[T]) grow() {
	n := max(8, 2*len(r.buf))
	buf := make([]T, n)
	for i := 0; i < r.size; i++ {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

func (r *ring[T]) push(v T) {
	if r.size == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

func (r *ring[T]) pushFront(v T) {
	if r.size == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = v
	r.size++
}

func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 {
		r.head = 0
		if len(r.buf) > 1024 {
			r.buf = nil // let a drained large buffer go
		}
	}
	return v
}
