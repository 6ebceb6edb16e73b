package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

const tailUsage = `Usage: dispytch tail [flags] TOPIC|PATTERN...

Prints the messages sent to the topics, or to topics matching the patterns
({name} one segment, {name...} the rest, * any one segment), as they arrive,
until interrupted (or --count are printed).

It joins no consumer group and settles nothing on a service's behalf: on
Kafka it reads the partitions directly from their end (no group, no
commits); on RabbitMQ it binds a temporary exclusive queue of its own to the
exchange. Envelopes are decoded (JSON or msgpack).

	dispytch tail -b kafka://localhost:9092 user_events
	dispytch tail -b amqp://localhost:5672/ 'user.{id}.notification' --type user_notification --json
`

// tailLine is one message as tail --json prints it.
type tailLine struct {
	Topic     string            `json:"topic"`
	Partition *int32            `json:"partition,omitempty"`
	Offset    *int64            `json:"offset,omitempty"`
	Key       string            `json:"key,omitempty"`
	ID        string            `json:"id,omitempty"`
	Type      string            `json:"type,omitempty"`
	Timestamp string            `json:"timestamp,omitempty"`
	Codec     string            `json:"codec,omitempty"`
	Format    string            `json:"format,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      json.RawMessage   `json:"body"`
	Problem   string            `json:"not_an_envelope,omitempty"`
}

func runTail(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("tail", tailUsage)
	b := c.addBrokerFlags(fs)
	var types listFlag
	fs.Var(&types, "type", "print only events of this `type` (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON lines instead of text")
	count := fs.Int("count", 0, "stop after printing `n` messages (0: run until interrupted)")
	fromStart := fs.Bool("from-beginning", false, "Kafka: start at the beginning of the topics instead of their end")
	delim := fs.String("delimiter", topic.DefaultDelimiter, "topic segment `delimiter` of the patterns")
	showHeaders := fs.Bool("headers", false, "print the headers too (text output)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("tail takes at least one TOPIC or PATTERN (see dispytch tail --help)")
	}
	sub := &tailSub{fromBeginning: *fromStart}
	for _, p := range pos {
		pat, err := topic.Parse(p, *delim)
		if err != nil {
			return usagef("tail: %v", err)
		}
		sub.patterns = append(sub.patterns, pat)
	}
	br, err := b.open(ctx)
	if err != nil {
		return err
	}
	defer br.close()
	printed := 0
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	deliver := func(d *backend.Delivery) error {
		dec := decodeMessage(d.Value, d.ContentType, d.Headers)
		if len(types) > 0 && !slices.Contains(types, dec.typ) {
			return nil
		}
		line := tailLine{Topic: d.Topic, Key: string(d.Key), ID: dec.id, Type: dec.typ, Codec: dec.codec, Format: dec.format, Headers: d.Headers, Body: dec.body, Problem: dec.problem}
		if dec.envelope {
			line.Timestamp = time.UnixMilli(dec.timestamp).UTC().Format("2006-01-02T15:04:05.000Z")
		}
		if d.Info.Partition >= 0 && d.Info.Offset >= 0 { // a position in a log (Kafka)
			p, o := d.Info.Partition, d.Info.Offset
			line.Partition, line.Offset = &p, &o
		}
		if *asJSON {
			if err := enc.Encode(line); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(c.stdout, textLine(&line, *showHeaders))
		}
		printed++
		if *count > 0 && printed >= *count {
			return errEnough
		}
		return nil
	}
	ready := func(what string) {
		fmt.Fprintf(c.stderr, "dispytch: tailing %s (Ctrl-C to stop)\n", what)
	}
	if err := br.tail(ctx, sub, deliver, ready); err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	return nil
}

// textLine is one message as tail prints it by default.
func textLine(l *tailLine, headers bool) string {
	var b strings.Builder
	ts := l.Timestamp
	if ts == "" {
		ts = "-"
	}
	fmt.Fprintf(&b, "%s %s", ts, l.Topic)
	if l.Partition != nil {
		fmt.Fprintf(&b, "[%d@%d]", *l.Partition, *l.Offset)
	}
	typ := l.Type
	if typ == "" {
		typ = "(no envelope)"
	}
	fmt.Fprintf(&b, " %s", typ)
	if l.ID != "" {
		fmt.Fprintf(&b, " id=%s", l.ID)
	}
	if l.Key != "" {
		fmt.Fprintf(&b, " key=%q", l.Key)
	}
	if l.Codec == "msgpack" {
		b.WriteString(" msgpack")
	}
	if l.Format != "" {
		fmt.Fprintf(&b, " (%s)", l.Format)
	}
	if headers && len(l.Headers) > 0 {
		keys := make([]string, 0, len(l.Headers))
		for k := range l.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%q", k, l.Headers[k])
		}
	}
	fmt.Fprintf(&b, " %s", l.Body)
	if l.Problem != "" {
		fmt.Fprintf(&b, " (%s)", l.Problem)
	}
	return b.String()
}
