package asyncapi

import (
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/dispytch/dispytch-go"
)

// document assembles the AsyncAPI document from what was collected, in a
// fixed order: the root fields in the specification's order, every map
// keyed by identifiers sorted.
func (b *builder) document(servers *object) *object {
	b.assignIDs()
	root := obj("asyncapi", Version)
	id := b.info.ID
	if id == "" {
		id = "urn:dispytch:" + sanitizeName(b.info.Title)
	}
	root.set("id", id)
	info := obj("title", b.info.Title, "version", b.info.Version)
	info.setNonEmpty("description", b.info.Description)
	info.setNonEmpty("termsOfService", b.info.TermsOfService)
	if c := b.info.Contact; c != nil {
		co := newObject().setNonEmpty("name", c.Name).setNonEmpty("url", c.URL).setNonEmpty("email", c.Email)
		info.set("contact", co)
	}
	if l := b.info.License; l != nil {
		info.set("license", obj("name", l.Name).setNonEmpty("url", l.URL))
	}
	root.set("info", info)
	if servers.len() > 0 {
		root.set("servers", servers)
	}
	root.set("defaultContentType", b.codec.ContentType())

	channels := newObject()
	for _, c := range b.sortedChannels() {
		channels.set(c.id, b.channelObject(c))
	}
	if b.protocols["amqp"] {
		for _, g := range b.sortedGroups() {
			if g.name == "" || len(g.messages) == 0 {
				continue
			}
			channels.set("queue."+sanitizeName(g.name), b.queueChannel(g, servers))
		}
	}
	root.set("channels", channels.sortKeys())

	ops := newObject()
	for _, op := range b.ops {
		ops.set(op.id, b.operationObject(op))
	}
	root.set("operations", ops.sortKeys())

	msgs := newObject()
	for _, m := range b.messages {
		msgs.set(m.id, b.messageObject(m))
	}
	msgs.sortKeys()
	comps := obj()
	schemas := b.schemas.finish(msgs, channels)
	schemas.set("dispytch.Headers", headersSchema())
	if b.deadLetters {
		schemas.set("dispytch.DeadLetterHeaders", deadLetterHeadersSchema())
	}
	comps.set("schemas", schemas.sortKeys())
	comps.set("messages", msgs)
	root.set("components", comps)
	return root
}

func (b *builder) sortedChannels() []*channelSpec {
	out := make([]*channelSpec, 0, len(b.channels))
	for _, c := range b.channels {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].address < out[j].address })
	return out
}

func (b *builder) sortedGroups() []*groupSpec {
	out := make([]*groupSpec, 0, len(b.groups))
	for _, g := range b.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// assignIDs names channels, messages and operations: readable, unique and
// the same for the same code.
func (b *builder) assignIDs() {
	used := map[string]bool{}
	unique := func(base string) string {
		id := base
		for i := 2; used[id]; i++ {
			id = base + "-" + strconv.Itoa(i)
		}
		used[id] = true
		return id
	}
	for _, c := range b.sortedChannels() {
		base := strings.NewReplacer("{", "", "}", "").Replace(c.address)
		c.id = unique(sanitizeName(base))
	}
	for _, g := range b.sortedGroups() {
		used["queue."+sanitizeName(g.name)] = true
	}

	used = map[string]bool{}
	sort.SliceStable(b.messages, func(i, j int) bool {
		mi, mj := b.messages[i], b.messages[j]
		if mi.dlq != mj.dlq {
			return mj.dlq
		}
		if mi.eventType != mj.eventType {
			return mi.eventType < mj.eventType
		}
		return typeName(mi.body) < typeName(mj.body)
	})
	count := map[string]int{}
	for _, m := range b.messages {
		count[m.eventType]++
	}
	for _, m := range b.messages {
		switch {
		case m.dlq:
			m.id = unique("dispytch.DeadLetter")
		case count[m.eventType] > 1 && m.body != nil:
			m.id = unique(sanitizeName(m.eventType + "." + m.body.Name()))
		default:
			m.id = unique(sanitizeName(m.eventType))
		}
	}

	used = map[string]bool{}
	sends := map[string]int{}
	for _, op := range b.ops {
		if op.action == "send" && !op.channel.dlq {
			sends[op.messages[0].id]++
		}
	}
	for _, op := range b.ops {
		switch {
		case op.action == "receive":
			name := op.handler.Name
			if i := strings.LastIndexByte(name, '/'); i >= 0 {
				name = name[i+1:]
			}
			op.id = unique("receive." + sanitizeName(name))
		case op.channel.dlq:
			op.id = unique("deadLetter." + sanitizeName(op.group))
		case sends[op.messages[0].id] > 1:
			op.id = unique("send." + op.messages[0].id + "." + op.channel.id)
		default:
			op.id = unique("send." + op.messages[0].id)
		}
	}
}

func typeName(t reflect.Type) string {
	if t == nil {
		return ""
	}
	return t.String()
}

func (b *builder) vhost() string {
	for _, s := range b.servers {
		if i := strings.Index(s.url, "://"); i >= 0 && strings.HasPrefix(s.url, "amqp") {
			rest := s.url[i+3:]
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				if v := strings.SplitN(rest[j+1:], "?", 2)[0]; v != "" {
					return v
				}
			}
			return "/"
		}
	}
	return "/"
}

