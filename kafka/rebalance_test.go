package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
)

// handling is one handler call seen by the rebalance test.
type handling struct {
	member    int
	partition int32
	offset    int64
	at        time.Time
}

// TestRebalanceJoinLeave streams events while a second and a third
// listener join the group and the second one leaves again. Every event is
// handled at least once; an event handled twice was handled either by two
// members or by one member across a membership change; each member sees
// every partition's offsets in order between changes; and the committed
// offsets end at the end offsets.
func TestRebalanceJoinLeave(t *testing.T) {
	n, parts := soak(30_000), int32(6)
	c := newCluster(t)
	topic, group := "stream", "stream-svc"
	createTopics(t, c, parts, topic, group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))

	var mu sync.Mutex
	seen := map[string][]handling{} // key/seq -> handlings
	var handled atomic.Int64
	var changes []time.Time         // membership changes
	rewinds := map[[2]int64]int{}   // member, partition -> times its offsets went back
	last := map[[2]int64]handling{} // member, partition -> last handling

	newMember := func(id int) *running {
		k := newConsumer(t, c)
		l := dispytch.NewListener(k, dispytch.Group(group), dispytch.Concurrency(8),
			dispytch.WithLogger(testLogger()), dispytch.ShutdownTimeout(10*time.Second))
		l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) {
			h := handling{member: id, partition: ev.Delivery.Partition, offset: ev.Delivery.Offset, at: time.Now()}
			mu.Lock()
			key := fmt.Sprintf("%s/%d", ev.Body.Key, ev.Body.Seq)
			seen[key] = append(seen[key], h)
			lk := [2]int64{int64(id), int64(h.partition)}
			if prev, ok := last[lk]; ok && h.offset <= prev.offset {
				// The member's partition went back: only a new
				// assignment of it can do that.
				rewinds[lk]++
			}
			last[lk] = h
			mu.Unlock()
			handled.Add(1)
		})
		r := start(t, l)
		return r
	}
	change := func() {
		mu.Lock()
		changes = append(changes, time.Now())
		mu.Unlock()
	}

	// Produce in the background, in small batches, so that the stream
	// spans the membership changes.
	evs := events(topic, n, 48)
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		ctx := context.Background()
		for i := 0; i < n; i += 250 {
			b := make([]dispytch.Eventer, 0, 250)
			for _, ev := range evs[i:min(i+250, n)] {
				b = append(b, ev)
			}
			if err := em.EmitBatch(ctx, b); err != nil {
				t.Errorf("emit: %v", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	m1 := newMember(1)
	eventually(t, 60*time.Second, "5k handled", func() bool { return handled.Load() >= 5000 })
	change()
	m2 := newMember(2)
	eventually(t, 60*time.Second, "12k handled", func() bool { return handled.Load() >= 12000 })
	change()
	m3 := newMember(3)
	eventually(t, 60*time.Second, "20k handled", func() bool { return handled.Load() >= 20000 })
	change()
	if err := m2.stop(); err != nil {
		t.Fatalf("member 2 stop: %v", err)
	}
	change()
	<-prodDone
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	eventually(t, 120*time.Second, "every event handled", func() bool { return distinct() == n })
	adm := adminClient(t, c)
	end := endOffsets(t, adm, topic)
	eventually(t, 20*time.Second, "committed offsets at the end", func() bool {
		got := committed(t, adm, group, topic)
		for p, e := range end {
			if got[p] != e {
				return false
			}
		}
		return true
	})
	for _, r := range []*running{m1, m3} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	dups, members := 0, map[int]int{}
	for key, hs := range seen {
		for _, h := range hs {
			members[h.member]++
		}
		for i := 1; i < len(hs); i++ {
			dups++
			a, b := hs[i-1], hs[i]
			if a.member == b.member && !changedBetween(changes, a.at, b.at) && rewinds[[2]int64{int64(a.member), int64(a.partition)}] == 0 {
				t.Errorf("%s handled twice by member %d, and its partition was never handed to it again (offsets %d, %d)",
					key, a.member, a.offset, b.offset)
			}
		}
	}
	// Within one assignment a partition's records arrive once, in order; a
	// partition can go back only when it is assigned again, which each of
	// the 4 membership changes does at most twice (cooperative rebalancing
	// takes two rounds).
	for lk, n := range rewinds {
		if n > 2*len(changes) {
			t.Errorf("member %d saw partition %d go back %d times in %d membership changes", lk[0], lk[1], n, len(changes))
		}
	}
	for _, m := range []int{1, 2, 3} {
		if members[m] == 0 {
			t.Errorf("member %d handled nothing: the group did not rebalance to it", m)
		}
	}
	t.Logf("handled %d, duplicates %d, per member %v, rewinds %v", handled.Load(), dups, members, rewinds)
}

// changedBetween reports whether a membership change happened between a
// and b.
func changedBetween(changes []time.Time, a, b time.Time) bool {
	for _, c := range changes {
		if c.After(a) && c.Before(b) {
			return true
		}
	}
	return false
}
