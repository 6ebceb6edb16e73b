package kafka_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// chaos drops (closes the connection on) and delays a share of the
// requests of some kinds while it is on.
type chaos struct {
	c       *kfake.Cluster
	on      atomic.Bool
	dropped sync.Map // request key -> *atomic.Int64
	delayed sync.Map
}

func (ch *chaos) count(m *sync.Map, key int16) {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (ch *chaos) total(m *sync.Map, key int16) int64 {
	v, ok := m.Load(key)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// install adds a control for key: while on, every dropEvery-th request is
// dropped and every delayEvery-th other one delayed by 20ms.
func (ch *chaos) install(key kmsg.Key, dropEvery, delayEvery int64) {
	{
		var n atomic.Int64
		ch.c.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			ch.c.KeepControl()
			if !ch.on.Load() {
				return nil, nil, false
			}
			i := n.Add(1)
			switch {
			case i%dropEvery == 0:
				ch.count(&ch.dropped, req.Key())
				return nil, errors.New("chaos: dropped"), true
			case i%delayEvery == 0:
				ch.count(&ch.delayed, req.Key())
				ch.c.SleepControl(func() { time.Sleep(20 * time.Millisecond) })
			}
			return nil, nil, false
		})
	}
}

// TestFaultsNoLoss streams events through producer and consumer while
// Produce, Fetch and OffsetCommit requests are dropped and delayed, error
// responses are injected, and partition leaders move between brokers.
// Every emit succeeds (franz-go retries), every event is handled, and the
// committed offsets end at the end offsets.
func TestFaultsNoLoss(t *testing.T) {
	n, parts := soak(6000), int32(6)
	c := newCluster(t)
	topic, group := "faulty", "faulty-svc"
	createTopics(t, c, parts, topic, group+".dlq")
	ch := &chaos{c: c}
	ch.install(kmsg.Produce, 10, 4)
	ch.install(kmsg.Fetch, 10, 4)
	ch.install(kmsg.OffsetCommit, 2, 3)

	chk := newSeqChecker()
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.Concurrency(16), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { chk.observe(ev.Body, false) })
	start(t, l)

	ch.on.Store(true)
	// Error responses the clients must retry.
	errFaults := c.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 20},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 20},
		kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group, Err: kerr.CoordinatorLoadInProgress, Count: 5, TopLevel: false},
	)
	// Move leaders around while traffic flows. (kfake does not keep epoch
	// boundaries on a move, so franz-go takes each move for a truncated
	// log and re-reads the partition: duplicates, never losses.)
	moverDone := make(chan struct{})
	stopMover := make(chan struct{})
	var moves atomic.Int64
	go func() {
		defer close(moverDone)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 2*int(parts); i++ {
			select {
			case <-stopMover:
				return
			case <-tick.C:
			}
			part := int32(i) % parts
			leader := c.LeaderFor(topic, part)
			if err := c.MoveTopicPartition(topic, part, (leader+1)%3); err == nil {
				moves.Add(1)
			}
		}
	}()

	em := dispytch.NewEmitter(newProducer(t, c, kafka.ClientOptions(retryOpts()...)))
	evs := events(topic, n, 30)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := 0; i < n; i += 200 {
		b := make([]dispytch.Eventer, 0, 200)
		for _, ev := range evs[i:min(i+200, n)] {
			b = append(b, ev)
		}
		if err := em.EmitBatch(ctx, b); err != nil {
			t.Fatalf("emit under faults: %v", err)
		}
	}
	eventually(t, 120*time.Second, "events handled under faults", func() bool {
		return chk.distinct() >= n/2 && ch.total(&ch.dropped, kmsg.OffsetCommit.Int16()) >= 2
	})
	close(stopMover)
	<-moverDone
	ch.on.Store(false)
	errFaults.Remove()

	eventually(t, 120*time.Second, "every event handled", func() bool { return chk.distinct() == n })
	adm := adminClient(t, c)
	end := endOffsets(t, adm, topic)
	var total int64
	for _, e := range end {
		total += e
	}
	if total != int64(n) {
		t.Fatalf("%d records in the topic, want %d: the idempotent producer wrote duplicates or lost some", total, n)
	}
	eventually(t, 30*time.Second, "committed offsets at the end", func() bool {
		got := committed(t, adm, group, topic)
		for p, e := range end {
			if got[p] != e {
				return false
			}
		}
		return true
	})
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.OffsetCommit} {
		if ch.total(&ch.dropped, key.Int16()) == 0 || ch.total(&ch.delayed, key.Int16()) == 0 {
			t.Errorf("no %v request was dropped or none delayed: the test did not inject faults there", key)
		}
	}
	if moves.Load() == 0 {
		t.Error("no leader moved")
	}
	// The only duplicates are records franz-go fetched again after it took
	// a leader move for a truncated log.
	if d, r := int64(chk.duplicates()), k.Stats().Refetched; d != r {
		t.Errorf("%d duplicates, but franz-go re-fetched %d records", d, r)
	}
	t.Logf("dropped: produce %d fetch %d commit %d; delayed: produce %d fetch %d commit %d; error responses %d; leader moves %d; duplicates %d",
		ch.total(&ch.dropped, kmsg.Produce.Int16()), ch.total(&ch.dropped, kmsg.Fetch.Int16()), ch.total(&ch.dropped, kmsg.OffsetCommit.Int16()),
		ch.total(&ch.delayed, kmsg.Produce.Int16()), ch.total(&ch.delayed, kmsg.Fetch.Int16()), ch.total(&ch.delayed, kmsg.OffsetCommit.Int16()),
		errFaults.Hits(), moves.Load(), chk.duplicates())
	t.Logf("consumer stats: %+v", k.Stats())
}

