package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// readTopic returns every record of topic, reading up to the end offsets
// the topic has when it is called.
func readTopic(t testing.TB, c *kfake.Cluster, topic string) []*kgo.Record {
	t.Helper()
	end := endOffsets(t, adminClient(t, c), topic)
	var total int64
	for _, e := range end {
		total += e
	}
	if total == 0 {
		return nil
	}
	return readAll(t, c, int(total), topic)
}

// seqs decodes the Seq of each record's Ev envelope.
func seqs(t testing.TB, recs []*kgo.Record) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, r := range recs {
		var env struct {
			Body Ev `json:"body"`
		}
		if err := json.Unmarshal(r.Value, &env); err != nil {
			t.Fatalf("record %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		out[env.Body.Seq]++
	}
	return out
}

// TestProduceDoneContextSendsNothing: with a context already cancelled or
// past its deadline, Produce, ProduceAsync, a batch and the emitter send
// nothing, and say so with ErrNotSent and the context's error (ErrTimeout
// for the deadline). The topic holds only the marker written afterwards.
func TestProduceDoneContextSendsNothing(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "nothing")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	msg := func(seq int) *backend.Message {
		m, err := em.Message(Ev{T: "nothing", Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	check := func(what string, err, ctxErr error) {
		t.Helper()
		if !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, ctxErr) || errors.Is(err, dispytch.ErrUnconfirmed) {
			t.Fatalf("%s: %v, want ErrNotSent and %v", what, err, ctxErr)
		}
		if ctxErr == context.DeadlineExceeded && !errors.Is(err, dispytch.ErrTimeout) {
			t.Fatalf("%s: %v, want ErrTimeout too", what, err)
		}
	}
	for _, tc := range []struct {
		ctx context.Context
		err error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		check("Produce", p.Produce(tc.ctx, msg(1)), tc.err)
		err := p.Produce(tc.ctx, msg(2), msg(3), msg(4))
		var be *backend.BatchError
		if !errors.As(err, &be) || len(be.NotSent()) != 3 {
			t.Fatalf("batch with a done context: %v", err)
		}
		for _, e := range be.Errs {
			check("batch", e, tc.err)
		}
		got := make(chan error, 1)
		p.ProduceAsync(tc.ctx, msg(5), func(err error) { got <- err })
		check("ProduceAsync", <-got, tc.err)
		check("Emit", em.Emit(tc.ctx, Ev{T: "nothing", Seq: 6}), tc.err)
		em.EmitAsync(tc.ctx, Ev{T: "nothing", Seq: 7}, func(err error) { got <- err })
		check("EmitAsync", <-got, tc.err)
	}
	if err := p.Produce(context.Background(), msg(100)); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, readTopic(t, c, "nothing")); len(got) != 1 || got[100] != 1 {
		t.Fatalf("topic holds %v, want only the marker 100", got)
	}
}

// slowProduce makes every produce request wait d at the broker.
func slowProduce(c *kfake.Cluster, d time.Duration) {
	c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})
}

// checkOutcomes checks a mid-way cancellation against the topic: every
// message reported not sent is absent, every message present was reported
// as succeeded or unconfirmed, every success is present; and some of each
// kind happened, so that the test exercised all three. Seq -1 is the
// warm-up record.
func checkOutcomes(t *testing.T, c *kfake.Cluster, p *kafka.Producer, topic string, errs []error) {
	t.Helper()
	checkOutcomesAsync(t, c, p, topic, errs, false)
}

// checkOutcomesAsync is checkOutcomes; async: asynchronous emits report the
// broker's answer of what was handed over, so there are no unconfirmed
// ones, only acknowledged and not sent.
func checkOutcomesAsync(t *testing.T, c *kfake.Cluster, p *kafka.Producer, topic string, errs []error, async bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Unconfirmed records are still on their way: let them land.
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	present := seqs(t, readTopic(t, c, topic))
	delete(present, -1) // the warm-up
	var ok, notSent, unconfirmed int
	for seq, err := range errs {
		switch {
		case err == nil:
			ok++
			if present[seq] != 1 {
				t.Fatalf("message %d succeeded but is in the topic %d times", seq, present[seq])
			}
		case errors.Is(err, dispytch.ErrNotSent):
			notSent++
			if present[seq] != 0 {
				t.Fatalf("message %d reported not sent (%v) is in the topic", seq, err)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("message %d: %v, want context.Canceled", seq, err)
			}
		case errors.Is(err, dispytch.ErrUnconfirmed):
			unconfirmed++
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("message %d: %v, want context.Canceled", seq, err)
			}
		default:
			t.Fatalf("message %d: %v, neither not sent nor unconfirmed", seq, err)
		}
	}
	for seq := range present {
		if seq < 0 || seq >= len(errs) {
			t.Fatalf("unexpected record %d", seq)
		}
	}
	t.Logf("%d acknowledged, %d unconfirmed, %d not sent; %d in the topic", ok, unconfirmed, notSent, len(present))
	if async {
		if notSent == 0 || ok == 0 || unconfirmed != 0 {
			t.Fatalf("acknowledged %d, unconfirmed %d, not sent %d: want some acknowledged, some not sent, none unconfirmed", ok, unconfirmed, notSent)
		}
		return
	}
	if notSent == 0 || unconfirmed == 0 {
		t.Fatalf("acknowledged %d, unconfirmed %d, not sent %d: the cancellation did not fall mid-way", ok, unconfirmed, notSent)
	}
}

