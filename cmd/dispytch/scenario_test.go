package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/dlq"
)

// brokerEnv is one backend, as the scenario drives it.
type brokerEnv struct {
	name     string
	flags    []string // -b URL and the backend's flags
	prefix   string   // of the topics and groups, unique to the run
	consumer backend.Consumer
	producer backend.Producer
	store    backend.DeadLetterStore
	// topics makes topics exist (Kafka); nil where publishing needs none.
	topics func(t *testing.T, names ...string)
	// untouched checks that tail left no trace on the broker (no consumer
	// group; the service's queue and its messages alone).
	untouched func(t *testing.T)
}

// Job is the service's event.
type Job struct {
	N    int  `json:"n"`
	Fail bool `json:"fail"`
}

// service is a listener on the backend, whose "worker" fails the jobs that
// ask for it while failing is set.
type service struct {
	listener *dispytch.Listener
	failing  atomic.Bool
	mu       sync.Mutex
	handled  map[string]int // event id -> times handled
	orders   []string       // ids of the order events it handled
}

func startService(t *testing.T, e *brokerEnv) *service {
	t.Helper()
	s := &service{handled: map[string]int{}}
	s.failing.Store(true)
	l := dispytch.NewListener(e.consumer, dispytch.ConsumerGroup(e.prefix+"svc"), dispytch.WithLogger(quietLogger()),
		dispytch.StartTimeout(60*time.Second),
		dispytch.Envelopes(codec.Headers, codec.CloudEvents(codec.CloudEventsBinary, ""), codec.CloudEvents(codec.CloudEventsStructured, "")))
	l.Handle(e.prefix+"jobs", "job", func(ev dispytch.Event[Job]) error {
		if ev.Body.Fail && s.failing.Load() {
			return fmt.Errorf("boom: job %d", ev.Body.N)
		}
		s.mu.Lock()
		s.handled[ev.ID]++
		s.mu.Unlock()
		return nil
	}, dispytch.Name("worker"))
	l.Handle(e.prefix+"orders.{region}", "order_created", func(ev dispytch.Event[json.RawMessage]) {
		s.mu.Lock()
		s.orders = append(s.orders, ev.ID)
		s.mu.Unlock()
	}, dispytch.Name("orders"))
	l.Handle(e.prefix+"orders.{region}", "order_paid", func(ev dispytch.Event[json.RawMessage]) {
		s.mu.Lock()
		s.orders = append(s.orders, ev.ID)
		s.mu.Unlock()
	}, dispytch.Name("payments"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service: %v", err)
		}
	})
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer rcancel()
	if err := l.WaitReady(rctx); err != nil {
		t.Fatalf("service never ready: %v", err)
	}
	s.listener = l
	return s
}

func (s *service) orderIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.orders)
}

func (s *service) timesHandled(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handled[id]
}

// eventually polls cond every 50 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *brokerEnv) args(args ...string) []string {
	return append(append([]string{args[0]}, e.flags...), args[1:]...)
}

func (e *brokerEnv) dlqArgs(sub string, args ...string) []string {
	return append(append([]string{"dlq", sub}, e.flags...), args...)
}

