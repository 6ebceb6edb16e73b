package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/health"
	"github.com/dispytch/dispytch-go/memory"
)

type Note struct {
	N int `json:"n"`
}

func (Note) Topic() string     { return "notes" }
func (Note) EventType() string { return "note" }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// probe calls h and decodes the report.
func probe(t *testing.T, h http.Handler) (int, health.Report) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	var r health.Report
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	return w.Code, r
}

func start(t *testing.T, l *dispytch.Listener) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-errc
	})
	if err := l.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return cancel
}

// Readiness fails for a listener not running yet and passes once it is
// subscribed; liveness passes throughout; an emitter is ready until its
// broker closes.
func TestReadyOnceSubscribed(t *testing.T) {
	b := memory.New()
	l := dispytch.NewListener(b, dispytch.WithLogger(quiet()))
	l.Handle("notes", "note", func() {})
	em := dispytch.NewEmitter(b)
	checks := health.New()
	checks.Add("notes", l)
	checks.Add("events", em)
	code, r := probe(t, checks.Ready())
	if code != http.StatusServiceUnavailable || r.Ready || r.Components[0].Problem != "not running" || !r.Components[1].Ready {
		t.Fatalf("%d %+v", code, r)
	}
	if code, _ := probe(t, checks.Live()); code != http.StatusOK {
		t.Fatalf("live: %d", code)
	}
	start(t, l)
	if code, r := probe(t, checks.Ready()); code != http.StatusOK || !r.Ready || r.Components[0].State != "ready" || r.Components[0].Kind != "listener" {
		t.Fatalf("%d %+v", code, r)
	}
	b.Close(context.Background())
	code, r = probe(t, checks.Ready())
	if code != http.StatusServiceUnavailable || r.Components[1].State != "stopped" || r.Components[1].Problem != "closed" {
		t.Fatalf("after close: %d %+v", code, r)
	}
}

// A listener whose handlers make no progress while messages wait fails
// both probes after StallAfter, and passes again once messages settle.
func TestStalledListener(t *testing.T) {
	b := memory.New()
	defer b.Close(context.Background())
	l := dispytch.NewListener(b, dispytch.WithLogger(quiet()), dispytch.Concurrency(1))
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	l.Handle("notes", "note", func() { started <- struct{}{}; <-release })
	start(t, l)
	checks := health.New(health.StallAfter(20 * time.Millisecond))
	checks.Add("notes", l)
	em := dispytch.NewEmitter(b)
	for i := range 2 {
		if err := em.Emit(context.Background(), Note{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	probe(t, checks.Ready()) // the first sample
	deadline := time.Now().Add(10 * time.Second)
	var code int
	var r health.Report
	for {
		code, r = probe(t, checks.Live())
		if code == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c := r.Components[0]
	if code != http.StatusServiceUnavailable || c.Live || c.Ready || c.InFlight != 2 || c.StalledSeconds < 0.02 || !strings.HasPrefix(c.Problem, "no progress") {
		t.Fatalf("stalled: %d %+v", code, r)
	}
	if code, _ := probe(t, checks.Ready()); code != http.StatusServiceUnavailable {
		t.Fatalf("ready while stalled: %d", code)
	}
	close(release)
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, r = probe(t, checks.Ready())
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code != http.StatusOK || r.Components[0].InFlight != 0 {
		t.Fatalf("after release: %d %+v", code, r)
	}
}

// droppy is a consumer that loses its connection after subscribing, as a
// broker client reports it.
type droppy struct {
	*memory.Broker
	lost chan error
}

func (d *droppy) Consume(ctx context.Context, _ backend.Subscription, in backend.Inbox) error {
	in.Ready()
	select {
	case err := <-d.lost:
		in.(backend.ConnObserver).Disconnected(err)
	case <-ctx.Done():
	}
	<-ctx.Done()
	<-in.Done()
	return nil
}

// Readiness fails, with the cause, while a listener's connection is lost;
// liveness does not (a restart does not bring the broker back).
func TestDisconnectedListener(t *testing.T) {
	d := &droppy{Broker: memory.New(), lost: make(chan error, 1)}
	l := dispytch.NewListener(d, dispytch.WithLogger(quiet()))
	l.Handle("notes", "note", func() {})
	start(t, l)
	checks := health.New()
	checks.Add("notes", l)
	d.lost <- errors.New("dial tcp 10.0.0.1:5672: connection refused")
	deadline := time.Now().Add(10 * time.Second)
	for l.Health().State != dispytch.HealthReconnecting && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	code, r := probe(t, checks.Ready())
	c := r.Components[0]
	if code != http.StatusServiceUnavailable || c.State != "reconnecting" || !strings.Contains(c.Error, "connection refused") || c.Problem == "" {
		t.Fatalf("%d %+v", code, r)
	}
	if code, _ := probe(t, checks.Live()); code != http.StatusOK {
		t.Fatalf("live: %d", code)
	}
}

// nowhere never subscribes.
type nowhere struct{ *memory.Broker }

func (nowhere) Consume(ctx context.Context, _ backend.Subscription, _ backend.Inbox) error {
	<-ctx.Done()
	return errors.New("dial tcp: connection refused")
}

// A listener that never subscribed fails both probes once Run gave up.
func TestNeverSubscribed(t *testing.T) {
	l := dispytch.NewListener(nowhere{memory.New()}, dispytch.WithLogger(quiet()), dispytch.StartTimeout(10*time.Millisecond))
	l.Handle("notes", "note", func() {})
	checks := health.New()
	checks.Add("notes", l)
	if err := l.Run(context.Background()); !errors.Is(err, dispytch.ErrNotReady) {
		t.Fatal(err)
	}
	code, r := probe(t, checks.Ready())
	c := r.Components[0]
	if code != http.StatusServiceUnavailable || c.State != "stopped" || !strings.Contains(c.Error, "never became ready") {
		t.Fatalf("%d %+v", code, r)
	}
	if code, _ := probe(t, checks.Live()); code != http.StatusServiceUnavailable {
		t.Fatalf("live: %d", code)
	}
}
