package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/dlq"
)

const dlqUsage = `Usage: dispytch dlq ls|show|redrive|purge [flags] QUEUE ...

Operates a dead-letter destination (the topic or queue "<group>.dlq"):

	dispytch dlq ls QUEUE                 list the letters: reason, handler, attempts, error
	dispytch dlq show QUEUE N|ID          one letter, with its headers and body
	dispytch dlq redrive QUEUE            send the letters back to their topics, for the
	                                      handler that failed only; one pass
	dispytch dlq purge QUEUE              remove the letters for good, after confirmation

Filters (ls, redrive, purge): --reason, --handler, --topic (repeatable), --from,
--to (RFC 3339 times, or durations ago: 2h), --max. Without --reason, redrive
skips decode and validation failures, which fail again unless the code changed.
`

// dlqFilters are the flags that select letters.
type dlqFilters struct {
	reasons, handlers, topics listFlag
	from, to                  string
	max                       int
}

func addFilterFlags(fs *flag.FlagSet) *dlqFilters {
	f := &dlqFilters{}
	fs.Var(&f.reasons, "reason", "select letters failed for this `reason` (handler_error, panic, timeout, decode, validation, no_handler, dependency; repeatable)")
	fs.Var(&f.handlers, "handler", "select letters of this `handler` (repeatable)")
	fs.Var(&f.topics, "topic", "select letters from this original `topic` (repeatable)")
	fs.StringVar(&f.from, "from", "", "select letters whose last failure is at or after this `time` (RFC 3339, or a duration ago: 2h)")
	fs.StringVar(&f.to, "to", "", "select letters whose last failure is before this `time`")
	fs.IntVar(&f.max, "max", 0, "select at most `n` letters")
	return f
}

func parseWhen(flagName, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usagef("--%s %q: an RFC 3339 time (2026-12-01T10:00:00Z) or a duration ago (2h)", flagName, s)
	}
	return t, nil
}

func (f *dlqFilters) filter() (*dlq.Filter, error) {
	now := time.Now()
	from, err := parseWhen("from", f.from, now)
	if err != nil {
		return nil, err
	}
	to, err := parseWhen("to", f.to, now)
	if err != nil {
		return nil, err
	}
	out := &dlq.Filter{Handlers: f.handlers, Topics: f.topics, From: from, To: to, Max: f.max}
	for _, r := range f.reasons {
		out.Reasons = append(out.Reasons, dispytch.Reason(r))
	}
	return out, nil
}

func runDLQ(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		return usagef("dlq needs ls, show, redrive or purge (see dispytch dlq --help)")
	}
	switch args[0] {
	case "ls", "list":
		return dlqList(ctx, c, args[1:])
	case "show":
		return dlqShow(ctx, c, args[1:])
	case "redrive":
		return dlqRedrive(ctx, c, args[1:])
	case "purge":
		return dlqPurge(ctx, c, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stdout, dlqUsage)
		return flag.ErrHelp
	}
	return usagef("dlq %q: ls, show, redrive or purge", args[0])
}

// letterJSON is a dead letter as dlq ls --json and show --json print it.
type letterJSON struct {
	N            int               `json:"n"`
	ID           string            `json:"id,omitempty"`
	Type         string            `json:"type,omitempty"`
	Topic        string            `json:"topic"`
	Group        string            `json:"group,omitempty"`
	Reason       string            `json:"reason"`
	Handler      string            `json:"handler,omitempty"`
	Attempts     int               `json:"attempts"`
	Error        string            `json:"error,omitempty"`
	FirstFailure string            `json:"first_failure,omitempty"`
	LastFailure  string            `json:"last_failure,omitempty"`
	Key          string            `json:"key,omitempty"`
	Truncated    int               `json:"truncated,omitempty"`
	Partition    *int32            `json:"dlq_partition,omitempty"`
	Offset       *int64            `json:"dlq_offset,omitempty"`
	Headers      map[string]string `json:"headers,omitempty"`
	Body         json.RawMessage   `json:"body,omitempty"`
}

