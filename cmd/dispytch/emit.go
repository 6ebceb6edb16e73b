package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
)

const emitUsage = `Usage: dispytch emit [flags] TOPIC TYPE [BODY]

Sends events of type TYPE to TOPIC, each in a Dispytch envelope (a new id,
the time), and prints the id of each, one a line, once the broker accepted it.

The body is a JSON value: the BODY argument, or with --file each line of the
file (JSON lines; '-' is standard input), or without either each line of
standard input. Every line is checked before anything is sent: a line that
is not JSON stops the command and nothing is sent.

	dispytch emit -b kafka://localhost:9092 user_events user_registered '{"user":{"id":"42"}}'
	dispytch emit -b amqp://localhost:5672/ user_events user_registered --file events.jsonl --key 42
	producer | dispytch emit -b kafka://localhost:9092 --codec msgpack audit audit_entry

--envelope chooses where the id, type and time go, as a listener's
dispytch.Envelopes option reads them:

	dispytch                 the Dispytch envelope (the default; Python Dispytch's wire)
	headers                  the body alone; id, type and time in dispytch-* headers
	cloudevents              CloudEvents 1.0, binary mode (ce_ headers; AMQP: cloudEvents_)
	cloudevents-structured   CloudEvents 1.0, structured mode (application/cloudevents+json)
	none                     the body alone, no id: what a service without Dispytch sends

--source sets the CloudEvents source attribute (default /dispytch/TOPIC).
`

func runEmit(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("emit", emitUsage)
	b := c.addBrokerFlags(fs)
	var headers listFlag
	file := fs.String("file", "", "read the bodies from this `file`, one JSON value a line ('-': standard input)")
	key := fs.String("key", "", "message `key` (Kafka's partition key; the ordering key)")
	fs.Var(&headers, "header", "message header `name=value` (repeatable)")
	id := fs.String("id", "", "event `id` (one event only; default: a new UUID v4)")
	codecName := fs.String("codec", "json", "`codec` of the envelope and body: json or msgpack")
	envelope := fs.String("envelope", "dispytch", "envelope `mode`: dispytch, headers, cloudevents, cloudevents-structured, or none (the body alone)")
	source := fs.String("source", "", "CloudEvents source `URI` (default /dispytch/TOPIC)")
	batch := fs.Int("batch", 100, "send up to `n` events per broker call")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 {
		return usagef("emit takes TOPIC TYPE [BODY] (see dispytch emit --help)")
	}
	topicName, typ := pos[0], pos[1]
	if strings.ContainsAny(topicName, "{}*") {
		return usagef("emit: topic %q is a pattern: give the concrete topic", topicName)
	}
	var cd codec.Codec
	switch *codecName {
	case "json":
		cd = codec.JSON
	case "msgpack":
		cd = msgpack.Codec
	default:
		return usagef("emit: --codec %q: json or msgpack", *codecName)
	}
	var format codec.EnvelopeFormat
	switch *envelope {
	case "dispytch", "none":
	case "headers":
		format = codec.Headers
	case "cloudevents", "cloudevents-binary":
		format = codec.CloudEvents(codec.CloudEventsBinary, *source)
	case "cloudevents-structured":
		format = codec.CloudEvents(codec.CloudEventsStructured, *source)
	default:
		return usagef("emit: --envelope %q: dispytch, headers, cloudevents, cloudevents-structured or none", *envelope)
	}
	if *source != "" && format == nil {
		return usagef("emit: --source is the CloudEvents source: give it with --envelope cloudevents or cloudevents-structured")
	}
	hdr := map[string]string{}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return usagef("emit: --header %q is not name=value", h)
		}
		hdr[k] = v
	}
	if len(pos) == 3 && *file != "" {
		return usagef("emit: give BODY or --file, not both")
	}

	var bodies []json.RawMessage
	switch {
	case len(pos) == 3:
		if !json.Valid([]byte(pos[2])) {
			return fmt.Errorf("emit: BODY is not JSON: %s", jsonProblem([]byte(pos[2])))
		}
		bodies = []json.RawMessage{json.RawMessage(pos[2])}
	default:
		in, name := c.stdin, "standard input"
		if *file != "" && *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return fmt.Errorf("emit: %w", err)
			}
			defer f.Close()
			in, name = f, *file
		}
		if bodies, err = readLines(in, name); err != nil {
			return fmt.Errorf("emit: %w", err)
		}
	}
	if len(bodies) == 0 {
		return errors.New("emit: no body to send (the input is empty)")
	}
	if *id != "" && len(bodies) > 1 {
		return usagef("emit: --id names one event, and there are %d", len(bodies))
	}

	msgs := make([]*backend.Message, len(bodies))
	now := time.Now().UnixMilli()
	for i, body := range bodies {
		var h map[string]string
		if len(hdr) > 0 {
			h = make(map[string]string, len(hdr))
			for k, v := range hdr {
				h[k] = v
			}
		}
		m, err := buildMessage(cd, *envelope, format, schemeBackend(b.url), topicName, typ, *id, body, now, h)
		if err != nil {
			return fmt.Errorf("emit: event %d: %w", i+1, err)
		}
		if *key != "" {
			m.Key = []byte(*key)
		}
		msgs[i] = m
	}

	br, err := b.open(ctx)
	if err != nil {
		return err
	}
	defer br.close()
	p := br.producer()
	sent := 0
	for start := 0; start < len(msgs); start += max(*batch, 1) {
		end := min(start+max(*batch, 1), len(msgs))
		sendCtx, cancel := context.WithTimeout(ctx, b.timeout)
		err := p.Produce(sendCtx, msgs[start:end]...)
		cancel()
		if err != nil {
			var be *backend.BatchError
			if errors.As(err, &be) && len(be.Errs) == end-start {
				for i, e := range be.Errs {
					if e == nil {
						printID(c, msgs[start+i])
						sent++
					} else {
						fmt.Fprintf(c.stderr, "dispytch: emit: event %d (%s): %v\n", start+i+1, msgs[start+i].ID, e)
					}
				}
			} else {
				fmt.Fprintf(c.stderr, "dispytch: emit: events %d to %d: %v\n", start+1, end, err)
			}
			return fmt.Errorf("emit: %d of %d events sent (%s)", sent, len(msgs), retryAdvice(err))
		}
		for _, m := range msgs[start:end] {
			printID(c, m)
		}
		sent += end - start
	}
	if *envelope == "none" {
		fmt.Fprintf(c.stderr, "dispytch: sent %d bodies without an envelope (they have no event id)\n", sent)
	}
	return nil
}

