package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/internal/avroutil"
	"github.com/dispytch/dispytch-go/internal/jsutil"
	"github.com/dispytch/dispytch-go/internal/pbutil"
)

// Content types of bodies in the Confluent wire format.
const (
	ContentTypeAvro     = "application/vnd.confluent.avro"
	ContentTypeProtobuf = "application/vnd.confluent.protobuf"
	ContentTypeJSON     = "application/vnd.confluent.jsonschema"
)

// ErrEnvelope is returned by a serde's envelope methods: a framed body does
// not go in the Dispytch envelope.
var ErrEnvelope = errors.New("registry: the Dispytch envelope holds JSON or msgpack bodies: send registry-framed bodies in header mode or CloudEvents (dispytch.Envelopes)")

// SubjectStrategy names the subject a topic's events are registered under.
type SubjectStrategy uint8

const (
	// SubjectTopicName is "<topic>-value": one schema per topic. The
	// default, and Confluent's.
	SubjectTopicName SubjectStrategy = iota
	// SubjectRecordName is the record's full name (Avro: namespace.name;
	// Protobuf: the message's full name; JSON Schema: its title): one
	// schema per type, whatever the topic.
	SubjectRecordName
	// SubjectTopicRecordName is "<topic>-<record name>": several types per
	// topic.
	SubjectTopicRecordName
)

func (s SubjectStrategy) subject(topic, record string) string {
	switch s {
	case SubjectRecordName:
		return record
	case SubjectTopicRecordName:
		return topic + "-" + record
	}
	return topic + "-value"
}

// Option configures a Serde.
type Option func(*Serde)

// Subjects sets the subject name strategy (default SubjectTopicName).
func Subjects(s SubjectStrategy) Option { return func(d *Serde) { d.strategy = s } }

// RegisterOnEmit makes the emitter register each type's schema under its
// subject at its first event (once per topic and type), and write with it.
// Without it, the subject's latest version is the schema written with, and
// events are checked against it.
func RegisterOnEmit() Option { return func(d *Serde) { d.register = true } }

// Schema gives the schema of T (.avsc text for Avro, JSON Schema text for
// JSONSchema; "" derives it from T) and makes the listener's Check and Run
// check T against its subjects. Protobuf types need no Schema: their
// descriptors are their schemas.
func Schema[T any](text string) Option {
	t := reflect.TypeFor[T]()
	return func(d *Serde) { d.given[deref(t)] = text }
}

// Serde encodes and decodes bodies of one schema type in the registry's
// wire format. It is a codec.Codec, a codec.TopicEncoder (the emitter gives
// it the topic and the emit's context) and a codec.SchemaChecker. It is
// safe for concurrent use.
type Serde struct {
	c        *Client
	typ      sr.SchemaType
	ct       string
	strategy SubjectStrategy
	register bool
	given    map[reflect.Type]string

	mu      sync.RWMutex
	writers map[writerKey]*writer
	own     map[reflect.Type]*ownSchema
	checked map[pbKey]error // Protobuf indexes checked

	resolver *avroutil.Resolver
	bufs     sync.Pool // *jsonBuf
}

type writerKey struct {
	topic string
	t     reflect.Type
}

// writer is how events of one type are written to one topic: the header
// (magic byte, schema id, message index) and the writer's schema.
type writer struct {
	header []byte
	ws     *writerSchema
	coder  *avroutil.Coder
}

// ownSchema is a type's own schema: given, derived or its descriptor.
type ownSchema struct {
	text   string
	record string // the record's name, for subjects
	avro   avro.Schema
	coder  *avroutil.Coder
	json   *jsutil.Schema
	index  []int // Protobuf: the message's index in its file
	pbName protoreflect.FullName
}