func letter(n int, f *dispytch.FailedMessage, full bool) letterJSON {
	dec := decodeMessage(f.Value, f.Headers["content-type"], f.Headers)
	l := letterJSON{N: n, ID: dec.id, Type: dec.typ, Topic: f.Topic, Group: f.Group, Reason: string(f.Reason), Handler: f.Handler,
		Attempts: f.Attempts, Key: string(f.Key), Truncated: f.Truncated}
	if l.ID == "" {
		l.ID = f.Headers["dispytch-event-id"]
	}
	if f.Err != nil {
		l.Error = f.Err.Error()
	}
	if !f.FirstFailure.IsZero() {
		l.FirstFailure = f.FirstFailure.UTC().Format(time.RFC3339Nano)
	}
	if !f.LastFailure.IsZero() {
		l.LastFailure = f.LastFailure.UTC().Format(time.RFC3339Nano)
	}
	if f.Partition >= 0 {
		p, o := f.Partition, f.Offset
		l.Partition, l.Offset = &p, &o
	}
	if full {
		l.Headers = f.Headers
		l.Body = dec.body
	}
	return l
}

// openQueue parses a dlq subcommand's flags and opens its queue.
func openQueue(ctx context.Context, c *cli, name, synopsis string, args []string, extra func(*flag.FlagSet)) (*dlq.Queue, broker, []string, *dlqFilters, error) {
	fs := c.newFlags("dlq "+name, synopsis)
	b := c.addBrokerFlags(fs)
	var filters *dlqFilters
	if name != "show" {
		filters = addFilterFlags(fs)
	}
	if extra != nil {
		extra(fs)
	}
	pos, err := c.parse(fs, args)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if len(pos) == 0 {
		return nil, nil, nil, nil, usagef("dlq %s needs the QUEUE (see dispytch dlq %s --help)", name, name)
	}
	br, err := b.open(ctx)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return dlq.Open(br.store(), pos[0]), br, pos[1:], filters, nil
}

