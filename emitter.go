package dispytch

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/topic"
)

// Emitter encodes events into Dispytch envelopes and sends them through a
// backend.Producer. It is safe for concurrent use.
type Emitter struct {
	p        backend.Producer
	ap       backend.AsyncProducer // p, when it batches
	codec    codec.Codec
	appender codec.EventAppender      // codec, when it has the fast path
	def      bodyEncoding             // the default encoding (codec, format)
	framed   bool                     // def is not the fast path
	types    map[string]*bodyEncoding // per event type (ForEventType); nil without
	pending  []forType
	backend  string
	log      *slog.Logger
	obs      []EmitObserver
	now      func() time.Time
	health   emitterHealth

	templates sync.Map // template string -> *topic.Template
	fields    sync.Map // reflect.Type -> map[string][]int

	declMu   sync.Mutex
	declared []Eventer // Declare
}

// EmitterOption configures an Emitter.
type EmitterOption interface{ applyEmitter(*Emitter) }

type emitterOptionFunc func(*Emitter)

func (f emitterOptionFunc) applyEmitter(e *Emitter) { f(e) }

// WithCodec sets the codec the emitter encodes with: the envelope's and
// the body's in the Dispytch envelope (JSON or msgpack), the body's in the
// other formats (see Envelopes); with ForEventType, for one event type.
// Default: codec.JSON. Listeners read JSON and msgpack whatever their own
// codecs.
func WithCodec(c codec.Codec) EmitterOption { return codecOption{c} }

type codecOption struct{ c codec.Codec }

func (o codecOption) applyEmitter(e *Emitter) { o.applyEncoding(&e.def) }

func (o codecOption) applyEncoding(enc *bodyEncoding) {
	if o.c != nil {
		enc.codec = o.c
	}
}

// NewEmitter returns an emitter that sends through p, encoding with JSON
// unless WithCodec says otherwise.
func NewEmitter(p backend.Producer, opts ...EmitterOption) *Emitter {
	e := &Emitter{p: p, def: bodyEncoding{codec: codec.JSON}, log: slog.Default(), now: time.Now}
	e.ap, _ = p.(backend.AsyncProducer)
	if bn, ok := p.(backend.Named); ok {
		e.backend = bn.Backend()
	}
	for _, o := range opts {
		o.applyEmitter(e)
	}
	e.setupEncodings()
	return e
}

// Declare records event types the emitter sends, for tools that describe
// the service (package asyncapi builds send operations from them). It sends
// nothing; the values only give their types, topics and event types.
func (e *Emitter) Declare(events ...Eventer) {
	e.declMu.Lock()
	e.declared = append(e.declared, events...)
	e.declMu.Unlock()
}

// Declared returns the event types given to Declare, in order.
func (e *Emitter) Declared() []Eventer {
	e.declMu.Lock()
	defer e.declMu.Unlock()
	return append([]Eventer(nil), e.declared...)
}

// EmitOption sets a per-emit option.
type EmitOption func(*emitSettings)

type emitSettings struct {
	key     []byte
	keySet  bool
	id      string
	headers map[string]string
	backend []backend.Option
}

// Key sets the message key (Kafka's partition key; the memory broker's
// ordering key). It overrides the event's EventKey method.
func Key(k string) EmitOption {
	return func(s *emitSettings) { s.key, s.keySet = []byte(k), true }
}

// Header sets a message header.
func Header(key, value string) EmitOption {
	return func(s *emitSettings) {
		if s.headers == nil {
			s.headers = map[string]string{}
		}
		s.headers[key] = value
	}
}

// EventID sets the envelope's event ID, overriding the event's EventID method
// and the generated UUID.
func EventID(id string) EmitOption { return func(s *emitSettings) { s.id = id } }

// WithBackendOption passes a backend-specific option. Backends wrap their own
// options with it (kafka.Partition, rabbitmq.Priority, ...); the emitter
// rejects an option of another backend with ErrForeignOption.
func WithBackendOption(o backend.Option) EmitOption {
	return func(s *emitSettings) { s.backend = append(s.backend, o) }
}

