// Package sched runs tasks on a fixed pool of workers, one at a time per
// ordering key, in submission order, with bounded queues: Submit blocks when
// the pool is saturated, which is how the listener pushes back on consumers.
package sched

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed is returned by Submit after Close.
var ErrClosed = errors.New("sched: closed")

// Scheduler runs tasks of type T.
type Scheduler[T any] struct {
	run    func(T)
	perKey int
	ready  chan item[T]
	quit   chan struct{} // closed by Close: Submit stops waiting

	mu     sync.Mutex
	keys   map[string]*keyState[T]
	free   []*keyState[T] // idle key states, reused
	closed bool

	wg sync.WaitGroup
}

type item[T any] struct {
	key string
	t   T
}

type keyState[T any] struct {
	pending []T
	head    int
	space   chan struct{} // closed when a pending slot frees up
}

// New starts workers goroutines calling run. Up to queue tasks wait for a
// free worker, and up to perKey tasks wait behind a busy ordering key.
func New[T any](workers, queue, perKey int, run func(T)) *Scheduler[T] {
	s := &Scheduler[T]{
		run:    run,
		perKey: max(perKey, 1),
		ready:  make(chan item[T], max(queue, 0)),
		quit:   make(chan struct{}),
		keys:   map[string]*keyState[T]{},
	}
	s.wg.Add(workers)
	for range workers {
		go s.worker()
	}
	return s
}

// Submit queues t. Tasks with the same non-empty key run one at a time in
// Submit order; callers must not Submit for one key concurrently. Submit
// blocks while the queues are full, until ctx is done or Close is called.
func (s *Scheduler[T]) Submit(ctx context.Context, key string, t T) error {
	if key == "" {
		return s.send(ctx, item[T]{t: t})
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		ks, busy := s.keys[key]
		if !busy {
			s.keys[key] = s.newKeyState()
			s.mu.Unlock()
			if err := s.send(ctx, item[T]{key: key, t: t}); err != nil {
				s.mu.Lock()
				s.release(key)
				s.mu.Unlock()
				return err
			}
			return nil
		}
		if len(ks.pending)-ks.head < s.perKey {
			ks.pending = append(ks.pending, t)
			s.mu.Unlock()
			return nil
		}
		if ks.space == nil {
			ks.space = make(chan struct{})
		}
		space := ks.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.quit:
			return ErrClosed
		}
	}
}

// newKeyState returns a reset key state; s.mu held.
func (s *Scheduler[T]) newKeyState() *keyState[T] {
	if n := len(s.free); n > 0 {
		ks := s.free[n-1]
		s.free = s.free[:n-1]
		return ks
	}
	return &keyState[T]{}
}

// dropKey forgets an idle key; s.mu held.
func (s *Scheduler[T]) dropKey(key string, ks *keyState[T]) {
	delete(s.keys, key)
	if ks.space != nil {
		close(ks.space)
		ks.space = nil
	}
	ks.pending, ks.head = ks.pending[:0], 0
	if len(s.free) < 1024 {
		s.free = append(s.free, ks)
	}
}

// release drops a key state that was reserved but never ran (the reserving
// Submit held the key, so nothing can be pending behind it).
func (s *Scheduler[T]) release(key string) {
	ks := s.keys[key]
	if ks != nil && len(ks.pending)-ks.head == 0 {
		s.dropKey(key, ks)
	}
}

func (s *Scheduler[T]) send(ctx context.Context, it item[T]) error {
	select {
	case <-s.quit:
		return ErrClosed
	default:
	}
	// Fast path: a free slot, no need to watch ctx and quit.
	select {
	case s.ready <- it:
		return nil
	default:
	}
	select {
	case s.ready <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return ErrClosed
	}
}

func (s *Scheduler[T]) worker() {
	defer s.wg.Done()
	for {
		// Fast path: a queued task, without the two-way select.
		select {
		case it := <-s.ready:
			s.runKeyed(it)
			continue
		default:
		}
		select {
		case it := <-s.ready:
			s.runKeyed(it)
		case <-s.quit:
			// Drain what is already queued, then stop.
			for {
				select {
				case it := <-s.ready:
					s.runKeyed(it)
				default:
					return
				}
			}
		}
	}
}

// runKeyed runs a task and then every task that queued behind its key.
func (s *Scheduler[T]) runKeyed(it item[T]) {
	s.run(it.t)
	if it.key == "" {
		return
	}
	for {
		s.mu.Lock()
		ks := s.keys[it.key]
		if ks.head == len(ks.pending) {
			s.dropKey(it.key, ks)
			s.mu.Unlock()
			return
		}
		next := ks.pending[ks.head]
		var zero T
		ks.pending[ks.head] = zero
		ks.head++
		if ks.head == len(ks.pending) {
			ks.pending, ks.head = ks.pending[:0], 0
		}
		// Wake a blocked submitter once half the queue is free, not on
		// every task: one wake-up per perKey/2 tasks instead of one each.
		if ks.space != nil && len(ks.pending)-ks.head <= s.perKey/2 {
			close(ks.space)
			ks.space = nil
		}
		s.mu.Unlock()
		s.run(next)
	}
}

// Close stops accepting tasks. Workers finish every task already accepted
// (queued or waiting behind a key) and exit; Wait waits for them.
func (s *Scheduler[T]) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
	}
	s.mu.Unlock()
}

// Wait blocks until the workers exited after Close.
func (s *Scheduler[T]) Wait() { s.wg.Wait() }