// printID prints the event id of a message the broker accepted; a body
// sent without an envelope has none.
func printID(c *cli, m *backend.Message) {
	if m.ID != "" {
		fmt.Fprintln(c.stdout, m.ID)
	}
}

// retryAdvice says whether sending again can duplicate.
func retryAdvice(err error) string {
	switch {
	case errors.Is(err, backend.ErrUnconfirmed):
		return "some were sent without a confirmation: sending them again may duplicate them"
	case errors.Is(err, backend.ErrNotSent):
		return "those not printed were not sent: sending them again cannot duplicate them"
	}
	return "those not printed failed"
}

// buildMessage encodes one event as the emitter would.
func buildMessage(cd codec.Codec, envelope string, format codec.EnvelopeFormat, backendName, topicName, typ, id string, body json.RawMessage, now int64, headers map[string]string) (*backend.Message, error) {
	if id == "" {
		id = backend.NewUUID()
	}
	m := &backend.Message{Topic: topicName, ID: id, Type: typ, ContentType: cd.ContentType(), Headers: headers}
	var encBody []byte
	if cd != codec.JSON {
		v, err := decodeJSONValue(body)
		if err != nil {
			return nil, err
		}
		if encBody, err = cd.Marshal(v); err != nil {
			return nil, fmt.Errorf("encode the body: %w", err)
		}
	} else {
		var compact bytes.Buffer
		if err := json.Compact(&compact, body); err != nil {
			return nil, err
		}
		encBody = compact.Bytes()
	}
	if envelope == "none" {
		m.Value = encBody
		m.ID, m.Type = "", ""
		return m, nil
	}
	if format != nil {
		f := &codec.Frame{Topic: topicName, Headers: m.Headers, Backend: backendName}
		if err := format.Encode(f, &codec.Envelope{ID: id, Type: typ, Body: encBody, Timestamp: now}, cd); err != nil {
			return nil, fmt.Errorf("encode the envelope (%s): %w", format.Name(), err)
		}
		m.Value, m.ContentType, m.Headers = f.Value, f.ContentType, f.Headers
		return m, nil
	}
	v, err := cd.AppendEnvelope(nil, &codec.Envelope{ID: id, Type: typ, Body: encBody, Timestamp: now})
	if err != nil {
		return nil, fmt.Errorf("encode the envelope: %w", err)
	}
	m.Value = v
	return m, nil
}

// decodeJSONValue decodes JSON keeping integers integers, for codecs that
// tell them from floats (msgpack).
func decodeJSONValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	}
	return v
}

// readLines reads JSON lines, skipping blank ones; any line that is not
// JSON is an error naming it, and nothing is returned.
func readLines(r io.Reader, name string) ([]json.RawMessage, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var out []json.RawMessage
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			return nil, fmt.Errorf("%s, line %d: not JSON: %s (nothing was sent)", name, n, jsonProblem(line))
		}
		out = append(out, json.RawMessage(bytes.Clone(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w (nothing was sent)", name, err)
	}
	return out, nil
}

func jsonProblem(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err.Error()
	}
	return "invalid"
}

// schemeBackend names the backend a broker URL's scheme selects, as its
// producer names itself, for envelope formats whose headers differ by
// broker (CloudEvents on AMQP).
func schemeBackend(url string) string {
	scheme, _, _ := strings.Cut(url, "://")
	switch strings.ToLower(scheme) {
	case "kafka", "kafkas":
		return "kafka"
	case "amqp", "amqps":
		return "rabbitmq"
	case "redis", "rediss":
		return "redis"
	case "nats", "tls":
		return "nats"
	}
	return ""
}
