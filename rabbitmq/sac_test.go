package rabbitmq_test

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// closeNamedConnection closes the broker's connection whose client gave
// it the connection name name, and reports whether there was one.
func closeNamedConnection(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `{"connection_name","`+name+`"}`) {
			rabbitmqctl(t, "close_connection", strings.Fields(line)[0], "dispytch SAC test cut")
			return true
		}
	}
	return false
}

// handling is one handler call of the SAC test.
type handling struct {
	listener int
	n        int
	redeliv  bool
	// stale at start / at end: the delivery's channel was closed when the
	// handler started / returned. A handling stale at its end was cut off:
	// its ack fails, and the broker redelivers the message.
	staleStart, staleEnd bool
	overlapped           []*handling // handlings running when it started
	done                 int         // completion order
}

// TestSingleActiveConsumerConnectionLoss: two listeners (two clients) on
// one single-active-consumer group get a stream of numbered events with one
// key, while the active listener's consuming connection is cut three
// times. Before the fix, the cut-off listener went on starting the
// deliveries it had buffered from the dead channel while the broker gave
// them to the other one: both ran at once, and order went backwards (49 to
// 91 such handlings per run).
//
// The inherent limit: the broker drops the connection, requeues its unacked
// messages and activates the other consumer before the client hears of
// it. A handler running then (or started in that moment) cannot be
// stopped; its ack fails or is lost, and the broker redelivers its message,
// which may start on the other listener while it still runs. Call such a
// handling a ghost: its channel was closed when it returned, or its message
// was delivered again afterwards. What must hold:
//   - no two handlings overlap unless one of them is a ghost;
//   - the first completions of the handlings that are not ghosts never go
//     backwards, cover every event, and no event completes twice;
//   - at most one handling per cut starts on a channel the client already
//     knows is closed (the listener checks right before it starts a
//     delivery; the channel can close between that check and the
//     handler's first line). This is what the bug did dozens of times.
func TestSingleActiveConsumerConnectionLoss(t *testing.T) {
	testenv.RequireCommand(t, "rabbitmqctl")
	e := setup(t)
	t.Cleanup(func() { ensureBrokerUp(t) })
	group := e.group("sac-cut")
	names := [2]string{e.prefix + "-sac-a", e.prefix + "-sac-b"}

	var mu sync.Mutex
	running := map[*handling]bool{}
	var all []*handling
	last := -1 // the listener of the last handling
	completed := 0
	var done atomic.Int64
	handler := func(i int) func(ev dispytch.Event[Seq]) {
		return func(ev dispytch.Event[Seq]) {
			raw, _ := rabbitmq.DeliveryOf(&ev.Metadata)
			ch := raw.Acknowledger.(*amqp.Channel)
			h := &handling{listener: i, n: ev.Body.N, redeliv: ev.Delivery.Redelivered, staleStart: ch.IsClosed()}
			mu.Lock()
			for o := range running {
				h.overlapped = append(h.overlapped, o)
			}
			running[h] = true
			all = append(all, h)
			last = i
			mu.Unlock()
			time.Sleep(200 * time.Microsecond) // the work
			mu.Lock()
			delete(running, h)
			h.staleEnd = ch.IsClosed()
			completed++
			h.done = completed
			mu.Unlock()
			done.Add(1)
		}
	}
	for i, name := range names {
		c := e.client(rabbitmq.SingleActiveConsumer(), rabbitmq.ConnectionName(name), rabbitmq.ReconnectBackoff(20*time.Millisecond, 200*time.Millisecond))
		l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
		l.Handle("seq", "seq", handler(i))
		run(t, l)
	}

	// The stream, from a third client whose connections stay up.
	em := dispytch.NewEmitter(e.client())
	ctx := ctxT(t, 120*time.Second)
	stopEmit := make(chan struct{})
	emitted := make(chan int, 1)
	go func() {
		n := 0
		defer func() { emitted <- n }()
		for {
			select {
			case <-stopEmit:
				return
			default:
			}
			for int64(n)-done.Load() > 300 { // keep the backlog short
				time.Sleep(time.Millisecond)
			}
			evs := make([]dispytch.Eventer, 20)
			for i := range evs {
				evs[i] = Seq{N: n + i}
			}
			if err := em.EmitBatch(ctx, evs, dispytch.Key("one")); err != nil {
				t.Errorf("emit: %v", err)
				return
			}
			n += len(evs)
		}
	}()

	const cuts = 3
	for cut := range cuts {
		before := done.Load()
		eventually(t, 30*time.Second, "the stream to flow", func() bool { return done.Load() >= before+300 })
		mu.Lock()
		active := last
		mu.Unlock()
		if !closeNamedConnection(t, names[active]+"/consume") {
			t.Fatalf("cut %d: no connection named %s/consume", cut, names[active])
		}
	}
	eventually(t, 30*time.Second, "the stream to flow after the last cut", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(all) > 0 && completed > 300
	})
	close(stopEmit)
	total := <-emitted

	// Wait until every event was completed by a handling that was not cut
	// off (the others are redelivered). (A handling that completed before
	// the client learned of the cut may still be a ghost: see below.)
	eventually(t, 60*time.Second, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, h := range all {
			if h.done > 0 && !h.staleEnd {
				seen[h.n] = true
			}
		}
		return len(seen) == total
	})

	mu.Lock()
	defer mu.Unlock()
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	// A ghost is a handling that did not count for the broker: it was cut
	// off (its channel closed before it returned), or the broker delivered
	// its message again afterwards, because the connection was gone
	// before its ack arrived (the client learns of that a moment after the
	// broker: until then it cannot know).
	// The redelivery may even start before the ghost does: the broker
	// requeues the moment it drops the connection, and the other listener
	// can start the message while the cut-off client, not yet aware, takes
	// its buffered copy. The handler never fails, so the broker redelivers
	// a message only when the channel of an earlier delivery died unacked:
	// any redelivered handling of the same event marks the handlings of it
	// that are not redeliveries.
	ghost := map[*handling]bool{}
	for i, h := range all {
		if h.staleEnd {
			ghost[h] = true
		}
		for j, other := range all {
			if j != i && other.n == h.n && other.redeliv && (!h.redeliv || j > i) {
				ghost[h] = true
				break
			}
		}
	}
	startedStale, overlaps := 0, 0
	for _, h := range all {
		if h.staleStart {
			startedStale++
		}
		for _, o := range h.overlapped {
			overlaps++
			if !ghost[h] && !ghost[o] {
				problem("listener %d handled %d while listener %d handled %d, and neither was a ghost", h.listener, h.n, o.listener, o.n)
			}
		}
	}
	byDone := append([]*handling(nil), all...)
	sort.Slice(byDone, func(i, j int) bool { return byDone[i].done < byDone[j].done })
	next := 0 // the next event expected to complete for the first time
	completedOnce := map[int]bool{}
	for _, h := range byDone {
		if ghost[h] {
			continue
		}
		switch {
		case completedOnce[h.n]:
			problem("event %d completed twice by handlings that counted (listener %d, redelivered %v)", h.n, h.listener, h.redeliv)
		case h.n != next:
			problem("event %d completed (listener %d) when %d was the next one: order went backwards or skipped", h.n, h.listener, next)
			completedOnce[h.n] = true
		default:
			completedOnce[h.n] = true
			next++
		}
	}
	if next != total {
		problem("%d of %d events completed in order", next, total)
	}
	if startedStale > cuts {
		problem("%d handlings started on a channel known to be closed (at most one per cut is a race)", startedStale)
	}
	t.Logf("%d events, %d handlings; %d ghosts of the %d cuts, %d of them started on a closed channel; %d overlaps, all with a ghost",
		total, len(all), len(ghost), cuts, startedStale, overlaps)
	if len(problems) > 0 {
		t.Fatalf("single active consumer broken:\n%s", strings.Join(problems, "\n"))
	}
}
