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

// seqChecker records handled events and checks per-key order.
type seqChecker struct {
	mu      sync.Mutex
	last    map[string]int
	seen    map[string]int // key/seq -> times handled
	handled atomic.Int64
	errs    []string
}

func newSeqChecker() *seqChecker {
	return &seqChecker{last: map[string]int{}, seen: map[string]int{}}
}

// observe records ev; with strict, a seq not above the key's last one is an
// order violation.
func (c *seqChecker) observe(ev Ev, strict bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handled.Add(1)
	k := fmt.Sprintf("%s/%d", ev.Key, ev.Seq)
	c.seen[k]++
	if last, ok := c.last[ev.Key]; ok && ev.Seq <= last && strict && len(c.errs) < 10 {
		c.errs = append(c.errs, fmt.Sprintf("key %s: seq %d after %d", ev.Key, ev.Seq, last))
	}
	if ev.Seq > c.last[ev.Key] || c.last[ev.Key] == 0 {
		c.last[ev.Key] = ev.Seq
	}
}

func (c *seqChecker) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *seqChecker) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.seen {
		n += v - 1
	}
	return n
}

func (c *seqChecker) orderErrors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// events returns n events over keys, with per-key increasing Seq from 1.
func events(topic string, n, keys int) []Ev {
	evs := make([]Ev, n)
	next := make([]int, keys)
	for i := range evs {
		k := i % keys
		next[k]++
		evs[i] = Ev{T: topic, Key: fmt.Sprintf("k%03d", k), Seq: next[k], Pad: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	}
	return evs
}

// TestConsumeOrder50k emits 50,000 events over 6 partitions and 60 keys and
// checks that one listener handles each exactly once, every key in order,
// and that the committed offsets reach the end offsets.
func TestConsumeOrder50k(t *testing.T) {
	n, parts := soak(50_000), int32(6)
	c := newCluster(t)
	topic, group := "orders", "order-svc"
	createTopics(t, c, parts, topic, group+".dlq")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	emitAll(t, em, events(topic, n, 60))

	chk := newSeqChecker()
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(16), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { chk.observe(ev.Body, true) })
	r := start(t, l)
	eventually(t, 120*time.Second, "all events handled", func() bool { return chk.distinct() == n })
	adm := adminClient(t, c)
	end := endOffsets(t, adm, topic)
	eventually(t, 10*time.Second, "committed offsets at the end", func() bool {
		got := committed(t, adm, group, topic)
		for part, e := range end {
			if got[part] != e {
				return false
			}
		}
		return true
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if errs := chk.orderErrors(); len(errs) > 0 {
		t.Fatalf("order violations: %v", errs)
	}
	if d := chk.duplicates(); d != 0 {
		t.Fatalf("%d duplicates without any rebalance", d)
	}
	var total int64
	for _, e := range end {
		total += e
	}
	if total != int64(n) {
		t.Fatalf("end offsets sum to %d, want %d", total, n)
	}
	if len(end) != int(parts) {
		t.Fatalf("%d partitions, want %d", len(end), parts)
	}
	if s := l.Stats(); s.Handled != int64(n) || s.AckErrors != 0 {
		t.Fatalf("listener stats: %+v", s)
	}
}

var _ = context.Background
var _ = kafka.Earliest
