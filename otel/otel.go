// Package otel instruments Dispytch listeners and emitters with
// OpenTelemetry: traces, metrics and the trace context in message headers.
// It uses the OpenTelemetry API only; the application sets up the SDK (or
// nothing: without providers the globals are used, which are no-ops until
// set).
//
//	inst, err := dotel.New(dotel.TracerProvider(tp), dotel.MeterProvider(mp), dotel.System("kafka"))
//	l := dispytch.NewListener(consumer, dispytch.Observe(inst), dispytch.Use(inst.Middleware()))
//	em := dispytch.NewEmitter(producer, dispytch.Observe(inst))
//	reg, err := inst.Watch("orders", l) // health gauges; inst.WatchLag(consumer) for Kafka lag
//
// # Traces
//
// Each emit is a producer span "send <topic template>" whose context (W3C
// traceparent and tracestate, and the baggage) goes into the message's
// headers, on every backend. Each message a listener takes is a consumer
// span "process <topic pattern>", a child of the context its headers carry,
// so that a trace started before Emit continues in the handlers: the
// handler's ctx carries the span of its attempt, "handle <handler>", a
// child of the message's span; an emit inside the handler continues the
// same trace. Failed attempts record their error; the message's span ends
// with the outcome (dispytch.outcome: acked, dead_lettered, redelivered,
// dropped, ...) and the failure's reason.
//
// A dead letter keeps the original's headers, so its trace context is the
// original's. A redriven message (dlq.Redrive) starts a new trace whose
// process span links to the original context: a redrive hours later is not
// drawn into the original trace, and can still be followed back to it.
//
// Span attributes follow the OpenTelemetry messaging semantic conventions
// (messaging.system, messaging.operation.name and .type,
// messaging.destination.name — the concrete topic — and
// messaging.destination.template — the pattern or template —
// messaging.message.id, messaging.consumer.group.name,
// messaging.destination.partition.id and messaging.kafka.offset,
// messaging.message.body.size) with dispytch.* attributes for the event
// type, the handler, the attempt and the outcome.
//
// # Metrics
//
// Labels are bounded: the group, the topic pattern (as handlers registered
// it) or template (as events declare it), the handler's name, the outcome
// and reason enums, never a concrete topic or an event id. Kafka lag is by
// partition (the partitions this process owns).
//
//	messaging.client.sent.messages       emits, with error.type when one failed
//	messaging.client.operation.duration  emit duration (s), with error.type
//	messaging.client.consumed.messages   messages received
//	messaging.process.duration           receipt to settlement (s), by outcome
//	dispytch.messages.settled            messages settled, by outcome and reason
//	dispytch.messages.dead_lettered      messages dead-lettered, by reason
//	dispytch.messages.in_flight          messages being handled
//	dispytch.handler.attempt.duration    handler attempts (s), by handler and outcome
//	dispytch.handler.retries             attempts after the first, by handler
//	dispytch.connection.state            1 for the current state of each watched listener and emitter (Watch)
//	dispytch.connection.reconnects       reconnections of each watched listener and emitter (Watch)
//	dispytch.listener.stalled            how long messages have waited with none settled (s) (Watch)
//	dispytch.consumer.lag                records not committed, by partition (WatchLag)
package otel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/dispytch/dispytch-go/otel"

// Attribute keys of Dispytch's own, next to the semantic conventions'.
const (
	KeyEventType = attribute.Key("dispytch.event.type")
	KeyHandler   = attribute.Key("dispytch.handler")
	KeyAttempt   = attribute.Key("dispytch.attempt")
	KeyOutcome   = attribute.Key("dispytch.outcome")
	KeyReason    = attribute.Key("dispytch.reason")
	// KeyDeliveryCount is the broker's delivery count, when it keeps one.
	KeyDeliveryCount = attribute.Key("dispytch.delivery_count")
	// KeyRedriven marks the process span of a redriven message, and its
	// link to the original's context.
	KeyRedriven = attribute.Key("dispytch.redriven")
	// KeyComponent and KeyKind name a watched listener or emitter.
	KeyComponent = attribute.Key("dispytch.component")
	KeyKind      = attribute.Key("dispytch.component.kind")
	KeyState     = attribute.Key("dispytch.state")
)

// Option configures an Instrumentation.
type Option interface{ apply(*config) }

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	system string
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// TracerProvider sets where spans go. Default: the global provider
// (otel.GetTracerProvider).
func TracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// MeterProvider sets where metrics go. Default: the global provider
// (otel.GetMeterProvider).
func MeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// Propagator sets how the trace context and the baggage travel in message
// headers. Default: W3C Trace Context and W3C Baggage (traceparent,
// tracestate, baggage), whatever the global propagator is, so that
// messages carry them without further setup.
func Propagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.prop = p })
}

// System names messaging.system on the emit side ("kafka", "rabbitmq"),
// which observers of an emitter are not told. Default: "dispytch". The
// consume side takes the consumer's backend name, and this when it has
// none.
func System(name string) Option {
	return optionFunc(func(c *config) { c.system = name })
}

// Instrumentation traces and measures listeners and emitters: give it to
// them with dispytch.Observe, and its Middleware to listeners with
// dispytch.Use. One Instrumentation serves any number of them; it is safe
// for concurrent use.
type Instrumentation struct {
	tracer trace.Tracer
	meter  metric.Meter
	prop   propagation.TextMapPropagator
	system string
	m      instruments

	sets sync.Map // labelKey -> attribute.Set
}

// New returns an Instrumentation. It fails only when the meter provider
// refuses to create an instrument.
func New(opts ...Option) (*Instrumentation, error) {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if c.system == "" {
		c.system = "dispytch"
	}
	i := &Instrumentation{
		tracer: c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		meter:  c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)),
		prop:   c.prop,
		system: c.system,
	}
	if err := i.m.init(i.meter); err != nil {
		return nil, fmt.Errorf("dispytch otel: %w", err)
	}
	return i, nil
}

var (
	_ dispytch.MessageObserver = (*Instrumentation)(nil)
	_ dispytch.EmitObserver    = (*Instrumentation)(nil)
)

// ObserveEmit implements dispytch.EmitObserver: a producer span "send
// <template>" and the trace context and baggage in m.Headers.
func (i *Instrumentation) ObserveEmit(ctx context.Context, m *backend.Message) (context.Context, func(error)) {
	start := time.Now()
	tmpl := m.Template
	if tmpl == "" {
		tmpl = m.Topic
	}
	ctx, span := i.tracer.Start(ctx, "send "+tmpl, producerSpan...)
	if span.IsRecording() {
		// Built only for a span that records: a sampled-out or no-op span
		// costs no attributes.
		attrs := make([]attribute.KeyValue, 0, 8)
		attrs = append(attrs,
			semconv.MessagingSystemKey.String(i.system),
			semconv.MessagingOperationName("send"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(m.Topic),
			semconv.MessagingDestinationTemplate(tmpl),
			semconv.MessagingMessageBodySize(len(m.Value)),
		)
		if m.ID != "" {
			attrs = append(attrs, semconv.MessagingMessageID(m.ID))
		}
		if m.Type != "" {
			attrs = append(attrs, KeyEventType.String(m.Type))
		}
		span.SetAttributes(attrs...)
	}
	i.prop.Inject(ctx, headerCarrier{&m.Headers})
	return ctx, func(err error) {
		et := emitErrorType(err)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(semconv.ErrorTypeKey.String(et))
		}
		span.End()
		ls := i.set(labelKey{kind: kindEmit, system: i.system, topic: tmpl, errType: et})
		ctx := context.Background()
		i.m.sent.Add(ctx, 1, ls.add...)
		i.m.emitDur.Record(ctx, time.Since(start).Seconds(), ls.rec...)
	}
}

// The span start options, made once.
var (
	producerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	consumerSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	internalSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// headerCarrier is a message's headers as a propagation carrier; it makes
// the map only when something is injected.
type headerCarrier struct{ h *map[string]string }

func (c headerCarrier) Get(key string) string { return (*c.h)[key] }

func (c headerCarrier) Set(key, value string) {
	if *c.h == nil {
		*c.h = make(map[string]string, 3)
	}
	(*c.h)[key] = value
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(*c.h))
	for k := range *c.h {
		keys = append(keys, k)
	}
	return keys
}

