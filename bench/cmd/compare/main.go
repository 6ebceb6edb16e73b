// Command compare benchmarks Dispytch for Go against raw broker clients and
// Watermill on the same machine in the same run, and prints a markdown
// report.
//
//	go run ./cmd/compare                 # everything, full counts (~12 minutes on 2 cores)
//	go run ./cmd/compare -quick          # everything, small counts (~2 minutes)
//	go run ./cmd/compare -cases kafka,rabbitmq -rounds 5 -n-kafka 50000
//
// Every contender runs in a fresh child process (this program started
// again), alternating with the other contenders of its case, so that peak
// RSS and GC state do not carry over. The Kafka cases use an in-process
// kfake cluster that this process starts; the RabbitMQ case needs a broker
// (-amqp, default amqp://guest:guest@127.0.0.1:5672/) and is skipped
// without one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/bench/internal/compare"
)

func main() {
	if compare.IsChild() {
		os.Exit(compare.ChildMain())
	}
	os.Exit(run())
}

func run() int {
	var (
		quick      = flag.Bool("quick", false, "small message counts: the whole comparison in about two minutes")
		cases      = flag.String("cases", "", "comma-separated cases to run (default all): "+caseNames())
		rounds     = flag.Int("rounds", 3, "rounds per contender (contenders alternate)")
		latN       = flag.Int("lat-n", 0, "messages of the paced latency phase (default 2000, quick 300)")
		latRate    = flag.Int("lat-rate", 1000, "publish rate of the paced latency phase, msg/s")
		pubs       = flag.Int("publishers", 16, "concurrent publishers of watermill-kafka-concurrent")
		amqpPubs   = flag.Int("amqp-publishers", 64, "concurrent publishers (and channel pool size) of watermill-amqp-tuned")
		conc       = flag.Int("concurrency", 0, "Dispytch listener concurrency (default: GOMAXPROCS in memory, the listener default with brokers)")
		amqpURL    = flag.String("amqp", envOr("DISPYTCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
		profileDir = flag.String("profile", "", "directory for CPU and allocation profiles of every Dispytch run")
		out        = flag.String("o", "", "also write the markdown report to this file")
		timeout    = flag.Duration("run-timeout", 10*time.Minute, "limit of one contender run")
	)
	counts := map[string]*int{}
	for _, c := range compare.Cases() {
		counts[c.Name] = flag.Int("n-"+c.Name, 0, fmt.Sprintf("messages of case %s (default %d, quick %d)",
			c.Name, compare.FullN[c.Name], compare.QuickN[c.Name]))
	}
	flag.Parse()

	cfg := compare.Config{
		Rounds: *rounds, LatN: *latN, LatRate: *latRate, Publishers: *pubs, AMQPPublishers: *amqpPubs,
		Concurrency: *conc, AMQPURL: *amqpURL, ProfileDir: *profileDir, RunTimeout: *timeout,
		Progress: os.Stderr, N: map[string]int{},
	}
	if *cases != "" {
		cfg.Cases = strings.Split(*cases, ",")
		for _, name := range cfg.Cases {
			if !validCase(name) {
				fmt.Fprintf(os.Stderr, "unknown case %q (cases: %s)\n", name, caseNames())
				return 2
			}
		}
	}
	defaults := compare.FullN
	if *quick {
		defaults = compare.QuickN
		if cfg.LatN == 0 {
			cfg.LatN = 300
		}
	}
	if cfg.LatN == 0 {
		cfg.LatN = 2000
	}
	for name, p := range counts {
		cfg.N[name] = defaults[name]
		if *p > 0 {
			cfg.N[name] = *p
		}
	}
	if *profileDir != "" {
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := compare.Compare(ctx, cfg)
	if res == nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	command := "go run ./cmd/compare " + strings.Join(os.Args[1:], " ")
	compare.WriteMarkdown(os.Stdout, res, strings.TrimSpace(command))
	if *out != "" {
		f, ferr := os.Create(*out)
		if ferr != nil {
			fmt.Fprintln(os.Stderr, ferr)
			return 1
		}
		compare.WriteMarkdown(f, res, strings.TrimSpace(command))
		if ferr := f.Close(); ferr != nil {
			fmt.Fprintln(os.Stderr, ferr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	return 0
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func caseNames() string {
	var names []string
	for _, c := range compare.Cases() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

func validCase(name string) bool {
	for _, c := range compare.Cases() {
		if c.Name == name {
			return true
		}
	}
	return false
}
