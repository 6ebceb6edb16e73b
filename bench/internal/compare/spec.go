package compare

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"
)

// Mode is how a run sequences publishing and consuming.
type Mode string

const (
	// ModeQueued publishes all messages with no consumer running, then
	// consumes them all, then measures latency with a paced phase.
	ModeQueued Mode = "queued"
	// ModeTogether runs the consumer while the producer publishes; latency
	// is sampled under that saturating load.
	ModeTogether Mode = "together"
	// ModeBacklog is ModeQueued without the latency phase, sampling the
	// listener's in-flight messages while it drains the backlog.
	ModeBacklog Mode = "backlog"
)

// Spec is one child run: one contender of one case in one round.
type Spec struct {
	Case      string `json:"case"`
	Contender string `json:"contender"`
	Round     int    `json:"round"`
	Mode      Mode   `json:"mode"`
	// N is the number of messages of the throughput phases.
	N int `json:"n"`
	// LatN messages are published at LatRate msg/s in the paced latency
	// phase (ModeQueued; 0 skips it).
	LatN    int `json:"lat_n"`
	LatRate int `json:"lat_rate"`
	// Concurrency is the Dispytch listener's Concurrency (0: the case's
	// default).
	Concurrency int `json:"concurrency"`
	// Publishers is the number of concurrent publishers of the contenders
	// that run several.
	Publishers int `json:"publishers"`
	// ResetRSSBeforeConsume resets the peak RSS after the publish phase, so
	// that PeakRSS is the consumer's alone.
	ResetRSSBeforeConsume bool   `json:"reset_rss"`
	KafkaAddr             string `json:"kafka_addr"`
	AMQPURL               string `json:"amqp_url"`
	RunID                 string `json:"run_id"`
	ProfileDir            string `json:"profile_dir,omitempty"`
	Timeout               time.Duration
}

// Result is what a child run measured.
type Result struct {
	Spec Spec `json:"spec"`
	// PubRate and ConsRate are in msg/s; 0 when not measured.
	PubRate  float64 `json:"pub_rate"`
	ConsRate float64 `json:"cons_rate"`
	// PubAllocs and ConsAllocs are heap allocations per message in this
	// process during the phase.
	PubAllocs  float64 `json:"pub_allocs"`
	ConsAllocs float64 `json:"cons_allocs"`
	// PeakRSS is the process's peak resident set (VmHWM), in bytes.
	PeakRSS        int64 `json:"peak_rss"`
	PublishPeakRSS int64 `json:"publish_peak_rss,omitempty"`
	// LatP50 and LatP99 are emit→handle latencies; LatKind says how they
	// were measured.
	LatP50      time.Duration `json:"lat_p50"`
	LatP99      time.Duration `json:"lat_p99"`
	LatKind     string        `json:"lat_kind"`
	MaxInFlight int64         `json:"max_in_flight"`
	Notes       []string      `json:"notes,omitempty"`
	Err         string        `json:"err,omitempty"`
	Wall        time.Duration `json:"wall"`
}

// runEnv is what a contender's constructor gets.
type runEnv struct {
	spec Spec
	msgs *Messages
}

// concurrency is the Dispytch listener's concurrency in the in-memory
// cases: the spec's, or GOMAXPROCS like the bare loop's workers.
func (e *runEnv) concurrency() int {
	if e.spec.Concurrency > 0 {
		return e.spec.Concurrency
	}
	return runtime.GOMAXPROCS(0)
}

// builder builds a contender's system for one run.
type builder func(ctx context.Context, env *runEnv) (*system, error)

// childEnv is the environment variable that makes the process a child run.
const childEnv = "DISPYTCH_COMPARE_CHILD"

// resultPrefix marks the child's result line on its standard output.
const resultPrefix = "DISPYTCH_COMPARE_RESULT "

// IsChild reports whether this process was started as a child run.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ChildMain runs the child run described in the environment, prints its
// Result and returns the exit code. Call it first thing in main (and in
// TestMain) when IsChild.
func ChildMain() int {
	var spec Spec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "compare child: bad spec:", err)
		return 2
	}
	res := runChild(spec)
	b, _ := json.Marshal(res)
	fmt.Printf("%s%s\n", resultPrefix, b)
	return 0
}

func runChild(spec Spec) (res Result) {
	res.Spec = spec
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			res.Err = fmt.Sprintf("panic: %v", p)
		}
		res.Wall = time.Since(start)
		res.PeakRSS = peakRSS()
	}()
	build, ok := lookup(spec.Case, spec.Contender)
	if !ok {
		res.Err = fmt.Sprintf("unknown contender %s/%s", spec.Case, spec.Contender)
		return res
	}
	msgs, err := NewMessages(tracesFor(spec))
	if err != nil {
		res.Err = err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	defer cancel()
	sys, err := build(ctx, &runEnv{spec: spec, msgs: msgs})
	if err != nil {
		res.Err = "setup: " + err.Error()
		return res
	}
	s := newSink(tracesFor(spec))
	if err := runSystem(ctx, spec, sys, s, &res); err != nil {
		res.Err = err.Error()
	}
	return res
}
