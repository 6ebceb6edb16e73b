// Package registry speaks the Confluent Schema Registry: its wire format
// (a magic byte 0, the schema id as 4 big-endian bytes, for Protobuf the
// message-index array, then the Avro, Protobuf or JSON body) and its REST
// API, through franz-go's sr client (github.com/twmb/franz-go/pkg/sr).
//
// A Client talks to the registry and caches what it learned: schemas by id,
// the id and schema each (topic, type) is written with. Three serdes on a
// client are body codecs (codec.Codec) for the emitter and the listener:
// Avro, Protobuf and JSONSchema.
//
//	reg, err := registry.New(registry.URLs("https://registry:8081"), registry.BasicAuth(key, secret))
//	users := registry.Avro(reg, registry.Schema[UserRegistered](avsc), registry.RegisterOnEmit())
//	emitter := dispytch.NewEmitter(producer, dispytch.WithCodec(users), dispytch.Envelopes(codec.Headers))
//	listener := dispytch.NewListener(consumer, dispytch.Codecs(users), dispytch.Envelopes(codec.Headers))
//
// Emitting: the subject is named by the strategy (SubjectTopicName,
// default: "<topic>-value"; SubjectRecordName; SubjectTopicRecordName). With
// RegisterOnEmit the type's own schema is registered under it (the
// registry refuses an incompatible one, with its reason); without, the
// subject's latest version is the writer's schema and every event is
// checked against it. Either way only the first event of a (topic, type)
// asks the registry: later ones are a cache hit. An event that does not
// conform is a *codec.SchemaError naming the field; a registry that cannot
// be reached is an error wrapping ErrUnavailable; nothing is sent.
//
// Handling: the body names its writer's schema id; the serde fetches that
// schema once (caching it) and decodes with it: Avro resolves the writer's
// schema against the handler's type; Protobuf keeps fields the handler's
// type does not know; JSON bodies are checked against the writer's schema.
// A wrong magic byte (ErrFraming), an unknown schema id (ErrUnknownSchema),
// an unreachable registry (ErrUnavailable) or a truncated body fail the
// decode, and the listener dead-letters the message with reason decode.
//
// A listener's Check and Run check every handler type the serde knows (its
// Schema options, and every generated Protobuf type) against its subject's
// latest version under the subject's compatibility level, and fail with the
// registry's reason (ErrIncompatible).
//
// Bodies framed for the registry travel in header mode or CloudEvents
// (dispytch.Envelopes); their content types are ContentTypeAvro,
// ContentTypeProtobuf and ContentTypeJSON.
package registry

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/dispytch/dispytch-go/internal/avroutil"
	"github.com/dispytch/dispytch-go/internal/jsutil"
)

// Errors the serdes wrap.
var (
	// ErrFraming reports a body that is not in the Confluent wire format:
	// shorter than its header, a magic byte other than 0, a bad message
	// index.
	ErrFraming = errors.New("registry: not in the Confluent wire format")
	// ErrUnknownSchema reports a schema id the registry does not have.
	ErrUnknownSchema = errors.New("registry: unknown schema id")
	// ErrUnavailable reports a registry that could not be reached or
	// failed (a refused connection, a timeout, a 5xx answer).
	ErrUnavailable = errors.New("registry: unavailable")
	// ErrIncompatible reports a schema the registry refuses as
	// incompatible with its subject's versions.
	ErrIncompatible = errors.New("registry: incompatible schema")
	// ErrNoSchema reports a subject without a version, for a serde that
	// uses the latest version (register it, or use RegisterOnEmit).
	ErrNoSchema = errors.New("registry: the subject has no schema")
)

// Client is a schema registry client with caches. It is safe for
// concurrent use.
type Client struct {
	cl      *sr.Client
	timeout time.Duration

	mu   sync.RWMutex
	byID map[int]*writerSchema
}

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

type clientConfig struct {
	urls    []string
	opts    []sr.ClientOpt
	httpcl  *http.Client
	tls     *tls.Config
	timeout time.Duration
}

// URLs sets the registry's URLs (default http://localhost:8081).
func URLs(urls ...string) ClientOption {
	return func(c *clientConfig) { c.urls = append(c.urls, urls...) }
}

// BasicAuth authenticates every request with HTTP basic authentication
// (Confluent Cloud: an API key and secret).
func BasicAuth(user, pass string) ClientOption {
	return func(c *clientConfig) { c.opts = append(c.opts, sr.BasicAuth(user, pass)) }
}

// BearerToken authenticates every request with a bearer token.
func BearerToken(token string) ClientOption {
	return func(c *clientConfig) { c.opts = append(c.opts, sr.BearerToken(token)) }
}

// TLS sets the TLS configuration of the registry's connections (its CA,
// a client certificate).
func TLS(cfg *tls.Config) ClientOption { return func(c *clientConfig) { c.tls = cfg } }