// TestEmitBatchCancelledMidway cancels an EmitBatch while franz-go holds
// its maximum of records (8) and the broker is slow: the BatchError says
// exactly which events were not sent and which are unconfirmed, and the
// topic agrees.
func TestEmitBatchCancelledMidway(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 2, "midway")
	p := newProducer(t, c, kafka.ClientOptions(kgo.MaxBufferedRecords(8)))
	em := dispytch.NewEmitter(p)
	// Warm up: metadata and producer id, so that the slow part is the
	// produce requests.
	if err := em.Emit(context.Background(), Ev{T: "midway", Seq: -1}); err != nil {
		t.Fatal(err)
	}
	slowProduce(c, 30*time.Millisecond)
	const n = 300
	batch := make([]dispytch.Eventer, n)
	for i := range batch {
		batch[i] = Ev{T: "midway", Key: string(rune('a' + i%7)), Seq: i}
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	err := em.EmitBatch(ctx, batch)
	var be *backend.BatchError
	if !errors.As(err, &be) || len(be.Errs) != n {
		t.Fatalf("cancelled batch: %v", err)
	}
	if len(be.NotSent())+len(be.Unconfirmed()) != len(be.Failed()) {
		t.Fatalf("failed %v, not sent %v, unconfirmed %v", be.Failed(), be.NotSent(), be.Unconfirmed())
	}
	checkOutcomes(t, c, p, "midway", be.Errs)
}

// TestEmitAsyncCancelledMidway does the same with EmitAsync: every
// callback says whether its event was sent, and the topic agrees.
func TestEmitAsyncCancelledMidway(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 2, "midway-async")
	p := newProducer(t, c, kafka.ClientOptions(kgo.MaxBufferedRecords(8)))
	em := dispytch.NewEmitter(p)
	if err := em.Emit(context.Background(), Ev{T: "midway-async", Seq: -1}); err != nil {
		t.Fatal(err)
	}
	slowProduce(c, 30*time.Millisecond)
	const n = 300
	errs := make([]error, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	for i := range n {
		wg.Add(1)
		em.EmitAsync(ctx, Ev{T: "midway-async", Key: string(rune('a' + i%7)), Seq: i}, func(err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	checkOutcomesAsync(t, c, p, "midway-async", errs, true)
}

// closedPort returns an address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestCloseUnreachableDoesNotHang: after emits to brokers that cannot be
// reached, Close(context.Background()) returns after the default close
// timeout with an error naming the refused connection, and the pending
// emits fail as not sent (the client never reached a broker). It used to
// hang forever in franz-go's Flush.
func TestCloseUnreachableDoesNotHang(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	p, err := kafka.NewProducer(kafka.Brokers(addr), kafka.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	em := dispytch.NewEmitter(p)
	got := make(chan error, 2)
	em.EmitAsync(context.Background(), Ev{T: "anywhere", Seq: 1}, func(err error) { got <- err })
	go func() { got <- em.Emit(context.Background(), Ev{T: "anywhere", Seq: 2}) }()
	began := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	select {
	case err = <-closed:
	case <-time.After(kafka.DefaultCloseTimeout + 10*time.Second):
		t.Fatal("Close(context.Background()) hangs")
	}
	took := time.Since(began)
	if !errors.Is(err, dispytch.ErrTimeout) || !contains(err, "connection refused") {
		t.Fatalf("close: %v, want a timeout naming the refused connection", err)
	}
	if took < kafka.DefaultCloseTimeout-time.Second {
		t.Fatalf("close returned after %v, before the close timeout", took)
	}
	for range 2 {
		select {
		case err := <-got:
			if !errors.Is(err, dispytch.ErrNotSent) || errors.Is(err, dispytch.ErrUnconfirmed) {
				t.Fatalf("emit to an unreachable broker after Close: %v, want ErrNotSent", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a pending emit did not return after Close")
		}
	}
	if err := em.Emit(context.Background(), Ev{T: "anywhere"}); !errors.Is(err, dispytch.ErrClosed) || !errors.Is(err, dispytch.ErrNotSent) {
		t.Fatalf("emit after close: %v", err)
	}
}

// TestCloseHonoursContext: Close returns soon after its context ends, on
// a reachable cluster whose produce requests never return, and the record
// in flight is unconfirmed, not "not sent".
func TestCloseHonoursContext(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "stuck")
	p := newProducer(t, c)
	if err := p.Produce(context.Background(), &backend.Message{Topic: "stuck", Value: []byte("warm-up")}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	got := make(chan error, 1)
	p.ProduceAsync(context.Background(), &backend.Message{Topic: "stuck", Value: []byte("x")}, func(err error) { got <- err })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := p.Close(ctx)
	if took := time.Since(began); took > 300*time.Millisecond+2*time.Second+time.Second {
		t.Fatalf("Close took %v with a 300ms context", took)
	}
	if !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, dispytch.ErrUnconfirmed) || !errors.Is(err, dispytch.ErrClosed) {
			t.Fatalf("record in flight at close: %v, want ErrUnconfirmed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the record in flight was not failed by Close")
	}
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }
