package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
)

// decoded is a message value read as a Dispytch envelope, or as what it is
// when it is none.
type decoded struct {
	envelope  bool
	id, typ   string
	timestamp int64
	codec     string          // json, msgpack, or "" when not an envelope
	format    string          // the envelope format when it is not Dispytch's: headers, cloudevents-binary, ...
	body      json.RawMessage // the body as JSON
	problem   string          // why the value is not an envelope
}

// otherFormats are the envelope formats tail and dlq recognise besides
// Dispytch's, in the order a listener given all of them asks them.
var otherFormats = []codec.EnvelopeFormat{
	codec.CloudEvents(codec.CloudEventsStructured, ""),
	codec.CloudEvents(codec.CloudEventsBinary, ""),
	codec.Headers,
}

// lookupCodec finds the codecs the command reads by content type.
func lookupCodec(contentType string) codec.Codec {
	ct, _, _ := strings.Cut(contentType, ";")
	switch strings.TrimSpace(strings.ToLower(ct)) {
	case codec.JSON.ContentType():
		return codec.JSON
	case msgpack.Codec.ContentType():
		return msgpack.Codec
	}
	return nil
}

// decodeMessage decodes a message: in the envelope format its headers or
// content type name (header mode, CloudEvents), else as a Dispytch envelope
// (decodeValue).
func decodeMessage(value []byte, contentType string, headers map[string]string) decoded {
	f := &codec.Frame{Value: value, ContentType: contentType, Headers: headers}
	for _, format := range otherFormats {
		if !format.Match(f) {
			continue
		}
		var env codec.Envelope
		c, err := format.Decode(f, &env, lookupCodec)
		if err != nil {
			return decoded{body: asJSON(value), format: format.Name(), problem: err.Error()}
		}
		d := decoded{envelope: true, id: env.ID, typ: env.Type, timestamp: env.Timestamp, format: format.Name()}
		d.codec, d.body, d.problem = bodyJSON(c, env.Body)
		return d
	}
	return decodeValue(value, contentType)
}

// bodyJSON shows a body encoded by c as JSON.
func bodyJSON(c codec.Codec, body []byte) (name string, js json.RawMessage, problem string) {
	switch c {
	case codec.JSON:
		if !json.Valid(body) {
			return "json", asJSON(body), "the body is not valid JSON"
		}
		return "json", json.RawMessage(bytes.Clone(body)), ""
	case msgpack.Codec:
		var v any
		if err := msgpack.Codec.Unmarshal(body, &v, false); err != nil {
			return "msgpack", asJSON(body), "msgpack body: " + err.Error()
		}
		b, err := json.Marshal(jsonable(v))
		if err != nil {
			return "msgpack", asJSON(body), "msgpack body has no JSON form: " + err.Error()
		}
		return "msgpack", b, ""
	}
	return c.ContentType(), asJSON(body), "a " + c.ContentType() + " body: the command shows JSON and msgpack bodies only"
}

// decodeValue decodes a message value: by its content type, or, without
// one, by its first byte, as listeners do.
func decodeValue(value []byte, contentType string) decoded {
	var c codec.Codec
	switch contentType {
	case codec.JSON.ContentType():
		c = codec.JSON
	case msgpack.Codec.ContentType():
		c = msgpack.Codec
	default:
		switch codec.Sniff(value) {
		case codec.FormatJSON:
			c = codec.JSON
		case codec.FormatMsgpack:
			c = msgpack.Codec
		}
	}
	if c == nil {
		return decoded{body: asJSON(value), problem: "not a Dispytch envelope (neither JSON nor msgpack)"}
	}
	var env codec.Envelope
	if err := c.DecodeEnvelope(value, &env); err != nil {
		return decoded{body: asJSON(value), problem: err.Error()}
	}
	d := decoded{envelope: true, id: env.ID, typ: env.Type, timestamp: env.Timestamp}
	// The envelope scanner checks the envelope, not the body's every
	// byte: a handler's decode does that.
	d.codec, d.body, d.problem = bodyJSON(c, env.Body)
	return d
}

// jsonable converts what msgpack decodes into values encoding/json takes.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = jsonable(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
		return v
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	}
	return v
}

// asJSON shows bytes that are no envelope: as they are when they are
// JSON, as a string when they are text, else as base64 in a string.
func asJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(bytes.Clone(b))
	}
	if utf8.Valid(b) {
		q, _ := json.Marshal(string(b))
		return q
	}
	return json.RawMessage(strconv.Quote("base64:" + base64.StdEncoding.EncodeToString(b)))
}
