package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestCommitNeverPassesSlowRecord runs one partition with per-key
// parallelism, so that records after a slow one finish first. The committed
// offset read back from the cluster must stay at the slow record while it
// runs, and reach the end once it is done.
func TestCommitNeverPassesSlowRecord(t *testing.T) {
	c := newCluster(t)
	topic, group := "slow", "slow-svc"
	createTopics(t, c, 1, topic, group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	const n, slowSeq = 200, 50
	evs := make([]Ev, n)
	for i := range evs {
		evs[i] = Ev{T: topic, Key: fmt.Sprintf("key-%d", i), Seq: i} // distinct keys: all parallel
	}
	emitAll(t, em, evs)

	release := make(chan struct{})
	var slowOffset atomic.Int64
	slowOffset.Store(-1)
	var handled atomic.Int64
	k := newConsumer(t, c, kafka.OrderPerKey())
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(8), dispytch.WithLogger(testLogger()),
		dispytch.ShutdownTimeout(2*time.Second))
	l.Handle(topic, "ev", func(ctx context.Context, ev dispytch.Event[Ev]) error {
		if ev.Body.Seq == slowSeq {
			slowOffset.Store(ev.Delivery.Offset)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		handled.Add(1)
		return nil
	})
	start(t, l)
	adm := adminClient(t, c)
	eventually(t, 30*time.Second, "every other record handled", func() bool { return handled.Load() == n-1 })
	// Everything before the slow record is done: the commit reaches it.
	eventually(t, 10*time.Second, "commit up to the slow record", func() bool {
		return committed(t, adm, group, topic)[0] == slowOffset.Load()
	})
	// Watch the committed offset over 5 commit intervals (1s) with the slow
	// record still running: it must never pass it.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if got := committed(t, adm, group, topic)[0]; got != slowOffset.Load() {
			t.Fatalf("committed offset %d while the slow record at offset %d runs", got, slowOffset.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(release)
	eventually(t, 10*time.Second, "commit at the end", func() bool { return committed(t, adm, group, topic)[0] == n })
}

// TestRetriesHoldOnlyTheirPartition makes the first record of partition 0
// fail and retry until released. The other partitions are fully handled and
// committed meanwhile; partition 0 stays committed at 0.
func TestRetriesHoldOnlyTheirPartition(t *testing.T) {
	c := newCluster(t)
	topic, group := "retry", "retry-svc"
	createTopics(t, c, 3, topic, group+".dlq")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	ctx := context.Background()
	const per = 100
	for part := range int32(3) {
		for i := range per {
			if err := em.Emit(ctx, Ev{T: topic, Key: "x", Seq: i}, kafka.Partition(part)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var release atomic.Bool
	var handled [3]atomic.Int64
	var attempts atomic.Int64
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(4), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) error {
		if ev.Delivery.Partition == 0 && ev.Body.Seq == 0 && !release.Load() {
			attempts.Add(1)
			return errors.New("not yet")
		}
		handled[ev.Delivery.Partition].Add(1)
		return nil
	}, dispytch.Retries(1_000_000), dispytch.RetryInterval(10*time.Millisecond))
	start(t, l)
	adm := adminClient(t, c)
	eventually(t, 30*time.Second, "partitions 1 and 2 handled and committed", func() bool {
		got := committed(t, adm, group, topic)
		return handled[1].Load() == per && handled[2].Load() == per && got[1] == per && got[2] == per
	})
	if attempts.Load() < 2 {
		t.Fatalf("the held record was attempted %d times", attempts.Load())
	}
	if h := handled[0].Load(); h != 0 {
		t.Fatalf("partition 0 handled %d records behind its retrying first record", h)
	}
	if got := committed(t, adm, group, topic)[0]; got != 0 {
		t.Fatalf("partition 0 committed %d while its first record retries", got)
	}
	release.Store(true)
	eventually(t, 30*time.Second, "partition 0 done", func() bool {
		return handled[0].Load() == per && committed(t, adm, group, topic)[0] == per
	})
}

// TestBackpressurePausesPartition consumes a large backlog with a slow
// handler: the partition is paused when its queue is full, so the records
// waiting in it stay bounded, and everything is handled in the end.
func TestBackpressurePausesPartition(t *testing.T) {
	c := newCluster(t)
	topic, group := "backlog", "backlog-svc"
	createTopics(t, c, 2, topic, group+".dlq")
	// Small producer batches, so that one partition fetch is small too.
	em := dispytch.NewEmitter(newProducer(t, c, kafka.ClientOptions(kgo.ProducerBatchMaxBytes(16<<10))))
	const n, queue = 20_000, 256
	emitAll(t, em, events(topic, n, 20))
	var handled atomic.Int64
	k := newConsumer(t, c, kafka.PartitionQueue(queue, 0),
		kafka.ClientOptions(kgo.FetchMaxPartitionBytes(32<<10), kgo.FetchMaxBytes(64<<10)))
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(2), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) {
		if handled.Add(1) < 2000 {
			time.Sleep(200 * time.Microsecond)
		}
	})
	start(t, l)
	eventually(t, 120*time.Second, "backlog handled", func() bool { return handled.Load() == n })
	s := k.Stats()
	if s.Pauses == 0 {
		t.Fatalf("no partition was ever paused: %+v", s)
	}
	// A 32 KiB partition fetch holds ~180 of these records; the queue may
	// overshoot by the fetch that fills it and one already buffered.
	if limit := int64(queue + 3*200); s.MaxQueued > limit {
		t.Fatalf("up to %d records waited in one partition queue, want at most %d", s.MaxQueued, limit)
	}
	t.Logf("stats: %+v", s)
}