func dlqList(ctx context.Context, c *cli, args []string) error {
	var asJSON bool
	q, br, rest, filters, err := openQueue(ctx, c, "ls", "Usage: dispytch dlq ls [flags] QUEUE\n\nLists the dead letters of QUEUE, oldest first.\n", args,
		func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON lines") })
	if err != nil {
		return err
	}
	defer br.close()
	if len(rest) > 0 {
		return usagef("dlq ls takes one QUEUE")
	}
	f, err := filters.filter()
	if err != nil {
		return err
	}
	letters, err := q.List(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		for i, l := range letters {
			if err := enc.Encode(letter(i+1, l, false)); err != nil {
				return err
			}
		}
	} else if len(letters) > 0 {
		tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "#\tLAST FAILURE\tREASON\tHANDLER\tATTEMPTS\tTOPIC\tTYPE\tERROR")
		for i, fm := range letters {
			l := letter(i+1, fm, false)
			last := "-"
			if !fm.LastFailure.IsZero() {
				last = fm.LastFailure.UTC().Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.N, last, l.Reason, dash(l.Handler), l.Attempts, dash(l.Topic), dash(l.Type), dash(oneLine(l.Error, 100)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.stderr, "%d dead letter%s in %s\n", len(letters), plural(len(letters)), q.Name())
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func dlqShow(ctx context.Context, c *cli, args []string) error {
	var asJSON bool
	q, br, rest, _, err := openQueue(ctx, c, "show", "Usage: dispytch dlq show [flags] QUEUE N|ID\n\nShows one dead letter: the N-th that dlq ls lists, or the one whose event id is ID.\n", args,
		func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	defer br.close()
	if len(rest) != 1 {
		return usagef("dlq show takes QUEUE and N or ID")
	}
	letters, err := q.List(ctx, nil)
	if err != nil {
		return err
	}
	ref := rest[0]
	var found *dispytch.FailedMessage
	n := 0
	if i, err := strconv.Atoi(ref); err == nil {
		if i < 1 || i > len(letters) {
			return fmt.Errorf("dlq show: %s holds %d letter%s, and there is no #%d", q.Name(), len(letters), plural(len(letters)), i)
		}
		found, n = letters[i-1], i
	} else {
		for i, l := range letters {
			if lj := letter(i+1, l, false); lj.ID == ref {
				found, n = l, i+1
				break
			}
		}
		if found == nil {
			return fmt.Errorf("dlq show: no letter in %s has the event id %q", q.Name(), ref)
		}
	}
	l := letter(n, found, true)
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	w := c.stdout
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-14s %s\n", k+":", v)
		}
	}
	row("letter", fmt.Sprintf("#%d of %s", n, q.Name()))
	row("id", l.ID)
	row("type", l.Type)
	row("topic", l.Topic)
	row("group", l.Group)
	row("reason", l.Reason)
	row("handler", l.Handler)
	row("attempts", strconv.Itoa(l.Attempts))
	row("error", l.Error)
	row("first failure", l.FirstFailure)
	row("last failure", l.LastFailure)
	row("key", l.Key)
	if l.Truncated > 0 {
		row("truncated", fmt.Sprintf("the original's %d bytes were too large and are not in the letter", l.Truncated))
	}
	if len(l.Headers) > 0 {
		fmt.Fprintln(w, "headers:")
		keys := make([]string, 0, len(l.Headers))
		for k := range l.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %s\n", k, l.Headers[k])
		}
	}
	fmt.Fprintln(w, "body:")
	var pretty strings.Builder
	if err := jsonIndent(&pretty, l.Body); err != nil {
		fmt.Fprintf(w, "  %s\n", l.Body)
	} else {
		for _, line := range strings.Split(strings.TrimRight(pretty.String(), "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	return nil
}

func jsonIndent(w io.Writer, b json.RawMessage) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dlqRedrive(ctx context.Context, c *cli, args []string) error {
	var dryRun bool
	var progress string
	q, br, rest, filters, err := openQueue(ctx, c, "redrive", "Usage: dispytch dlq redrive [flags] QUEUE\n\nSends the selected dead letters back to their original topics, marked so that only the\nhandler that failed runs again, in one pass over what QUEUE holds when it starts: letters\nthat fail again are dead-lettered anew and wait for the next redrive.\n", args,
		func(fs *flag.FlagSet) {
			fs.BoolVar(&dryRun, "dry-run", false, "count what would be redriven, and change nothing")
			fs.StringVar(&progress, "progress", "auto", "progress bar on standard error: auto (when it is a terminal), always, never")
		})
	if err != nil {
		return err
	}
	defer br.close()
	if len(rest) > 0 {
		return usagef("dlq redrive takes one QUEUE")
	}
	f, err := filters.filter()
	if err != nil {
		return err
	}
	if dryRun {
		f.DryRun = true
		n, err := q.Redrive(ctx, br.producer(), f)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "would redrive %d dead letter%s from %s (dry run: nothing changed)\n", n, plural(n), q.Name())
		return nil
	}
	var bar *progressBar
	if showProgress(progress, c.stderr) {
		total, err := redriveTotal(ctx, q, f)
		if err != nil {
			return err
		}
		bar = newProgressBar(c.stderr, total, "redriving")
	}
	p := br.producer()
	if bar != nil {
		p = &countingProducer{Producer: p, add: bar.add}
	}
	n, err := q.Redrive(ctx, p, f)
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return fmt.Errorf("redrive: %d moved before: %w", n, err)
	}
	fmt.Fprintf(c.stdout, "redrove %d dead letter%s from %s\n", n, plural(n), q.Name())
	return nil
}

// redriveTotal counts what Redrive with f will take, for the progress bar:
// as Redrive, it leaves out decode and validation failures unless reasons
// are named, and truncated letters.
func redriveTotal(ctx context.Context, q *dlq.Queue, f *dlq.Filter) (int, error) {
	letters, err := q.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range letters {
		if l.Truncated > 0 || l.Topic == "" {
			continue
		}
		if f.Reasons == nil && (l.Reason == dispytch.ReasonDecode || l.Reason == dispytch.ReasonValidation) {
			continue
		}
		n++
	}
	return n, nil
}

func showProgress(mode string, w io.Writer) bool {
	switch mode {
	case "always":
		return true
	case "never":
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// countingProducer reports each message it sends.
type countingProducer struct {
	backend.Producer
	add func(int)
}

func (p *countingProducer) Produce(ctx context.Context, msgs ...*backend.Message) error {
	err := p.Producer.Produce(ctx, msgs...)
	if err == nil {
		p.add(len(msgs))
	}
	return err
}

// progressBar draws "[=====>    ] 120/300 redriving" on one terminal line,
// at most ten times a second.
type progressBar struct {
	mu       sync.Mutex
	w        io.Writer
	total, n int
	what     string
	last     time.Time
}

func newProgressBar(w io.Writer, total int, what string) *progressBar {
	b := &progressBar{w: w, total: total, what: what}
	b.draw()
	return b
}

func (b *progressBar) add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += n
	if time.Since(b.last) >= 100*time.Millisecond || b.n >= b.total {
		b.draw()
	}
}

func (b *progressBar) draw() {
	const width = 30
	total := max(b.total, b.n, 1)
	filled := width * b.n / total
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	fmt.Fprintf(b.w, "\r[%s] %d/%d %s", bar, b.n, b.total, b.what)
	b.last = time.Now()
}

func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw()
	fmt.Fprintln(b.w)
}

func dlqPurge(ctx context.Context, c *cli, args []string) error {
	var dryRun, yes bool
	q, br, rest, filters, err := openQueue(ctx, c, "purge", "Usage: dispytch dlq purge [flags] QUEUE\n\nRemoves the selected dead letters for good, after asking (or with --yes).\n", args,
		func(fs *flag.FlagSet) {
			fs.BoolVar(&dryRun, "dry-run", false, "count what would be removed, and change nothing")
			fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
		})
	if err != nil {
		return err
	}
	defer br.close()
	if len(rest) > 0 {
		return usagef("dlq purge takes one QUEUE")
	}
	f, err := filters.filter()
	if err != nil {
		return err
	}
	n, err := q.Count(ctx, f)
	if err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintf(c.stdout, "would purge %d dead letter%s from %s (dry run: nothing changed)\n", n, plural(n), q.Name())
		return nil
	}
	if n == 0 {
		fmt.Fprintf(c.stdout, "purged 0 dead letters from %s (none selected)\n", q.Name())
		return nil
	}
	if !yes {
		fmt.Fprintf(c.stderr, "purge %d dead letter%s from %s for good? [y/N] ", n, plural(n), q.Name())
		answer, _ := bufio.NewReader(c.stdin).ReadString('\n')
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
		case "":
			fmt.Fprintln(c.stderr)
			return errors.New("purge: not confirmed (answer y, or pass --yes): nothing removed")
		default:
			return errors.New("purge: not confirmed: nothing removed")
		}
	}
	// Only the letters counted for the confirmation: any that arrive
	// meanwhile are newer, and the scan is oldest first.
	if f.Max == 0 || f.Max > n {
		f.Max = n
	}
	removed, err := q.Purge(ctx, f)
	if err != nil {
		return fmt.Errorf("purge: %d removed before: %w", removed, err)
	}
	fmt.Fprintf(c.stdout, "purged %d dead letter%s from %s\n", removed, plural(removed), q.Name())
	return nil
}