// scenario runs the command against one backend: emit, tail, and every
// dead-letter operation, checking what the broker and the service saw.
func scenario(t *testing.T, e *brokerEnv) {
	jobs, dlqName := e.prefix+"jobs", e.prefix+"svc.dlq"
	regions := []string{e.prefix + "orders.eu", e.prefix + "orders.us"}
	if e.topics != nil {
		e.topics(t, append([]string{jobs, dlqName}, regions...)...)
	}
	svc := startService(t, e)

	t.Run("emit", func(t *testing.T) {
		r := mustRun(t, "", e.args("emit", jobs, "job", `{"n": 1}`, "--key", "k1", "--header", "trace=abc", "--id", e.prefix+"fixed-id")...)
		if strings.TrimSpace(r.stdout) != e.prefix+"fixed-id" {
			t.Fatalf("emit printed %q", r.stdout)
		}
		eventually(t, 30*time.Second, "the service handles the emitted job", func() bool { return svc.timesHandled(e.prefix+"fixed-id") == 1 })

		// Many, from standard input, in msgpack: the listener reads both codecs.
		r = mustRun(t, "{\"n\": 2}\n\n{\"n\": 3}\n{\"n\": 4}\n", e.args("emit", jobs, "job", "--codec", "msgpack")...)
		ids := strings.Fields(r.stdout)
		if len(ids) != 3 {
			t.Fatalf("emit of 3 lines printed %q", r.stdout)
		}
		for _, id := range ids {
			eventually(t, 30*time.Second, "the service handles msgpack job "+id, func() bool { return svc.timesHandled(id) == 1 })
		}

		// A bad line sends nothing.
		before := svc.listener.Stats().Received
		r = runBin(t, "{\"n\": 5}\n{\"n\": \n", nil, e.args("emit", jobs, "job")...)
		if r.code != 1 || !strings.Contains(r.stderr, "line 2: not JSON") || r.stdout != "" {
			t.Fatalf("bad line: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		mustRun(t, "", e.args("emit", jobs, "job", `{"n": 6}`)...) // a marker after it
		eventually(t, 30*time.Second, "the marker arrives", func() bool { return svc.listener.Stats().Received >= before+1 })
		time.Sleep(200 * time.Millisecond)
		if got := svc.listener.Stats().Received; got != before+1 {
			t.Errorf("the service received %d messages after the bad input, want only the marker", got-before)
		}
	})

	t.Run("envelope formats", func(t *testing.T) {
		// Each mode of --envelope reaches a listener that reads it, with
		// the id emit printed.
		for _, mode := range []string{"headers", "cloudevents", "cloudevents-structured"} {
			for _, cd := range []string{"json", "msgpack"} {
				r := mustRun(t, "", e.args("emit", jobs, "job", `{"n": 7}`, "--envelope", mode, "--codec", cd, "--source", "urn:test:cli")...)
				id := strings.TrimSpace(r.stdout)
				if id == "" {
					t.Fatalf("--envelope %s printed no id (stderr %q)", mode, r.stderr)
				}
				eventually(t, 30*time.Second, "the service handles the job sent with --envelope "+mode+" --codec "+cd,
					func() bool { return svc.timesHandled(id) == 1 })
			}
		}
		r := runBin(t, "", nil, e.args("emit", jobs, "job", `{}`, "--source", "urn:x")...)
		if r.code != 2 || !strings.Contains(r.stderr, "--source is the CloudEvents source") {
			t.Errorf("--source without CloudEvents: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("tail", func(t *testing.T) {
		tail := start(t, "dispytch: tailing", e.args("tail", e.prefix+"orders.{region}", "--type", "order_created", "--type", "order_paid",
			"--json", "--count", "3")...)
		tail.waitReady(t)
		em := dispytch.NewEmitter(e.producer)
		ctx := context.Background()
		var want []string
		for i, ev := range []dispytch.Eventer{
			order{Region: "eu", Type: "order_created", Prefix: e.prefix},
			order{Region: "eu", Type: "order_refunded", Prefix: e.prefix}, // filtered out by type
			order{Region: "us", Type: "order_paid", Prefix: e.prefix},
			order{Region: "us", Type: "order_created", Prefix: e.prefix},
		} {
			id := fmt.Sprintf("%sorder-%d", e.prefix, i)
			if err := em.Emit(ctx, ev, dispytch.EventID(id), dispytch.Key("k")); err != nil {
				t.Fatal(err)
			}
			if ev.EventType() != "order_refunded" {
				want = append(want, id)
			}
		}
		tail.wait(t, 60*time.Second)
		if tail.exitCode != 0 {
			t.Fatalf("tail: exit %d: %s", tail.exitCode, tail.stderr.String())
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(tail.stdout.String()), "\n") {
			var l tailLine
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("tail printed %q: %v", line, err)
			}
			if !strings.HasPrefix(l.Topic, e.prefix+"orders.") || l.Key != "k" || l.Timestamp == "" || l.Codec != "json" {
				t.Errorf("tail line %+v", l)
			}
			var body map[string]any
			if err := json.Unmarshal(l.Body, &body); err != nil || body["region"] == nil {
				t.Errorf("tail body %s", l.Body)
			}
			got = append(got, l.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("tail printed %v, want %v", got, want)
		}
		// The service still gets every order: the tail took nothing from it.
		eventually(t, 30*time.Second, "the service handles the orders", func() bool { return len(svc.orderIDs()) == 3 })
		if e.untouched != nil {
			e.untouched(t)
		}
	})

	t.Run("dlq", func(t *testing.T) {
		var failed []string
		for i := range 3 {
			r := mustRun(t, "", e.args("emit", jobs, "job", fmt.Sprintf(`{"n": %d, "fail": true}`, 100+i))...)
			failed = append(failed, strings.TrimSpace(r.stdout))
		}
		q := dlq.Open(e.store, dlqName)
		eventually(t, 60*time.Second, "three dead letters", func() bool {
			n, err := q.Count(context.Background(), nil)
			return err == nil && n == 3
		})

		r := mustRun(t, "", e.dlqArgs("ls", dlqName)...)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "#") || !strings.Contains(r.stderr, "3 dead letters in "+dlqName) {
			t.Fatalf("dlq ls:\n%s\n%s", r.stdout, r.stderr)
		}
		for i, line := range lines[1:] {
			for _, want := range []string{"handler_error", "worker", jobs, "job", fmt.Sprintf("boom: job %d", 100+i)} {
				if !strings.Contains(line, want) {
					t.Errorf("dlq ls row %d lacks %q: %s", i+1, want, line)
				}
			}
		}
		r = mustRun(t, "", e.dlqArgs("ls", dlqName, "--json")...)
		var letters []letterJSON
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var l letterJSON
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("dlq ls --json: %q: %v", line, err)
			}
			letters = append(letters, l)
		}
		if len(letters) != 3 {
			t.Fatalf("dlq ls --json: %d letters", len(letters))
		}
		for i, l := range letters {
			if l.ID != failed[i] || l.Reason != "handler_error" || l.Handler != "worker" || l.Attempts != 1 || l.Topic != jobs ||
				l.Group != e.prefix+"svc" || !strings.Contains(l.Error, "boom") || l.LastFailure == "" {
				t.Errorf("letter %d: %+v (want id %s)", i+1, l, failed[i])
			}
		}
		if r := mustRun(t, "", e.dlqArgs("ls", dlqName, "--handler", "nobody")...); r.stdout != "" || !strings.Contains(r.stderr, "0 dead letters") {
			t.Errorf("dlq ls --handler nobody: %q %q", r.stdout, r.stderr)
		}

		r = mustRun(t, "", e.dlqArgs("show", dlqName, "2")...)
		for _, want := range []string{"letter:        #2 of " + dlqName, "id:            " + failed[1], "reason:        handler_error",
			"handler:       worker", "error:         boom: job 101", `"fail": true`, `"n": 101`} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("dlq show 2 lacks %q:\n%s", want, r.stdout)
			}
		}
		r = mustRun(t, "", e.dlqArgs("show", dlqName, failed[2], "--json")...)
		var shown letterJSON
		if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.N != 3 || string(shown.Body) == "" {
			t.Errorf("dlq show ID --json: %v %+v", err, shown)
		}
		if r := runBin(t, "", nil, e.dlqArgs("show", dlqName, "9")...); r.code != 1 || !strings.Contains(r.stderr, "there is no #9") {
			t.Errorf("dlq show 9: %d %q", r.code, r.stderr)
		}

		r = mustRun(t, "", e.dlqArgs("redrive", dlqName, "--dry-run")...)
		if !strings.Contains(r.stdout, "would redrive 3 dead letters") {
			t.Errorf("dry run: %q", r.stdout)
		}
		if n, _ := q.Count(context.Background(), nil); n != 3 {
			t.Fatalf("the dry run changed the queue: %d letters", n)
		}

		svc.failing.Store(false)
		r = mustRun(t, "", e.dlqArgs("redrive", dlqName, "--progress", "always")...)
		if !strings.Contains(r.stdout, "redrove 3 dead letters") || !strings.Contains(r.stderr, "] 3/3 redriving") {
			t.Errorf("redrive: stdout %q, stderr %q", r.stdout, r.stderr)
		}
		for _, id := range failed {
			eventually(t, 30*time.Second, "the redriven job "+id+" is handled", func() bool { return svc.timesHandled(id) == 1 })
		}
		if r := mustRun(t, "", e.dlqArgs("ls", dlqName)...); !strings.Contains(r.stderr, "0 dead letters") {
			t.Errorf("after redrive: %s %s", r.stdout, r.stderr)
		}

		// Purge asks first.
		svc.failing.Store(true)
		for i := range 2 {
			mustRun(t, "", e.args("emit", jobs, "job", fmt.Sprintf(`{"n": %d, "fail": true}`, 200+i))...)
		}
		eventually(t, 60*time.Second, "two new dead letters", func() bool {
			n, err := q.Count(context.Background(), nil)
			return err == nil && n == 2
		})
		if r := mustRun(t, "", e.dlqArgs("purge", dlqName, "--dry-run")...); !strings.Contains(r.stdout, "would purge 2") {
			t.Errorf("purge dry run: %q", r.stdout)
		}
		r = runBin(t, "", nil, e.dlqArgs("purge", dlqName)...)
		if r.code != 1 || !strings.Contains(r.stderr, "purge 2 dead letters from "+dlqName+" for good? [y/N]") || !strings.Contains(r.stderr, "not confirmed") {
			t.Errorf("purge without an answer: %d %q", r.code, r.stderr)
		}
		if n, _ := q.Count(context.Background(), nil); n != 2 {
			t.Fatalf("an unconfirmed purge removed letters: %d left", n)
		}
		r = mustRun(t, "y\n", e.dlqArgs("purge", dlqName)...)
		if !strings.Contains(r.stdout, "purged 2 dead letters") {
			t.Errorf("purge: %q %q", r.stdout, r.stderr)
		}
		if n, err := q.Count(context.Background(), nil); err != nil || n != 0 {
			t.Errorf("after purge: %d letters, %v", n, err)
		}
	})
}

// order is the tail's event: its topic names the region.
type order struct {
	Prefix string `json:"-"`
	Region string `json:"region"`
	Type   string `json:"-"`
}

func (o order) Topic() string     { return o.Prefix + "orders." + o.Region }
func (o order) EventType() string { return o.Type }

var _ = errors.New
