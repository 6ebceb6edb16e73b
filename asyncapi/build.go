package asyncapi

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/topic"
)

// Version is the AsyncAPI version of the documents Build makes.
const Version = "3.0.0"

// Binding versions written into the documents.
const (
	kafkaBinding = "0.5.0"
	amqpBinding  = "0.3.0"
	natsBinding  = "0.1.0"
)

// Info is the document's info object and id.
type Info struct {
	// Title and Version are required: the service's name and the version
	// of its API.
	Title, Version string
	// Description says what the service does (Markdown).
	Description string
	// ID is the document's identifier, a URI. Default: "urn:dispytch:" and
	// the title.
	ID string
	// TermsOfService is a URL.
	TermsOfService string
	// Contact and License are optional; @asyncapi/parser's recommended rules
	// ask for both on AsyncAPI 2 documents.
	Contact *Contact
	License *License
}

// Contact is who to ask about the service.
type Contact struct{ Name, URL, Email string }

// License is the API's license.
type License struct{ Name, URL string }

// Option configures Build. Listener, Emitter and Sends say what the service
// receives and sends; Server where; Codec how messages are encoded.
type Option interface{ apply(*builder) }

type optionFunc func(*builder)

func (f optionFunc) apply(b *builder) { f(b) }

// Listener describes what l receives: a receive operation per handler, on
// the channel of its topic or pattern, with a message per event type and,
// on Kafka, the consumer group. Give it the listener with its handlers
// registered (it need not run). Several listeners may be given.
func Listener(l *dispytch.Listener) Option {
	return optionFunc(func(b *builder) { b.listeners = append(b.listeners, l) })
}

// Emitter describes what e sends: a send operation per event type it
// declared (dispytch.Emitter.Declare).
func Emitter(e *dispytch.Emitter) Option {
	return optionFunc(func(b *builder) { b.emitters = append(b.emitters, e) })
}

// Sends describes events the service sends, as Emitter does for the ones
// an emitter declared.
func Sends(events ...dispytch.Eventer) Option {
	return optionFunc(func(b *builder) { b.sends = append(b.sends, events...) })
}

// Server adds a server from a broker URL: kafka://host:9092 (kafka-secure
// with TLS), amqp://host:5672/vhost (amqps), redis://, rediss://, nats://
// or tls://. Credentials in the URL are never written into the document.
// The protocols of the servers decide which bindings the document has:
// Kafka (topics, consumer groups), AMQP (the exchange, the groups'
// queues), NATS (queue groups).
func Server(name, brokerURL string) Option {
	return optionFunc(func(b *builder) { b.servers = append(b.servers, serverSpec{name: name, url: brokerURL}) })
}

// Exchange names the AMQP exchange the topics are routing keys of
// (rabbitmq.Exchanges; default "dispytch").
func Exchange(name string) Option { return optionFunc(func(b *builder) { b.exchange = name }) }

// Codec sets the codec messages are encoded with (default codec.JSON): the
// document's defaultContentType and each message's contentType. A codec
// that implements Schemer describes the bodies in its own schema language.
func Codec(c codec.Codec) Option { return optionFunc(func(b *builder) { b.codec = c }) }

// DeadLetters sets whether the document describes each consumer group's
// dead-letter channel ("<group>.dlq", the listener's default; on by
// default): its failure headers, and the send operation of the listener
// that dead-letters.
func DeadLetters(on bool) Option { return optionFunc(func(b *builder) { b.deadLetters = on }) }

// Schemer may be implemented by a codec whose bodies follow a schema of
// their own (Avro, Protobuf). Build then describes a body with Schema's
// result in SchemaFormat (an AsyncAPI Multi Format Schema Object) instead
// of a JSON Schema generated from the Go type, and the envelope fields as
// headers: a codec with a schema language writes the body alone as the
// message value.
type Schemer interface {
	// SchemaFormat returns the AsyncAPI schemaFormat of the schemas, such
	// as "application/vnd.apache.avro+json;version=1.9.0" or
	// "application/vnd.google.protobuf;version=3".
	SchemaFormat() string
	// Schema returns the schema of body type t: a value encoding/json
	// encodes (an Avro schema) or a string (a .proto file's text).
	Schema(t reflect.Type) (any, error)
}

type serverSpec struct{ name, url string }

type builder struct {
	info        Info
	listeners   []*dispytch.Listener
	emitters    []*dispytch.Emitter
	sends       []dispytch.Eventer
	servers     []serverSpec
	exchange    string
	codec       codec.Codec
	deadLetters bool

	protocols map[string]bool // of the servers: kafka, amqp, nats, redis
	schemas   *schemas
	channels  map[string]*channelSpec // by address
	messages  []*messageSpec
	ops       []*operationSpec
	groups    map[string]*groupSpec // AMQP queues and dead letters, by group
	errs      []error
}

