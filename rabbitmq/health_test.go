package rabbitmq_test

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// cutProxy forwards TCP connections to the broker; while cut, it closes
// every connection it holds and refuses new ones at once, as a broker that
// went down.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
	})
	return p
}

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go pipe(up, c)
		go pipe(c, up)
	}
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// The health of a listener and an emitter follows the broker: connecting,
// ready, reconnecting with the cause while it is unreachable, ready again
// with a reconnect counted, and events flow again.
func TestHealthThroughAnOutage(t *testing.T) {
	e := setup(t)
	p := newCutProxy(t, brokerAddr(t))
	u, _ := url.Parse(brokerURL())
	u.Host = p.ln.Addr().String()
	c, err := rabbitmq.New(u.String(), rabbitmq.Exchanges(e.x, e.x2), rabbitmq.WithLogger(quietLog()),
		rabbitmq.ReconnectBackoff(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	em := dispytch.NewEmitter(c)
	// Connecting, or already connected (the first call starts connecting).
	if h := em.Health(); h.State != dispytch.HealthConnecting && h.State != dispytch.HealthReady {
		t.Fatalf("a new producer: %+v", h)
	}
	eventually(t, 10*time.Second, "the emitter connected", func() bool { return em.Health().State == dispytch.HealthReady })
	group := e.group("health")
	handled := make(chan int, 100)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("seq", "seq", func(ev dispytch.Event[Seq]) { handled <- ev.Body.N })
	stop := run(t, l)
	if h := l.Health(); h.State != dispytch.HealthReady {
		t.Fatalf("subscribed: %+v", h)
	}
	ctx := ctxT(t, 60*time.Second)
	if err := em.Emit(ctx, Seq{N: 1}); err != nil {
		t.Fatal(err)
	}
	<-handled

	p.setCut(true)
	eventually(t, 20*time.Second, "the listener reconnecting", func() bool { return l.Health().State == dispytch.HealthReconnecting })
	eventually(t, 20*time.Second, "the emitter reconnecting", func() bool { return em.Health().State == dispytch.HealthReconnecting })
	for _, h := range []dispytch.Health{l.Health(), em.Health()} {
		if h.Err == nil || !strings.Contains(h.Err.Error(), "rabbitmq") {
			t.Errorf("no cause: %+v", h)
		}
	}
	p.setCut(false)
	eventually(t, 20*time.Second, "the emitter ready again", func() bool { return em.Health().State == dispytch.HealthReady })
	eventually(t, 20*time.Second, "the listener ready again", func() bool { return l.Health().State == dispytch.HealthReady })
	if lh, eh := l.Health(), em.Health(); lh.Reconnects < 1 || eh.Reconnects < 1 || lh.Err != nil || eh.Err != nil {
		t.Fatalf("listener %+v, emitter %+v", lh, eh)
	}
	if err := em.Emit(ctx, Seq{N: 2}); err != nil {
		t.Fatal(err)
	}
	for n := 0; n != 2; {
		select {
		case n = <-handled:
		case <-ctx.Done():
			t.Fatal("not handled after the outage")
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	if h := em.Health(); h.State != dispytch.HealthStopped {
		t.Fatalf("closed: %+v", h)
	}
}
