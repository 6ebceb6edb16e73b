package rabbitmq_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dispytchtest"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

type Seq struct {
	N int `json:"n"`
}

func (Seq) Topic() string     { return "seq" }
func (Seq) EventType() string { return "seq" }

func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// tracker records handled event IDs.
type tracker struct {
	mu    sync.Mutex
	ids   map[string]int
	calls atomic.Int64
}

func newTracker() *tracker { return &tracker{ids: map[string]int{}} }

func (k *tracker) add(id string) {
	k.calls.Add(1)
	k.mu.Lock()
	k.ids[id]++
	k.mu.Unlock()
}

func (k *tracker) unique() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ids)
}

// emitAll emits n events from workers goroutines, each Emit with its own
// short deadline, retrying failed ones with the same event ID until they
// succeed. It returns the errors Emit returned on the way.
func emitAll(ctx context.Context, em *dispytch.Emitter, ids []string, workers int, perEmit time.Duration) (errs []error) {
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				for ctx.Err() == nil {
					ectx, cancel := context.WithTimeout(ctx, perEmit)
					err := em.Emit(ectx, Seq{N: i}, dispytch.EventID(ids[i]))
					cancel()
					if err == nil {
						break
					}
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // pace the retries of one event
				}
			}
		}()
	}
	for i := range ids {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return errs
}

// TestRecovery emits 20k events while the broker drops every connection
// (close_all_connections) or restarts (stop_app/start_app) mid-stream: no
// event is lost, the listener resumes by itself, and emits that could not
// complete return errors instead of hanging or vanishing.
func TestRecovery(t *testing.T) {
	testenv.RequireCommand(t, "rabbitmqctl")
	total := 20000
	if os.Getenv("DISPYTCH_SOAK") == "1" {
		total = 200000
	}
	for _, tc := range []struct {
		name       string
		disrupt    func(t *testing.T)
		wantErrors bool
	}{
		{"close_all_connections", func(t *testing.T) {
			rabbitmqctl(t, "close_all_connections", "dispytch recovery test")
		}, false},
		{"stop_app_start_app", func(t *testing.T) {
			rabbitmqctl(t, "stop_app")
			rabbitmqctl(t, "start_app")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			t.Cleanup(func() { ensureBrokerUp(t) }) // runs before e's cleanup
			c := e.client()
			group := e.group("recovery")
			k := newTracker()
			l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.Concurrency(32), dispytch.WithLogger(quietLog()))
			l.Handle("seq", "seq", func(ev dispytch.Event[Seq]) { k.add(ev.ID) })
			run(t, l)

			ids := make([]string, total)
			for i := range ids {
				ids[i] = fmt.Sprintf("%s-%d", e.prefix, i)
			}
			ctx := ctxT(t, 150*time.Second+time.Duration(total)*time.Millisecond)
			em := dispytch.NewEmitter(c)
			errc := make(chan []error, 1)
			go func() { errc <- emitAll(ctx, em, ids, 16, time.Second) }()

			eventually(t, 60*time.Second, "5000 events handled before the disruption", func() bool { return k.unique() >= 5000 })
			handledBefore := k.unique()
			tc.disrupt(t)
			errs := <-errc
			if ctx.Err() != nil {
				t.Fatalf("emitting did not finish: %v", ctx.Err())
			}
			eventually(t, 90*time.Second, "all events handled", func() bool { return k.unique() == total })
			pub, cons := c.Reconnects()
			t.Logf("handled %d before the disruption; %d handler calls for %d events; reconnects: publish %d, consume %d; %d emit errors",
				handledBefore, k.calls.Load(), total, pub, cons, len(errs))
			if handledBefore == total {
				t.Fatal("the disruption came after the stream ended")
			}
			if pub < 1 || cons < 1 {
				t.Errorf("reconnects: publish %d, consume %d; want both >= 1", pub, cons)
			}
			kinds := map[string]int{}
			for _, err := range errs {
				switch {
				case errors.Is(err, dispytch.ErrTimeout):
					kinds["timeout"]++
				case errors.Is(err, rabbitmq.ErrNacked):
					kinds["nacked"]++
				case errors.Is(err, dispytch.ErrUnroutable):
					kinds["unroutable"]++
				default:
					t.Errorf("unexpected emit error: %v", err)
				}
			}
			t.Logf("emit errors by kind: %v", kinds)
			if tc.wantErrors && len(errs) == 0 {
				t.Error("the broker was down for seconds, yet no Emit with a 1s deadline failed")
			}
			if len(errs) > 0 {
				t.Logf("first emit error: %v", errs[0])
			}
		})
	}
}