type channelSpec struct {
	address  string // AsyncAPI form: {name} for every wildcard
	pattern  string // as written, when it differs
	regex    string // a pattern's Kafka subscription
	literal  bool
	params   map[string]*object
	paramOrd []string
	messages []*messageSpec
	id       string
	dlq      bool
}

type messageSpec struct {
	eventType string
	body      reflect.Type // nil: any body
	id        string
	dlq       bool
}

type operationSpec struct {
	id       string
	action   string // send, receive
	channel  *channelSpec
	messages []*messageSpec
	handler  *dispytch.HandlerInfo
	group    string
	summary  string
}

type groupSpec struct {
	name     string
	keys     []string // routing keys bound to its queue
	messages []*messageSpec
	dead     bool // some handler dead-letters
}

// Build makes the AsyncAPI 3.0 document of a service: its servers, the
// channels its listeners receive from and its emitters send to (address and
// parameters), one message per event type with the Dispytch envelope, its
// headers and a JSON Schema of the body, and the send and receive
// operations with their bindings. The same code always gives the same
// document: maps are sorted, lists keep registration order.
func Build(info Info, opts ...Option) (*Document, error) {
	b := &builder{info: info, exchange: "dispytch", codec: codec.JSON, deadLetters: true,
		protocols: map[string]bool{}, schemas: newSchemas(), channels: map[string]*channelSpec{}, groups: map[string]*groupSpec{}}
	for _, o := range opts {
		if o != nil {
			o.apply(b)
		}
	}
	if info.Title == "" || info.Version == "" {
		return nil, errors.New("asyncapi: Info needs a Title and a Version")
	}
	servers := b.buildServers()
	for _, l := range b.listeners {
		b.addListener(l)
	}
	for _, e := range b.emitters {
		if e != nil {
			for _, ev := range e.Declared() {
				b.addSend(ev)
			}
		}
	}
	for _, ev := range b.sends {
		b.addSend(ev)
	}
	if b.deadLetters {
		b.addDeadLetters()
	}
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	root := b.document(servers)
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	return &Document{root: root}, nil
}

func (b *builder) fail(format string, args ...any) {
	b.errs = append(b.errs, fmt.Errorf("asyncapi: "+format, args...))
}

// Protocols by URL scheme, with the default port of each.
var schemes = map[string]struct {
	protocol, version string
	port              string
}{
	"kafka":        {"kafka", "", "9092"},
	"kafka-secure": {"kafka-secure", "", "9093"},
	"amqp":         {"amqp", "0-9-1", "5672"},
	"amqps":        {"amqps", "0-9-1", "5671"},
	"redis":        {"redis", "", "6379"},
	"rediss":       {"redis", "", "6379"},
	"nats":         {"nats", "", "4222"},
	"tls":          {"nats", "", "4222"},
}

func (b *builder) buildServers() *object {
	out := newObject()
	for _, s := range b.servers {
		u, err := url.Parse(s.url)
		if err != nil {
			b.fail("server %q: %v", s.name, err)
			continue
		}
		sc, ok := schemes[u.Scheme]
		if !ok {
			b.fail("server %q: unknown scheme %q (kafka, kafka-secure, amqp, amqps, redis, rediss, nats, tls)", s.name, u.Scheme)
			continue
		}
		host := u.Host
		if host == "" {
			b.fail("server %q: %q has no host", s.name, s.url)
			continue
		}
		if u.Port() == "" {
			host += ":" + sc.port
		}
		srv := obj("host", host, "protocol", sc.protocol)
		srv.setNonEmpty("protocolVersion", sc.version)
		switch family(sc.protocol) {
		case "amqp":
			vhost := strings.TrimPrefix(u.Path, "/")
			if vhost == "" {
				vhost = "/"
			}
			srv.set("pathname", "/"+strings.TrimPrefix(vhost, "/"))
			srv.set("description", "RabbitMQ, virtual host "+strconv.Quote(vhost)+"; topics are routing keys of the topic exchange "+strconv.Quote(b.exchange)+".")
		case "kafka":
			srv.set("description", "Kafka; topics are Kafka topics.")
		case "redis":
			srv.set("description", "Redis.")
			if u.Scheme == "rediss" {
				srv.set("description", "Redis over TLS.")
			}
		case "nats":
			srv.set("description", "NATS.")
		}
		name := sanitizeName(s.name)
		if _, dup := out.get(name); dup {
			b.fail("server %q given twice", s.name)
			continue
		}
		out.set(name, srv)
		b.protocols[family(sc.protocol)] = true
	}
	return out.sortKeys()
}

