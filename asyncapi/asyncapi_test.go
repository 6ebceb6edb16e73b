package asyncapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
)

var update = flag.Bool("update", false, "rewrite the golden documents in testdata")

func buildShop(t testing.TB, opts ...asyncapi.Option) *asyncapi.Document {
	t.Helper()
	l, e := shopService()
	doc, err := asyncapi.Build(testInfo, append([]asyncapi.Option{asyncapi.Listener(l), asyncapi.Emitter(e),
		asyncapi.Server("kafka", "kafka://broker-1:9092"), asyncapi.Server("rabbitmq", "amqp://user:secret@rabbit:5672/shop")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// tree decodes a document's JSON into generic values.
func tree(t testing.TB, doc *asyncapi.Document) map[string]any {
	t.Helper()
	j, err := doc.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// at walks a generic tree by keys.
func at(t testing.TB, v any, path ...string) any {
	t.Helper()
	for i, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is %T, not an object", strings.Join(path[:i], "/"), v)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("%s has no %q (keys: %v)", strings.Join(path[:i], "/"), k, keys(m))
		}
	}
	return v
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestOfficialParserAcceptsDocuments(t *testing.T) {
	notifier, emitter := dynamicService()
	dynamic, err := asyncapi.Build(asyncapi.Info{Title: "notifier", Version: "1.0.0"}, asyncapi.Listener(notifier), asyncapi.Emitter(emitter),
		asyncapi.Server("rabbitmq", "amqp://127.0.0.1:5672/"), asyncapi.Exchange("events"))
	if err != nil {
		t.Fatal(err)
	}
	quickstart, err := asyncapi.Build(testInfo, asyncapi.Listener(quickstartListener()), asyncapi.Server("local", "kafka://localhost:9092"))
	if err != nil {
		t.Fatal(err)
	}
	l, e := shopService()
	shopNATS, err := asyncapi.Build(testInfo, asyncapi.Listener(l), asyncapi.Emitter(e),
		asyncapi.Server("nats", "nats://nats:4222"), asyncapi.Server("redis", "rediss://cache:6380"), asyncapi.Codec(msgpack.Codec))
	if err != nil {
		t.Fatal(err)
	}
	serverless, err := asyncapi.Build(asyncapi.Info{Title: "in memory", Version: "0.1.0"}, asyncapi.Listener(quickstartListener()),
		asyncapi.Sends(UserNotification{}), asyncapi.DeadLetters(false))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                         string
		doc                          *asyncapi.Document
		channels, operations, messgs []string
	}{
		{"quickstart", quickstart,
			[]string{"quickstart.dlq", "user_events"},
			[]string{"deadLetter.quickstart", "receive.welcome"},
			[]string{"dispytch.DeadLetter", "user_registered"}},
		{"dynamic", dynamic,
			[]string{"notifier.dlq", "queue.notifier", "user.user_id.notification"},
			[]string{"deadLetter.notifier", "receive.mailer", "send.user_notification"},
			[]string{"dispytch.DeadLetter", "user_notification"}},
		{"shop", buildShop(t),
			[]string{"audit.path", "orders.region.order_id", "queue.shop", "shop.dlq", "stock", "stock.segment2.changes"},
			[]string{"deadLetter.shop", "receive.archive", "receive.audit", "receive.release_stock", "receive.reserve_stock",
				"receive.ship", "receive.stock_mirror", "receive.stock_watch", "send.order_cancelled", "send.order_created",
				"send.order_paid", "send.stock_changed"},
			[]string{"audit_entry", "dispytch.DeadLetter", "order_cancelled", "order_created", "order_paid", "stock_changed"}},
		{"shop-nats-redis-msgpack", shopNATS, nil, nil, nil},
		{"example", noteDocument(), []string{"user.user_id.notification"}, []string{"receive.mailer"}, []string{"user_notification"}},
		{"serverless", serverless,
			[]string{"user.user_id.notification", "user_events"},
			[]string{"receive.welcome", "send.user_notification"},
			[]string{"user_notification", "user_registered"}},
	}
	// One run of the parser for every document: node starts slowly.
	dir := t.TempDir()
	var files []string
	written := map[string][2]string{}
	for _, c := range cases {
		jf, yf := writeDoc(t, dir, c.name, c.doc)
		written[c.name] = [2]string{jf, yf}
		files = append(files, jf, yf)
	}
	res := officialParser(t, files...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := checkVerdicts(t, res, written[c.name][0], written[c.name][1])
			if r.Summary.Version != asyncapi.Version {
				t.Errorf("version %q", r.Summary.Version)
			}
			if c.channels != nil && !slices.Equal(r.Summary.Channels, c.channels) {
				t.Errorf("channels = %v, want %v", r.Summary.Channels, c.channels)
			}
			if c.operations != nil && !slices.Equal(r.Summary.Operations, c.operations) {
				t.Errorf("operations = %v, want %v", r.Summary.Operations, c.operations)
			}
			if c.messgs != nil && !slices.Equal(r.Summary.Messages, c.messgs) {
				t.Errorf("messages = %v, want %v", r.Summary.Messages, c.messgs)
			}
			if err := c.doc.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// avroCodec stands for the schema issue's Avro codec: a codec with a
// schema language of its own describes the bodies through Schemer, and
// the official parser checks them with its Avro schema parser.
type avroCodec struct{ codec.Codec }

func (avroCodec) ContentType() string  { return "application/vnd.apache.avro+binary" }
func (avroCodec) SchemaFormat() string { return "application/vnd.apache.avro;version=1.9.0" }

func (avroCodec) Schema(t reflect.Type) (any, error) {
	var fields []map[string]any
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		var typ string
		switch f.Type.Kind() {
		case reflect.String:
			typ = "string"
		case reflect.Int32:
			typ = "int"
		case reflect.Int, reflect.Int64:
			typ = "long"
		default:
			return nil, errors.New("no Avro type for " + f.Type.String())
		}
		fields = append(fields, map[string]any{"name": name, "type": typ})
	}
	return map[string]any{"type": "record", "name": t.Name(), "namespace": "shop", "fields": fields}, nil
}

func TestSchemerCodecSeam(t *testing.T) {
	doc, err := asyncapi.Build(testInfo, asyncapi.Codec(avroCodec{codec.JSON}),
		asyncapi.Sends(StockChanged{}, UserNotification{}), asyncapi.Server("kafka", "kafka://localhost:9092"))
	if err != nil {
		t.Fatal(err)
	}
	requireValid(t, "avro", doc)
	m := tree(t, doc)
	payload := at(t, m, "components", "messages", "stock_changed", "payload")
	if f := at(t, payload, "schemaFormat"); f != "application/vnd.apache.avro;version=1.9.0" {
		t.Errorf("schemaFormat = %v", f)
	}
	if n := at(t, payload, "schema", "name"); n != "StockChanged" {
		t.Errorf("schema name = %v", n)
	}
	if ct := at(t, m, "defaultContentType"); ct != "application/vnd.apache.avro+binary" {
		t.Errorf("defaultContentType = %v", ct)
	}
	// The topic's parameter is in the body, which is the whole payload.
	if loc := at(t, m, "channels", "user.user_id.notification", "parameters", "user_id", "location"); loc != "$message.payload#/user_id" {
		t.Errorf("location = %v", loc)
	}
	// A body the codec cannot describe is an error, not a silent gap.
	_, err = asyncapi.Build(testInfo, asyncapi.Codec(avroCodec{codec.JSON}), asyncapi.Sends(badEvent{}))
	if err == nil || !strings.Contains(err.Error(), "no Avro type for float64") {
		t.Errorf("Build with an undescribable body: %v", err)
	}
}

type badEvent struct {
	F float64 `json:"f"`
}

func (badEvent) Topic() string     { return "bad" }
func (badEvent) EventType() string { return "bad" }

func TestShopDocument(t *testing.T) {
	m := tree(t, buildShop(t))

	// Servers: credentials stay out, the vhost is the pathname.
	if h := at(t, m, "servers", "rabbitmq", "host"); h != "rabbit:5672" {
		t.Errorf("rabbitmq host = %v", h)
	}
	if p := at(t, m, "servers", "rabbitmq", "pathname"); p != "/shop" {
		t.Errorf("rabbitmq pathname = %v", p)
	}
	j, _ := json.Marshal(m)
	if bytes.Contains(j, []byte("secret")) {
		t.Error("the document holds the password of the server URL")
	}

	// One channel, three event types, from both the listener and the emitter.
	orders := at(t, m, "channels", "orders.region.order_id")
	if a := at(t, orders, "address"); a != "orders.{region}.{order_id}" {
		t.Errorf("address = %v", a)
	}
	if got := keys(at(t, orders, "messages")); !slices.Equal(got, []string{"order_cancelled", "order_created", "order_paid"}) {
		t.Errorf("orders messages = %v", got)
	}
	if e := at(t, orders, "parameters", "region", "enum"); !reflect.DeepEqual(e, []any{"eu", "us", "apac"}) {
		t.Errorf("region enum = %v", e)
	}
	if v := at(t, orders, "bindings", "amqp", "exchange", "vhost"); v != "shop" {
		t.Errorf("exchange vhost = %v", v)
	}
	if r := at(t, orders, "bindings", "kafka", "x-dispytch-regex"); r != `^orders\.(?:[^\.]*)\.(?:[^\.]*)$` {
		t.Errorf("kafka regex = %v", r)
	}
	// {path...} spans segments; * gets a name.
	if a := at(t, m, "channels", "audit.path", "address"); a != "audit.{path}" {
		t.Errorf("rest address = %v", a)
	}
	if p := at(t, m, "channels", "stock.segment2.changes", "x-dispytch-pattern"); p != "stock.*.changes" {
		t.Errorf("x-dispytch-pattern = %v", p)
	}
	if k := at(t, m, "channels", "queue.shop", "x-dispytch-binding-keys"); !reflect.DeepEqual(k, []any{"orders.*.*", "audit.#", "stock.*.changes", "stock"}) {
		t.Errorf("queue binding keys = %v", k)
	}

	// Operations: a receive per handler with the group; sends from Declare.
	rs := at(t, m, "operations", "receive.reserve_stock")
	if at(t, rs, "action") != "receive" || at(t, rs, "channel", "$ref") != "#/channels/orders.region.order_id" {
		t.Errorf("receive.reserve_stock = %v", rs)
	}
	if g := at(t, rs, "bindings", "kafka", "groupId", "enum"); !reflect.DeepEqual(g, []any{"shop"}) {
		t.Errorf("groupId = %v", g)
	}
	if r := at(t, rs, "x-dispytch-handler", "retries"); r != 5.0 {
		t.Errorf("retries = %v", r)
	}
	if p := at(t, m, "operations", "receive.release_stock", "x-dispytch-handler", "policy"); p != "redeliver" {
		t.Errorf("policy = %v", p)
	}
	if msgs := at(t, m, "operations", "send.order_paid", "messages"); !reflect.DeepEqual(msgs, []any{map[string]any{"$ref": "#/channels/orders.region.order_id/messages/order_paid"}}) {
		t.Errorf("send.order_paid messages = %v", msgs)
	}

	// Messages: the envelope, with the body's schema.
	created := at(t, m, "components", "messages", "order_created")
	env := at(t, created, "payload")
	if r := at(t, env, "required"); !reflect.DeepEqual(r, []any{"id", "type", "body", "timestamp"}) {
		t.Errorf("envelope required = %v", r)
	}
	if c := at(t, env, "properties", "type", "const"); c != "order_created" {
		t.Errorf("type const = %v", c)
	}
	if r := at(t, env, "properties", "body", "$ref"); r != "#/components/schemas/OrderCreated" {
		t.Errorf("body = %v (the raw handler of the same type must not replace the struct)", r)
	}
	if at(t, created, "headers", "$ref") != "#/components/schemas/dispytch.Headers" {
		t.Error("no headers")
	}

	// Bodies: json and validate tags, nested and recursive types.
	s := at(t, m, "components", "schemas")
	oc := at(t, s, "OrderCreated")
	if r := at(t, oc, "required"); !reflect.DeepEqual(r, []any{"order_id", "customer", "items"}) {
		t.Errorf("OrderCreated required = %v", r)
	}
	props := at(t, oc, "properties").(map[string]any)
	if _, ok := props["Internal"]; ok {
		t.Error(`json:"-" field described`)
	}
	if at(t, props, "items", "minItems") != 1.0 || at(t, props, "items", "items", "$ref") != "#/components/schemas/Item" {
		t.Errorf("items = %v", props["items"])
	}
	if at(t, props, "tags", "items", "pattern") != "^[^A-Z]*$" {
		t.Errorf("tags dive = %v", props["tags"])
	}
	if at(t, props, "at", "format") != "date-time" || at(t, props, "meta", "additionalProperties", "type") != "string" {
		t.Errorf("at/meta = %v %v", props["at"], props["meta"])
	}
	if at(t, s, "Item", "properties", "quantity", "minimum") != 1.0 || at(t, s, "Item", "properties", "quantity", "maximum") != 100.0 {
		t.Errorf("quantity = %v", at(t, s, "Item", "properties", "quantity"))
	}
	if at(t, s, "Item", "properties", "price", "exclusiveMinimum") != 0.0 {
		t.Errorf("price = %v", at(t, s, "Item", "properties", "price"))
	}
	if at(t, s, "Customer", "properties", "id", "format") != "uuid" || at(t, s, "Customer", "properties", "email", "format") != "email" {
		t.Errorf("customer = %v", at(t, s, "Customer"))
	}
	if at(t, s, "Address", "properties", "country", "minLength") != 2.0 || at(t, s, "Address", "properties", "country", "maxLength") != 2.0 {
		t.Errorf("country = %v", at(t, s, "Address", "properties", "country"))
	}
	if at(t, s, "Category", "properties", "parent", "$ref") != "#/components/schemas/Category" {
		t.Errorf("recursive category = %v", at(t, s, "Category"))
	}
	if at(t, s, "OrderPaid", "properties", "amount", "type") != "string" {
		t.Errorf(`json:",string" amount = %v`, at(t, s, "OrderPaid", "properties", "amount"))
	}
	if d := at(t, s, "AuditEntry", "properties", "detail"); !reflect.DeepEqual(d, map[string]any{}) {
		t.Errorf("json.RawMessage detail = %v", d)
	}
	if at(t, s, "StockChanged", "properties", "delta", "maximum") != 2147483647.0 {
		t.Errorf("int32 = %v", at(t, s, "StockChanged", "properties", "delta"))
	}

	// Dead letters: the group's letters with their failure headers.
	if at(t, m, "channels", "shop.dlq", "bindings", "amqp", "queue", "name") != "shop.dlq" {
		t.Error("dead-letter queue binding")
	}
	dl := at(t, s, "dispytch.DeadLetterHeaders", "properties", dispytch.HeaderDLReason, "enum")
	if !slices.Contains(dl.([]any), any(string(dispytch.ReasonValidation))) {
		t.Errorf("dead-letter reasons = %v", dl)
	}
}

func TestParameters(t *testing.T) {
	l, e := dynamicService()
	doc, err := asyncapi.Build(testInfo, asyncapi.Listener(l), asyncapi.Emitter(e))
	if err != nil {
		t.Fatal(err)
	}
	p := at(t, tree(t, doc), "channels", "user.user_id.notification", "parameters", "user_id")
	if s := at(t, p, "x-dispytch-schema"); !reflect.DeepEqual(s, map[string]any{"type": "integer", "exclusiveMinimum": 0.0}) {
		t.Errorf("segment schema = %v", s)
	}
	if d := at(t, p, "description"); d != "one topic segment, bound to Target.UserID: integer, > 0" {
		t.Errorf("description = %q", d)
	}
	// A channel only an emitter fills: the parameter is in the payload.
	doc, err = asyncapi.Build(testInfo, asyncapi.Sends(UserNotification{}, &OrderPaid{}))
	if err != nil {
		t.Fatal(err)
	}
	m := tree(t, doc)
	if loc := at(t, m, "channels", "user.user_id.notification", "parameters", "user_id", "location"); loc != "$message.payload#/body/user_id" {
		t.Errorf("location = %v", loc)
	}
	if e := at(t, m, "channels", "orders.region.order_id", "parameters", "region", "enum"); !reflect.DeepEqual(e, []any{"eu", "us", "apac"}) {
		t.Errorf("emitted region enum = %v", e)
	}
	if _, ok := at(t, m, "operations").(map[string]any)["send.order_paid"]; !ok {
		t.Errorf("a pointer event is not sent: %v", keys(at(t, m, "operations")))
	}
}

func TestDeterministicAndGolden(t *testing.T) {
	a, b := buildShop(t), buildShop(t)
	ay, _ := a.YAML()
	by, _ := b.YAML()
	aj, _ := a.JSON()
	bj, _ := b.JSON()
	if !bytes.Equal(ay, by) || !bytes.Equal(aj, bj) {
		t.Fatal("two builds of the same service differ")
	}
	golden := filepath.Join("testdata", "shop.asyncapi.yaml")
	if *update {
		if err := os.WriteFile(golden, ay, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./asyncapi -run Golden -update writes it)", err)
	}
	if !bytes.Equal(ay, want) {
		t.Errorf("the shop's document differs from %s; if the change is meant, rerun with -update and review the diff", golden)
	}
	// YAML and JSON are the same document.
	fromYAML, err := asyncapi.Parse(ay)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := asyncapi.Parse(aj)
	if err != nil {
		t.Fatal(err)
	}
	yj, _ := fromYAML.JSON()
	jj, _ := fromJSON.JSON()
	if !bytes.Equal(yj, aj) || !bytes.Equal(jj, aj) {
		t.Error("parsing the YAML or the JSON back does not give the same document")
	}
}

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		name string
		info asyncapi.Info
		opts []asyncapi.Option
		want string
	}{
		{"no title", asyncapi.Info{Version: "1"}, nil, "Title and a Version"},
		{"bad scheme", testInfo, []asyncapi.Option{asyncapi.Server("x", "http://host")}, `unknown scheme "http"`},
		{"no host", testInfo, []asyncapi.Option{asyncapi.Server("x", "kafka://")}, "has no host"},
		{"missing field", testInfo, []asyncapi.Option{asyncapi.Sends(noField{})}, `no JSON field "tenant"`},
	}
	for _, c := range cases {
		_, err := asyncapi.Build(c.info, c.opts...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

type noField struct{}

func (noField) Topic() string     { return "t.{tenant}" }
func (noField) EventType() string { return "x" }

// Types whose schemas the tags decide.
type tagged struct {
	Embedded
	*Ptr
	Name     string             `json:"name,omitempty" validate:"required,min=2,max=10"`
	Age      uint8              `json:"age" validate:"lte=130"`
	Kind     string             `json:"kind" validate:"oneof=a b 'c d'"`
	Level    int                `json:"level" validate:"oneof=1 2 3"`
	Scores   []float64          `json:"scores" validate:"max=3,dive,gte=0,lte=1"`
	Labels   map[string]int     `json:"labels" validate:"dive,keys,alpha,endkeys,gt=0"`
	Raw      []byte             `json:"raw"`
	Fixed    [4]int             `json:"fixed"`
	Either   string             `json:"either" validate:"email|url"`
	Unknown  string             `json:"unknown" validate:"required,is-awesome"`
	Host     string             `json:"host" validate:"hostname,startswith=db"`
	When     *time.Time         `json:"when"`
	Wait     time.Duration      `json:"wait"`
	ByID     map[int64]string   `json:"by_id"`
	Any      any                `json:"any"`
	Desc     string             `json:"desc" description:"what it is"`
	Override string             `json:"shadow"`
	Text     textish            `json:"text"`
	Custom   customJSON         `json:"custom"`
	Nested   struct{ A, B int } `json:"nested"`
	private  string
}

// Embedded's fields are promoted into tagged.
type Embedded struct {
	Shadow string `json:"shadow"` // shadowed by tagged.Override
	Deep   int    `json:"deep" validate:"ne=0"`
}

// Ptr is embedded by pointer.
type Ptr struct {
	FromPtr bool `json:"from_ptr"`
}

type textish struct{}

func (textish) MarshalText() ([]byte, error) { return []byte("x"), nil }

type customJSON struct{}

func (customJSON) MarshalJSON() ([]byte, error) { return []byte(`1`), nil }

type taggedEvent struct{ tagged }

func (taggedEvent) Topic() string     { return "tagged" }
func (taggedEvent) EventType() string { return "tagged" }

func TestSchemaFromTags(t *testing.T) {
	_ = tagged{}.private
	doc, err := asyncapi.Build(testInfo, asyncapi.Sends(taggedEvent{}))
	if err != nil {
		t.Fatal(err)
	}
	requireValid(t, "tagged", doc)
	m := tree(t, doc)
	s := at(t, m, "components", "schemas", "taggedEvent")
	p := at(t, s, "properties").(map[string]any)
	want := map[string]any{
		"name":     map[string]any{"type": "string", "minLength": 2.0, "maxLength": 10.0},
		"age":      map[string]any{"type": "integer", "minimum": 0.0, "maximum": 130.0},
		"kind":     map[string]any{"type": "string", "enum": []any{"a", "b", "c d"}},
		"level":    map[string]any{"type": "integer", "enum": []any{1.0, 2.0, 3.0}},
		"scores":   map[string]any{"type": "array", "maxItems": 3.0, "items": map[string]any{"type": "number", "minimum": 0.0, "maximum": 1.0}},
		"labels":   map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "integer", "exclusiveMinimum": 0.0}, "propertyNames": map[string]any{"pattern": "^[a-zA-Z]+$"}},
		"raw":      map[string]any{"type": "string", "contentEncoding": "base64"},
		"fixed":    map[string]any{"type": "array", "items": map[string]any{"type": "integer"}, "minItems": 4.0, "maxItems": 4.0},
		"either":   map[string]any{"type": "string", "x-go-validate": "email|url"},
		"unknown":  map[string]any{"type": "string", "x-go-validate": "required,is-awesome"},
		"host":     map[string]any{"type": "string", "format": "hostname", "pattern": "^db"},
		"when":     map[string]any{"type": "string", "format": "date-time"},
		"wait":     map[string]any{"type": "integer", "description": "a duration in nanoseconds"},
		"by_id":    map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}, "propertyNames": map[string]any{"pattern": "^-?[0-9]+$"}},
		"any":      map[string]any{},
		"desc":     map[string]any{"type": "string", "description": "what it is"},
		"shadow":   map[string]any{"type": "string"},
		"deep":     map[string]any{"type": "integer", "not": map[string]any{"const": 0.0}},
		"from_ptr": map[string]any{"type": "boolean"},
		"text":     map[string]any{"type": "string"},
		"custom":   map[string]any{"description": "encoded by asyncapi_test.customJSON's MarshalJSON"},
		"nested":   map[string]any{"type": "object", "properties": map[string]any{"A": map[string]any{"type": "integer"}, "B": map[string]any{"type": "integer"}}},
	}
	for k, w := range want {
		if !reflect.DeepEqual(p[k], w) {
			g, _ := json.Marshal(p[k])
			wj, _ := json.Marshal(w)
			t.Errorf("%s = %s, want %s", k, g, wj)
		}
	}
	for k := range p {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected property %q", k)
		}
	}
	if r := at(t, s, "required"); !reflect.DeepEqual(r, []any{"name", "unknown"}) {
		t.Errorf("required = %v", r)
	}
}