// Emit encodes ev and sends it. It returns once the broker accepted the
// message.
//
// When it fails, the error says whether the message may have been stored:
// one wrapping ErrNotSent was not sent (ctx was done before it was handed
// to the broker, it did not encode, the producer is closed), so retrying
// cannot duplicate it; one wrapping ErrUnconfirmed was sent but its
// confirmation did not arrive, so the broker may have it. Errors also wrap
// the cause: ErrTopicField, ErrEncode, ErrForeignOption, ErrTimeout (the
// ctx deadline passed; with context.DeadlineExceeded), context.Canceled,
// ErrClosed, ErrUnroutable or the producer's own errors.
func (e *Emitter) Emit(ctx context.Context, ev Eventer, opts ...EmitOption) error {
	m, err := e.message(ctx, ev, opts)
	if err == nil {
		if len(e.obs) > 0 {
			var end func(error)
			ctx, end = e.observe(ctx, m)
			defer func() { end(err) }()
		}
		err = e.produceErr(ctx, m, e.p.Produce(ctx, m))
	}
	return err
}

// observe runs the emit observers on m and returns the context to send it
// with and the function reporting its outcome.
func (e *Emitter) observe(ctx context.Context, m *backend.Message) (context.Context, func(error)) {
	ends := make([]func(error), 0, len(e.obs))
	for _, o := range e.obs {
		var end func(error)
		ctx, end = o.ObserveEmit(ctx, m)
		if end != nil {
			ends = append(ends, end)
		}
	}
	return ctx, func(err error) {
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](err)
		}
	}
}

// message encodes ev for sending, and checks what must hold before
// anything is sent: a producer, a live context.
func (e *Emitter) message(ctx context.Context, ev Eventer, opts []EmitOption) (*backend.Message, error) {
	if ctx == nil {
		return nil, fmt.Errorf("dispytch: emit: nil context: %w", ErrNotSent)
	}
	if e.p == nil {
		return nil, fmt.Errorf("dispytch: emit: the emitter has no producer: %w", ErrNotSent)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dispytch: emit: %w: %w", ErrNotSent, ctxErr(err))
	}
	m, err := e.build(ctx, ev, opts)
	if err != nil {
		return nil, fmt.Errorf("%w (%w)", err, ErrNotSent)
	}
	return m, nil
}

// EmitAsync sends ev without waiting for the broker when the producer
// batches (backend.AsyncProducer), and calls done once with the outcome. With any
// other producer it sends synchronously before calling done.
func (e *Emitter) EmitAsync(ctx context.Context, ev Eventer, done func(error), opts ...EmitOption) {
	if done == nil {
		done = func(error) {}
	}
	m, err := e.message(ctx, ev, opts)
	if err != nil {
		done(err)
		return
	}
	if e.ap != nil && len(e.obs) == 0 {
		// The producer's own errors name the topic and wrap the
		// sentinels; handing done over saves a closure per emit.
		e.ap.ProduceAsync(ctx, m, done)
		return
	}
	var end func(error)
	if len(e.obs) > 0 {
		ctx, end = e.observe(ctx, m)
	}
	cb := func(err error) {
		err = e.produceErr(ctx, m, err)
		if end != nil {
			end(err)
		}
		done(err)
	}
	if e.ap != nil {
		e.ap.ProduceAsync(ctx, m, cb)
		return
	}
	cb(e.p.Produce(ctx, m))
}

