package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
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
		l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(8),
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

// TestRevokedPartitionQueueNotStarted: member A holds the first record of
// each of two partitions in a blocked handler, with the partitions' other
// records queued in its listener. Member B joins and takes one partition
// after A's revoke timeout. The records A had queued for the revoked
// partition are stale: once A's handlers are released, A does not start
// them (the listener abandons them), and B handles them instead. Before,
// A ran them too, and their acks failed.
func TestRevokedPartitionQueueNotStarted(t *testing.T) {
	c := newCluster(t)
	topic, group := "stale", "stale-svc"
	createTopics(t, c, 2, topic, group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	const perPart = 10
	for part := range int32(2) {
		for i := range perPart {
			if err := em.Emit(context.Background(), Ev{T: topic, Key: "k", Seq: int(part)*100 + i}, kafka.Partition(part)); err != nil {
				t.Fatal(err)
			}
		}
	}
	release := make(chan struct{})
	var blocked atomic.Int64
	var mu sync.Mutex
	handledBy := map[string]map[int64]int{} // member -> partition*1000+offset -> times
	newMember := func(name string, block bool) *dispytch.Listener {
		k := newConsumer(t, c, kafka.RevokeTimeout(300*time.Millisecond))
		l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(2), dispytch.WithLogger(testLogger()),
			dispytch.ShutdownTimeout(2*time.Second))
		l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) {
			mu.Lock()
			if handledBy[name] == nil {
				handledBy[name] = map[int64]int{}
			}
			handledBy[name][int64(ev.Delivery.Partition)*1000+ev.Delivery.Offset]++
			mu.Unlock()
			if block && ev.Delivery.Offset == 0 {
				blocked.Add(1)
				<-release
			}
		})
		return l
	}
	a := newMember("a", true)
	start(t, a)
	eventually(t, 20*time.Second, "both first records blocked in A", func() bool { return blocked.Load() == 2 })
	start(t, newMember("b", false))
	// B handling a record of its partition means A's revoke ended.
	var moved int64 = -1
	eventually(t, 30*time.Second, "B handles the partition taken from A", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range handledBy["b"] {
			moved = k / 1000
			return true
		}
		return false
	})
	close(release)
	// A abandons the records it had queued for the moved partition (all
	// but the blocked first one), instead of handling them.
	eventually(t, 20*time.Second, "A abandons the revoked partition's queue", func() bool {
		return a.Stats().Abandoned >= perPart-1
	})
	eventually(t, 20*time.Second, "B handles the moved partition", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for k := range handledBy["b"] {
			if k/1000 == moved {
				n++
			}
		}
		return n == perPart
	})
	mu.Lock()
	defer mu.Unlock()
	for k := range handledBy["a"] {
		if k/1000 == moved && k%1000 != 0 {
			t.Fatalf("A started record %d of partition %d after the partition was revoked", k%1000, moved)
		}
	}
}
