package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/internal/testenv"
	dnats "github.com/dispytch/dispytch-go/nats"
)

// sharedURL is the shared nats-server of the tests (DISPYTCH_NATS_URL).
func sharedURL() string { return testenv.Getenv("DISPYTCH_NATS_URL", "nats://127.0.0.1:4222") }

// requireShared skips (or fails, under DISPYTCH_REQUIRE_BROKERS=1) when
// the shared server is unreachable.
func requireShared(t testing.TB) string {
	t.Helper()
	u := sharedURL()
	testenv.RequireTCP(t, "nats-server", strings.TrimPrefix(strings.TrimPrefix(u, "nats://"), "tls://"))
	return u
}

func quietLog() *slog.Logger {
	if os.Getenv("DISPYTCH_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

var nameSeq atomic.Int64

// uniq returns a name unique to this test run.
func uniq(prefix string) string {
	return fmt.Sprintf("%s_%s_%d", prefix, strconv.FormatInt(time.Now().UnixNano()%1e10, 36), nameSeq.Add(1))
}

// streams returns an events stream name and the options for a client on
// it, and deletes both streams of the name when the test ends.
func streams(t testing.TB, url string) (string, []dnats.Option) {
	t.Helper()
	name := strings.ToUpper(uniq("T"))
	t.Cleanup(func() { deleteStreams(url, name) })
	return name, []dnats.Option{dnats.Stream(name), dnats.WithLogger(quietLog()), dnats.ReconnectBackoff(20*time.Millisecond, 500*time.Millisecond)}
}

func deleteStreams(url, name string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, name)
	_ = js.DeleteStream(ctx, name+"_DLQ")
}

// newClient returns a client closed when the test ends.
func newClient(t testing.TB, url string, opts ...dnats.Option) *dnats.Client {
	t.Helper()
	c, err := dnats.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// jsFor returns a plain JetStream context on url, for inspecting.
func jsFor(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// inProcess is a nats-server run in the test process, with JetStream file
// storage in a directory of the test, that can be restarted on its port.
type inProcess struct {
	t    testing.TB
	opts *server.Options
	srv  atomic.Pointer[server.Server]
}

func startServer(t testing.TB) *inProcess {
	t.Helper()
	opts := &server.Options{
		ServerName: "dispytch-test",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}
	p := &inProcess{t: t, opts: opts}
	p.start()
	// Keep the port for restarts.
	opts.Port = p.srv.Load().Addr().(*net.TCPAddr).Port
	t.Cleanup(p.stop)
	return p
}

func (p *inProcess) start() {
	p.t.Helper()
	s, err := server.NewServer(p.opts)
	if err != nil {
		p.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		p.t.Fatal("nats-server did not start")
	}
	p.srv.Store(s)
}

func (p *inProcess) stop() {
	if s := p.srv.Swap(nil); s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// restart stops the server and starts it again on its port and store.
func (p *inProcess) restart() {
	p.stop()
	p.start()
}

// url is the server's client URL.
func (p *inProcess) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.opts.Port) }

// cut closes every client connection whose name starts with prefix, and
// returns how many it closed.
func (p *inProcess) cut(prefix string) int {
	s := p.srv.Load()
	cz, err := s.Connz(&server.ConnzOptions{Limit: 1024})
	if err != nil {
		p.t.Fatal(err)
	}
	n := 0
	for _, ci := range cz.Conns {
		if strings.HasPrefix(ci.Name, prefix) {
			if err := s.DisconnectClientByID(ci.Cid); err == nil {
				n++
			}
		}
	}
	return n
}

// run runs l until the test ends or the returned stop is called, and
// waits until it subscribed.
func run(t testing.TB, l *dispytch.Listener) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer wcancel()
	if err := l.WaitReady(wctx); err != nil {
		cancel()
		t.Fatalf("listener not ready: %v", err)
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawEvent is an event on a topic of its own.
type rawEvent struct {
	To string `json:"to"`
	N  int    `json:"n"`
}

func (rawEvent) Topic() string     { return "{to}" }
func (rawEvent) EventType() string { return "raw_event" }
