package compare

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Config selects what a comparison runs.
type Config struct {
	// Cases names the cases to run (Case.Name); empty runs all.
	Cases []string
	// Rounds is how many times each contender runs (alternating).
	Rounds int
	// N is the message count per case name (a missing case uses DefaultN).
	N map[string]int
	// LatN messages at LatRate msg/s make the paced latency phase.
	LatN, LatRate int
	// Publishers is the number of concurrent publishers of
	// watermill-kafka-concurrent; AMQPPublishers that of
	// watermill-amqp-tuned (and its channel pool size).
	Publishers, AMQPPublishers int
	// Concurrency overrides the Dispytch listener's concurrency (0: GOMAXPROCS
	// in memory, the listener's default with brokers).
	Concurrency int
	AMQPURL     string
	// ProfileDir, when set, receives a CPU and an allocation profile of
	// every Dispytch run.
	ProfileDir string
	// RunTimeout bounds each child run.
	RunTimeout time.Duration
	// Progress receives one line per run.
	Progress io.Writer
}

// Full and Quick are the message counts of the full run and of the quick
// mode, per case.
var (
	FullN  = map[string]int{"memory-queued": 300_000, "memory-together": 300_000, "kafka": 100_000, "rabbitmq": 20_000, "nats": 100_000, "redis": 100_000, "backlog-memory": 1_000_000, "backlog-kafka": 1_000_000}
	QuickN = map[string]int{"memory-queued": 100_000, "memory-together": 100_000, "kafka": 5_000, "rabbitmq": 3_000, "nats": 5_000, "redis": 20_000, "backlog-memory": 200_000, "backlog-kafka": 200_000}
)

// Run is the result of a comparison: every child's Result, per case.
type Run struct {
	Config  Config
	Started time.Time
	Elapsed time.Duration
	Cases   []CaseRun
}

// CaseRun is one case's results.
type CaseRun struct {
	Case    Case
	N       int
	Skipped string
	Results []Result
}

// Compare runs the selected cases: every contender of a case once per
// round, alternating (the first contender of round r is the r-th), each in a
// fresh child process.
func Compare(ctx context.Context, cfg Config) (*Run, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 3
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.RunTimeout == 0 {
		cfg.RunTimeout = 10 * time.Minute
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	run := &Run{Config: cfg, Started: time.Now()}
	var kafkaAddr string
	defer func() { run.Elapsed = time.Since(run.Started) }()
	for _, c := range Cases() {
		if len(cfg.Cases) > 0 && !slices.Contains(cfg.Cases, c.Name) {
			continue
		}
		cr := CaseRun{Case: c, N: cfg.N[c.Name]}
		if cr.N == 0 {
			cr.N = FullN[c.Name]
		}
		if c.AMQP {
			if err := pingAMQP(cfg.AMQPURL); err != nil {
				cr.Skipped = "RabbitMQ unreachable at " + redactURL(cfg.AMQPURL) + ": " + err.Error()
				fmt.Fprintf(cfg.Progress, "%s: skipped: %s\n", c.Name, cr.Skipped)
				run.Cases = append(run.Cases, cr)
				continue
			}
		}
		if c.Redis {
			if err := pingRedis(RedisAddr()); err != nil {
				cr.Skipped = "Redis unreachable at " + RedisAddr() + ": " + err.Error()
				fmt.Fprintf(cfg.Progress, "%s: skipped: %s\n", c.Name, cr.Skipped)
				run.Cases = append(run.Cases, cr)
				continue
			}
		}
		if c.Kafka && kafkaAddr == "" {
			cluster, err := StartKafka()
			if err != nil {
				return nil, fmt.Errorf("start kfake: %w", err)
			}
			defer cluster.Close()
			kafkaAddr = cluster.ListenAddrs()[0]
		}
		k := len(c.Contenders)
		for r := range cfg.Rounds {
			for i := range k {
				ct := c.Contenders[(i+r)%k]
				spec := Spec{
					Case: c.Name, Contender: ct.Name, Round: r + 1, Mode: c.Mode, N: cr.N,
					Concurrency: cfg.Concurrency, Publishers: cfg.Publishers,
					ResetRSSBeforeConsume: c.ResetRSSBeforeConsume,
					KafkaAddr:             kafkaAddr, AMQPURL: cfg.AMQPURL,
					RunID:   fmt.Sprintf("%d-%s-r%d", run.Started.Unix()%100000, ct.Name, r+1),
					Timeout: cfg.RunTimeout,
				}
				if c.Mode == ModeQueued {
					spec.LatN, spec.LatRate = cfg.LatN, cfg.LatRate
				}
				if ct.Name == "watermill-amqp-tuned" {
					spec.Publishers = cfg.AMQPPublishers
				}
				if cfg.ProfileDir != "" && ct.Name == "dispytch" {
					spec.ProfileDir = cfg.ProfileDir
				}
				res := runOne(ctx, exe, spec)
				cr.Results = append(cr.Results, res)
				fmt.Fprintf(cfg.Progress, "%s\n", progressLine(res))
				if ctx.Err() != nil {
					run.Cases = append(run.Cases, cr)
					return run, ctx.Err()
				}
			}
		}
		run.Cases = append(run.Cases, cr)
	}
	return run, nil
}

func progressLine(r Result) string {
	s := r.Spec
	line := fmt.Sprintf("%-16s r%d %-27s pub %9s/s  cons %9s/s  rss %4.0f MiB  p50 %-8s p99 %-8s (%.1fs)",
		s.Case, s.Round, s.Contender, si(r.PubRate), si(r.ConsRate), mib(r.PeakRSS),
		dur(r.LatP50), dur(r.LatP99), r.Wall.Seconds())
	if r.Err != "" {
		line += "  ERROR: " + r.Err
	}
	for _, n := range r.Notes {
		line += "  [" + n + "]"
	}
	return line
}

// runOne runs one spec in a child process: this executable again, with
// the spec in the environment.
func runOne(ctx context.Context, exe string, spec Spec) Result {
	b, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), resultPrefix); ok {
			var res Result
			if jerr := json.Unmarshal([]byte(line), &res); jerr == nil {
				return res
			}
		}
	}
	msg := "no result"
	if err != nil {
		msg = err.Error()
	}
	tail := stderr.String()
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return Result{Spec: spec, Err: fmt.Sprintf("child: %s: %s", msg, strings.TrimSpace(tail))}
}

func pingAMQP(url string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		return err
	}
	return conn.Close()
}

func redactURL(u string) string {
	if at := strings.LastIndex(u, "@"); at >= 0 {
		if i := strings.Index(u, "://"); i >= 0 && i < at {
			return u[:i+3] + "…" + u[at:]
		}
	}
	return u
}