// EmitBatch encodes every event, then sends them all in one Produce call.
// Nothing is sent when one of them fails to encode, or when ctx is done.
// When some messages fail to send, the error is a *backend.BatchError with one
// entry per event: backend.BatchError.NotSent lists those not sent,
// backend.BatchError.Unconfirmed those sent without a confirmation.
func (e *Emitter) EmitBatch(ctx context.Context, events []Eventer, opts ...EmitOption) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]*backend.Message, len(events))
	for i, ev := range events {
		m, err := e.message(ctx, ev, opts)
		if err != nil {
			return fmt.Errorf("event %d of %d: %w", i, len(events), err)
		}
		msgs[i] = m
	}
	var ends []func(error)
	if len(e.obs) > 0 {
		ends = make([]func(error), len(msgs))
		for i, m := range msgs {
			_, ends[i] = e.observe(ctx, m)
		}
	}
	err := e.p.Produce(ctx, msgs...)
	if err == nil {
		for _, end := range ends {
			end(nil)
		}
		return nil
	}
	var be *backend.BatchError
	if !errors.As(err, &be) || len(be.Errs) != len(msgs) {
		// One error for the whole batch: it applies to every message.
		whole := err
		be = &backend.BatchError{Errs: make([]error, len(msgs))}
		for i := range msgs {
			be.Errs[i] = whole
		}
	}
	for i, m := range msgs {
		if be.Errs[i] != nil {
			be.Errs[i] = e.produceErr(ctx, m, be.Errs[i])
		}
		if ends != nil {
			ends[i](be.Errs[i])
		}
	}
	return be
}

func (e *Emitter) produceErr(ctx context.Context, m *backend.Message, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("dispytch: emit to %q: %w", m.Topic, wrapDeadline(ctx, err))
}

// wrapDeadline makes sure a deadline error wraps ErrTimeout.
func wrapDeadline(ctx context.Context, err error) error {
	if errors.Is(err, ErrTimeout) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || (ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// Message encodes ev into the message Emit would send, without sending it.
// A codec that looks schemas up (codec.TopicEncoder) does so without a
// deadline.
func (e *Emitter) Message(ev Eventer, opts ...EmitOption) (*backend.Message, error) {
	return e.build(context.Background(), ev, opts)
}

// build is Message with the context of the emit.
func (e *Emitter) build(ctx context.Context, ev Eventer, opts []EmitOption) (*backend.Message, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: nil event", ErrEncode)
	}
	if rv := reflect.ValueOf(ev); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return nil, fmt.Errorf("%w: nil %T", ErrEncode, ev)
	}
	var s emitSettings
	if len(opts) > 0 {
		s = applyEmitOptions(opts)
	}
	for _, o := range s.backend {
		if o.Backend() != e.backend {
			return nil, fmt.Errorf("%w: %s option %T given to a %q producer", ErrForeignOption, o.Backend(), o, e.backendName())
		}
	}
	tmpl := ev.Topic()
	topic, err := e.topic(ev, tmpl)
	if err != nil {
		return nil, err
	}
	id := s.id
	if id == "" {
		if ider, ok := ev.(eventIDer); ok {
			id = ider.EventID()
		}
		if id == "" {
			id = backend.NewUUID()
		}
	}
	typ := ev.EventType()
	var m *backend.Message
	if enc := e.encodingFor(typ); enc == nil {
		value, err := e.encode(id, typ, ev)
		if err != nil {
			return nil, err
		}
		m = &backend.Message{Topic: topic, Template: tmpl, Value: value, ID: id, Type: typ, Headers: s.headers, ContentType: e.codec.ContentType(), Options: s.backend}
	} else {
		m = &backend.Message{Topic: topic, Template: tmpl, ID: id, Type: typ, Headers: s.headers, Options: s.backend}
		if err := e.encodeWith(ctx, enc, m, ev); err != nil {
			return nil, err
		}
	}
	if s.keySet {
		m.Key = s.key
	} else if k, ok := ev.(eventKeyer); ok {
		if key := k.EventKey(); key != "" {
			m.Key = []byte(key)
		}
	}
	return m, nil
}

