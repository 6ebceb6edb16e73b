package rabbitmq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// TestScanDeadLettersOnePass: ScanDeadLetters sees each message the queue
// held at the start once, in order, and none of those that arrive during
// the scan, even though f itself adds one (confirmed, so in the queue)
// for every message it sees. Removed messages are gone, kept ones stay in
// their order ahead of the newcomers. ErrStopScan ends a pass without an
// error; f's own errors are returned; a missing queue is ErrQueueNotFound.
// On a classic and on a quorum queue.
func TestScanDeadLettersOnePass(t *testing.T) {
	for _, qt := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			e := setup(t)
			c := e.client()
			ch := e.raw()
			q := e.prefix + "-scan"
			e.addQueue(q)
			if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": string(qt)}); err != nil {
				t.Fatal(err)
			}
			if err := ch.QueueBind(q, "scan.in", e.x, false, nil); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 60*time.Second)
			put := func(name string) {
				t.Helper()
				err := c.Produce(ctx, &backend.Message{Topic: "scan.in", Value: []byte(name), Headers: map[string]string{"n": name}})
				if err != nil {
					t.Fatal(err)
				}
			}
			const start = 10
			for i := range start {
				put("m" + strconv.Itoa(i))
			}
			if n, err := c.CountDeadLetters(ctx, q); err != nil || n != start {
				t.Fatalf("count: %d, %v", n, err)
			}
			var seen []string
			err := c.ScanDeadLetters(ctx, q, func(d *backend.Delivery) (backend.DeadLetterAction, error) {
				name := string(d.Value)
				seen = append(seen, name)
				if d.Headers["n"] != name || d.Topic != q || d.Acker != nil {
					t.Errorf("delivery %+v", d)
				}
				put("new-" + name) // arrives during the scan
				if n, _ := strconv.Atoi(name[1:]); n%2 == 0 {
					return backend.ActionRemove, nil
				}
				return backend.ActionKeep, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"}
			if !reflect.DeepEqual(seen, want) {
				t.Fatalf("the scan saw %v, want %v", seen, want)
			}
			list := func() []string {
				t.Helper()
				var got []string
				err := c.ScanDeadLetters(ctx, q, func(d *backend.Delivery) (backend.DeadLetterAction, error) {
					got = append(got, string(d.Value))
					return backend.ActionKeep, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				return got
			}
			// Kept messages stay at their place in a classic queue; a
			// quorum queue puts requeued messages at its end.
			kept := []string{"m1", "m3", "m5", "m7", "m9"}
			var added []string
			for _, w := range seen {
				added = append(added, "new-"+w)
			}
			want = append(append([]string(nil), kept...), added...)
			if qt == rabbitmq.Quorum {
				want = append(append([]string(nil), added...), kept...)
			}
			if got := list(); !reflect.DeepEqual(got, want) {
				t.Fatalf("after the scan the queue holds\n %v\nwant\n %v", got, want)
			}
			if qt == rabbitmq.Classic {
				if got := list(); !reflect.DeepEqual(got, want) {
					t.Fatalf("a scan that keeps everything changed the queue:\n %v\nwant\n %v", got, want)
				}
			} else if got := list(); len(got) != len(want) {
				t.Fatalf("a scan that keeps everything changed the queue:\n %v\nwant the %d messages of\n %v", got, len(want), want)
			}

			// ErrStopScan: no error, the message it was given stays.
			calls := 0
			err = c.ScanDeadLetters(ctx, q, func(*backend.Delivery) (backend.DeadLetterAction, error) {
				if calls++; calls == 2 {
					return backend.ActionRemove, backend.ErrStopScan
				}
				return backend.ActionRemove, nil
			})
			if err != nil || calls != 2 {
				t.Fatalf("stopped scan: %v after %d calls", err, calls)
			}
			if n, err := c.CountDeadLetters(ctx, q); err != nil || n != len(want)-1 {
				t.Fatalf("count after a stopped scan: %d, %v; want %d", n, err, len(want)-1)
			}
			// f's error: returned, nothing more is removed.
			boom := errors.New("boom")
			err = c.ScanDeadLetters(ctx, q, func(*backend.Delivery) (backend.DeadLetterAction, error) {
				return backend.ActionRemove, boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("scan with a failing f: %v", err)
			}
			if n, err := c.CountDeadLetters(ctx, q); err != nil || n != len(want)-1 {
				t.Fatalf("count after the failed scan: %d, %v; want %d", n, err, len(want)-1)
			}
			if err := c.ScanDeadLetters(ctx, e.prefix+"-nope", func(*backend.Delivery) (backend.DeadLetterAction, error) {
				return backend.ActionKeep, nil
			}); !errors.Is(err, rabbitmq.ErrQueueNotFound) {
				t.Fatalf("scan of a missing queue: %v", err)
			}
			if err := c.ScanDeadLetters(ctx, q, nil); err == nil {
				t.Fatal("a nil scan function was accepted")
			}
		})
	}
}

// TestDeadLetterOperations: a real listener with two handlers that keep
// failing dead-letters every message twice; dlq.Open on the
// Client lists, counts, redrives and purges them, on classic and quorum
// dead-letter queues. Redrive makes one pass and returns with the number of
// letters at its start; the redriven letters fail again and are back in
// the queue afterwards (the measured bug: the old Redrive took them again
// and again, 24,081 redrives of 6 letters in 60 s).
func TestDeadLetterOperations(t *testing.T) {
	for _, qt := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(qt), func(t *testing.T) {
			e := setup(t)
			c := e.client(rabbitmq.WithQueueType(qt))
			group := e.group("dlops")
			var aCalls, bCalls atomic.Int64
			l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
			l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) error {
				aCalls.Add(1)
				return fmt.Errorf("a cannot take order %d", ev.Body.N)
			}, dispytch.Name("a"), dispytch.Retries(1), dispytch.RetryInterval(time.Millisecond))
			l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) error {
				bCalls.Add(1)
				return errors.New("b is down")
			}, dispytch.Name("b"))
			run(t, l)
			ctx := ctxT(t, 90*time.Second)
			start := time.Now()
			for i := range 3 {
				if err := dispytch.NewEmitter(c).Emit(ctx, Order{N: i}); err != nil {
					t.Fatal(err)
				}
			}
			q := dlq.Open(c, group+".dlq")
			count := func() int {
				t.Helper()
				n, err := q.Count(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			eventually(t, 20*time.Second, "6 dead letters", func() bool { return count() == 6 })

			letters, err := q.List(ctx, nil)
			if err != nil || len(letters) != 6 {
				t.Fatalf("list: %d letters, %v", len(letters), err)
			}
			byHandler := map[string]int{}
			for _, f := range letters {
				byHandler[f.Handler]++
				if f.Reason != dispytch.ReasonHandler || f.Topic != "orders" || f.Group != group || f.Err == nil ||
					f.DeadLetterTopic != group+".dlq" || f.LastFailure.Before(start.Add(-time.Second)) {
					t.Errorf("letter %+v", f)
				}
				var env struct {
					Type string `json:"type"`
					Body Order  `json:"body"`
				}
				if err := json.Unmarshal(f.Value, &env); err != nil || env.Type != "order_placed" {
					t.Errorf("letter value %q: %v", f.Value, err)
				}
				switch f.Handler {
				case "a":
					if f.Attempts != 2 || f.Err.Error()[:len("a cannot take order")] != "a cannot take order" {
						t.Errorf("letter of a: attempts %d, err %v", f.Attempts, f.Err)
					}
				case "b":
					if f.Attempts != 1 || f.Err.Error() != "b is down" {
						t.Errorf("letter of b: attempts %d, err %v", f.Attempts, f.Err)
					}
				}
			}
			if byHandler["a"] != 3 || byHandler["b"] != 3 {
				t.Fatalf("letters by handler %v", byHandler)
			}
			if n, err := q.Count(ctx, &dlq.Filter{Handlers: []string{"a"}}); err != nil || n != 3 {
				t.Fatalf("count of a's letters: %d, %v", n, err)
			}

			// A dry run moves nothing.
			a0, b0 := aCalls.Load(), bCalls.Load()
			if n, err := q.Redrive(ctx, c, &dlq.Filter{DryRun: true}); err != nil || n != 6 {
				t.Fatalf("dry run: %d, %v", n, err)
			}
			if count() != 6 {
				t.Fatalf("a dry run changed the queue: %d letters", count())
			}
			// Redrive a's letters: only a runs again, fails again, and its
			// letters come back.
			if n, err := q.Redrive(ctx, c, &dlq.Filter{Handlers: []string{"a"}}); err != nil || n != 3 {
				t.Fatalf("redrive a: %d, %v", n, err)
			}
			eventually(t, 20*time.Second, "a's redriven letters to fail again", func() bool {
				return aCalls.Load() == a0+3*2 && count() == 6
			})
			// Everything: one pass, then back.
			redriveStart := time.Now()
			n, err := q.Redrive(ctx, c, nil)
			if err != nil || n != 6 {
				t.Fatalf("redrive: %d, %v", n, err)
			}
			t.Logf("redrive of 6 letters took %v", time.Since(redriveStart))
			eventually(t, 20*time.Second, "the redriven letters to fail again", func() bool {
				return aCalls.Load() == a0+3*2*2 && bCalls.Load() == b0+3 && count() == 6
			})
			letters, err = q.List(ctx, nil)
			if err != nil || len(letters) != 6 {
				t.Fatalf("list after the redrive: %d letters, %v", len(letters), err)
			}

			// Purge b's letters, a dry run of the rest, then all.
			if n, err := q.Purge(ctx, &dlq.Filter{Handlers: []string{"b"}}); err != nil || n != 3 {
				t.Fatalf("purge b: %d, %v", n, err)
			}
			if n, err := q.Purge(ctx, &dlq.Filter{DryRun: true}); err != nil || n != 3 || count() != 3 {
				t.Fatalf("purge dry run: %d, %v; %d left", n, err, count())
			}
			if n, err := q.Purge(ctx, nil); err != nil || n != 3 || count() != 0 {
				t.Fatalf("purge: %d, %v; %d left", n, err, count())
			}
			if aCalls.Load() != a0+12 || bCalls.Load() != b0+3 {
				t.Errorf("handler calls after the purge: a %d, b %d", aCalls.Load()-a0, bCalls.Load()-b0)
			}
		})
	}
}