// emitErrorType classifies an emit error for error.type: a small, fixed
// set of values.
func emitErrorType(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, dispytch.ErrTimeout):
		return "timeout"
	case errors.Is(err, dispytch.ErrTooLarge):
		return "too_large"
	case errors.Is(err, dispytch.ErrUnroutable):
		return "unroutable"
	case errors.Is(err, dispytch.ErrClosed):
		return "closed"
	case errors.Is(err, dispytch.ErrPermanent):
		return "permanent"
	case errors.Is(err, dispytch.ErrUnconfirmed):
		return "unconfirmed"
	case errors.Is(err, dispytch.ErrNotSent):
		return "not_sent"
	}
	return "_OTHER"
}

// msgKey carries a message's *message in the handlers' context, for the
// middleware.
type msgKey struct{}

// message is what the instrumentation keeps about a message from its
// receipt to its settlement.
type message struct {
	span    trace.Span
	group   string
	system  string
	pattern string
	start   time.Time
}

// ObserveMessage implements dispytch.MessageObserver: it extracts the
// trace context and the baggage from the message's headers and starts the
// consumer span "process <pattern>", whose context becomes the handlers'.
func (i *Instrumentation) ObserveMessage(ctx context.Context, info *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	msg := &message{group: info.Group, system: info.Backend, start: time.Now()}
	if msg.system == "" {
		msg.system = i.system
	}
	msg.pattern = patternOf(info.Patterns)
	parent := ctx
	if len(info.Headers) > 0 {
		parent = i.prop.Extract(ctx, propagation.MapCarrier(info.Headers))
	}
	opts := consumerSpan
	redriven := isRedriven(info.Headers)
	if redriven {
		// A new trace, linked to the original's: the redrive is an
		// operator's act, maybe days later.
		opts = append(opts[:len(opts):len(opts)], trace.WithNewRoot())
		if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{KeyRedriven.Bool(true)}}))
		}
		parent = baggage.ContextWithBaggage(ctx, baggage.FromContext(parent))
	}
	name := "process"
	if msg.pattern != "" {
		name += " " + msg.pattern
	}
	ctx, msg.span = i.tracer.Start(parent, name, opts...)
	if msg.span.IsRecording() {
		i.messageAttributes(msg, info, redriven)
	}
	if info.Err != nil {
		msg.span.RecordError(info.Err)
	}
	base := i.set(labelKey{kind: kindMessage, system: msg.system, group: msg.group, topic: msg.pattern})
	bctx := context.Background()
	i.m.consumed.Add(bctx, 1, base.add...)
	i.m.inflight.Add(bctx, 1, base.add...)
	ctx = context.WithValue(ctx, msgKey{}, msg)
	return ctx, func(s dispytch.Settlement) { i.settled(msg, base, s) }
}

// messageAttributes sets the attributes of a message's span.
func (i *Instrumentation) messageAttributes(msg *message, info *dispytch.MessageInfo, redriven bool) {
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs,
		semconv.MessagingSystemKey.String(msg.system),
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(info.Topic),
		semconv.MessagingMessageBodySize(info.Size),
	)
	if msg.pattern != "" {
		attrs = append(attrs, semconv.MessagingDestinationTemplate(msg.pattern))
	}
	if info.Group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(info.Group))
	}
	if info.ID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(info.ID))
	}
	if info.Type != "" {
		attrs = append(attrs, KeyEventType.String(info.Type))
	}
	if p := info.Delivery.Partition; p >= 0 {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(p))))
		if info.Delivery.Offset >= 0 {
			attrs = append(attrs, semconv.MessagingKafkaOffset(int(info.Delivery.Offset)))
		}
	}
	if n := info.Delivery.DeliveryCount; n > 0 {
		attrs = append(attrs, KeyDeliveryCount.Int(n))
	}
	if redriven {
		attrs = append(attrs, KeyRedriven.Bool(true))
	}
	msg.span.SetAttributes(attrs...)
}

