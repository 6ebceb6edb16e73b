package rabbitmq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

func brokerURL() string {
	return testenv.Getenv("DISPYTCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

func brokerAddr(t testing.TB) string {
	u, err := url.Parse(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	if !strings.Contains(host, ":") {
		host += ":5672"
	}
	return host
}

// quietLog keeps expected warnings (reconnects, retries) out of the test
// output unless -v and DISPYTCH_TEST_LOG=1.
func quietLog() *slog.Logger {
	if os.Getenv("DISPYTCH_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// env is one test's share of the broker: unique exchange and queue names,
// deleted when the test ends.
type env struct {
	t      testing.TB
	prefix string
	x, x2  string

	mu      sync.Mutex
	queues  []string
	clients []*rabbitmq.Client
}

// closeClients closes the clients made so far (they are closed at cleanup
// anyway).
func (e *env) closeClients() {
	e.mu.Lock()
	cs := e.clients
	e.clients = nil
	e.mu.Unlock()
	for _, c := range cs {
		c.Close(context.Background())
	}
}

func setup(t testing.TB) *env {
	t.Helper()
	testenv.RequireTCP(t, "RabbitMQ", brokerAddr(t))
	e := &env{t: t, prefix: "t" + backend.NewUUID()[:8]}
	e.x = e.prefix + "-x"
	e.x2 = e.prefix + "-x2"
	t.Cleanup(e.cleanup)
	return e
}

// group returns a unique group name and registers its queues for cleanup.
func (e *env) group(name string, tiers ...time.Duration) string {
	g := e.prefix + "-" + name
	e.mu.Lock()
	e.queues = append(e.queues, g, g+".dlq")
	for _, d := range tiers {
		e.queues = append(e.queues, g+".retry."+d.String())
	}
	e.mu.Unlock()
	return g
}

func (e *env) addQueue(q string) {
	e.mu.Lock()
	e.queues = append(e.queues, q)
	e.mu.Unlock()
}

// client returns a client on the test's exchanges, closed at cleanup.
func (e *env) client(opts ...rabbitmq.Option) *rabbitmq.Client {
	e.t.Helper()
	all := append([]rabbitmq.Option{
		rabbitmq.Exchanges(e.x, e.x2),
		rabbitmq.WithLogger(quietLog()),
		rabbitmq.ReconnectBackoff(50*time.Millisecond, 1*time.Second),
	}, opts...)
	c, err := rabbitmq.New(brokerURL(), all...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	e.mu.Lock()
	e.clients = append(e.clients, c)
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		if errors.Is(err, dispytch.ErrPermanent) {
			e.t.Fatalf("client: %v", err) // the broker answered: a real failure
		}
		testenv.Unavailable(e.t, "RabbitMQ: %v", err)
	}
	return c
}

// raw opens a plain amqp091 channel, closed at cleanup.
func (e *env) raw() *amqp.Channel {
	e.t.Helper()
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		testenv.Unavailable(e.t, "RabbitMQ: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return ch
}

func (e *env) cleanup() {
	ensureBrokerUp(e.t)
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		e.t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, q := range e.queues {
		ch, err := conn.Channel()
		if err != nil {
			e.t.Logf("cleanup: %v", err)
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		ch.Close()
	}
	for _, x := range []string{e.x, e.x2, e.x + ".dlx"} {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_ = ch.ExchangeDelete(x, false, false)
		ch.Close()
	}
}

// ensureBrokerUp restarts the RabbitMQ application if a test left it
// stopped, and waits for the port.
func ensureBrokerUp(t testing.TB) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return
	}
	conn, err := amqp.Dial(brokerURL())
	if err == nil {
		conn.Close()
		return
	}
	out, err := exec.Command("rabbitmqctl", "start_app").CombinedOutput()
	if err != nil {
		t.Logf("rabbitmqctl start_app: %v: %s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := amqp.Dial(brokerURL()); err == nil {
			conn.Close()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("RabbitMQ did not come back")
}

// run runs l until the test ends, after it is ready.
func run(t testing.TB, l *dispytch.Listener) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	select {
	case <-l.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("listener: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("listener not ready after 30s")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(60 * time.Second):
				err = errors.New("listener did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("listener: %v", err)
		}
	})
	return stop
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queueDepth returns the ready messages of q.
func queueDepth(t testing.TB, ch *amqp.Channel, q string) int {
	t.Helper()
	n, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %q: %v", q, err)
	}
	return n.Messages
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