// TestRedriveEnds: the scenario of issue #9 at a larger scale: 200 letters
// whose handler keeps failing. The redriven letters fail and come back
// while the pass is still going; Redrive still ends after one pass with
// n = 200, and the letters are all back.
func TestRedriveEnds(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("ends")
	var calls atomic.Int64
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(dispytch.Event[Order]) error {
		calls.Add(1)
		return errors.New("still broken")
	})
	run(t, l)
	ctx := ctxT(t, 90*time.Second)
	const total = 200
	evs := make([]dispytch.Eventer, total)
	for i := range evs {
		evs[i] = Order{N: i}
	}
	if err := dispytch.NewEmitter(c).EmitBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	q := dlq.Open(c, group+".dlq")
	eventually(t, 30*time.Second, "the dead letters", func() bool { n, _ := q.Count(ctx, nil); return n == total })
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := q.Redrive(rctx, c, nil)
	if err != nil || n != total {
		t.Fatalf("redrive: %d, %v; want %d after one pass", n, err, total)
	}
	during := calls.Load() - total // handled again before Redrive returned
	eventually(t, 30*time.Second, "the letters back", func() bool {
		n, _ := q.Count(ctx, nil)
		return n == total && calls.Load() == 2*total
	})
	t.Logf("%d of %d redriven letters had failed again before the pass ended", during, total)
}
