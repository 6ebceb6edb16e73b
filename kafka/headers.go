package kafka

import (
	"bytes"
	"slices"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
)

// Record headers the producer adds next to the envelope, so that tools can
// filter records without decoding the value.
const (
	// HeaderEventID carries the envelope's event id.
	HeaderEventID = "dispytch-event-id"
	// HeaderEventType carries the envelope's event type.
	HeaderEventType = "dispytch-event-type"
)

var (
	prefixID   = []byte(`{"id":"`)
	prefixType = []byte(`,"type":"`)
)

// scanEnvelopeIDType reads the id and type of an envelope as dispytch's JSON
// codec writes it: {"id":"…","type":"…",…}. It only accepts strings without
// escapes or control characters, in valid UTF-8, and reports false for
// anything else (the caller then decodes the whole envelope). The results
// alias value.
func scanEnvelopeIDType(value []byte) (id, typ []byte, ok bool) {
	rest, ok := bytes.CutPrefix(value, prefixID)
	if !ok {
		return nil, nil, false
	}
	id, rest, ok = plainString(rest)
	if !ok {
		return nil, nil, false
	}
	rest, ok = bytes.CutPrefix(rest, prefixType)
	if !ok {
		return nil, nil, false
	}
	typ, rest, ok = plainString(rest)
	if !ok || len(rest) == 0 || (rest[0] != ',' && rest[0] != '}') {
		return nil, nil, false
	}
	return id, typ, true
}

// emittedIDType returns the bytes of id and type inside value when value
// begins {"id":"<id>","type":"<type>" verbatim, as the emitter writes it
// for ids and types that need no escaping. The results alias value.
func emittedIDType(value []byte, id, typ string) (idb, typb []byte, ok bool) {
	const pi, pt = len(`{"id":"`), len(`","type":"`)
	end := pi + len(id) + pt + len(typ) + 1
	if len(value) < end || string(value[:pi]) != `{"id":"` || string(value[pi:pi+len(id)]) != id ||
		string(value[pi+len(id):pi+len(id)+pt]) != `","type":"` || string(value[end-1-len(typ):end-1]) != typ ||
		value[end-1] != '"' {
		return nil, nil, false
	}
	return value[pi : pi+len(id) : pi+len(id)], value[end-1-len(typ) : end-1 : end-1], true
}

// plainString scans the rest of a JSON string whose opening quote was
// consumed, up to the closing quote. It fails on escapes, control characters
// and invalid UTF-8.
func plainString(b []byte) (s, rest []byte, ok bool) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			if !utf8.Valid(b[:i]) {
				return nil, nil, false
			}
			return b[:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// envelopeIDType returns the event id and type of value: by the fast scan,
// else by decoding it with codec. ok is false when value is no envelope.
func envelopeIDType(value []byte, cd codec.Codec) (id, typ []byte, ok bool) {
	if id, typ, ok = scanEnvelopeIDType(value); ok {
		return id, typ, true
	}
	if cd == nil {
		return nil, nil, false
	}
	var env codec.Envelope
	if err := cd.DecodeEnvelope(value, &env); err != nil {
		return nil, nil, false
	}
	return []byte(env.ID), []byte(env.Type), true
}

// recordHeaders converts message headers to record headers, sorted by key
// so that records are byte-for-byte reproducible, and adds the event id and
// type unless the message already carries them.
func recordHeaders(dst []kgo.RecordHeader, m *dispytch.Message, cd codec.Codec, extra []kgo.RecordHeader) []kgo.RecordHeader {
	h, value := m.Headers, m.Value
	out := dst
	if len(h) > 0 { // ranging over even an empty map costs an iterator
		for k, v := range h {
			out = append(out, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b kgo.RecordHeader) int {
			switch {
			case a.Key < b.Key:
				return -1
			case a.Key > b.Key:
				return 1
			}
			return 0
		})
	}
	_, hasID := h[HeaderEventID]
	_, hasType := h[HeaderEventType]
	if _, ok := h[dispytch.HeaderContentType]; !ok && m.ContentType != "" {
		out = append(out, kgo.RecordHeader{Key: dispytch.HeaderContentType, Value: contentTypeBytes(m.ContentType)})
	}
	// The emitter's envelopes hold the id and type verbatim: take them
	// from the value without copying.
	if !hasID && !hasType && m.ID != "" && m.Type != "" {
		if id, typ, ok := emittedIDType(value, m.ID, m.Type); ok {
			out = append(out,
				kgo.RecordHeader{Key: HeaderEventID, Value: id},
				kgo.RecordHeader{Key: HeaderEventType, Value: typ})
			hasID, hasType = true, true
		}
	}
	if !hasID && m.ID != "" {
		out = append(out, kgo.RecordHeader{Key: HeaderEventID, Value: []byte(m.ID)})
		hasID = true
	}
	if !hasType && m.Type != "" {
		out = append(out, kgo.RecordHeader{Key: HeaderEventType, Value: []byte(m.Type)})
		hasType = true
	}
	if !hasID || !hasType {
		if id, typ, ok := envelopeIDType(value, cd); ok {
			if !hasID {
				out = append(out, kgo.RecordHeader{Key: HeaderEventID, Value: id})
			}
			if !hasType {
				out = append(out, kgo.RecordHeader{Key: HeaderEventType, Value: typ})
			}
		}
	}
	return append(out, extra...)
}

// contentTypeBytes returns the header value of a content type, shared for
// the codecs' own (header values are never modified).
func contentTypeBytes(ct string) []byte {
	switch ct {
	case "application/json":
		return ctJSON
	case "application/msgpack":
		return ctMsgpack
	}
	return []byte(ct)
}

var (
	ctJSON    = []byte("application/json")
	ctMsgpack = []byte("application/msgpack")
)

// deliveryHeaders converts record headers to dispytch headers; for a
// repeated key the last value wins. The headers the producer derives from
// the envelope (event id, event type, content type) are left out: the event
// carries them already, and most records then need no map at all. It
// returns nil for no headers.
func deliveryHeaders(hs []kgo.RecordHeader) dispytch.Headers {
	var h dispytch.Headers
	for _, rh := range hs {
		switch rh.Key {
		case HeaderEventID, HeaderEventType, dispytch.HeaderContentType:
			continue
		}
		if h == nil {
			h = make(dispytch.Headers, len(hs))
		}
		h[rh.Key] = string(rh.Value)
	}
	return h
}