func family(protocol string) string {
	switch protocol {
	case "kafka", "kafka-secure":
		return "kafka"
	case "amqp", "amqps":
		return "amqp"
	}
	return protocol
}

// message returns the message of an event type with body t, creating it:
// one per event type, unless two bodies of different types share one.
func (b *builder) message(eventType string, t reflect.Type) *messageSpec {
	if t != nil && isRaw(t) {
		t = nil
	}
	for _, m := range b.messages {
		if m.eventType != eventType || m.dlq {
			continue
		}
		if m.body == t || t == nil {
			return m
		}
		if m.body == nil {
			m.body = t
			return m
		}
	}
	m := &messageSpec{eventType: eventType, body: t}
	b.messages = append(b.messages, m)
	return m
}

func (b *builder) channel(address string) *channelSpec {
	if c, ok := b.channels[address]; ok {
		return c
	}
	c := &channelSpec{address: address, params: map[string]*object{}}
	b.channels[address] = c
	return c
}

func (c *channelSpec) addMessage(m *messageSpec) {
	if !slices.Contains(c.messages, m) {
		c.messages = append(c.messages, m)
	}
}

func (c *channelSpec) param(name string) *object {
	if p, ok := c.params[name]; ok {
		return p
	}
	p := newObject()
	c.params[name] = p
	c.paramOrd = append(c.paramOrd, name)
	return p
}

func (b *builder) addListener(l *dispytch.Listener) {
	if l == nil {
		return
	}
	sub, err := l.Subscription()
	if err != nil {
		b.fail("listener: %v", err)
		return
	}
	g := b.groups[sub.Group]
	if g == nil {
		g = &groupSpec{name: sub.Group}
		b.groups[sub.Group] = g
	}
	handlers := l.Handlers()
	for i := range handlers {
		h := &handlers[i]
		pat, err := topic.Parse(h.Topic, sub.Delimiter)
		if err != nil {
			b.fail("handler %s: %v", h.Name, err)
			continue
		}
		address, names := patternAddress(pat)
		c := b.channel(address)
		if address != h.Topic {
			c.pattern = h.Topic
		}
		c.literal = pat.IsLiteral()
		if !c.literal {
			c.regex = pat.Regexp()
		}
		for _, n := range names {
			c.param(n.param)
		}
		for _, n := range names {
			b.describeSegment(c.param(n.param), n, h.Segments)
		}
		m := b.message(h.EventType, h.Body)
		c.addMessage(m)
		key := pat.Format("*", "#")
		if !slices.Contains(g.keys, key) {
			g.keys = append(g.keys, key)
		}
		if !slices.Contains(g.messages, m) {
			g.messages = append(g.messages, m)
		}
		if h.Policy == dispytch.PolicyDeadLetter {
			g.dead = true
		}
		b.ops = append(b.ops, &operationSpec{action: "receive", channel: c, messages: []*messageSpec{m}, handler: h, group: sub.Group})
	}
}

// wildcard is one wildcard segment of a pattern, as a channel parameter.
type wildcard struct {
	param string // the parameter's name
	name  string // the pattern's name ("" for *)
	kind  topic.Kind
	pos   int
}

// patternAddress renders a pattern as a channel address: {name} stays,
// {name...} becomes {name} (a parameter that spans segments), and each *
// becomes {segmentN}, N its position.
func patternAddress(p *topic.Pattern) (string, []wildcard) {
	var parts []string
	var names []wildcard
	taken := map[string]bool{}
	for _, s := range p.Segments() {
		if s.Kind != topic.KindLiteral && s.Value != "" {
			taken[s.Value] = true
		}
	}
	for i, s := range p.Segments() {
		switch s.Kind {
		case topic.KindLiteral:
			parts = append(parts, s.Value)
			continue
		}
		name := s.Value
		if name == "" {
			name = "segment" + strconv.Itoa(i+1)
			for taken[name] {
				name = "_" + name
			}
			taken[name] = true
		}
		parts = append(parts, "{"+name+"}")
		names = append(names, wildcard{param: name, name: s.Value, kind: s.Kind, pos: i + 1})
	}
	return strings.Join(parts, p.Delimiter()), names
}