// emitErrors is an EmitObserver counting failed emits.
type emitErrors struct{ n atomic.Int64 }

func (o *emitErrors) ObserveEmit(ctx context.Context, _ *backend.Message) (context.Context, func(error)) {
	return ctx, func(err error) {
		if err != nil {
			o.n.Add(1)
		}
	}
}

// TestFaultsEmitErrorsSurface checks that produce failures reach the caller
// of Emit: a non-retriable broker error, and a deadline while every produce
// request is dropped.
func TestFaultsEmitErrorsSurface(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 2, "strict")
	p := newProducer(t, c, kafka.ClientOptions(retryOpts()...))
	em := dispytch.NewEmitter(p)
	ctx := context.Background()
	obs := &emitErrors{}
	emHooked := dispytch.NewEmitter(p, dispytch.Observe(obs))

	f := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "strict", Err: kerr.PolicyViolation})
	err := emHooked.Emit(ctx, Ev{T: "strict", Seq: 1})
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("non-retriable broker error: %v", err)
	}
	if obs.n.Load() != 1 {
		t.Fatalf("the emit observer saw %d errors", obs.n.Load())
	}
	if f.Hits() != 1 {
		t.Fatalf("fault hit %d times", f.Hits())
	}

	var drop atomic.Bool
	drop.Store(true)
	c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if drop.Load() {
			return nil, errors.New("dropped"), true
		}
		return nil, nil, false
	})
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = em.Emit(dctx, Ev{T: "strict", Seq: 2})
	if !errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("emit while produce requests are dropped: %v", err)
	}
	// A batch times out as a whole.
	dctx2, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	err = em.EmitBatch(dctx2, []dispytch.Eventer{Ev{T: "strict", Seq: 3}, Ev{T: "strict", Seq: 4}})
	if !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("batch while produce requests are dropped: %v", err)
	}
	drop.Store(false)
	if err := em.Emit(ctx, Ev{T: "strict", Seq: 5}); err != nil {
		t.Fatalf("emit after the faults: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
