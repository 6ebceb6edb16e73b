package sched

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeyedOrderAndParallelism(t *testing.T) {
	type task struct {
		key string
		seq int
	}
	var mu sync.Mutex
	last := map[string]int{}
	var running, peak atomic.Int32
	var bad atomic.Int32
	var wg sync.WaitGroup
	s := New(8, 8, 4, func(tk task) {
		defer wg.Done()
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		mu.Lock()
		if p, ok := last[tk.key]; ok && p+1 != tk.seq {
			bad.Add(1)
		}
		last[tk.key] = tk.seq
		mu.Unlock()
		time.Sleep(100 * time.Microsecond)
	})
	ctx := context.Background()
	keys := []string{"a", "b", "c", "d", "e", "f"}
	// One submitter per key, as the contract requires.
	var sub sync.WaitGroup
	for _, k := range keys {
		sub.Add(1)
		go func() {
			defer sub.Done()
			for i := range 200 {
				wg.Add(1)
				if err := s.Submit(ctx, k, task{k, i}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	sub.Wait()
	wg.Wait()
	s.Close()
	s.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d order violations", bad.Load())
	}
	if peak.Load() < 2 || peak.Load() > 8 {
		t.Fatalf("peak concurrency %d", peak.Load())
	}
}

func TestBackpressureAndClose(t *testing.T) {
	release := make(chan struct{})
	var ran atomic.Int32
	s := New(1, 1, 1, func(int) { <-release; ran.Add(1) })
	ctx := context.Background()
	// 1 running + 1 in the ready buffer; then the key queue holds 1.
	for i := range 2 {
		if err := s.Submit(ctx, "", i); err != nil {
			t.Fatal(err)
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := s.Submit(tctx, "", 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("saturated pool accepted work: %v", err)
	}
	// A busy key's queue is bounded too.
	s2 := New(2, 2, 1, func(int) { <-release })
	s2.Submit(ctx, "k", 1)
	s2.Submit(ctx, "k", 2)
	tctx2, cancel2 := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel2()
	if err := s2.Submit(tctx2, "k", 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full key queue accepted work: %v", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- s.Submit(ctx, "", 4) }()
	s.Close()
	if err := <-blocked; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked submit after Close: %v", err)
	}
	close(release)
	s.Wait()
	s2.Close()
	s2.Wait()
	if ran.Load() != 2 {
		t.Fatalf("accepted tasks ran %d times, want 2", ran.Load())
	}
}
