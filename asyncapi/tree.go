package asyncapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// object is a JSON object that keeps its keys in the order they were set,
// so that documents encode the same bytes every time. Values are *object,
// []any, string, bool, nil, json.Number, int, int64, uint64 or float64.
type object struct {
	keys []string
	vals map[string]any
}

func newObject() *object { return &object{vals: map[string]any{}} }

// obj builds an object from key, value pairs; nil values are left out.
func obj(kv ...any) *object {
	o := newObject()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != nil {
			o.set(kv[i].(string), kv[i+1])
		}
	}
	return o
}

// set sets key to v, keeping key's place when it is already there.
func (o *object) set(key string, v any) *object {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
	return o
}

// setNonEmpty sets key to a string value unless it is empty.
func (o *object) setNonEmpty(key, v string) *object {
	if v != "" {
		o.set(key, v)
	}
	return o
}

func (o *object) get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	v, ok := o.vals[key]
	return v, ok
}

// ks returns o's keys; nil for a nil object.
func (o *object) ks() []string {
	if o == nil {
		return nil
	}
	return o.keys
}

// at returns the value of key, or nil.
func (o *object) at(key string) any {
	v, _ := o.get(key)
	return v
}

func (o *object) str(key string) string {
	v, _ := o.get(key)
	s, _ := v.(string)
	return s
}

func (o *object) child(key string) *object {
	v, _ := o.get(key)
	c, _ := v.(*object)
	return c
}

func (o *object) del(key string) {
	if _, ok := o.vals[key]; !ok {
		return
	}
	delete(o.vals, key)
	for i, k := range o.keys {
		if k == key {
			o.keys = append(o.keys[:i], o.keys[i+1:]...)
			break
		}
	}
}

func (o *object) len() int {
	if o == nil {
		return 0
	}
	return len(o.keys)
}

// sorted returns o's keys in byte order, for maps keyed by identifiers.
func (o *object) sorted() []string {
	ks := append([]string(nil), o.keys...)
	sort.Strings(ks)
	return ks
}

// sortKeys orders o's keys in byte order.
func (o *object) sortKeys() *object {
	sort.Strings(o.keys)
	return o
}

// MarshalJSON encodes o with its keys in order.
func (o *object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := writeJSON(&b, o); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeJSON(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case *object:
		if v == nil {
			b.WriteString("null")
			return nil
		}
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, k)
			b.WriteByte(':')
			if err := writeJSON(b, v.vals[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case []string:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, e)
		}
		b.WriteByte(']')
	case string:
		writeJSONString(b, v)
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("asyncapi: %v has no JSON form", v)
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	default:
		enc, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(enc)
	}
	return nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}

// maxNodes bounds the values a parsed document may hold, and maxAliased
// those reached through YAML aliases, so that a small file with nested
// aliases cannot make Parse allocate without limit.
const (
	maxNodes   = 1 << 18
	maxAliased = 1 << 14
)

// errTooLarge reports a document past maxNodes.
var errTooLarge = errors.New("asyncapi: the document has more than 262144 values")

// errAliases reports YAML aliases that expand past maxAliased values.
var errAliases = errors.New("asyncapi: the document's YAML aliases expand to more than 16384 values")

// parseJSON decodes a JSON document into the ordered tree, rejecting
// duplicate keys and trailing data.
func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n := 0
	v, err := decodeJSON(dec, &n, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("asyncapi: data after the JSON document")
	}
	return v, nil
}

const maxDepth = 1000

func decodeJSON(dec *json.Decoder, n *int, depth int) (any, error) {
	if *n++; *n > maxNodes {
		return nil, errTooLarge
	}
	if depth > maxDepth {
		return nil, errors.New("asyncapi: the document nests deeper than 1000 levels")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonErr(err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := newObject()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, jsonErr(err)
				}
				k, _ := kt.(string)
				if _, dup := o.vals[k]; dup {
					return nil, fmt.Errorf("asyncapi: key %q appears twice in one object", k)
				}
				v, err := decodeJSON(dec, n, depth+1)
				if err != nil {
					return nil, err
				}
				o.set(k, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonErr(err)
			}
			return o, nil
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeJSON(dec, n, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonErr(err)
			}
			return a, nil
		}
		return nil, fmt.Errorf("asyncapi: unexpected %q", t)
	}
	return tok, nil
}

func jsonErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("asyncapi: bad JSON: %w", err)
}

// parseYAML decodes a YAML document into the ordered tree. Aliases are
// expanded (bounded by maxNodes); keys must be scalars.
func parseYAML(data []byte) (any, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("asyncapi: bad YAML: %w", err)
	}
	if root.Kind == 0 {
		return nil, errors.New("asyncapi: the document is empty")
	}
	c := &yamlCount{}
	return fromYAML(&root, c, 0)
}

// yamlCount counts the values converted, and those reached through an
// alias.
type yamlCount struct {
	nodes, aliased int
	inAlias        int
}