// encode encodes the envelope of ev with the emitter's codec.
func (e *Emitter) encode(id, typ string, ev Eventer) ([]byte, error) {
	if e.appender != nil {
		value, err := e.appender.AppendEvent(nil, id, typ, e.now().UnixMilli(), ev)
		if err != nil {
			return nil, fmt.Errorf("%w: %s body: %w", ErrEncode, typ, err)
		}
		return value, nil
	}
	body, err := e.codec.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrEncode, typ, err)
	}
	env := codec.Envelope{ID: id, Type: typ, Body: body, Timestamp: e.now().UnixMilli()}
	value, err := e.codec.AppendEnvelope(make([]byte, 0, len(body)+len(id)+len(typ)+64), &env)
	if err != nil {
		return nil, fmt.Errorf("%w: %s envelope: %w", ErrEncode, typ, err)
	}
	return value, nil
}

// applyEmitOptions is apart from Message so that the settings escape to the
// heap only when there are options.
func applyEmitOptions(opts []EmitOption) emitSettings {
	s := new(emitSettings)
	for _, o := range opts {
		o(s)
	}
	return *s
}

func (e *Emitter) backendName() string {
	if e.backend == "" {
		return "unnamed"
	}
	return e.backend
}

// topic returns the event's topic, raw as its Topic method returned it,
// with its placeholders filled.
func (e *Emitter) topic(ev Eventer, raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: %s has an empty topic", ErrTopicField, ev.EventType())
	}
	if !strings.Contains(raw, "{") && !strings.Contains(raw, "}") {
		return raw, nil
	}
	var tpl *topic.Template
	if v, ok := e.templates.Load(raw); ok {
		tpl = v.(*topic.Template)
	} else {
		t, err := topic.ParseTemplate(raw)
		if err != nil {
			return "", err
		}
		e.templates.Store(raw, t)
		tpl = t
	}
	rv := reflect.ValueOf(ev)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "", fmt.Errorf("%w: nil %T", ErrTopicField, ev)
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return "", fmt.Errorf("%w: topic %q has placeholders but %T is not a struct", ErrTopicField, raw, ev)
	}
	fields := e.jsonFields(rv.Type())
	return tpl.Render(func(name string) (string, error) {
		idx, ok := fields[name]
		if !ok {
			return "", fmt.Errorf("%w: topic %q: %T has no field %q", ErrTopicField, raw, ev, name)
		}
		f, err := rv.FieldByIndexErr(idx)
		if err != nil {
			return "", fmt.Errorf("%w: topic %q: field %q: %w", ErrTopicField, raw, name, err)
		}
		s, err := formatField(f)
		if err != nil {
			return "", fmt.Errorf("%w: topic %q: field %q: %w", ErrTopicField, raw, name, err)
		}
		return s, nil
	})
}

func (e *Emitter) jsonFields(t reflect.Type) map[string][]int {
	if v, ok := e.fields.Load(t); ok {
		return v.(map[string][]int)
	}
	m := map[string][]int{}
	collectJSONFields(t, nil, m)
	e.fields.Store(t, m)
	return m
}

// collectJSONFields maps the JSON names of t's fields (encoding/json's
// rules, simplified: tags, "-", promoted fields of untagged embedded
// structs) and their Go names to their index paths.
func collectJSONFields(t reflect.Type, prefix []int, m map[string][]int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		idx := append(append([]int(nil), prefix...), i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" && tag == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectJSONFields(ft, idx, m)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = idx
		if _, taken := m[f.Name]; !taken {
			m[f.Name] = idx
		}
	}
}

func formatField(v reflect.Value) (string, error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return "", errors.New("is nil")
		}
		v = v.Elem()
	}
	if v.CanInterface() {
		if tm, ok := v.Interface().(encoding.TextMarshaler); ok {
			b, err := tm.MarshalText()
			if err != nil {
				return "", err
			}
			return nonEmpty(string(b))
		}
	}
	switch v.Kind() {
	case reflect.String:
		return nonEmpty(v.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	}
	if v.CanInterface() {
		if s, ok := v.Interface().(fmt.Stringer); ok {
			return nonEmpty(s.String())
		}
	}
	return "", fmt.Errorf("unsupported kind %s", v.Kind())
}

func nonEmpty(s string) (string, error) {
	if s == "" {
		return "", errors.New("is empty")
	}
	return s, nil
}