func (b *builder) channelObject(c *channelSpec) *object {
	o := obj("address", c.address)
	switch {
	case c.dlq:
		o.set("title", "Dead letters "+c.address)
		o.set("description", "Messages that failed for good: the original key, value and headers, "+
			"plus the dispytch-dlq-* headers saying why (reason, error, handler, attempts, times, original topic). "+
			"`dispytch dlq ls` lists them; `dispytch dlq redrive` sends them back to their topics.")
	case c.regex != "":
		desc := "Topics matching the pattern `" + patternText(c) + "`"
		desc += ". Kafka subscribes with the regular expression `" + c.regex + "`; RabbitMQ binds `" + amqpKey(c) + "`."
		o.set("description", desc)
	default:
		o.set("description", "The topic `"+c.address+"`.")
	}
	if len(c.paramOrd) > 0 {
		ps := newObject()
		for _, n := range c.paramOrd {
			ps.set(n, c.params[n])
		}
		o.set("parameters", ps)
	}
	msgs := newObject()
	for _, m := range c.messages {
		msgs.set(m.id, obj("$ref", "#/components/messages/"+m.id))
	}
	o.set("messages", msgs.sortKeys())
	bind := newObject()
	if b.protocols["kafka"] {
		kb := newObject()
		if c.literal {
			kb.set("topic", c.address)
		} else {
			kb.set("x-dispytch-regex", c.regex)
		}
		kb.set("bindingVersion", kafkaBinding)
		bind.set("kafka", kb)
	}
	if b.protocols["amqp"] {
		if c.dlq {
			bind.set("amqp", obj("is", "queue",
				"queue", obj("name", c.address, "durable", true, "exclusive", false, "autoDelete", false, "vhost", b.vhost()),
				"bindingVersion", amqpBinding))
		} else {
			bind.set("amqp", obj("is", "routingKey",
				"exchange", obj("name", b.exchange, "type", "topic", "durable", true, "autoDelete", false, "vhost", b.vhost()),
				"bindingVersion", amqpBinding))
		}
	}
	if bind.len() > 0 {
		o.set("bindings", bind)
	}
	if c.pattern != "" {
		o.set("x-dispytch-pattern", c.pattern)
	}
	return o
}

func patternText(c *channelSpec) string {
	if c.pattern != "" {
		return c.pattern
	}
	return c.address
}

// amqpKey is a channel's AMQP binding key.
func amqpKey(c *channelSpec) string {
	key := c.address
	for _, n := range c.paramOrd {
		w := "*"
		if desc := c.params[n].str("description"); strings.HasPrefix(desc, "the rest of the topic") {
			w = "#"
		}
		key = strings.ReplaceAll(key, "{"+n+"}", w)
	}
	return key
}

// queueChannel describes a consumer group's AMQP queue.
func (b *builder) queueChannel(g *groupSpec, servers *object) *object {
	o := obj("address", g.name, "title", "Queue "+g.name)
	o.set("description", "The durable queue of consumer group `"+g.name+"`, bound to the exchange `"+b.exchange+
		"` with the keys `"+strings.Join(g.keys, "`, `")+"`; the group's receive operations consume from it.")
	var refs []any
	for _, name := range servers.sorted() {
		if family(servers.child(name).str("protocol")) == "amqp" {
			refs = append(refs, obj("$ref", "#/servers/"+name))
		}
	}
	o.set("servers", refs)
	msgs := newObject()
	for _, m := range g.messages {
		msgs.set(m.id, obj("$ref", "#/components/messages/"+m.id))
	}
	o.set("messages", msgs.sortKeys())
	o.set("bindings", obj("amqp", obj("is", "queue",
		"queue", obj("name", g.name, "durable", true, "exclusive", false, "autoDelete", false, "vhost", b.vhost()),
		"bindingVersion", amqpBinding)))
	keys := make([]any, len(g.keys))
	for i, k := range g.keys {
		keys[i] = k
	}
	o.set("x-dispytch-binding-keys", keys)
	return o
}

