package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestDeadLetterOperations runs List, Count, Purge and Redrive on a
// three-partition dead-letter topic fed by a real listener whose handlers
// keep failing.
//
// Redrive makes one pass over what the topic held at its start and returns
// with that many letters moved; the letters that fail again are back in
// the topic, and a second Redrive moves them again exactly once. (The old
// consumer-based Redrive looped: it redrove the same failing messages
// 11,817 times in 10 s.) List decodes the failure headers; the filters and
// DryRun select and change nothing; a Purge of some letters keeps the
// others, also those before the removed ones in their partition; Purge
// empties the topic.
func TestDeadLetterOperations(t *testing.T) {
	c := newCluster(t)
	group := "g"
	dlqName := group + ".dlq"
	createTopics(t, c, 3, "orders", "refunds", dlqName)
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var redriven atomic.Int64 // redriven messages reaching a handler (first attempts)
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	mark := func(ev dispytch.Event[Ev]) {
		if ev.Headers[dispytch.HeaderRedriveHandler] != "" && ev.Delivery.Attempt == 1 {
			redriven.Add(1)
		}
	}
	l.Handle("orders", "ev", func(ev dispytch.Event[Ev]) error {
		mark(ev)
		if ev.Body.Seq%2 == 0 {
			return fmt.Errorf("card declined for order %d", ev.Body.Seq)
		}
		return nil
	}, dispytch.Name("charge"), dispytch.Retries(1), dispytch.RetryInterval(time.Millisecond))
	l.Handle("refunds", "ev", func(ev dispytch.Event[Ev]) error {
		mark(ev)
		return errors.New("refund service down")
	}, dispytch.Name("refund"), dispytch.Retries(0))
	start(t, l)

	q := dlq.Open(k, dlqName)
	count := func() int {
		t.Helper()
		n, err := q.Count(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Ten orders over many keys (so, partitions), five of them failing,
	// and a poison record; then three failing refunds.
	for i := 1; i <= 10; i++ {
		if err := em.Emit(ctx, Ev{T: "orders", Key: fmt.Sprintf("cust-%d", i), Seq: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Client().ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte("cust-0"), Value: []byte("garbage")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "six dead letters from orders", func() bool { return count() == 6 })
	split := time.Now()
	for i := 1; i <= 3; i++ {
		if err := em.Emit(ctx, Ev{T: "refunds", Key: fmt.Sprintf("ref-%d", i), Seq: 100 + i}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "nine dead letters", func() bool { return count() == 9 })

	// List: every letter decoded, oldest first per partition.
	letters, err := q.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 9 {
		t.Fatalf("listed %d letters, want 9", len(letters))
	}
	parts := map[int32]int64{}
	for _, f := range letters {
		if last, ok := parts[f.Partition]; ok && f.Offset <= last {
			t.Fatalf("letters of partition %d out of order: %d after %d", f.Partition, f.Offset, last)
		}
		parts[f.Partition] = f.Offset
		if f.Group != group || f.DeadLetterTopic != dlqName {
			t.Fatalf("letter %+v", f)
		}
		switch f.Reason {
		case dispytch.ReasonHandler:
			wantHandler, wantErr, wantAttempts := "charge", "card declined", 2
			if f.Topic == "refunds" {
				wantHandler, wantErr, wantAttempts = "refund", "refund service down", 1
			}
			if f.Handler != wantHandler || f.Attempts != wantAttempts || f.Err == nil || !strings.Contains(f.Err.Error(), wantErr) {
				t.Fatalf("letter from %s: handler %q attempts %d err %v", f.Topic, f.Handler, f.Attempts, f.Err)
			}
			if f.Headers[kafka.HeaderEventID] == "" || f.Headers[kafka.HeaderEventType] != "ev" {
				t.Fatalf("letter lost the original's headers: %v", f.Headers)
			}
		case dispytch.ReasonDecode:
			if f.Topic != "orders" || string(f.Value) != "garbage" {
				t.Fatalf("poison letter %+v", f)
			}
		default:
			t.Fatalf("letter with reason %q", f.Reason)
		}
		if f.LastFailure.IsZero() || f.FirstFailure.After(f.LastFailure) {
			t.Fatalf("letter failure times %v %v", f.FirstFailure, f.LastFailure)
		}
	}
	if len(parts) < 2 {
		t.Fatalf("all letters in partitions %v: the test needs several", parts)
	}

	// Filters, and dry runs that change nothing.
	for _, tc := range []struct {
		name string
		f    *dlq.Filter
		want int
	}{
		{"reason decode", &dlq.Filter{Reasons: []dispytch.Reason{dispytch.ReasonDecode}}, 1},
		{"handler refund", &dlq.Filter{Handlers: []string{"refund"}}, 3},
		{"topic orders", &dlq.Filter{Topics: []string{"orders"}}, 6},
		{"failed after the split", &dlq.Filter{From: split}, 3},
		{"failed before the split", &dlq.Filter{To: split}, 6},
	} {
		if n, err := q.Count(ctx, tc.f); err != nil || n != tc.want {
			t.Fatalf("count %s: %d, %v; want %d", tc.name, n, err, tc.want)
		}
	}
	if n, err := q.Redrive(ctx, p, &dlq.Filter{DryRun: true}); err != nil || n != 8 {
		t.Fatalf("redrive dry run: %d, %v; want the 8 handler failures", n, err)
	}
	if n, err := q.Purge(ctx, &dlq.Filter{DryRun: true, Handlers: []string{"refund"}}); err != nil || n != 3 {
		t.Fatalf("purge dry run: %d, %v", n, err)
	}
	before := endTotal(t, c, dlqName)
	if n := count(); n != 9 {
		t.Fatalf("%d letters after dry runs, want 9", n)
	}
	if after := endTotal(t, c, dlqName); after != before {
		t.Fatalf("dry runs wrote %d records", after-before)
	}

	// Redrive with the handlers still failing: one pass, 8 letters moved
	// (the poison is skipped without FilterReason), and it returns.
	for pass := 1; pass <= 2; pass++ {
		began := time.Now()
		n, err := q.Redrive(ctx, p, nil)
		if err != nil || n != 8 {
			t.Fatalf("redrive pass %d: %d, %v; want 8", pass, n, err)
		}
		t.Logf("redrive pass %d moved %d letters in %v", pass, n, time.Since(began).Round(time.Millisecond))
		eventually(t, 30*time.Second, "redriven messages failed again and back in the topic", func() bool {
			return redriven.Load() == int64(8*pass) && count() == 9
		})
	}
	if got, err := q.Count(ctx, &dlq.Filter{Reasons: []dispytch.Reason{dispytch.ReasonDecode}}); err != nil || got != 1 {
		t.Fatalf("the poison letter after two redrives: %d, %v", got, err)
	}

	// Purge the refunds only: the others stay, the ones before a removed
	// refund in its partition too (they are copied to the end).
	if n, err := q.Purge(ctx, &dlq.Filter{Handlers: []string{"refund"}}); err != nil || n != 3 {
		t.Fatalf("purge refunds: %d, %v", n, err)
	}
	left, err := q.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 6 {
		t.Fatalf("%d letters after purging the refunds, want 6", len(left))
	}
	for _, f := range left {
		if f.Handler == "refund" {
			t.Fatalf("a purged refund is still listed: %+v", f)
		}
	}
	if n := count(); n < 6 {
		t.Fatalf("count %d after purging the refunds", n)
	}
	if n, err := q.Purge(ctx, nil); err != nil || n != 6 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if n := count(); n != 0 {
		t.Fatalf("count %d after purge", n)
	}
	if left, err := q.List(ctx, nil); err != nil || len(left) != 0 {
		t.Fatalf("list after purge: %d, %v", len(left), err)
	}
}

func endTotal(t *testing.T, c *kfake.Cluster, topic string) int64 {
	t.Helper()
	var n int64
	for _, e := range endOffsets(t, adminClient(t, c), topic) {
		n += e
	}
	return n
}

// TestDeadLetterScanStopsAndErrors: ErrStopScan ends a scan without an
// error and keeps the rest; an error from f is returned and keeps that
// letter; a missing topic is ErrUnknownTopic; nil arguments are errors.
func TestDeadLetterScanStopsAndErrors(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "s.dlq")
	k := newConsumer(t, c)
	ctx := context.Background()
	p := newProducer(t, c)
	for i := range 3 {
		f := &dispytch.FailedMessage{Topic: "src", Value: []byte(fmt.Sprint(i)), Reason: dispytch.ReasonHandler, Handler: "h",
			Attempts: 1, FirstFailure: time.Now(), LastFailure: time.Now(), Partition: -1, Offset: -1}
		if err := p.Produce(ctx, f.Message("s.dlq")); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	err := k.ScanDeadLetters(ctx, "s.dlq", func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		seen++
		if seen == 2 {
			return backend.ActionKeep, backend.ErrStopScan
		}
		return backend.ActionRemove, nil
	})
	if err != nil || seen != 2 {
		t.Fatalf("stopped scan: %v after %d", err, seen)
	}
	boom := errors.New("boom")
	err = k.ScanDeadLetters(ctx, "s.dlq", func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		return backend.ActionKeep, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("scan error: %v", err)
	}
	var values []string
	if err := k.ScanDeadLetters(ctx, "s.dlq", func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		values = append(values, string(d.Value))
		return backend.ActionKeep, nil
	}); err != nil || fmt.Sprint(values) != "[1 2]" {
		t.Fatalf("left after the stopped scan: %v, %v", values, err)
	}
	if err := k.ScanDeadLetters(ctx, "nope.dlq", func(*backend.Delivery) (backend.DeadLetterAction, error) {
		return backend.ActionKeep, nil
	}); !errors.Is(err, kafka.ErrUnknownTopic) {
		t.Fatalf("missing topic: %v", err)
	}
	if err := k.ScanDeadLetters(ctx, "s.dlq", nil); err == nil {
		t.Fatal("nil function: no error")
	}
	var nilCtx context.Context // a caller's bug, on purpose
	if _, err := k.CountDeadLetters(nilCtx, "s.dlq"); err == nil {
		t.Fatal("nil context: no error")
	}
}

// TestDeadLetterGroupOption: the watermark lives in the DeadLetterGroup,
// so another group name sees every letter again.
func TestDeadLetterGroupOption(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "w.dlq")
	p := newProducer(t, c)
	ctx := context.Background()
	f := &dispytch.FailedMessage{Topic: "src", Value: []byte("v"), Reason: dispytch.ReasonHandler, Attempts: 1,
		FirstFailure: time.Now(), LastFailure: time.Now(), Partition: -1, Offset: -1}
	if err := p.Produce(ctx, f.Message("w.dlq")); err != nil {
		t.Fatal(err)
	}
	a := dlq.Open(newConsumer(t, c), "w.dlq")
	b := dlq.Open(newConsumer(t, c, kafka.DeadLetterGroup("ops-b")), "w.dlq")
	if n, err := a.Purge(ctx, nil); err != nil || n != 1 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	na, _ := a.Count(ctx, nil)
	nb, _ := b.Count(ctx, nil)
	if na != 0 || nb != 1 {
		t.Fatalf("counts after purging through the default group: %d, through ops-b: %d", na, nb)
	}
	adm := adminClient(t, c)
	if got := committed(t, adm, kafka.DefaultDeadLetterGroup, "w.dlq")[0]; got != 1 {
		t.Fatalf("watermark of %s: %d", kafka.DefaultDeadLetterGroup, got)
	}
}

// TestDeadLetterKeepBeforeRemoval: in one partition, A is kept, B removed,
// C kept. The watermark passes B, so A is copied to the end first: the
// topic holds C and A afterwards (A with its headers and timestamp), and
// no letter is lost.
func TestDeadLetterKeepBeforeRemoval(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "k.dlq")
	p := newProducer(t, c)
	ctx := context.Background()
	ts := time.UnixMilli(1_700_000_000_000)
	for _, v := range []string{"A", "B", "C"} {
		f := &dispytch.FailedMessage{Topic: "src", Key: []byte("key-" + v), Value: []byte(v), Headers: map[string]string{"trace": "t-" + v},
			Reason: dispytch.ReasonHandler, Handler: "h", Attempts: 1, FirstFailure: ts, LastFailure: ts, Partition: -1, Offset: -1}
		if err := p.Produce(ctx, f.Message("k.dlq")); err != nil {
			t.Fatal(err)
		}
	}
	k := newConsumer(t, c)
	if err := k.ScanDeadLetters(ctx, "k.dlq", func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		if string(d.Value) == "B" {
			return backend.ActionRemove, nil
		}
		return backend.ActionKeep, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, adminClient(t, c), kafka.DefaultDeadLetterGroup, "k.dlq")[0]; got != 2 {
		t.Fatalf("watermark %d, want 2 (past B)", got)
	}
	letters, err := dlq.Open(k, "k.dlq").List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range letters {
		got = append(got, fmt.Sprintf("%s@%d:%s:%s", f.Value, f.Offset, f.Key, f.Headers["trace"]))
	}
	if fmt.Sprint(got) != "[C@2:key-C:t-C A@3:key-A:t-A]" {
		t.Fatalf("letters after keep/remove/keep: %v", got)
	}
	recs := readAll(t, c, 4, "k.dlq")
	if !recs[3].Timestamp.Equal(recs[0].Timestamp) || len(recs[3].Headers) != len(recs[0].Headers) {
		t.Fatalf("the copy of A differs: %v %v / %v %v", recs[3].Timestamp, recs[3].Headers, recs[0].Timestamp, recs[0].Headers)
	}
}