func newSerde(c *Client, typ sr.SchemaType, ct string, opts []Option) *Serde {
	d := &Serde{c: c, typ: typ, ct: ct, given: map[reflect.Type]string{}, writers: map[writerKey]*writer{},
		own: map[reflect.Type]*ownSchema{}, checked: map[pbKey]error{}, resolver: avroutil.NewResolver()}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Avro returns the Avro serde: bodies are structs, their schemas given
// with Schema or derived from them (as codec/avro derives them).
func Avro(c *Client, opts ...Option) *Serde { return newSerde(c, sr.TypeAvro, ContentTypeAvro, opts) }

// Protobuf returns the Protobuf serde: bodies are generated message types
// (handlers take Event[*T]); their schemas, registered in the serialized
// form (a base64 FileDescriptorProto, as Confluent's serializers do), come
// from their descriptors. Files that import others are not supported yet.
func Protobuf(c *Client, opts ...Option) *Serde {
	return newSerde(c, sr.TypeProtobuf, ContentTypeProtobuf, opts)
}

// JSONSchema returns the JSON Schema serde: bodies are JSON, their schemas
// given with Schema or generated from the types (as codec/jsonschema
// generates them), and every event is checked against its schema.
func JSONSchema(c *Client, opts ...Option) *Serde {
	return newSerde(c, sr.TypeJSON, ContentTypeJSON, opts)
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// ContentType returns the serde's content type.
func (d *Serde) ContentType() string { return d.ct }

// Marshal encodes v without a topic: an error (the subject needs one).
// The emitter calls EncodeBody.
func (d *Serde) Marshal(v any) ([]byte, error) {
	return nil, errors.New("registry: a schema-registry body needs its topic: encode it through an emitter (EncodeBody)")
}

// ownOf returns t's own schema. t is the body type (a struct, or a
// pointer to a generated message).
func (d *Serde) ownOf(t reflect.Type) (*ownSchema, error) {
	d.mu.RLock()
	o := d.own[t]
	d.mu.RUnlock()
	if o != nil {
		return o, nil
	}
	o = &ownSchema{}
	var err error
	switch d.typ {
	case sr.TypeAvro:
		o.text = d.given[deref(t)]
		if o.text == "" {
			if o.text, err = avroutil.Derive(deref(t)); err != nil {
				return nil, err
			}
		}
		if o.avro, err = avroutil.Parse(o.text); err != nil {
			return nil, fmt.Errorf("registry: the Avro schema of %s: %w", t, err)
		}
		o.coder, o.record = avroutil.API(deref(t)), avroutil.FullName(o.avro)
	case sr.TypeJSON:
		o.text = d.given[deref(t)]
		if o.text == "" {
			if o.text, err = jsutil.Generate(deref(t)); err != nil {
				return nil, err
			}
		}
		if o.json, err = jsutil.Compile(deref(t).Name(), o.text); err != nil {
			return nil, err
		}
		o.record = deref(t).Name()
		var title struct {
			Title string `json:"title"`
		}
		if json.Unmarshal([]byte(o.text), &title) == nil && title.Title != "" {
			o.record = title.Title
		}
	case sr.TypeProtobuf:
		if t.Kind() != reflect.Pointer || pbutil.TypeName(t) == "" {
			return nil, fmt.Errorf("registry: %s is not a generated Protobuf message type (use *T)", t)
		}
		md := reflect.Zero(t).Interface().(proto.Message).ProtoReflect().Descriptor()
		fd := md.ParentFile()
		if fd.Imports().Len() > 0 {
			return nil, fmt.Errorf("registry: %s imports other files, which the Protobuf serde does not register yet", fd.Path())
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			return nil, err
		}
		o.text, o.pbName, o.record = base64.StdEncoding.EncodeToString(b), md.FullName(), string(md.FullName())
		for d := protoreflect.Descriptor(md); ; {
			o.index = append([]int{d.Index()}, o.index...)
			p, ok := d.Parent().(protoreflect.MessageDescriptor)
			if !ok {
				break
			}
			d = p
		}
	}
	d.mu.Lock()
	if prev := d.own[t]; prev != nil {
		o = prev
	} else {
		d.own[t] = o
	}
	d.mu.Unlock()
	return o, nil
}

// EncodeBody encodes v, framed for the registry, for topic. The first
// event of a (topic, type) registers or looks up its schema; later ones
// use the cache.
func (d *Serde) EncodeBody(ctx context.Context, topic string, v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return nil, fmt.Errorf("registry: cannot encode %T", v)
	}
	t := rv.Type()
	d.mu.RLock()
	w := d.writers[writerKey{topic, t}]
	d.mu.RUnlock()
	if w == nil {
		var err error
		if w, err = d.writerFor(ctx, topic, t); err != nil {
			return nil, err
		}
	}
	switch d.typ {
	case sr.TypeAvro:
		out, err := w.coder.AppendEncode(w.header, w.ws.avro, v)
		if err != nil {
			return nil, &codec.SchemaError{Schema: avroutil.FullName(w.ws.avro), Field: avroutil.ErrField(err), Err: err}
		}
		return out, nil
	case sr.TypeProtobuf:
		m, err := pbutil.Message(v)
		if err != nil {
			return nil, err
		}
		size := proto.Size(m)
		out := make([]byte, len(w.header), len(w.header)+size)
		copy(out, w.header)
		out, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(out, m)
		if err != nil {
			return nil, &codec.SchemaError{Schema: string(m.ProtoReflect().Descriptor().FullName()), Field: pbutil.Offending(m.ProtoReflect()), Err: err}
		}
		return out, nil
	default:
		return d.encodeJSON(w, v)
	}
}

type jsonBuf struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func (d *Serde) encodeJSON(w *writer, v any) ([]byte, error) {
	jb, _ := d.bufs.Get().(*jsonBuf)
	if jb == nil {
		jb = &jsonBuf{}
		jb.enc = json.NewEncoder(&jb.buf)
	}
	defer func() {
		if jb.buf.Cap() <= 64<<10 {
			d.bufs.Put(jb)
		}
	}()
	jb.buf.Reset()
	jb.buf.Write(w.header)
	if err := jb.enc.Encode(v); err != nil {
		return nil, err
	}
	b := jb.buf.Bytes()
	b = b[:len(b)-1] // the newline
	if err := w.ws.json.Check(b[len(w.header):]); err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// writerFor looks up, or registers, the schema events of type t are
// written to topic with, and caches it.
func (d *Serde) writerFor(ctx context.Context, topic string, t reflect.Type) (*writer, error) {
	own, err := d.ownOf(t)
	if err != nil {
		return nil, err
	}
	subject := d.strategy.subject(topic, own.record)
	var ws *writerSchema
	index := own.index
	if d.register {
		id, err := d.c.cl.RegisterSchema(ctx, subject, sr.Schema{Schema: own.text, Type: d.typ}, -1, -1)
		if err != nil {
			return nil, classify(err, fmt.Sprintf("registering the schema of %s under subject %q", t, subject))
		}
		ws = &writerSchema{id: id, typ: d.typ, avro: own.avro, json: own.json}
		if d.typ == sr.TypeProtobuf {
			if ws.pb, err = parseDescriptor(own.text); err != nil {
				return nil, err
			}
		}
		d.c.remember(ws)
	} else {
		lctx := ctx
		if d.typ == sr.TypeProtobuf {
			lctx = sr.WithParams(ctx, sr.Format("serialized"))
		}
		ss, err := d.c.cl.SchemaByVersion(lctx, subject, -1)
		if err != nil {
			return nil, classify(err, fmt.Sprintf("the latest schema of subject %q (for %s; register it first, or use registry.RegisterOnEmit)", subject, t))
		}
		if ss.Type != d.typ {
			return nil, fmt.Errorf("registry: subject %q holds a %s schema, not %s", subject, ss.Type, d.typ)
		}
		if ws, err = parseSchema(ss.ID, d.typ, ss.Schema.Schema); err != nil {
			return nil, err
		}
		d.c.remember(ws)
		if d.typ == sr.TypeProtobuf {
			if index, err = messageIndex(ws.pb, own.pbName); err != nil {
				return nil, fmt.Errorf("registry: subject %q, schema id %d: %w", subject, ss.ID, err)
			}
		}
	}
	w := &writer{ws: ws, coder: own.coder}
	var h sr.ConfluentHeader
	if d.typ == sr.TypeProtobuf {
		w.header, _ = h.AppendEncode(nil, ws.id, index)
	} else {
		w.header, _ = h.AppendEncode(nil, ws.id, nil)
	}
	d.mu.Lock()
	d.writers[writerKey{topic, t}] = w
	d.mu.Unlock()
	return w, nil
}

// messageIndex returns the index path of message name in fd.
func messageIndex(fd *descriptorpb.FileDescriptorProto, name protoreflect.FullName) ([]int, error) {
	rel := string(name)
	if p := fd.GetPackage(); p != "" {
		var ok bool
		if rel, ok = strings.CutPrefix(rel, p+"."); !ok {
			return nil, fmt.Errorf("the schema (package %q) does not define message %s", p, name)
		}
	}
	var idx []int
	ms := fd.GetMessageType()
	for _, part := range strings.Split(rel, ".") {
		found := -1
		for i, m := range ms {
			if m.GetName() == part {
				found = i
				break
			}
		}
		if found < 0 {
			return nil, fmt.Errorf("the schema does not define message %s", name)
		}
		idx = append(idx, found)
		ms = ms[found].GetNestedType()
	}
	return idx, nil
}

// messageAt returns the full name of the message at index path idx of fd.
func messageAt(fd *descriptorpb.FileDescriptorProto, idx []int) (string, error) {
	name := fd.GetPackage()
	ms := fd.GetMessageType()
	for _, i := range idx {
		if i < 0 || i >= len(ms) {
			return "", fmt.Errorf("%w: message index %v is not in the writer's schema", ErrFraming, idx)
		}
		if name != "" {
			name += "."
		}
		name += ms[i].GetName()
		ms = ms[i].GetNestedType()
	}
	return name, nil
}

// Unmarshal decodes a framed body into v (a pointer to the handler's body
// type) with the writer's schema the body names. With strict set, writer
// fields v's type has no place for are an error.
func (d *Serde) Unmarshal(data []byte, v any, strict bool) error {
	var h sr.ConfluentHeader
	id, rest, err := h.DecodeID(data)
	if err != nil {
		magic := "none"
		if len(data) > 0 {
			magic = fmt.Sprintf("%#02x", data[0])
		}
		return fmt.Errorf("%w: %d bytes, magic byte %s (want 0 and a 4-byte schema id)", ErrFraming, len(data), magic)
	}
	ws, err := d.c.schemaByID(context.Background(), id, d.typ)
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("registry: cannot decode into %T", v)
	}
	switch d.typ {
	case sr.TypeAvro:
		own, err := d.ownOf(rv.Type().Elem())
		if err != nil {
			return err
		}
		s, err := d.resolver.Resolve(own.avro, ws.avro)
		if err != nil {
			return fmt.Errorf("registry: schema id %d: %w", id, err)
		}
		if strict {
			if err := avroutil.CheckFields(own.avro, ws.avro); err != nil {
				return err
			}
		}
		return own.coder.Decode(s, rest, v)
	case sr.TypeProtobuf:
		m, err := pbutil.Target(v)
		if err != nil {
			return err
		}
		body, err := d.checkIndex(id, ws, rest, m)
		if err != nil {
			return err
		}
		if err := proto.Unmarshal(body, m); err != nil {
			return fmt.Errorf("registry: %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		if strict {
			return pbutil.CheckUnknown(m.ProtoReflect())
		}
		return nil
	default:
		if err := ws.json.Check(rest); err != nil {
			return fmt.Errorf("registry: the body does not conform to its writer's schema (id %d): %w", id, err)
		}
		return codec.JSON.Unmarshal(rest, v, strict)
	}
}

// pbKey identifies a checked (schema id, message index, reader type): an
// index of up to two levels, which is every index in practice.
type pbKey struct {
	id     int
	n      int8
	i0, i1 int32
	t      protoreflect.FullName
}

// checkIndex reads the message index at the start of rest and checks that
// it names, in the writer's schema, a message of the reader's name; it
// returns the message's bytes. Checked indexes are cached.
func (d *Serde) checkIndex(id int, ws *writerSchema, rest []byte, m proto.Message) ([]byte, error) {
	want := m.ProtoReflect().Descriptor().FullName()
	var key pbKey
	var idx [2]int64
	n, body, ok := readIndex(rest, idx[:])
	if ok && n <= 2 {
		key = pbKey{id: id, n: int8(n), i0: int32(idx[0]), i1: int32(idx[1]), t: want}
		d.mu.RLock()
		err, hit := d.checked[key]
		d.mu.RUnlock()
		if hit {
			return body, err
		}
	}
	var h sr.ConfluentHeader
	full, body, err := h.DecodeIndex(rest, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: the message index: %w", ErrFraming, err)
	}
	name, err := messageAt(ws.pb, full)
	if err == nil && name != string(want) && !strings.HasSuffix(name, "."+string(want.Name())) {
		err = fmt.Errorf("registry: schema id %d, index %v is message %s; the handler takes %s", id, full, name, want)
	}
	if ok && n <= 2 {
		d.mu.Lock()
		d.checked[key] = err
		d.mu.Unlock()
	}
	return body, err
}

// readIndex reads a message index (zigzag varints: a count, then the
// indexes; a lone 0 is [0]) into idx without allocating, returning how many
// there are and the rest; ok is false when it does not fit in idx or does
// not parse (DecodeIndex then says why).
func readIndex(b []byte, idx []int64) (n int, rest []byte, ok bool) {
	count, k := binary.Varint(b)
	if k <= 0 || count < 0 {
		return 0, nil, false
	}
	b = b[k:]
	if count == 0 {
		idx[0] = 0
		return 1, b, true
	}
	if count > int64(len(idx)) {
		return 0, nil, false
	}
	for i := range int(count) {
		v, k := binary.Varint(b)
		if k <= 0 {
			return 0, nil, false
		}
		idx[i], b = v, b[k:]
	}
	return int(count), b, true
}

// AppendEnvelope returns ErrEnvelope.
func (d *Serde) AppendEnvelope(dst []byte, _ *codec.Envelope) ([]byte, error) {
	return dst, ErrEnvelope
}

// DecodeEnvelope returns ErrEnvelope.
func (d *Serde) DecodeEnvelope([]byte, *codec.Envelope) error { return ErrEnvelope }

// claims reports whether the serde checks body type t: a Protobuf message
// type for Protobuf, a type given with Schema otherwise.
func (d *Serde) claims(t reflect.Type) bool {
	if d.typ == sr.TypeProtobuf {
		return pbutil.TypeName(t) != ""
	}
	_, ok := d.given[deref(t)]
	return ok
}

// CheckSchemas checks the schema of every handler type the serde claims
// against its subject's latest version, under the subject's compatibility
// level. Topics with wildcards are skipped: their subjects are unknown
// until a message arrives. A subject without versions passes.
func (d *Serde) CheckSchemas(ctx context.Context, uses []codec.Use) error {
	seen := map[string]bool{}
	var errs []error
	for _, u := range uses {
		if u.Body == nil || !d.claims(u.Body) || strings.ContainsAny(u.Topic, "{}*") {
			continue
		}
		own, err := d.ownOf(u.Body)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		subject := d.strategy.subject(u.Topic, own.record)
		if seen[subject+"\x00"+own.text] {
			continue
		}
		seen[subject+"\x00"+own.text] = true
		res, err := d.c.cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subject, -1, sr.Schema{Schema: own.text, Type: d.typ})
		if err != nil {
			var re *sr.ResponseError
			if errors.As(err, &re) && (re.ErrorCode == 40401 || re.ErrorCode == 40402) {
				continue // nothing registered yet: nothing to be incompatible with
			}
			errs = append(errs, classify(err, fmt.Sprintf("checking %s against subject %q", u.Body, subject)))
			continue
		}
		if !res.Is {
			errs = append(errs, fmt.Errorf("%w: %s (handler for %s/%s) against subject %q: %s", ErrIncompatible, u.Body, u.Topic, u.EventType, subject, strings.Join(res.Messages, "; ")))
		}
	}
	return errors.Join(errs...)
}
