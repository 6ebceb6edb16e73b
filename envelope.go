package dispytch

// Envelope formats and body codecs beyond the default: the emitter's
// encoding per event type (Envelopes, ForEventType, codec.TopicEncoder), the
// listener's detection of a message's format, and the schema check of
// codecs that keep schemas elsewhere (codec.SchemaChecker).

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// Envelopes sets the envelope formats (see package codec: codec.Dispytch,
// codec.Headers, codec.CloudEvents). On an emitter, the first is the format
// it writes (default codec.Dispytch); with ForEventType, for one event type.
// On a listener, the formats it reads besides Dispytch's envelope, which it
// always reads: it tells each message's format by its headers and content
// type (header mode by a dispytch-timestamp header, CloudEvents binary by a
// ce_ or cloudEvents_ specversion header, structured by the content type
// application/cloudevents+json).
func Envelopes(formats ...codec.EnvelopeFormat) interface {
	ListenerOption
	EmitterOption
} {
	return envelopesOption{formats: formats}
}

// envelopesOption is a ListenerOption and an EmitterOption; see Envelopes.
type envelopesOption struct{ formats []codec.EnvelopeFormat }

func (o envelopesOption) applyEmitter(e *Emitter) { o.applyEncoding(&e.def) }

func (o envelopesOption) applyEncoding(enc *bodyEncoding) {
	if len(o.formats) > 0 && o.formats[0] != nil {
		enc.format = o.formats[0]
	}
}

func (o envelopesOption) applyListener(l *Listener) {
	for _, f := range o.formats {
		if f != nil && f != codec.Dispytch {
			l.formats = append(l.formats, f)
		}
	}
}

// ForEventType applies WithCodec and Envelopes to the events of one type
// only, on an emitter: an Avro body in header mode for one event, say, and
// the Dispytch envelope for the rest. Other options given to it are
// ignored.
func ForEventType(eventType string, opts ...EmitterOption) EmitterOption {
	return emitterOptionFunc(func(e *Emitter) {
		e.pending = append(e.pending, forType{eventType, opts})
	})
}

type forType struct {
	typ  string
	opts []EmitterOption
}

// encodingOption is an EmitterOption that ForEventType can apply to one
// event type's encoding.
type encodingOption interface{ applyEncoding(*bodyEncoding) }

// encoding is how an emitter encodes events (of one type).
type bodyEncoding struct {
	codec    codec.Codec
	format   codec.EnvelopeFormat // nil: the Dispytch envelope
	topicEnc codec.TopicEncoder   // codec, when it is one
	appender codec.EventAppender  // codec, when it has the fast path
}

func (enc *bodyEncoding) finish() {
	enc.topicEnc, _ = enc.codec.(codec.TopicEncoder)
	enc.appender, _ = enc.codec.(codec.EventAppender)
	if enc.format == codec.Dispytch {
		enc.format = nil
	}
}

// fast reports whether the encoding is the Dispytch envelope with the
// codec's own encoding (the emitter's fast path).
func (enc *bodyEncoding) fast() bool { return enc.format == nil && enc.topicEnc == nil }

// setupEncodings finishes the default encoding and builds the per-type
// ones, after every option was applied.
func (e *Emitter) setupEncodings() {
	e.def.finish()
	e.codec, e.appender = e.def.codec, e.def.appender
	e.framed = !e.def.fast()
	for _, p := range e.pending {
		enc := e.def
		for _, o := range p.opts {
			if eo, ok := o.(encodingOption); ok {
				eo.applyEncoding(&enc)
			}
		}
		enc.finish()
		if e.types == nil {
			e.types = map[string]*bodyEncoding{}
		}
		e.types[p.typ] = &enc
	}
	e.pending = nil
}

// encodingFor returns the encoding of events of type typ, or nil for the
// default fast path.
func (e *Emitter) encodingFor(typ string) *bodyEncoding {
	if e.types != nil {
		if enc, ok := e.types[typ]; ok {
			if enc.fast() && enc.codec == e.codec {
				return nil
			}
			return enc
		}
	}
	if e.framed {
		return &e.def
	}
	return nil
}

// encodeWith encodes ev into m with enc: the body with the codec (through
// its TopicEncoder when it has one, with ctx), then the envelope format.
func (e *Emitter) encodeWith(ctx context.Context, enc *bodyEncoding, m *backend.Message, ev Eventer) error {
	var body []byte
	var err error
	if enc.topicEnc != nil {
		body, err = enc.topicEnc.EncodeBody(ctx, m.Topic, ev)
	} else {
		body, err = enc.codec.Marshal(ev)
	}
	if err != nil {
		return fmt.Errorf("%w: %s body: %w", ErrEncode, m.Type, err)
	}
	env := codec.Envelope{ID: m.ID, Type: m.Type, Body: body, Timestamp: e.now().UnixMilli()}
	f := codec.Frame{Topic: m.Topic, Headers: m.Headers, Backend: e.backend}
	format := enc.format
	if format == nil {
		format = codec.Dispytch
	}
	if err := format.Encode(&f, &env, enc.codec); err != nil {
		return fmt.Errorf("%w: %s %s envelope: %w", ErrEncode, m.Type, format.Name(), err)
	}
	m.Value, m.Headers, m.ContentType = f.Value, f.Headers, f.ContentType
	return nil
}

// codecByType returns the listener's codec for a content type, its
// parameters ignored, or nil.
func (l *Listener) codecByType(ct string) codec.Codec {
	if c, ok := l.codecs[ct]; ok {
		return c
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	if c, ok := l.codecs[ct]; ok {
		return c
	}
	return nil
}

// formatOf returns the envelope format of d among the listener's formats
// beyond Dispytch's, or nil for the Dispytch envelope. It fills ms.frame.
func (l *Listener) formatOf(ms *msgState, d *backend.Delivery) codec.EnvelopeFormat {
	if len(l.formats) == 0 {
		return nil
	}
	ms.frame = codec.Frame{Topic: d.Topic, Value: d.Value, Headers: d.Headers, ContentType: d.ContentType}
	for _, f := range l.formats {
		if f.Match(&ms.frame) {
			return f
		}
	}
	return nil
}

// schemaCheckTimeout bounds the schema check of Check.
const schemaCheckTimeout = 30 * time.Second

// checkSchemas runs the listener's schema checkers (codecs that keep their
// schemas in a registry) on every handler's topic and body type.
func (l *Listener) checkSchemas(ctx context.Context) error {
	var checkers []codec.SchemaChecker
	for _, c := range l.extraCodecs {
		if sc, ok := c.(codec.SchemaChecker); ok {
			checkers = append(checkers, sc)
		}
	}
	if len(checkers) == 0 {
		return nil
	}
	var uses []codec.Use
	for _, h := range l.Handlers() {
		if h.Body != nil {
			uses = append(uses, codec.Use{Topic: h.Topic, EventType: h.EventType, Body: h.Body})
		}
	}
	for _, sc := range checkers {
		if err := sc.CheckSchemas(ctx, uses); err != nil {
			return fmt.Errorf("dispytch: schema check: %w", err)
		}
	}
	return nil
}
