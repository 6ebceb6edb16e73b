package compare

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Summary aggregates one contender's rounds in a case.
type Summary struct {
	Contender                  string
	Runs, Failed               int
	Pub, Cons                  Spread
	PubAllocs, ConsAllocs      float64 // medians
	PeakRSS                    int64   // median
	MaxPeakRSS                 int64
	LatP50, LatP99             time.Duration // medians of the rounds' percentiles
	LatKind                    string
	MaxInFlight                int64
	Errors, Notes              []string
	PublishPeakRSS, MaxHandled int64
}

// Spread is the median, minimum and maximum of the rounds' values.
type Spread struct{ Median, Min, Max float64 }

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return Spread{Median: median(s), Min: s[0], Max: s[len(s)-1]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func medianOf[T int64 | time.Duration | float64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Summarize aggregates a case's results per contender, in the case's
// contender order. Failed rounds are left out of the numbers.
func Summarize(cr CaseRun) []Summary {
	var out []Summary
	for _, ct := range cr.Case.Contenders {
		s := Summary{Contender: ct.Name}
		var pub, cons, pa, ca []float64
		var rss, prss []int64
		var p50, p99 []time.Duration
		for _, r := range cr.Results {
			if r.Spec.Contender != ct.Name {
				continue
			}
			s.Runs++
			if r.Err != "" {
				s.Failed++
				s.Errors = append(s.Errors, fmt.Sprintf("round %d: %s", r.Spec.Round, r.Err))
				continue
			}
			for _, n := range r.Notes {
				s.Notes = append(s.Notes, fmt.Sprintf("round %d: %s", r.Spec.Round, n))
			}
			if r.PubRate > 0 {
				pub = append(pub, r.PubRate)
				pa = append(pa, r.PubAllocs)
			}
			if r.ConsRate > 0 {
				cons = append(cons, r.ConsRate)
				ca = append(ca, r.ConsAllocs)
			}
			rss = append(rss, r.PeakRSS)
			s.MaxPeakRSS = max(s.MaxPeakRSS, r.PeakRSS)
			if r.PublishPeakRSS > 0 {
				prss = append(prss, r.PublishPeakRSS)
			}
			if r.LatKind != "" {
				p50 = append(p50, r.LatP50)
				p99 = append(p99, r.LatP99)
				s.LatKind = r.LatKind
			}
			s.MaxInFlight = max(s.MaxInFlight, r.MaxInFlight)
		}
		s.Pub, s.Cons = spread(pub), spread(cons)
		s.PubAllocs, s.ConsAllocs = medianOf(pa), medianOf(ca)
		s.PeakRSS, s.PublishPeakRSS = medianOf(rss), medianOf(prss)
		s.LatP50, s.LatP99 = medianOf(p50), medianOf(p99)
		out = append(out, s)
	}
	return out
}

// Machine describes where the comparison ran.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs (GOMAXPROCS %d), %s %s/%s", model, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// WriteMarkdown writes the report: the machine, then per case a table of
// medians and spreads, a ratio matrix, the settings and notes, then the
// issue's goals with the measured ratios.
func WriteMarkdown(w io.Writer, run *Run, command string) {
	fmt.Fprintf(w, "## Comparison run\n\n")
	fmt.Fprintf(w, "- Date: %s (took %s)\n", run.Started.UTC().Format("2006-01-02 15:04 MST"), run.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "- Machine: %s\n", Machine())
	fmt.Fprintf(w, "- Command: `%s`\n", command)
	fmt.Fprintf(w, "- Message: Dispytch envelope of a %d-byte JSON user event (%d bytes on the wire), pre-generated before timing; every handler decodes it into a struct.\n",
		BodySize(), wireSize())
	fmt.Fprintf(w, "- %d rounds per contender, contenders alternating, each run in a fresh process. Figures are medians (min–max over the rounds).\n", run.Config.Rounds)
	fmt.Fprintf(w, "- Publish msg/s: N messages sent and accepted (confirmed where the client confirms). Consume msg/s: (N−1) ÷ (last handled − first handled), excluding start-up and group join; in the together mode, N ÷ (last handled − first emit).\n")
	fmt.Fprintf(w, "- allocs/msg: heap allocations in the contender's process per message during the phase (brokers run elsewhere, except the memory broker); in the together mode one figure covers producer and consumer. Peak RSS: the process's VmHWM, including the pre-generated messages.\n")
	if run.Config.LatN > 0 {
		fmt.Fprintf(w, "- Latency: emit→handle, p50 / p99, from a paced phase of %d messages at %d msg/s after the consume phase (queued cases), or sampled under saturation (together mode).\n",
			run.Config.LatN, run.Config.LatRate)
	}
	fmt.Fprintln(w)
	for _, cr := range run.Cases {
		writeCase(w, cr)
	}
	writeGoals(w, run)
}

func wireSize() int {
	m, err := NewMessages(0)
	if err != nil {
		return 0
	}
	return len(m.Wire[0])
}

func writeCase(w io.Writer, cr CaseRun) {
	fmt.Fprintf(w, "### %s — N = %d\n\n", cr.Case.Title, cr.N)
	if cr.Skipped != "" {
		fmt.Fprintf(w, "Skipped: %s\n\n", cr.Skipped)
		return
	}
	sums := Summarize(cr)
	backlog := cr.Case.Mode == ModeBacklog
	if backlog {
		fmt.Fprintln(w, "| contender | publish msg/s | consume msg/s | allocs/msg pub / cons | peak RSS MiB (max) | max in flight | notes |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	} else {
		fmt.Fprintln(w, "| contender | publish msg/s | consume msg/s | allocs/msg pub / cons | peak RSS MiB | latency p50 / p99 |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
	}
	for _, s := range sums {
		if s.Runs == s.Failed {
			fmt.Fprintf(w, "| %s | failed | failed | | | |\n", s.Contender)
			continue
		}
		allocs := fmt.Sprintf("%s / %s", allocStr(s.PubAllocs, s.Pub), allocStr(s.ConsAllocs, s.Cons))
		if backlog {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f (%.0f) | %s | %s |\n", s.Contender, spreadStr(s.Pub), spreadStr(s.Cons), allocs,
				mib(s.PeakRSS), mib(s.MaxPeakRSS), inFlightStr(s.MaxInFlight), backlogNote(s))
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f | %s / %s %s |\n", s.Contender, spreadStr(s.Pub), spreadStr(s.Cons), allocs,
			mib(s.PeakRSS), dur(s.LatP50), dur(s.LatP99), latKind(s.LatKind))
	}
	fmt.Fprintln(w)
	if len(sums) > 1 {
		fmt.Fprintln(w, "Ratios of medians (row ÷ column), publish / consume:")
		fmt.Fprintln(w)
		fmt.Fprint(w, "| |")
		for _, s := range sums {
			fmt.Fprintf(w, " %s |", s.Contender)
		}
		fmt.Fprint(w, "\n|---|")
		for range sums {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w)
		for _, a := range sums {
			fmt.Fprintf(w, "| %s |", a.Contender)
			for _, b := range sums {
				if a.Contender == b.Contender {
					fmt.Fprint(w, " — |")
					continue
				}
				fmt.Fprintf(w, " %s / %s |", ratio(a.Pub.Median, b.Pub.Median), ratio(a.Cons.Median, b.Cons.Median))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Settings:")
	for _, ct := range cr.Case.Contenders {
		fmt.Fprintf(w, "- %s: %s\n", ct.Name, ct.Settings)
	}
	for _, n := range cr.Case.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	for _, s := range sums {
		for _, e := range s.Errors {
			fmt.Fprintf(w, "- **%s failed** %s\n", s.Contender, oneLine(e))
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "- %s: %s\n", s.Contender, oneLine(n))
		}
	}
	fmt.Fprintln(w)
}

func backlogNote(s Summary) string {
	if s.PublishPeakRSS > 0 {
		return fmt.Sprintf("publish phase peak %.0f MiB, reset before consuming", mib(s.PublishPeakRSS))
	}
	return ""
}

func inFlightStr(v int64) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprint(v)
}

func latKind(k string) string {
	if k == "" {
		return ""
	}
	return "(" + k + ")"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

func allocStr(v float64, sp Spread) string {
	if sp.Median == 0 || v < 0 {
		return "–"
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func spreadStr(s Spread) string {
	if s.Median == 0 {
		return "–"
	}
	return fmt.Sprintf("**%s** (%s–%s)", si(s.Median), si(s.Min), si(s.Max))
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	r := a / b
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// si formats a rate with a k/M suffix and three significant digits.
func si(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 1e6:
		return trim3(v/1e6) + "M"
	case v >= 1e3:
		return trim3(v/1e3) + "k"
	}
	return trim3(v)
}

func trim3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// goal is one of issue 5's targets.
type goal struct {
	text      string
	caseName  string
	a, b      string // contenders: a ÷ b
	consume   bool
	min       float64
	rssMaxMiB float64 // for RSS goals: a's median peak RSS must be at most this
}

var goals = []goal{
	{text: "In memory (queued): consume ≥ 0.5× the bare loop", caseName: "memory-queued", a: "dispytch", b: "bare", consume: true, min: 0.5},
	{text: "In memory (queued): consume ≥ 7× Watermill GoChannel", caseName: "memory-queued", a: "dispytch", b: "watermill", consume: true, min: 7},
	{text: "In memory (together): end-to-end ≥ 0.5× the bare loop", caseName: "memory-together", a: "dispytch", b: "bare", consume: true, min: 0.5},
	{text: "In memory (together): end-to-end ≥ 7× Watermill GoChannel", caseName: "memory-together", a: "dispytch", b: "watermill", consume: true, min: 7},
	{text: "Kafka consume ≥ 0.9× raw franz-go", caseName: "kafka", a: "dispytch", b: "franz-go", consume: true, min: 0.9},
	{text: "Kafka consume ≥ 4× watermill-kafka", caseName: "kafka", a: "dispytch", b: "watermill-kafka", consume: true, min: 4},
	{text: "RabbitMQ publish with confirms ≥ 0.8× raw amqp091", caseName: "rabbitmq", a: "dispytch", b: "amqp091", min: 0.8},
	{text: "RabbitMQ publish ≥ 8× watermill-amqp defaults (which do not wait for confirms)", caseName: "rabbitmq", a: "dispytch", b: "watermill-amqp", min: 8},
	{text: "RabbitMQ consume ≥ 0.9× raw amqp091", caseName: "rabbitmq", a: "dispytch", b: "amqp091", consume: true, min: 0.9},
	{text: "RabbitMQ consume ≥ 4× watermill-amqp defaults", caseName: "rabbitmq", a: "dispytch", b: "watermill-amqp", consume: true, min: 4},
	{text: "Backlog on the memory broker: peak RSS ≤ 150 MiB, including the message data", caseName: "backlog-memory", a: "dispytch", rssMaxMiB: 150},
	{text: "Backlog in Kafka: listener peak RSS ≤ 150 MiB", caseName: "backlog-kafka", a: "dispytch", rssMaxMiB: 150},
}

func writeGoals(w io.Writer, run *Run) {
	fmt.Fprintln(w, "### Goals (issue 5)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal | measured (medians) | |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, g := range goals {
		var cr *CaseRun
		for i := range run.Cases {
			if run.Cases[i].Case.Name == g.caseName {
				cr = &run.Cases[i]
			}
		}
		if cr == nil || cr.Skipped != "" {
			continue
		}
		sums := Summarize(*cr)
		find := func(name string) *Summary {
			for i := range sums {
				if sums[i].Contender == name {
					return &sums[i]
				}
			}
			return nil
		}
		a := find(g.a)
		if a == nil || a.Runs == a.Failed {
			fmt.Fprintf(w, "| %s | not measured | |\n", g.text)
			continue
		}
		if g.rssMaxMiB > 0 {
			v := mib(a.PeakRSS)
			fmt.Fprintf(w, "| %s | %.0f MiB (N = %d) | %s |\n", g.text, v, cr.N, verdict(v <= g.rssMaxMiB))
			continue
		}
		b := find(g.b)
		if b == nil || b.Runs == b.Failed {
			fmt.Fprintf(w, "| %s | not measured | |\n", g.text)
			continue
		}
		av, bv := a.Pub.Median, b.Pub.Median
		if g.consume {
			av, bv = a.Cons.Median, b.Cons.Median
		}
		if av == 0 || bv == 0 {
			fmt.Fprintf(w, "| %s | not measured | |\n", g.text)
			continue
		}
		r := av / bv
		fmt.Fprintf(w, "| %s | %.2f× (%s vs %s msg/s) | %s |\n", g.text, r, si(av), si(bv), verdict(r >= g.min || math.Abs(r-g.min) < 1e-9))
	}
	fmt.Fprintln(w)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