// settled ends a message's span and counts its settlement.
func (i *Instrumentation) settled(msg *message, base *labels, s dispytch.Settlement) {
	reason := ""
	if len(s.Failures) > 0 {
		reason = string(s.Failures[0].Reason)
	}
	span := msg.span
	if span.IsRecording() {
		span.SetAttributes(KeyOutcome.String(s.Outcome.String()))
		if reason != "" {
			span.SetAttributes(KeyReason.String(reason))
		}
	}
	switch {
	case s.Err != nil:
		span.RecordError(s.Err)
		span.SetStatus(codes.Error, "settling failed: "+s.Err.Error())
	case len(s.Failures) > 0:
		f := s.Failures[0]
		desc := f.Handler + ": " + string(f.Reason)
		if f.Err != nil {
			desc += ": " + f.Err.Error()
		}
		span.SetStatus(codes.Error, s.Outcome.String()+": "+desc)
	}
	span.End()
	ctx := context.Background()
	i.m.inflight.Add(ctx, -1, base.add...)
	ls := i.set(labelKey{kind: kindSettle, system: msg.system, group: msg.group, topic: msg.pattern, outcome: s.Outcome.String(), reason: reason})
	i.m.settled.Add(ctx, 1, ls.add...)
	i.m.processDur.Record(ctx, time.Since(msg.start).Seconds(), ls.rec...)
	if s.Outcome == dispytch.OutcomeDeadLettered {
		i.m.deadLettered.Add(ctx, 1, ls.add...)
	}
}

// isRedriven reports a message that dlq.Redrive republished.
func isRedriven(h map[string]string) bool {
	if len(h) == 0 {
		return false
	}
	_, a := h[dispytch.HeaderRedriveHandler]
	_, b := h[dispytch.HeaderRedriveGroup]
	return a || b
}

// patternOf is the label of the patterns a message was routed to: the
// one, or several joined with ",".
func patternOf(ps []string) string {
	switch len(ps) {
	case 0:
		return ""
	case 1:
		return ps[0]
	}
	uniq := make([]string, 0, len(ps))
	for _, p := range ps {
		dup := false
		for _, u := range uniq {
			dup = dup || u == p
		}
		if !dup {
			uniq = append(uniq, p)
		}
	}
	return strings.Join(uniq, ",")
}

// Middleware returns the middleware that makes each handler attempt a span
// "handle <handler>", a child of the message's, records its error and
// measures it. Give it to the listeners that Observe this Instrumentation:
//
//	dispytch.NewListener(c, dispytch.Observe(inst), dispytch.Use(inst.Middleware()))
func (i *Instrumentation) Middleware() dispytch.Middleware {
	return func(next dispytch.HandlerFunc) dispytch.HandlerFunc {
		return func(ctx context.Context, c *dispytch.Call) error {
			start := time.Now()
			group, system := "", i.system
			if msg, ok := ctx.Value(msgKey{}).(*message); ok {
				group, system = msg.group, msg.system
			}
			attempt := c.Meta.Delivery.Attempt
			ctx, span := i.tracer.Start(ctx, "handle "+c.Handler.Name, internalSpan...)
			if span.IsRecording() {
				span.SetAttributes(
					KeyHandler.String(c.Handler.Name),
					KeyAttempt.Int(attempt),
					KeyEventType.String(c.Handler.EventType),
					semconv.MessagingDestinationTemplate(c.Handler.Topic),
				)
			}
			err := next(ctx, c)
			reason := ""
			if err != nil {
				reason = attemptReason(err)
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				span.SetAttributes(semconv.ErrorTypeKey.String(reason))
			}
			span.End()
			bctx := context.Background()
			ls := i.set(labelKey{kind: kindAttempt, system: system, group: group, topic: c.Handler.Topic, handler: c.Handler.Name, reason: reason})
			i.m.attemptDur.Record(bctx, time.Since(start).Seconds(), ls.rec...)
			if attempt > 1 {
				rs := i.set(labelKey{kind: kindRetry, system: system, group: group, topic: c.Handler.Topic, handler: c.Handler.Name})
				i.m.retries.Add(bctx, 1, rs.add...)
			}
			return err
		}
	}
}

// attemptReason classifies a failed attempt like the dead-letter reasons.
func attemptReason(err error) string {
	switch {
	case errors.Is(err, dispytch.ErrPanic):
		return string(dispytch.ReasonPanic)
	case errors.Is(err, dispytch.ErrAttemptTimeout):
		return string(dispytch.ReasonTimeout)
	case errors.Is(err, dispytch.ErrDecode):
		return string(dispytch.ReasonDecode)
	case errors.Is(err, dispytch.ErrValidation):
		return string(dispytch.ReasonValidation)
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return string(dispytch.ReasonHandler)
}