func fromYAML(nd *yaml.Node, n *yamlCount, depth int) (any, error) {
	if n.nodes++; n.nodes > maxNodes {
		return nil, errTooLarge
	}
	if n.inAlias > 0 {
		if n.aliased++; n.aliased > maxAliased {
			return nil, errAliases
		}
	}
	if depth > maxDepth {
		return nil, errors.New("asyncapi: the document nests deeper than 1000 levels")
	}
	switch nd.Kind {
	case yaml.DocumentNode:
		if len(nd.Content) != 1 {
			return nil, errors.New("asyncapi: the YAML stream must hold one document")
		}
		return fromYAML(nd.Content[0], n, depth+1)
	case yaml.AliasNode:
		n.inAlias++
		defer func() { n.inAlias-- }()
		return fromYAML(nd.Alias, n, depth+1)
	case yaml.MappingNode:
		o := newObject()
		for i := 0; i+1 < len(nd.Content); i += 2 {
			k, v := nd.Content[i], nd.Content[i+1]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("asyncapi: line %d: a mapping key must be a scalar", k.Line)
			}
			if k.Tag == "!!merge" {
				return nil, fmt.Errorf("asyncapi: line %d: YAML merge keys (<<) are not supported", k.Line)
			}
			if _, dup := o.vals[k.Value]; dup {
				return nil, fmt.Errorf("asyncapi: line %d: key %q appears twice in one mapping", k.Line, k.Value)
			}
			val, err := fromYAML(v, n, depth+1)
			if err != nil {
				return nil, err
			}
			o.set(k.Value, val)
		}
		return o, nil
	case yaml.SequenceNode:
		a := make([]any, 0, len(nd.Content))
		for _, c := range nd.Content {
			v, err := fromYAML(c, n, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case yaml.ScalarNode:
		switch nd.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := nd.Decode(&b); err != nil {
				return nil, fmt.Errorf("asyncapi: line %d: %w", nd.Line, err)
			}
			return b, nil
		case "!!int", "!!float":
			var f any
			if err := nd.Decode(&f); err != nil {
				return nil, fmt.Errorf("asyncapi: line %d: %w", nd.Line, err)
			}
			switch f := f.(type) {
			case int:
				return json.Number(strconv.Itoa(f)), nil
			case int64:
				return json.Number(strconv.FormatInt(f, 10)), nil
			case uint64:
				return json.Number(strconv.FormatUint(f, 10)), nil
			case float64:
				if math.IsInf(f, 0) || math.IsNaN(f) {
					return nil, fmt.Errorf("asyncapi: line %d: %v has no JSON form", nd.Line, f)
				}
				return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
			}
			return nil, fmt.Errorf("asyncapi: line %d: bad number %q", nd.Line, nd.Value)
		case "!!str", "!!timestamp", "!!binary":
			return nd.Value, nil
		}
		return nil, fmt.Errorf("asyncapi: line %d: unsupported YAML tag %s", nd.Line, nd.Tag)
	}
	return nil, fmt.Errorf("asyncapi: line %d: unsupported YAML node", nd.Line)
}

// toYAML converts the tree into YAML nodes, keeping the order of keys.
func toYAML(v any) (*yaml.Node, error) {
	switch v := v.(type) {
	case *object:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		if v == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		for _, k := range v.keys {
			c, err := toYAML(v.vals[k])
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, strNode(k), c)
		}
		return n, nil
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, e := range v {
			c, err := toYAML(e)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		return n, nil
	case []string:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, e := range v {
			n.Content = append(n.Content, strNode(e))
		}
		return n, nil
	case string:
		return strNode(v), nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(v), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(v)}, nil
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}, nil
	case int64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v, 10)}, nil
	case uint64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(v, 10)}, nil
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("asyncapi: %v has no YAML form shared with JSON", v)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: strconv.FormatFloat(v, 'g', -1, 64)}, nil
	}
	return nil, fmt.Errorf("asyncapi: cannot encode %T", v)
}

// strNode is a string scalar; the encoder quotes it when a plain scalar
// would read back as something else ("true", "1.0", "null", "").
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.Contains(s, "\n") {
		n.Style = yaml.LiteralStyle
	}
	return n
}

// plain converts the tree into encoding/json's generic values (map[string]any,
// []any, float64, ...), for comparisons in tests and for templates.
func plain(v any) any {
	switch v := v.(type) {
	case *object:
		if v == nil {
			return nil
		}
		m := make(map[string]any, len(v.keys))
		for _, k := range v.keys {
			m[k] = plain(v.vals[k])
		}
		return m
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			a[i] = plain(e)
		}
		return a
	case []string:
		a := make([]any, len(v))
		for i, e := range v {
			a[i] = e
		}
		return a
	case json.Number:
		f, _ := v.Float64()
		return f
	case int:
		return float64(v)
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	}
	return v
}