func (b *builder) operationObject(op *operationSpec) *object {
	o := obj("action", op.action, "channel", obj("$ref", "#/channels/"+op.channel.id))
	m := op.messages[0]
	switch {
	case op.action == "receive":
		h := op.handler
		o.set("title", h.Name)
		o.set("summary", "Handles "+m.eventType+" events from "+patternText(op.channel)+".")
		var d []string
		if op.group != "" {
			d = append(d, "Consumer group `"+op.group+"`.")
		}
		d = append(d, "Retries: "+strconv.Itoa(h.Retries)+"; when it fails for good: "+h.Policy.String()+".")
		if h.Policy == dispytch.PolicyDeadLetter && b.deadLetters {
			d = append(d, "Dead letters go to `"+dlqName(op.group)+"`.")
		}
		if b.protocols["amqp"] && op.group != "" {
			d = append(d, "On RabbitMQ it consumes from the queue `"+op.group+"`.")
		}
		o.set("description", strings.Join(d, " "))
		o.set("x-dispytch-handler", obj("name", h.Name, "location", h.Location, "retries", h.Retries, "policy", h.Policy.String()))
	case op.channel.dlq:
		o.set("title", "Dead-letter "+op.group)
		o.set("summary", op.summary)
	default:
		o.set("summary", "Sends "+m.eventType+" events to "+op.channel.address+".")
	}
	var refs []any
	for _, m := range op.messages {
		refs = append(refs, obj("$ref", "#/channels/"+op.channel.id+"/messages/"+m.id))
	}
	o.set("messages", refs)
	bind := newObject()
	if op.action == "receive" {
		if b.protocols["kafka"] && op.group != "" {
			bind.set("kafka", obj("groupId", obj("type", "string", "enum", []string{op.group}), "bindingVersion", kafkaBinding))
		}
		if b.protocols["amqp"] {
			bind.set("amqp", obj("ack", true, "bindingVersion", amqpBinding))
		}
		if b.protocols["nats"] && op.group != "" {
			bind.set("nats", obj("queue", op.group, "bindingVersion", natsBinding))
		}
	} else if b.protocols["amqp"] && !op.channel.dlq {
		bind.set("amqp", obj("deliveryMode", 2, "mandatory", true, "bindingVersion", amqpBinding))
	}
	if bind.len() > 0 {
		o.set("bindings", bind)
	}
	return o
}

func dlqName(group string) string {
	if group == "" {
		return "dispytch.dlq"
	}
	return group + ".dlq"
}

func (b *builder) messageObject(m *messageSpec) *object {
	if m.dlq {
		o := obj("name", "dead_letter", "title", "Dead letter",
			"summary", "A message that failed for good, with the reason in its headers.")
		o.set("headers", obj("$ref", "#/components/schemas/dispytch.DeadLetterHeaders"))
		o.set("payload", obj("description", "The original message's value, unchanged: the envelope of one of the "+
			"group's messages, or the bytes that failed to decode (left out of a letter too large for the broker: see dispytch-dlq-truncated)."))
		return o
	}
	o := obj("name", m.eventType, "title", m.eventType)
	summary := "The " + m.eventType + " event"
	if m.body != nil {
		summary += " (Go type " + m.body.String() + ")"
	}
	o.set("summary", summary+".")
	o.set("contentType", b.codec.ContentType())
	o.set("headers", obj("$ref", "#/components/schemas/dispytch.Headers"))
	if sc, ok := b.codec.(Schemer); ok && m.body != nil {
		t := m.body
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		s, err := sc.Schema(t)
		if err != nil {
			b.fail("%s: schema of %s: %v", m.eventType, t, err)
		}
		o.set("payload", obj("schemaFormat", sc.SchemaFormat(), "schema", toTree(s)))
		o.set("x-dispytch-envelope", "headers")
	} else {
		body := obj("description", "Any body: the handlers take it undecoded.")
		if m.body != nil {
			body = b.schemas.typeSchema(m.body)
		}
		o.set("payload", obj(
			"type", "object",
			"description", "The Dispytch envelope, as Python Dispytch writes it.",
			"required", []string{"id", "type", "body", "timestamp"},
			"properties", obj(
				"id", obj("type", "string", "description", "The event id: a UUID v4 unless the emitter set one."),
				"type", obj("type", "string", "const", m.eventType),
				"body", body,
				"timestamp", obj("type", "integer", "description", "When the event was emitted, in milliseconds since the Unix epoch."),
			)))
	}
	bind := newObject()
	if b.protocols["kafka"] {
		bind.set("kafka", obj("key", obj("type", "string", "description", "The message key (dispytch.Key, EventKey): records of a key keep their order."),
			"bindingVersion", kafkaBinding))
	}
	if bind.len() > 0 {
		o.set("bindings", bind)
	}
	o.set("x-dispytch-event-type", m.eventType)
	return o
}

