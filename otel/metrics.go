package otel

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// durationBuckets are the histograms' bucket bounds in seconds: from
// 100µs (an in-process broker) to 10s (the messaging conventions' top).
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

type instruments struct {
	sent         metric.Int64Counter
	emitDur      metric.Float64Histogram
	consumed     metric.Int64Counter
	processDur   metric.Float64Histogram
	settled      metric.Int64Counter
	deadLettered metric.Int64Counter
	inflight     metric.Int64UpDownCounter
	attemptDur   metric.Float64Histogram
	retries      metric.Int64Counter
}

func (m *instruments) init(meter metric.Meter) error {
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, e := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if e != nil && err == nil {
			err = e
		}
		return c
	}
	hist := func(name, desc string) metric.Float64Histogram {
		h, e := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		if e != nil && err == nil {
			err = e
		}
		return h
	}
	m.sent = counter("messaging.client.sent.messages", "{message}", "Messages emitted, with error.type for those that failed.")
	m.emitDur = hist("messaging.client.operation.duration", "Duration of an emit, until the broker accepted the message or it failed.")
	m.consumed = counter("messaging.client.consumed.messages", "{message}", "Messages a listener received.")
	m.processDur = hist("messaging.process.duration", "Duration from a message's receipt to its settlement.")
	m.settled = counter("dispytch.messages.settled", "{message}", "Messages settled, by outcome and failure reason.")
	m.deadLettered = counter("dispytch.messages.dead_lettered", "{message}", "Messages dead-lettered, by failure reason.")
	m.retries = counter("dispytch.handler.retries", "{attempt}", "Handler attempts after the first.")
	m.attemptDur = hist("dispytch.handler.attempt.duration", "Duration of a handler attempt, with error.type for failed ones.")
	in, e := meter.Int64UpDownCounter("dispytch.messages.in_flight", metric.WithUnit("{message}"),
		metric.WithDescription("Messages received and not yet settled."))
	if e != nil && err == nil {
		err = e
	}
	m.inflight = in
	return err
}

// The kinds of label sets.
const (
	kindEmit = iota
	kindMessage
	kindSettle
	kindAttempt
	kindRetry
)

// labelKey identifies a label set; the sets are made once and cached, so
// that recording allocates nothing.
type labelKey struct {
	kind                          int
	system, group, topic, handler string
	outcome, reason, errType      string
}

// labels is a cached label set with the options that record with it,
// made once so that recording allocates nothing.
type labels struct {
	set attribute.Set
	add []metric.AddOption
	rec []metric.RecordOption
}

func (i *Instrumentation) set(k labelKey) *labels {
	if v, ok := i.sets.Load(k); ok {
		return v.(*labels)
	}
	kvs := make([]attribute.KeyValue, 0, 7)
	kvs = append(kvs, semconv.MessagingSystemKey.String(k.system))
	if k.topic != "" {
		kvs = append(kvs, semconv.MessagingDestinationTemplate(k.topic))
	}
	if k.kind != kindEmit && k.group != "" {
		kvs = append(kvs, semconv.MessagingConsumerGroupName(k.group))
	}
	switch k.kind {
	case kindEmit:
		kvs = append(kvs, semconv.MessagingOperationName("send"))
		if k.errType != "" {
			kvs = append(kvs, semconv.ErrorTypeKey.String(k.errType))
		}
	case kindSettle:
		kvs = append(kvs, KeyOutcome.String(k.outcome))
		if k.reason != "" {
			kvs = append(kvs, KeyReason.String(k.reason))
		}
	case kindAttempt:
		kvs = append(kvs, KeyHandler.String(k.handler))
		outcome := "ok"
		if k.reason != "" {
			outcome = "failed"
			kvs = append(kvs, semconv.ErrorTypeKey.String(k.reason))
		}
		kvs = append(kvs, KeyOutcome.String(outcome))
	case kindRetry:
		kvs = append(kvs, KeyHandler.String(k.handler))
	}
	set := attribute.NewSet(kvs...)
	opt := metric.WithAttributeSet(set)
	l := &labels{set: set, add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
	v, _ := i.sets.LoadOrStore(k, l)
	return v.(*labels)
}