// describeSegment describes a pattern's wildcard as a parameter, typed and
// constrained by the field of the handler's Segments struct that takes it.
func (b *builder) describeSegment(p *object, w wildcard, segs reflect.Type) {
	if p.str("description") != "" {
		return
	}
	what := "one topic segment"
	switch {
	case w.kind == topic.KindRest:
		what = "the rest of the topic: one or more segments ({" + w.name + "...})"
	case w.name == "":
		what = "one topic segment (the anonymous wildcard * at position " + strconv.Itoa(w.pos) + ")"
	}
	if segs != nil && w.name != "" {
		for segs.Kind() == reflect.Pointer {
			segs = segs.Elem()
		}
		if segs.Kind() == reflect.Struct {
			if f, ok := segmentField(segs, w.name); ok {
				s := b.schemas.of(f.Type, f.Tag.Get("validate"))
				desc := what + ", bound to " + segs.Name() + "." + f.Name
				if r := describeRules(s); r != "" {
					desc += ": " + r
				}
				p.set("description", desc)
				if enum, ok := s.get("enum"); ok {
					p.set("enum", stringsOf(enum))
				}
				p.set("x-dispytch-schema", s)
				return
			}
		}
	}
	p.set("description", what)
}

// segmentField finds the field of a Segments struct that takes the
// wildcard name: its segment tag, or its name ignoring case and
// underscores, as package dispytch binds them.
func segmentField(t reflect.Type, name string) (reflect.StructField, bool) {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, tagged := f.Tag.Lookup("segment")
		if tag == "-" {
			continue
		}
		if (tagged && tag == name) || (!tagged && norm(f.Name) == norm(name)) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func stringsOf(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

func (b *builder) addSend(ev dispytch.Eventer) {
	if ev == nil {
		return
	}
	t := reflect.TypeOf(ev)
	raw := ev.Topic()
	tpl, err := topic.ParseTemplate(raw)
	if err != nil {
		b.fail("%s: topic: %v", t, err)
		return
	}
	c := b.channel(raw)
	m := b.message(ev.EventType(), t)
	c.addMessage(m)
	bt := t
	for bt.Kind() == reflect.Pointer {
		bt = bt.Elem()
	}
	for _, field := range tpl.Fields() {
		p := c.param(field)
		var f *jsonField
		if bt.Kind() == reflect.Struct {
			for _, jf := range jsonFields(bt) {
				if jf.name == field {
					f = &jf
					break
				}
			}
		}
		if f == nil {
			b.fail("%s: topic %q: no JSON field %q to fill {%s} from", t, raw, field, field)
			continue
		}
		loc := "$message.payload#/body/" + jsonPointerEscape(field)
		if _, ok := b.codec.(Schemer); ok {
			loc = "$message.payload#/" + jsonPointerEscape(field)
		}
		if _, ok := p.get("location"); !ok && !b.channelIsPattern(c) {
			p.set("location", loc)
		}
		if p.str("description") == "" {
			s := b.schemas.of(f.typ, f.validate)
			desc := "filled from the event's " + strconv.Quote(field) + " field"
			if r := describeRules(s); r != "" {
				desc += ": " + r
			}
			p.set("description", desc)
			if enum, ok := s.get("enum"); ok {
				p.set("enum", stringsOf(enum))
			}
			p.set("x-dispytch-schema", s)
		}
	}
	for _, op := range b.ops {
		if op.action == "send" && op.channel == c && slices.Contains(op.messages, m) {
			return
		}
	}
	b.ops = append(b.ops, &operationSpec{action: "send", channel: c, messages: []*messageSpec{m}})
}

// channelIsPattern reports a channel a listener subscribes to by pattern:
// its parameters come from the topic, whatever the payload holds.
func (b *builder) channelIsPattern(c *channelSpec) bool { return c.regex != "" }

func jsonPointerEscape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func (b *builder) addDeadLetters() {
	names := make([]string, 0, len(b.groups))
	for n := range b.groups {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		g := b.groups[n]
		if !g.dead {
			continue
		}
		address := "dispytch.dlq"
		if n != "" {
			address = n + ".dlq"
		}
		c := b.channel(address)
		c.literal, c.dlq = true, true
		m := &messageSpec{eventType: "dead_letter", dlq: true}
		for _, have := range b.messages {
			if have.dlq {
				m = have
			}
		}
		if !slices.Contains(b.messages, m) {
			b.messages = append(b.messages, m)
		}
		c.addMessage(m)
		b.ops = append(b.ops, &operationSpec{action: "send", channel: c, messages: []*messageSpec{m}, group: n,
			summary: "Messages of group " + strconv.Quote(n) + " that failed for good, with why."})
	}
}
