package compare

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain turns the test binary into a child run when the harness
// re-executes it, as cmd/compare does.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	os.Exit(m.Run())
}

// TestQuick runs every case of the harness with small counts, one round,
// and checks that every contender produced numbers and that the report
// renders: the harness's smoke test for CI. The RabbitMQ case is skipped
// when no broker listens, unless DISPYTCH_REQUIRE_BROKERS=1.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes and brokers")
	}
	url := os.Getenv("DISPYTCH_RABBITMQ_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if err := pingAMQP(url); err != nil && os.Getenv("DISPYTCH_REQUIRE_BROKERS") == "1" {
		t.Fatalf("RabbitMQ required: %v", err)
	}
	cfg := Config{
		Rounds: 1, LatN: 50, LatRate: 1000, Publishers: 4, AMQPPublishers: 8, AMQPURL: url,
		RunTimeout: 2 * time.Minute,
		N: map[string]int{"memory-queued": 5000, "memory-together": 5000, "kafka": 1000, "rabbitmq": 300, "nats": 1000, "redis": 1000,
			"backlog-memory": 20000, "backlog-kafka": 20000},
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	run, err := Compare(context.Background(), cfg)
	t.Log("\n" + progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Cases) != len(Cases()) {
		t.Fatalf("%d cases ran, want %d", len(run.Cases), len(Cases()))
	}
	for _, cr := range run.Cases {
		if cr.Skipped != "" {
			t.Logf("%s skipped: %s", cr.Case.Name, cr.Skipped)
			continue
		}
		if len(cr.Results) != len(cr.Case.Contenders) {
			t.Errorf("%s: %d results for %d contenders", cr.Case.Name, len(cr.Results), len(cr.Case.Contenders))
		}
		for _, r := range cr.Results {
			name := cr.Case.Name + "/" + r.Spec.Contender
			if r.Err != "" {
				t.Errorf("%s: %s", name, r.Err)
				continue
			}
			if r.PubRate <= 0 || r.ConsRate <= 0 || r.PeakRSS <= 0 {
				t.Errorf("%s: missing numbers: %+v", name, r)
			}
			if cr.Case.Mode != ModeBacklog && (r.LatP50 <= 0 || r.LatP99 < r.LatP50) {
				t.Errorf("%s: bad latency p50 %v p99 %v", name, r.LatP50, r.LatP99)
			}
			for _, n := range r.Notes {
				if !strings.Contains(n, "lag") && !strings.Contains(n, "twice") && !strings.Contains(n, "non-empty") {
					continue
				}
				// Dispytch and the raw clients must leave nothing behind.
				// Peers are reported as they behave: watermill-kafka
				// auto-commits every second and may stop with a record
				// uncommitted.
				if strings.HasPrefix(r.Spec.Contender, "watermill") {
					t.Logf("%s: %s", name, n)
					continue
				}
				t.Errorf("%s: %s", name, n)
			}
		}
	}
	var md bytes.Buffer
	WriteMarkdown(&md, run, "go test ./internal/compare -run TestQuick")
	for _, want := range []string{"### In memory", "### Kafka", "### Goals", "| dispytch |", "Ratios of medians"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + md.String())
	}
}

func TestSummarize(t *testing.T) {
	c := Case{Name: "x", Contenders: []Contender{{Name: "a"}, {Name: "b"}}}
	cr := CaseRun{Case: c, Results: []Result{
		{Spec: Spec{Contender: "a", Round: 1}, PubRate: 10, ConsRate: 5, PeakRSS: 3 << 20},
		{Spec: Spec{Contender: "b", Round: 1}, PubRate: 1, ConsRate: 1},
		{Spec: Spec{Contender: "a", Round: 2}, PubRate: 30, ConsRate: 7, PeakRSS: 1 << 20},
		{Spec: Spec{Contender: "a", Round: 3}, PubRate: 20, ConsRate: 6, PeakRSS: 2 << 20},
		{Spec: Spec{Contender: "b", Round: 2}, Err: "boom"},
	}}
	s := Summarize(cr)
	if s[0].Pub != (Spread{Median: 20, Min: 10, Max: 30}) || s[0].Cons.Median != 6 || s[0].PeakRSS != 2<<20 {
		t.Errorf("a: %+v", s[0])
	}
	if s[1].Runs != 2 || s[1].Failed != 1 || s[1].Pub.Median != 1 {
		t.Errorf("b: %+v", s[1])
	}
	if got := ratio(s[0].Cons.Median, s[1].Cons.Median); got != "6.00×" {
		t.Errorf("ratio %s", got)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 0.5); p != 51 && p != 50 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(d, 0.99); p != 99 {
		t.Errorf("p99 %v", p)
	}
}