// HTTPClient sets the HTTP client (default: one with a 5 s timeout).
func HTTPClient(hc *http.Client) ClientOption { return func(c *clientConfig) { c.httpcl = hc } }

// Timeout bounds a registry request made while decoding a message, which
// has no deadline of its own (default 10 s). Emits use their context.
func Timeout(d time.Duration) ClientOption { return func(c *clientConfig) { c.timeout = d } }

// New returns a client. It makes no request.
func New(opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{timeout: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	srOpts := append([]sr.ClientOpt(nil), cfg.opts...)
	if len(cfg.urls) > 0 {
		srOpts = append(srOpts, sr.URLs(cfg.urls...))
	}
	if cfg.httpcl != nil {
		srOpts = append(srOpts, sr.HTTPClient(cfg.httpcl))
	}
	if cfg.tls != nil {
		srOpts = append(srOpts, sr.DialTLSConfig(cfg.tls))
	}
	srOpts = append(srOpts, sr.UserAgent("dispytch-go"), sr.LogLevel(sr.LogLevelNone))
	cl, err := sr.NewClient(srOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Client{cl: cl, timeout: cfg.timeout, byID: map[int]*writerSchema{}}, nil
}

// SR returns the franz-go client underneath, for what this package does
// not do (deleting subjects, setting modes).
func (c *Client) SR() *sr.Client { return c.cl }

// writerSchema is a schema the registry holds, parsed for its type.
type writerSchema struct {
	id   int
	typ  sr.SchemaType
	avro avro.Schema
	json *jsutil.Schema
	pb   *descriptorpb.FileDescriptorProto
}

// classify wraps a registry error in this package's sentinels, keeping the
// registry's message.
func classify(err error, what string) error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.ErrorCode == 40403:
			return fmt.Errorf("%w: %s: %s", ErrUnknownSchema, what, re.Message)
		case re.ErrorCode == 40401 || re.ErrorCode == 40402:
			return fmt.Errorf("%w: %s: %s", ErrNoSchema, what, re.Message)
		case re.ErrorCode == 409 || re.StatusCode == http.StatusConflict:
			return fmt.Errorf("%w: %s: %s", ErrIncompatible, what, re.Message)
		case re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests:
			return fmt.Errorf("%w: %s: %s (HTTP %d)", ErrUnavailable, what, re.Message, re.StatusCode)
		}
		return fmt.Errorf("registry: %s: %s (HTTP %d, error code %d)", what, re.Message, re.StatusCode, re.ErrorCode)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// schemaByID returns the schema with this id, parsed as typ, from the
// cache or the registry.
func (c *Client) schemaByID(ctx context.Context, id int, typ sr.SchemaType) (*writerSchema, error) {
	c.mu.RLock()
	ws := c.byID[id]
	c.mu.RUnlock()
	if ws != nil {
		if ws.typ != typ {
			return nil, fmt.Errorf("registry: schema id %d is a %s schema, not %s", id, ws.typ, typ)
		}
		return ws, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if typ == sr.TypeProtobuf {
		ctx = sr.WithParams(ctx, sr.Format("serialized"))
	}
	s, err := c.cl.SchemaByID(ctx, id)
	if err != nil {
		return nil, classify(err, fmt.Sprintf("schema id %d", id))
	}
	if s.Type != typ {
		return nil, fmt.Errorf("registry: schema id %d is a %s schema, not %s", id, s.Type, typ)
	}
	ws, err = parseSchema(id, typ, s.Schema)
	if err != nil {
		return nil, err
	}
	c.remember(ws)
	return ws, nil
}

func (c *Client) remember(ws *writerSchema) {
	c.mu.Lock()
	if c.byID[ws.id] == nil {
		c.byID[ws.id] = ws
	}
	c.mu.Unlock()
}

func parseSchema(id int, typ sr.SchemaType, text string) (*writerSchema, error) {
	ws := &writerSchema{id: id, typ: typ}
	var err error
	switch typ {
	case sr.TypeAvro:
		ws.avro, err = avroutil.Parse(text)
	case sr.TypeJSON:
		ws.json, err = jsutil.Compile(fmt.Sprintf("id %d", id), text)
	case sr.TypeProtobuf:
		ws.pb, err = parseDescriptor(text)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: schema id %d: %w", id, err)
	}
	return ws, nil
}

// parseDescriptor parses a Protobuf schema in its serialized form, a
// base64 FileDescriptorProto.
func parseDescriptor(text string) (*descriptorpb.FileDescriptorProto, error) {
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, errors.New("the Protobuf schema is not in the serialized form (a base64 FileDescriptorProto, what format=serialized returns)")
	}
	fd := new(descriptorpb.FileDescriptorProto)
	if err := proto.Unmarshal(b, fd); err != nil {
		return nil, fmt.Errorf("the Protobuf schema is not a FileDescriptorProto: %w", err)
	}
	return fd, nil
}