// toTree turns a Schemer's value into the document's tree by way of its
// JSON form.
func toTree(v any) any {
	switch v := v.(type) {
	case string, *object:
		return v
	}
	data, err := jsonMarshal(v)
	if err != nil {
		return obj("description", "the schema did not encode: "+err.Error())
	}
	t, err := parseJSON(data)
	if err != nil {
		return obj("description", "the schema did not encode: "+err.Error())
	}
	return t
}

func headersSchema() *object {
	str := func(desc string) *object { return obj("type", "string", "description", desc) }
	return obj("type", "object",
		"title", "Dispytch headers",
		"description", "What Dispytch writes next to the envelope. Headers set with dispytch.Header are strings too.",
		"properties", obj(
			"content-type", str("The codec: application/json or application/msgpack (on AMQP the content_type property; "+
				"absent on messages from Python Dispytch, whose first byte tells)."),
			"dispytch-event-id", str("Kafka: the envelope's id, for tools that do not decode."),
			"dispytch-event-type", str("Kafka: the envelope's type, for tools that do not decode."),
			"dispytch-key", str("AMQP: the message key (AMQP messages have none)."),
			dispytch.HeaderRedriveHandler, str("Set by a redrive: only this handler runs the message again."),
			dispytch.HeaderRedriveGroup, str("Set by a redrive: only listeners of this consumer group run the message again."),
		),
		"additionalProperties", obj("type", "string"))
}

func deadLetterHeadersSchema() *object {
	str := func(desc string) *object { return obj("type", "string", "description", desc) }
	reasons := []string{string(dispytch.ReasonHandler), string(dispytch.ReasonPanic), string(dispytch.ReasonTimeout),
		string(dispytch.ReasonDecode), string(dispytch.ReasonValidation), string(dispytch.ReasonNoHandler), string(dispytch.ReasonDependency)}
	return obj("type", "object",
		"title", "Dead-letter headers",
		"description", "The original message's headers, plus why it failed.",
		"required", []string{dispytch.HeaderDLReason},
		"properties", obj(
			dispytch.HeaderDLReason, obj("type", "string", "enum", reasons, "description", "Why the message failed. Brokers that dead-letter by themselves add their own reasons (RabbitMQ: delivery_limit, expired, ...)."),
			dispytch.HeaderDLError, str("The last error."),
			dispytch.HeaderDLHandler, str("The handler that failed (empty when none was reached)."),
			dispytch.HeaderDLAttempts, obj("type", "string", "pattern", "^[0-9]+$", "description", "How many attempts were made."),
			dispytch.HeaderDLFirstFailure, obj("type", "string", "format", "date-time", "description", "The first failed attempt (RFC 3339)."),
			dispytch.HeaderDLLastFailure, obj("type", "string", "format", "date-time", "description", "The last failed attempt (RFC 3339)."),
			dispytch.HeaderDLTopic, str("The original topic; a redrive sends the message back there."),
			dispytch.HeaderDLGroup, str("The consumer group whose handler failed."),
			dispytch.HeaderDLPartition, str("Kafka: the original's partition."),
			dispytch.HeaderDLOffset, str("Kafka: the original's offset."),
			dispytch.HeaderDLTruncated, str("Set when the letter was too large: the original value's size in bytes, which the letter leaves out."),
		),
		"additionalProperties", obj("type", "string"))
}
