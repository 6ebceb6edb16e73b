// Package asyncapi describes a Dispytch service as an AsyncAPI 3.0 document,
// built from the code: the channels its listeners receive from and its
// emitters send to, one message per event type (several per channel), JSON
// Schemas of the bodies generated from the Go types with their json and
// validate tags, the envelope and headers, send and receive operations, and
// Kafka, AMQP and NATS bindings for the servers given.
//
//	doc, err := asyncapi.Build(asyncapi.Info{Title: "users", Version: "1.0.0"},
//		asyncapi.Listener(listener), asyncapi.Emitter(emitter),
//		asyncapi.Server("production", "kafka://broker:9092"))
//	yaml, err := doc.YAML()
//	http.Handle("/asyncapi/", asyncapi.Handler(doc)) // HTML, asyncapi.json, asyncapi.yaml
//
// Documents are deterministic: the same code gives the same bytes, so they
// can be committed and diffed. Parse reads a document back (JSON or YAML),
// Validate checks its structure and references, and the dispytch command
// validates, renders and serves them.
//
// # How Dispytch maps onto AsyncAPI
//
// A channel is a topic: its address is the topic, or the pattern with each
// wildcard as a parameter ({user_id}; {rest...} becomes {rest}; * becomes
// {segmentN}). A parameter is described, typed (x-dispytch-schema) and
// constrained (enum) by the field of the handler's Segments struct that
// takes it, or, on a channel an emitter fills from the event, by that
// field, with its location in the payload. A message is an event type: its
// payload is the envelope {"id","type","body","timestamp"} whose body is the
// schema of the Go type. Handlers are receive operations, declared events
// send operations; each consumer group's dead-letter channel
// ("<group>.dlq") is described with its failure headers.
package asyncapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Document is an AsyncAPI document: built by Build, or read by Parse.
type Document struct {
	root *object
}

// Parse reads an AsyncAPI document in JSON or YAML. It checks only that it
// is one well-formed object; Validate checks the rest.
func Parse(data []byte) (*Document, error) {
	var v any
	var err error
	if t := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		v, err = parseJSON(data)
	} else {
		v, err = parseYAML(data)
	}
	if err != nil {
		return nil, err
	}
	o, ok := v.(*object)
	if !ok {
		return nil, errors.New("asyncapi: the document is not an object")
	}
	return &Document{root: o}, nil
}

// JSON returns the document as indented JSON.
func (d *Document) JSON() ([]byte, error) {
	var b bytes.Buffer
	if err := writeJSON(&b, d.root); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// YAML returns the document as YAML, with the keys in the same order as in
// JSON.
func (d *Document) YAML() ([]byte, error) {
	n, err := toYAML(d.root)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("asyncapi: YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("asyncapi: YAML: %w", err)
	}
	return b.Bytes(), nil
}

// MarshalJSON encodes the document compactly.
func (d *Document) MarshalJSON() ([]byte, error) { return d.root.MarshalJSON() }

// Title returns info.title.
func (d *Document) Title() string { return d.root.child("info").str("title") }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
