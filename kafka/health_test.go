package kafka_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// cutListener is a broker's listener whose connections the test can cut:
// while cut, it closes every connection it has and every new one at once,
// as a broker that went away; the cluster keeps its state.
type cutListener struct {
	net.Listener
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (l *cutListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		return c, nil
	}
}

func (l *cutListener) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for _, c := range l.conns {
			c.Close()
		}
		l.conns = nil
	}
}

// The health of a listener and an emitter follows the cluster: ready,
// reconnecting with the broker's error while it is unreachable, ready
// again (a reconnect counted) once it is back, and events flow again.
func TestHealthThroughAnOutage(t *testing.T) {
	const topic, group = "health-events", "health-svc"
	var lns []*cutListener
	c := newCluster(t, kfake.NumBrokers(1), kfake.ListenFn(func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		cl := &cutListener{Listener: ln}
		lns = append(lns, cl)
		return cl, nil
	}))
	cut := func(on bool) {
		for _, l := range lns {
			l.setCut(on)
		}
	}
	createTopics(t, c, 1, topic, group+".dlq")
	p := newProducer(t, c, kafka.ClientOptions(retryOpts()...))
	em := dispytch.NewEmitter(p)
	// Connecting, or already connected (the first call starts connecting).
	if h := em.Health(); h.State != dispytch.HealthConnecting && h.State != dispytch.HealthReady {
		t.Fatalf("a new producer: %+v", h)
	}
	eventually(t, 10*time.Second, "the producer connected", func() bool { return em.Health().State == dispytch.HealthReady })

	k := newConsumer(t, c)
	handled := make(chan int, 10)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { handled <- ev.Body.Seq })
	run := start(t, l)
	if h := l.Health(); h.State != dispytch.HealthReady || h.Err != nil {
		t.Fatalf("subscribed: %+v", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := em.Emit(ctx, Ev{T: topic, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if got := <-handled; got != 1 {
		t.Fatal(got)
	}

	cut(true)
	eventually(t, 20*time.Second, "the listener reconnecting", func() bool { return l.Health().State == dispytch.HealthReconnecting })
	eventually(t, 20*time.Second, "the emitter reconnecting", func() bool { return em.Health().State == dispytch.HealthReconnecting })
	for _, h := range []dispytch.Health{l.Health(), em.Health()} {
		if h.Err == nil || !strings.Contains(h.Err.Error(), "127.0.0.1") {
			t.Errorf("the cause should name the broker: %+v", h)
		}
	}

	cut(false)
	eventually(t, 30*time.Second, "the emitter ready again", func() bool { return em.Health().State == dispytch.HealthReady })
	if h := em.Health(); h.Reconnects < 1 || h.Err != nil {
		t.Errorf("emitter: %+v", h)
	}
	if err := em.Emit(ctx, Ev{T: topic, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	for seq := 0; seq != 2; { // 1 may come again: its commit may not have made it before the cut
		select {
		case seq = <-handled:
		case <-ctx.Done():
			t.Fatalf("not handled after the outage: %+v", l.Health())
		}
	}
	eventually(t, 10*time.Second, "the listener ready again", func() bool { return l.Health().State == dispytch.HealthReady })
	if h := l.Health(); h.Reconnects < 1 || h.Err != nil {
		t.Errorf("listener: %+v", h)
	}
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	if h := l.Health(); h.State != dispytch.HealthStopped {
		t.Fatalf("stopped: %+v", h)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	_ = p.Close(cctx)
	if h := em.Health(); h.State != dispytch.HealthStopped {
		t.Fatalf("closed producer: %+v", h)
	}
}

// Lag reports, per assigned partition, the records not committed yet: a
// handler that holds the first record leaves the rest waiting; once it
// lets go, the lag drains to 0.
func TestConsumerLag(t *testing.T) {
	c := newCluster(t)
	const topic, group, n = "lag-events", "lag-svc", 20
	createTopics(t, c, 2, topic, group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	evs := make([]Ev, n)
	for i := range evs {
		evs[i] = Ev{T: topic, Key: string(rune('a' + i%2)), Seq: i}
	}
	emitAll(t, em, evs)
	k := newConsumer(t, c)
	var lr backend.LagReporter = k
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if lags, err := lr.Lag(ctx); err != nil || len(lags) != 0 {
		t.Fatalf("no Consume running: %v %v", lags, err)
	}
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	defer let()
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.ShutdownTimeout(time.Second), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	start(t, l)
	var lags []backend.PartitionLag
	eventually(t, 20*time.Second, "lag on both partitions", func() bool {
		var err error
		lags, err = lr.Lag(ctx)
		if err != nil {
			t.Logf("lag: %v", err)
		}
		return len(lags) == 2
	})
	var total int64
	for _, pl := range lags {
		if pl.Group != group || pl.Topic != topic || pl.Lag != pl.End-max(pl.Committed, 0) {
			t.Fatalf("%+v", pl)
		}
		total += pl.Lag
	}
	if total != n {
		t.Fatalf("lag %d, want %d (%+v)", total, n, lags)
	}
	let()
	eventually(t, 20*time.Second, "the lag drained", func() bool {
		lags, err := lr.Lag(ctx)
		if err != nil || len(lags) != 2 {
			return false
		}
		for _, pl := range lags {
			if pl.Lag != 0 || (pl.End > 0 && pl.Committed != pl.End) {
				return false
			}
		}
		return true
	})
}
