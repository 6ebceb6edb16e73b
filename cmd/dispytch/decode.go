package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
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
	body      json.RawMessage // the body as JSON
	problem   string          // why the value is not an envelope
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
	d := decoded{envelope: true, id: env.ID, typ: env.Type, timestamp: env.Timestamp, codec: "json"}
	if c == codec.JSON {
		// The envelope scanner checks the envelope, not the body's
		// every byte: a handler's decode does that.
		if !json.Valid(env.Body) {
			d.body, d.problem = asJSON(env.Body), "the body is not valid JSON"
			return d
		}
		d.body = json.RawMessage(bytes.Clone(env.Body))
		return d
	}
	d.codec = "msgpack"
	var v any
	if err := msgpack.Codec.Unmarshal(env.Body, &v, false); err != nil {
		d.body, d.problem = asJSON(env.Body), "msgpack body: "+err.Error()
		return d
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		d.body, d.problem = asJSON(env.Body), "msgpack body has no JSON form: "+err.Error()
		return d
	}
	d.body = b
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
