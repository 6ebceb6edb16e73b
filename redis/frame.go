package redis

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/dispytch/dispytch-go/backend"
)

// frameMagic starts a pub/sub message in the framed form (see
// PubSubHeaders). No envelope starts with a NUL byte: JSON starts with
// '{' or whitespace, msgpack with a map byte.
const frameMagic = "\x00DP1"

// encodeFrame writes m as the framed pub/sub payload: the magic, then the
// stream entry's fields as (uvarint length, bytes) pairs.
func (c *Client) encodeFrame(m *backend.Message) []byte {
	fs := c.fields(m)
	n := len(frameMagic)
	for _, f := range fs {
		n += binary.MaxVarintLen32 + fieldLen(f)
	}
	b := make([]byte, 0, n)
	b = append(b, frameMagic...)
	for _, f := range fs {
		switch v := f.(type) {
		case string:
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		case []byte:
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func fieldLen(f any) int {
	switch v := f.(type) {
	case string:
		return len(v)
	case []byte:
		return len(v)
	}
	return 0
}

var errFrame = errors.New("redis: malformed pub/sub frame")

// decodeFrame reads a framed payload into stream-entry-like fields; ok is
// false for a payload that is not framed (a plain envelope).
func decodeFrame(p []byte) (vals map[string]any, ok bool, err error) {
	if !bytes.HasPrefix(p, []byte(frameMagic)) {
		return nil, false, nil
	}
	p = p[len(frameMagic):]
	vals = map[string]any{}
	next := func() (string, error) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return "", errFrame
		}
		s := string(p[k : k+int(n)])
		p = p[k+int(n):]
		return s, nil
	}
	for len(p) > 0 {
		k, err := next()
		if err != nil {
			return nil, true, err
		}
		v, err := next()
		if err != nil {
			return nil, true, err
		}
		vals[k] = v
	}
	return vals, true, nil
}
