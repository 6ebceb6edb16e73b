package compare

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// publisher is the sending side of a contender.
type publisher interface {
	// send publishes the pre-generated message seq (0 is the untraced
	// template), asynchronously where the client allows it. It is called
	// from one goroutine, or from several when the system says so.
	send(ctx context.Context, seq int) error
	// flush waits until every message sent so far was accepted (confirmed,
	// acked) by the broker.
	flush(ctx context.Context) error
}

// consumer is the receiving side of a contender. Its handler decodes every
// message into a UserEvent and then calls h with the event's Seq.
type consumer interface {
	start(ctx context.Context, h func(seq int64)) error
	// stop stops consuming and releases the consumer.
	stop() error
}

// system is one contender, built for one run.
type system struct {
	pub  publisher
	cons consumer
	// publishers is how many goroutines call send in the throughput phase
	// (1 unless the contender's publisher is synchronous and the case runs
	// it with concurrent publishers).
	publishers int
	// inFlight, when set, reports messages taken from the broker and not
	// yet settled (sampled in the backlog case).
	inFlight func() int64
	// extra, when set, adds notes after the run (e.g. consumer counters).
	extra func() []string
	// close releases everything (connections, queues, topics).
	close func()
}

// sink counts handled messages, timestamps the first and last of a phase
// and records emit→handle latencies of traced messages.
type sink struct {
	t0      time.Time
	handled atomic.Int64
	base    atomic.Int64 // handled count before the phase
	target  atomic.Int64
	first   atomic.Int64 // ns since t0
	last    atomic.Int64
	done    chan struct{}
	mu      sync.Mutex
	sent    []atomic.Int64 // by trace id: ns since t0
	lat     []atomic.Int64 // by trace id: ns, 0 = not seen
	dups    atomic.Int64
}

func newSink(traces int) *sink {
	return &sink{t0: time.Now(), sent: make([]atomic.Int64, traces+1), lat: make([]atomic.Int64, traces+1)}
}

func (s *sink) now() int64 { return int64(time.Since(s.t0)) }

// arm starts a phase expecting n more messages; the returned channel is
// closed when they were handled.
func (s *sink) arm(n int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = make(chan struct{})
	b := s.handled.Load()
	s.base.Store(b)
	s.first.Store(0)
	s.last.Store(0)
	s.target.Store(b + int64(n))
	return s.done
}

// handle is called by every contender's handler after decoding.
func (s *sink) handle(seq int64) {
	now := s.now()
	if seq > 0 && int(seq) < len(s.lat) {
		if !s.lat[seq].CompareAndSwap(0, max(now-s.sent[seq].Load(), 1)) {
			s.dups.Add(1)
		}
	}
	n := s.handled.Add(1)
	if n == s.base.Load()+1 {
		s.first.Store(now)
	}
	if n == s.target.Load() {
		s.last.Store(now)
		s.mu.Lock()
		close(s.done)
		s.mu.Unlock()
	}
}

// latencies returns the recorded latencies of trace ids [from, to).
func (s *sink) latencies(from, to int) []time.Duration {
	var out []time.Duration
	for k := from; k < to && k < len(s.lat); k++ {
		if v := s.lat[k].Load(); v > 0 {
			out = append(out, time.Duration(v))
		}
	}
	slices.Sort(out)
	return out
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1)*p + 0.5)
	return sorted[i]
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// peakRSS returns VmHWM of this process, in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS returns freed memory to the OS and resets VmHWM to the
// current RSS (Linux clear_refs 5), so that the next phase's peak is its own.
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// wait waits for ch or the context.
func wait(ctx context.Context, ch <-chan struct{}, what string, s *sink) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w after %d of %d messages handled", what, ctx.Err(),
			s.handled.Load()-s.base.Load(), s.target.Load()-s.base.Load())
	}
}

