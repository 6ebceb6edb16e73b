// Package msgpack is the MessagePack codec, matching Python Dispytch's
// msgpack serializer: the envelope is a map with the string keys id, type,
// body and timestamp. Bodies are encoded with the fields' json tags, so one
// struct serves both codecs.
package msgpack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/dispytch/dispytch-go/codec"
)

// Codec is the msgpack codec. Use it on both sides:
//
//	dispytch.NewEmitter(p, dispytch.WithCodec(msgpack.Codec))
//
// Listeners read msgpack envelopes whatever their codec (codec.Sniff);
// WithCodec(msgpack.Codec) on a listener only makes msgpack the codec for
// messages whose format is not recognised.
var Codec codec.Codec = &msgpackCodec{}

type msgpackCodec struct {
	encs sync.Pool
	decs sync.Pool
}

type encoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

func (c *msgpackCodec) getEncoder() *encoder {
	if e, ok := c.encs.Get().(*encoder); ok {
		e.buf.Reset()
		return e
	}
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.SetCustomStructTag("json")
	e.enc.UseCompactInts(true)
	return e
}

type decoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

func (c *msgpackCodec) getDecoder(data []byte) *decoder {
	d, ok := c.decs.Get().(*decoder)
	if !ok {
		d = &decoder{}
		d.dec = msgpack.NewDecoder(&d.r)
		d.dec.SetCustomStructTag("json")
	}
	d.r.Reset(data)
	d.dec.Reset(&d.r)
	d.dec.SetCustomStructTag("json")
	return d
}

func (c *msgpackCodec) ContentType() string { return "application/msgpack" }

func (c *msgpackCodec) Marshal(v any) ([]byte, error) {
	e := c.getEncoder()
	defer c.encs.Put(e)
	if err := e.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.Clone(e.buf.Bytes()), nil
}

func (c *msgpackCodec) Unmarshal(data []byte, v any, strict bool) error {
	if raw, ok := v.(*json.RawMessage); ok {
		// Untyped JSON view of a msgpack body.
		var x any
		if err := c.Unmarshal(data, &x, false); err != nil {
			return err
		}
		b, err := json.Marshal(x)
		if err != nil {
			return err
		}
		*raw = b
		return nil
	}
	d := c.getDecoder(data)
	defer c.decs.Put(d)
	d.dec.DisallowUnknownFields(strict)
	if err := d.dec.Decode(v); err != nil {
		return err
	}
	if d.r.Len() != 0 {
		return errors.New("trailing data after body")
	}
	return nil
}

func (c *msgpackCodec) AppendEnvelope(dst []byte, env *codec.Envelope) ([]byte, error) {
	if len(env.Body) == 0 {
		return dst, errors.New("empty body")
	}
	e := c.getEncoder()
	defer c.encs.Put(e)
	enc := e.enc
	err := errors.Join(
		enc.EncodeMapLen(4),
		enc.EncodeString("id"), enc.EncodeString(env.ID),
		enc.EncodeString("type"), enc.EncodeString(env.Type),
		enc.EncodeString("body"),
	)
	if err != nil {
		return dst, err
	}
	e.buf.Write(env.Body)
	if err := errors.Join(enc.EncodeString("timestamp"), enc.EncodeInt(env.Timestamp)); err != nil {
		return dst, err
	}
	return append(dst, e.buf.Bytes()...), nil
}

func (c *msgpackCodec) DecodeEnvelope(data []byte, env *codec.Envelope) error {
	d := c.getDecoder(data)
	defer c.decs.Put(d)
	dec := d.dec
	n, err := dec.DecodeMapLen()
	if err != nil {
		return fmt.Errorf("envelope is not a map: %w", err)
	}
	if n < 0 {
		return errors.New("envelope is nil")
	}
	var have uint8
	for i := 0; i < n; i++ {
		key, err := dec.DecodeString()
		if err != nil {
			return fmt.Errorf("envelope key: %w", err)
		}
		code, err := dec.PeekCode()
		if err != nil {
			return fmt.Errorf("envelope %q: %w", key, err)
		}
		if code == msgpcode.Nil {
			if err := dec.Skip(); err != nil {
				return err
			}
			continue
		}
		switch key {
		case "id", "type":
			s, err := dec.DecodeString()
			if err != nil {
				return fmt.Errorf("envelope %q: %w", key, err)
			}
			if key == "id" {
				env.ID, have = s, have|1
			} else {
				env.Type, have = s, have|2
			}
		case "body":
			start := len(data) - d.r.Len()
			if err := dec.Skip(); err != nil {
				return fmt.Errorf("envelope body: %w", err)
			}
			env.Body, have = data[start:len(data)-d.r.Len()], have|4
		case "timestamp":
			ts, err := dec.DecodeInt64()
			if err != nil {
				return fmt.Errorf("envelope timestamp: %w", err)
			}
			env.Timestamp, have = ts, have|8
		default:
			if err := dec.Skip(); err != nil {
				return fmt.Errorf("envelope %q: %w", key, err)
			}
		}
	}
	if d.r.Len() != 0 {
		return errors.New("trailing data after envelope")
	}
	if have != 15 {
		var miss []string
		for i, k := range []string{"id", "type", "body", "timestamp"} {
			if have&(1<<i) == 0 {
				miss = append(miss, k)
			}
		}
		return fmt.Errorf("envelope is missing %q (or it is null)", miss)
	}
	return nil
}

func (c *msgpackCodec) ValidBody(data []byte) bool {
	d := c.getDecoder(data)
	defer c.decs.Put(d)
	return d.dec.Skip() == nil && d.r.Len() == 0
}
