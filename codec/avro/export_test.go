package avro

import "reflect"

// MarshalAs encodes v with the schema of the type of like, for tests of
// what a schema refuses.
func MarshalAs(c *Codec, like, v any) ([]byte, error) {
	ts, err := c.schemaOf(reflect.TypeOf(like))
	if err != nil {
		return nil, err
	}
	return ts.api.AppendEncode(nil, ts.s, v)
}