// TestConcurrentEmit: 200 goroutines emit at once through one client; also
// with several publisher channels and a tiny confirm window, where
// publishers wait for window slots.
func TestConcurrentEmit(t *testing.T) {
	t.Run("defaults", func(t *testing.T) { testConcurrentEmit(t) })
	t.Run("3-channels-window-4", func(t *testing.T) {
		testConcurrentEmit(t, rabbitmq.PublisherChannels(3), rabbitmq.ConfirmWindow(4))
	})
}

func testConcurrentEmit(t *testing.T, opts ...rabbitmq.Option) {
	e := setup(t)
	c := e.client(opts...)
	group := e.group("conc")
	k := newTracker()
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("seq", "seq", func(ev dispytch.Event[Seq]) { k.add(ev.ID) })
	run(t, l)
	em := dispytch.NewEmitter(c)
	ctx := ctxT(t, 60*time.Second)
	const goroutines, each = 200, 50
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range each {
				if err := em.Emit(ctx, Seq{N: g*each + i}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "all events handled", func() bool { return k.unique() == goroutines*each })
	if n := k.calls.Load(); n != goroutines*each {
		t.Errorf("%d handler calls for %d events", n, goroutines*each)
	}
}

// TestSingleActiveConsumerOrder: two listeners of one group on a
// single-active-consumer queue; the active one stops mid-stream and the
// other takes over. Every event is handled exactly once, in emit order.
func TestSingleActiveConsumerOrder(t *testing.T) {
	e := setup(t)
	group := e.group("sac")
	c1 := e.client(rabbitmq.SingleActiveConsumer())
	c2 := e.client(rabbitmq.SingleActiveConsumer())
	var mu sync.Mutex
	var order []int
	var byFirst atomic.Int64
	handler := func(first bool) func(dispytch.Event[Seq]) {
		return func(ev dispytch.Event[Seq]) {
			if first {
				byFirst.Add(1)
			}
			mu.Lock()
			order = append(order, ev.Body.N)
			mu.Unlock()
		}
	}
	l1 := dispytch.NewListener(c1, dispytch.ConsumerGroup(group), dispytch.Concurrency(16), dispytch.WithLogger(quietLog()))
	l1.Handle("seq", "seq", handler(true))
	stop1 := run(t, l1)
	l2 := dispytch.NewListener(c2, dispytch.ConsumerGroup(group), dispytch.Concurrency(16), dispytch.WithLogger(quietLog()))
	l2.Handle("seq", "seq", handler(false))
	run(t, l2)

	const n = 3000
	evs := make([]dispytch.Eventer, n)
	for i := range evs {
		evs[i] = Seq{N: i}
	}
	ctx := ctxT(t, 60*time.Second)
	if err := dispytch.NewEmitter(c1).EmitBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "500 events handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) >= 500
	})
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "all events handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) >= n
	})
	mu.Lock()
	defer mu.Unlock()
	if len(order) != n {
		t.Fatalf("%d handler calls for %d events", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("position %d holds event %d: order broken (%v...)", i, v, order[max(0, i-3):min(len(order), i+3)])
		}
	}
	if f := byFirst.Load(); f == 0 || f == n {
		t.Errorf("the first listener handled %d of %d: no failover happened", f, n)
	}
}

// Crash test: the consumer runs in a child process (this test binary,
// re-executed), which is killed with SIGKILL mid-stream and restarted.

