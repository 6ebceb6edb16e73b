package redis_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
)

// TestTwoListenersOfOneGroupOnOneClient: two listeners of the same group
// sharing a client read under different consumer names, so neither takes
// the other's pending entries for its own; every event is handled once.
func TestTwoListenersOfOneGroupOnOneClient(t *testing.T) {
	requireRedis(t)
	tp := uniq(t)
	group := tp + ".g"
	cleanKeys(t, tp+"*")
	c := newClient(t)
	var mu sync.Mutex
	seen := map[int]int{}
	for range 2 {
		l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
		l.Handle(tp, "test_event", func(ev dispytch.Event[topicEvent]) {
			mu.Lock()
			seen[ev.Body.N]++
			mu.Unlock()
		})
		run(t, l)
	}
	const n = 300
	em := dispytch.NewEmitter(c)
	for i := range n {
		if err := em.Emit(context.Background(), topicEvent{To: tp, N: i}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events handled", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	consumers, err := raw(t).XInfoConsumers(context.Background(), tp, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cs := range consumers {
		names = append(names, cs.Name)
	}
	want := []string{c.ConsumerName(), c.ConsumerName() + "-2"}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("consumers of the group: %v, want %v", names, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, k := range seen {
		if k != 1 {
			t.Errorf("event %d handled %d times", i, k)
		}
	}
}
