package kafka

import (
	"bytes"
	"slices"
	"unicode/utf8"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/twmb/franz-go/pkg/kgo"
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

// recordHeaders converts message headers to record headers, sorted by key
// so that records are byte-for-byte reproducible, and adds the content
// type and the event id and type unless the message already carries them:
// from Message.ContentType, ID and Type (the emitter sets them), else, for
// the event id and type, from a value in the JSON codec's own layout. Dead
// letters and redriven messages carry the original record's headers, so
// they need neither.
func recordHeaders(dst []kgo.RecordHeader, m *backend.Message, extra []kgo.RecordHeader) []kgo.RecordHeader {
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
	if _, ok := h[backend.HeaderContentType]; !ok && m.ContentType != "" {
		out = append(out, kgo.RecordHeader{Key: backend.HeaderContentType, Value: contentTypeBytes(m.ContentType)})
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
		if id, typ, ok := scanEnvelopeIDType(value); ok {
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

// deliveryHeaders converts record headers to dispytch headers, all of
// them, so that a dead letter carries the original's headers; for a
// repeated key the last value wins. The content type and the event type,
// which repeat from record to record, are shared strings for the common
// values. It returns nil for no headers, and the content type.
func deliveryHeaders(hs []kgo.RecordHeader) (h map[string]string, contentType string) {
	if len(hs) == 0 {
		return nil, ""
	}
	h = make(map[string]string, len(hs))
	for _, rh := range hs {
		var v string
		switch rh.Key {
		case backend.HeaderContentType:
			v = contentTypeString(rh.Value)
			contentType = v
		default:
			v = string(rh.Value)
		}
		h[rh.Key] = v
	}
	return h, contentType
}

// contentTypeString returns the header value of a content type, shared
// for the codecs' own.
func contentTypeString(b []byte) string {
	switch string(b) {
	case "application/json":
		return "application/json"
	case "application/msgpack":
		return "application/msgpack"
	}
	return string(b)
}