const crashChildEnv = "DISPYTCH_RABBITMQ_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild runs a listener that prints every handled event ID to stdout
// before returning from the handler (so before the ack).
func crashChild() int {
	args := strings.Split(os.Getenv(crashChildEnv), ",") // exchange,exchange2,group
	c, err := rabbitmq.New(brokerURL(), rabbitmq.Exchanges(args[0], args[1]), rabbitmq.WithLogger(quietLog()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(args[2]), dispytch.Concurrency(8), dispytch.WithLogger(quietLog()))
	l.Handle("seq", "seq", func(ev dispytch.Event[Seq]) {
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		_, _ = os.Stdout.WriteString("H " + ev.ID + "\n")
	})
	go func() {
		<-l.Ready()
		mu.Lock()
		_, _ = os.Stdout.WriteString("READY\n")
		mu.Unlock()
	}()
	if err := l.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, e *env, group string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+e.x+","+e.x2+","+group)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
		close(ch.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	select {
	case l := <-ch.lines:
		if l != "READY" {
			t.Fatalf("child said %q", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready")
	}
	return ch
}

func TestConsumerCrash(t *testing.T) {
	e := setup(t)
	c := e.client()
	group := e.group("crash")
	const total = 5000
	seen := map[string]int{}
	ids := make([]string, total)
	for i := range ids {
		ids[i] = e.prefix + "-" + strconv.Itoa(i)
	}

	first := startChild(t, e, group)
	ctx := ctxT(t, 90*time.Second)
	em := dispytch.NewEmitter(c)
	for i := 0; i < total; i += 500 {
		evs := make([]dispytch.Eventer, 0, 500)
		for j := i; j < i+500; j++ {
			evs = append(evs, seqWithID{Seq{N: j}, ids[j]})
		}
		if err := em.EmitBatch(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	read := func(ch *child, until func() bool) {
		for !until() {
			select {
			case l, ok := <-ch.lines:
				if !ok {
					return
				}
				if id, ok := strings.CutPrefix(l, "H "); ok {
					seen[id]++
				}
			case <-ctx.Done():
				out, _ := exec.Command("rabbitmqctl", "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers").CombinedOutput()
				t.Logf("%s", out)
				if os.Getenv("DEBUG_QUIT") == "1" {
					_ = ch.cmd.Process.Signal(syscall.SIGQUIT)
					time.Sleep(2 * time.Second)
				}
				q, err := e.raw().QueueDeclarePassive(group, true, false, false, false, nil)
				t.Fatalf("timed out with %d of %d events seen; queue: %+v %v", len(seen), total, q, err)
			}
		}
	}
	read(first, func() bool { return len(seen) >= 1000 })
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	read(first, func() bool { return false }) // what it printed before dying
	_ = first.cmd.Wait()                      // only after reading: Wait closes the pipe
	killedAt := len(seen)
	if killedAt >= total {
		t.Fatalf("the child handled everything (%d) before it was killed", killedAt)
	}

	second := startChild(t, e, group)
	read(second, func() bool { return len(seen) == total })
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("killed after %d events; %d duplicates (unacked at the kill, redelivered)", killedAt, dups)
	if dups > rabbitmq.DefaultPrefetch {
		t.Errorf("%d duplicates, more than the prefetch of %d could explain", dups, rabbitmq.DefaultPrefetch)
	}
}

// seqWithID is a Seq with a fixed event ID.
type seqWithID struct {
	Seq
	id string
}

func (s seqWithID) EventID() string { return s.id }

// dropProxy forwards TCP connections to the broker and can drop all traffic
// silently, as a network failure does (no FIN, no RST).
type dropProxy struct {
	ln     net.Listener
	target string
	drop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *dropProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *dropProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.drop.Load() {
			// Swallow the connection attempt: the client's handshake hangs.
			p.wg.Add(1)
			go func() { defer p.wg.Done(); _, _ = io.Copy(io.Discard, c) }()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.track(up)
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst while the proxy is not dropping; once it drops, a
// connection stays dead (its bytes are discarded) until one side closes it.
func (p *dropProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	dead := false
	for {
		n, err := src.Read(buf)
		if p.drop.Load() {
			dead = true
		}
		if n > 0 && !dead {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if !dead {
				dst.Close()
			}
			return
		}
	}
}

// TestNetworkDrop: all traffic between the client and the broker is
// silently dropped for a few seconds. Heartbeats detect the dead
// connections, the client reconnects once the network is back, the listener
// resumes, and nothing is lost; emits during the outage fail at their
// deadline.
func TestNetworkDrop(t *testing.T) {
	e := setup(t)
	p := newDropProxy(t, brokerAddr(t))
	u, _ := url.Parse(brokerURL())
	u.Host = p.ln.Addr().String()
	c, err := rabbitmq.New(u.String(), rabbitmq.Exchanges(e.x, e.x2), rabbitmq.WithLogger(quietLog()),
		rabbitmq.WithConfig(amqp.Config{Heartbeat: time.Second}),
		rabbitmq.ReconnectBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	group := e.group("netdrop")
	k := newTracker()
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("seq", "seq", func(ev dispytch.Event[Seq]) {
		time.Sleep(time.Millisecond) // spread the stream over the outage
		k.add(ev.ID)
	})
	run(t, l)
	const total = 3000
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", e.prefix, i)
	}
	ctx := ctxT(t, 120*time.Second)
	errc := make(chan []error, 1)
	go func() { errc <- emitAll(ctx, dispytch.NewEmitter(c), ids, 4, 2*time.Second) }()
	eventually(t, 30*time.Second, "500 events handled", func() bool { return k.unique() >= 500 })
	p.drop.Store(true)
	time.Sleep(4 * time.Second) // the outage itself
	p.drop.Store(false)
	errs := <-errc
	eventually(t, 60*time.Second, "all events handled", func() bool { return k.unique() == total })
	pub, cons := c.Reconnects()
	t.Logf("reconnects: publish %d, consume %d; %d emit errors; %d handler calls", pub, cons, len(errs), k.calls.Load())
	if pub < 1 || cons < 1 {
		t.Errorf("reconnects: publish %d, consume %d", pub, cons)
	}
	for _, err := range errs {
		if !errors.Is(err, dispytch.ErrTimeout) {
			t.Errorf("emit error: %v", err)
		}
	}
	if len(errs) == 0 {
		t.Error("no emit failed during a 4s outage with 2s deadlines")
	}
}

// TestStaleAckAfterReconnect: a handler still running when the connection
// drops finishes after the client reconnected. Its ack must not go out on
// the new channel (where delivery tag 1 names the redelivered copy): it
// fails with ErrClosed, and the broker's redelivery is handled and acked
// normally.
func TestStaleAckAfterReconnect(t *testing.T) {
	testenv.RequireCommand(t, "rabbitmqctl")
	e := setup(t)
	c := e.client()
	group := e.group("stale")
	got := make(chan backend.DeliveryInfo, 4)
	release := make(chan struct{})
	var settled sync.Map
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()),
		dispytchtest.OnSettle(func(s dispytch.Settlement) {
			v, _ := settled.LoadOrStore(s.Outcome, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}))
	var calls atomic.Int64
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) {
		got <- ev.Delivery
		if calls.Add(1) == 1 {
			<-release
		}
	})
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 10*time.Second), Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if first.Redelivered {
		t.Fatal("first delivery marked redelivered")
	}
	rabbitmqctl(t, "close_all_connections", "stale ack test")
	eventually(t, 20*time.Second, "the consumer to reconnect", func() bool { _, cons := c.Reconnects(); return cons >= 1 })
	var second backend.DeliveryInfo
	select {
	case second = <-got: // the broker redelivered it on the new channel
	case <-time.After(20 * time.Second):
		t.Fatal("no redelivery")
	}
	close(release) // now the first handler returns and its ack is attempted
	count := func(o dispytch.Outcome) int64 {
		v, ok := settled.Load(o)
		if !ok {
			return 0
		}
		return v.(*atomic.Int64).Load()
	}
	eventually(t, 10*time.Second, "both deliveries settled", func() bool {
		return count(dispytch.OutcomeAcked)+count(dispytch.OutcomeSettleFailed) == 2
	})
	if !second.Redelivered {
		t.Error("second delivery not marked redelivered")
	}
	// Had the stale ack gone out on the new channel, it would have "succeeded"
	// (acking the redelivered copy under the same tag 1), and the copy's
	// own ack would have closed that channel (unknown delivery tag).
	if count(dispytch.OutcomeAcked) != 1 || count(dispytch.OutcomeSettleFailed) != 1 {
		t.Errorf("acked %d, failed to settle %d; want 1 and 1", count(dispytch.OutcomeAcked), count(dispytch.OutcomeSettleFailed))
	}
	ch := e.raw()
	eventually(t, 5*time.Second, "an empty queue", func() bool {
		q, err := ch.QueueDeclarePassive(group, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	if n := calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}