// publishN publishes n untraced messages from the given goroutines, then
// flushes. It returns the time from the first send to the end of the flush.
func publishN(ctx context.Context, p publisher, n, goroutines int, trace func(i int) int, s *sink) (time.Duration, error) {
	goroutines = max(goroutines, 1)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += goroutines {
				seq := 0
				if trace != nil {
					seq = trace(i)
				}
				if seq > 0 {
					s.sent[seq].Store(s.now())
				}
				if err := p.send(ctx, seq); err != nil {
					errs[g] = fmt.Errorf("send %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if err := p.flush(ctx); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	return time.Since(start), nil
}

// publishPaced publishes the traced messages 1..n at rate msg/s from one
// goroutine, then flushes.
func publishPaced(ctx context.Context, p publisher, n, rate int, s *sink) error {
	start := time.Now()
	interval := time.Second / time.Duration(max(rate, 1))
	for k := 1; k <= n; k++ {
		if d := time.Until(start.Add(time.Duration(k-1) * interval)); d > 0 {
			time.Sleep(d)
		}
		s.sent[k].Store(s.now())
		if err := p.send(ctx, k); err != nil {
			return fmt.Errorf("paced send %d: %w", k, err)
		}
	}
	return p.flush(ctx)
}

// runSystem drives one run of a built system through the spec's mode and
// fills the result.
func runSystem(ctx context.Context, spec Spec, sys *system, s *sink, res *Result) (err error) {
	defer func() {
		if sys.close != nil {
			sys.close()
		}
	}()
	n := spec.N
	stopProfile := func() {}
	if spec.ProfileDir != "" {
		stopProfile, err = startProfile(spec)
		if err != nil {
			return err
		}
	}
	defer stopProfile()

	switch spec.Mode {
	case ModeQueued, ModeBacklog:
		m0 := mallocs()
		d, err := publishN(ctx, sys.pub, n, sys.publishers, nil, s)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		res.PubRate = float64(n) / d.Seconds()
		res.PubAllocs = float64(mallocs()-m0) / float64(n)
		if spec.ResetRSSBeforeConsume {
			res.PublishPeakRSS = peakRSS()
			resetPeakRSS()
		}
		done := s.arm(n)
		stopSampler := func() {}
		if spec.Mode == ModeBacklog && sys.inFlight != nil {
			stopSampler = sampleInFlight(sys.inFlight, res)
		}
		m1 := mallocs()
		if err := sys.cons.start(ctx, s.handle); err != nil {
			return fmt.Errorf("start consumer: %w", err)
		}
		if err := wait(ctx, done, "consume", s); err != nil {
			return err
		}
		res.ConsAllocs = float64(mallocs()-m1) / float64(n)
		stopSampler()
		res.ConsRate = float64(n-1) / (time.Duration(s.last.Load() - s.first.Load())).Seconds()
		if spec.LatN > 0 {
			done := s.arm(spec.LatN)
			if err := publishPaced(ctx, sys.pub, spec.LatN, spec.LatRate, s); err != nil {
				return err
			}
			if err := wait(ctx, done, "latency phase", s); err != nil {
				return err
			}
			lat := s.latencies(1, spec.LatN+1)
			res.LatP50, res.LatP99 = percentile(lat, 0.50), percentile(lat, 0.99)
			res.LatKind = fmt.Sprintf("paced %d/s", spec.LatRate)
		}
	case ModeTogether:
		every := traceEvery(n)
		trace := func(i int) int {
			if i%every == 0 {
				return i/every + 1
			}
			return 0
		}
		done := s.arm(n)
		if err := sys.cons.start(ctx, s.handle); err != nil {
			return fmt.Errorf("start consumer: %w", err)
		}
		m0 := mallocs()
		start := s.now()
		d, err := publishN(ctx, sys.pub, n, sys.publishers, trace, s)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		if err := wait(ctx, done, "consume", s); err != nil {
			return err
		}
		// producer and consumer share the window: one figure, under consume
		res.ConsAllocs = float64(mallocs()-m0) / float64(n)
		res.PubAllocs = -1
		res.PubRate = float64(n) / d.Seconds()
		res.ConsRate = float64(n) / time.Duration(s.last.Load()-start).Seconds()
		lat := s.latencies(1, len(s.lat))
		res.LatP50, res.LatP99 = percentile(lat, 0.50), percentile(lat, 0.99)
		res.LatKind = "saturated"
	default:
		return fmt.Errorf("unknown mode %q", spec.Mode)
	}
	if err := sys.cons.stop(); err != nil {
		res.Notes = append(res.Notes, "consumer stop: "+err.Error())
	}
	if sys.extra != nil {
		res.Notes = append(res.Notes, sys.extra()...)
	}
	if d := s.dups.Load(); d > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d traced messages handled twice", d))
	}
	return nil
}

// traceEvery is the sampling stride of latency traces in the together mode.
func traceEvery(n int) int { return max(1, n/maxTogetherTraces) }

const maxTogetherTraces = 8192

// tracesFor is how many traced messages a spec needs pre-generated.
func tracesFor(spec Spec) int {
	switch spec.Mode {
	case ModeTogether:
		return spec.N/traceEvery(spec.N) + 1
	case ModeQueued:
		return spec.LatN
	}
	return 0
}

// sampleInFlight polls f every 2ms until the returned stop is called, and
// records the maximum in res.MaxInFlight.
func sampleInFlight(f func() int64, res *Result) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if v := f(); v > res.MaxInFlight {
				res.MaxInFlight = v
			}
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// startProfile writes a CPU profile of the run, and an allocation profile
// when it stops, into spec.ProfileDir.
func startProfile(spec Spec) (func(), error) {
	base := fmt.Sprintf("%s/%s-%s-r%d", spec.ProfileDir, spec.Case, spec.Contender, spec.Round)
	f, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if af, err := os.Create(base + ".allocs.pprof"); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(af, 0)
			af.Close()
		}
	}, nil
}
