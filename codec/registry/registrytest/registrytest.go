// Package registrytest serves the Confluent Schema Registry's REST API in
// process, for tests and examples: the subset that franz-go's sr client and
// Confluent's own serializers use (register, look up, schemas by id,
// subject versions, compatibility checks, configuration), with
// compatibility checks for Avro (hamba/avro's schema resolution), Protobuf
// (serialized FileDescriptorProto schemas: removed messages, changed field
// types and labels, a changed package) and JSON Schema (changed property
// types, added required properties, properties removed from a closed
// content model), under the levels NONE, BACKWARD, FORWARD, FULL and their
// _TRANSITIVE forms. It is not a registry server: it keeps everything in
// memory and implements no more than that.
package registrytest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Server is an in-process schema registry.
type Server struct {
	// URL is the registry's base URL.
	URL string

	srv      *httptest.Server
	user     string
	pass     string
	token    string
	requests atomic.Int64
	down     atomic.Bool

	mu       sync.Mutex
	global   string // compatibility level
	subjects map[string]*subject
	byID     map[int]*stored
	nextID   int
}

type subject struct {
	versions []*stored
	level    string
}

type stored struct {
	id         int
	typ        string // AVRO, PROTOBUF, JSON
	schema     string
	references []reference
}

type reference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// Option configures a Server.
type Option func(*Server)

// BasicAuth makes the server require HTTP basic authentication.
func BasicAuth(user, pass string) Option { return func(s *Server) { s.user, s.pass = user, pass } }

// BearerToken makes the server require a bearer token.
func BearerToken(token string) Option { return func(s *Server) { s.token = token } }

// Compatibility sets the global compatibility level (default BACKWARD).
func Compatibility(level string) Option { return func(s *Server) { s.global = level } }

// New starts a registry on a loopback port. Close it when done.
func New(opts ...Option) *Server {
	s := newServer(opts)
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	return s
}

// NewTLS starts a registry serving HTTPS; Client returns an HTTP client
// that trusts it.
func NewTLS(opts ...Option) *Server {
	s := newServer(opts)
	s.srv = httptest.NewTLSServer(s)
	s.URL = s.srv.URL
	return s
}

func newServer(opts []Option) *Server {
	s := &Server{global: "BACKWARD", subjects: map[string]*subject{}, byID: map[int]*stored{}, nextID: 1}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Client returns an HTTP client for the server (one that trusts its
// certificate, for NewTLS).
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close shuts the server down: requests then fail to connect, as with a
// registry that went away.
func (s *Server) Close() { s.srv.Close() }

// SetDown makes every request fail with 503 Service Unavailable (true) or
// served again (false): an outage.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Requests returns how many requests the server got.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// SetCompatibility sets a subject's compatibility level ("" for the
// global one).
func (s *Server) SetCompatibility(subj, level string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if subj == "" {
		s.global = level
		return
	}
	s.subject(subj).level = level
}

// Register registers a schema under a subject as a client would, and
// returns its id.
func (s *Server) Register(subj, schemaType, schema string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, herr := s.register(subj, normType(schemaType), schema, nil)
	if herr != nil {
		return 0, fmt.Errorf("%d %s", herr.Code, herr.Message)
	}
	return st.id, nil
}

func (s *Server) subject(name string) *subject {
	sub := s.subjects[name]
	if sub == nil {
		sub = &subject{}
		s.subjects[name] = sub
	}
	return sub
}

// apiError is the registry's error body.
type apiError struct {
	status  int
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

func errf(status, code int, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func normType(t string) string {
	if t == "" {
		return "AVRO"
	}
	return strings.ToUpper(t)
}

func (s *Server) authorized(r *http.Request) bool {
	switch {
	case s.user != "":
		u, p, ok := r.BasicAuth()
		return ok && subtle.ConstantTimeCompare([]byte(u), []byte(s.user)) == 1 && subtle.ConstantTimeCompare([]byte(p), []byte(s.pass)) == 1
	case s.token != "":
		return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.token)) == 1
	}
	return true
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.down.Load() {
		reply(w, nil, errf(http.StatusServiceUnavailable, 50003, "registry unavailable (registrytest outage)"))
		return
	}
	if !s.authorized(r) {
		reply(w, nil, errf(http.StatusUnauthorized, 401, "Unauthorized"))
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	v, herr := s.route(r, parts)
	reply(w, v, herr)
}

func reply(w http.ResponseWriter, v any, herr *apiError) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	if herr != nil {
		w.WriteHeader(herr.status)
		_ = json.NewEncoder(w).Encode(herr)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

type schemaBody struct {
	Schema     string      `json:"schema"`
	SchemaType string      `json:"schemaType,omitempty"`
	References []reference `json:"references,omitempty"`
}

func (s *Server) route(r *http.Request, p []string) (any, *apiError) {
	get, post, put := r.Method == http.MethodGet, r.Method == http.MethodPost, r.Method == http.MethodPut
	switch {
	case get && len(p) == 3 && p[0] == "schemas" && p[1] == "ids":
		id, err := strconv.Atoi(p[2])
		st := s.byID[id]
		if err != nil || st == nil {
			return nil, errf(404, 40403, "Schema %s not found", p[2])
		}
		return s.schemaOut(st), nil
	case get && len(p) == 1 && p[0] == "subjects":
		names := []string{}
		for n, sub := range s.subjects {
			if len(sub.versions) > 0 {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		return names, nil
	case get && len(p) == 3 && p[0] == "subjects" && p[2] == "versions":
		sub := s.subjects[p[1]]
		if sub == nil || len(sub.versions) == 0 {
			return nil, errf(404, 40401, "Subject '%s' not found.", p[1])
		}
		vs := make([]int, len(sub.versions))
		for i := range vs {
			vs[i] = i + 1
		}
		return vs, nil
	case get && len(p) == 4 && p[0] == "subjects" && p[2] == "versions":
		st, ver, herr := s.version(p[1], p[3])
		if herr != nil {
			return nil, herr
		}
		return s.versionOut(p[1], ver, st), nil
	case post && len(p) == 3 && p[0] == "subjects" && p[2] == "versions":
		var b schemaBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			return nil, errf(422, 42201, "Invalid schema: %v", err)
		}
		st, herr := s.register(p[1], normType(b.SchemaType), b.Schema, b.References)
		if herr != nil {
			return nil, herr
		}
		return map[string]int{"id": st.id}, nil
	case post && len(p) == 2 && p[0] == "subjects":
		var b schemaBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			return nil, errf(422, 42201, "Invalid schema: %v", err)
		}
		sub := s.subjects[p[1]]
		if sub == nil || len(sub.versions) == 0 {
			return nil, errf(404, 40401, "Subject '%s' not found.", p[1])
		}
		for i, st := range sub.versions {
			if st.typ == normType(b.SchemaType) && sameSchema(st.typ, st.schema, b.Schema) {
				return s.versionOut(p[1], i+1, st), nil
			}
		}
		return nil, errf(404, 40403, "Schema not found")
	case post && len(p) == 5 && p[0] == "compatibility" && p[1] == "subjects" && p[3] == "versions":
		var b schemaBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			return nil, errf(422, 42201, "Invalid schema: %v", err)
		}
		st, _, herr := s.version(p[2], p[4])
		if herr != nil {
			return nil, herr
		}
		msgs, herr := check(normType(b.SchemaType), b.Schema, []*stored{st}, s.level(p[2]))
		if herr != nil {
			return nil, herr
		}
		return map[string]any{"is_compatible": len(msgs) == 0, "messages": msgs}, nil
	case get && len(p) == 1 && p[0] == "config":
		return map[string]string{"compatibilityLevel": s.global}, nil
	case get && len(p) == 2 && p[0] == "config":
		sub := s.subjects[p[1]]
		if sub != nil && sub.level != "" {
			return map[string]string{"compatibilityLevel": sub.level}, nil
		}
		if r.URL.Query().Get("defaultToGlobal") == "true" {
			return map[string]string{"compatibilityLevel": s.global}, nil
		}
		return nil, errf(404, 40408, "Subject '%s' does not have subject-level compatibility configured", p[1])
	case put && (len(p) == 1 || len(p) == 2) && p[0] == "config":
		var b struct {
			Compatibility string `json:"compatibility"`
		}
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || !validLevel(b.Compatibility) {
			return nil, errf(422, 42203, "Invalid compatibility level")
		}
		if len(p) == 1 {
			s.global = b.Compatibility
		} else {
			s.subject(p[1]).level = b.Compatibility
		}
		return map[string]string{"compatibility": b.Compatibility}, nil
	}
	return nil, errf(404, 404, "HTTP 404 Not Found (registrytest serves a subset of the API: %s %s)", r.Method, r.URL.Path)
}

func validLevel(l string) bool {
	switch l {
	case "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE":
		return true
	}
	return false
}

func (s *Server) level(subj string) string {
	if sub := s.subjects[subj]; sub != nil && sub.level != "" {
		return sub.level
	}
	return s.global
}

func (s *Server) version(subj, v string) (*stored, int, *apiError) {
	sub := s.subjects[subj]
	if sub == nil || len(sub.versions) == 0 {
		return nil, 0, errf(404, 40401, "Subject '%s' not found.", subj)
	}
	n := len(sub.versions)
	if v != "latest" && v != "-1" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			return nil, 0, errf(422, 42202, "The specified version '%s' is not a valid version id.", v)
		}
		if n > len(sub.versions) {
			return nil, 0, errf(404, 40402, "Version %d not found.", n)
		}
	}
	return sub.versions[n-1], n, nil
}

func (s *Server) schemaOut(st *stored) map[string]any {
	out := map[string]any{"schema": st.schema}
	if st.typ != "AVRO" {
		out["schemaType"] = st.typ
	}
	if len(st.references) > 0 {
		out["references"] = st.references
	}
	return out
}

func (s *Server) versionOut(subj string, ver int, st *stored) map[string]any {
	out := s.schemaOut(st)
	out["subject"], out["version"], out["id"] = subj, ver, st.id
	return out
}

// register registers schema under subj: the same schema again is the same
// version; a new one must pass the subject's compatibility level.
func (s *Server) register(subj, typ, schema string, refs []reference) (*stored, *apiError) {
	if err := validate(typ, schema); err != nil {
		return nil, errf(422, 42201, "Invalid schema %s", err)
	}
	sub := s.subject(subj)
	for _, st := range sub.versions {
		if st.typ == typ && sameSchema(typ, st.schema, schema) {
			return st, nil
		}
	}
	level := s.level(subj)
	against := sub.versions
	if !strings.HasSuffix(level, "_TRANSITIVE") && len(against) > 0 {
		against = against[len(against)-1:]
	}
	msgs, herr := check(typ, schema, against, level)
	if herr != nil {
		return nil, herr
	}
	if len(msgs) > 0 {
		return nil, errf(409, 409, "Schema being registered is incompatible with an earlier schema for subject %q, details: [%s]", subj, strings.Join(msgs, ", "))
	}
	// The same schema under another subject keeps its id.
	var st *stored
	for _, o := range s.byID {
		if o.typ == typ && sameSchema(typ, o.schema, schema) {
			st = o
			break
		}
	}
	if st == nil {
		st = &stored{id: s.nextID, typ: typ, schema: schema, references: refs}
		s.byID[st.id] = st
		s.nextID++
	}
	sub.versions = append(sub.versions, st)
	return st, nil
}

// check returns why schema is incompatible with the schemas against under
// level, nil when it is compatible.
func check(typ, schema string, against []*stored, level string) ([]string, *apiError) {
	if err := validate(typ, schema); err != nil {
		return nil, errf(422, 42201, "Invalid schema %s", err)
	}
	backward := strings.HasPrefix(level, "BACKWARD") || strings.HasPrefix(level, "FULL")
	forward := strings.HasPrefix(level, "FORWARD") || strings.HasPrefix(level, "FULL")
	var msgs []string
	for _, old := range against {
		if old.typ != typ {
			msgs = append(msgs, fmt.Sprintf("the schema type changed from %s to %s", old.typ, typ))
			continue
		}
		if backward {
			msgs = append(msgs, compatible(typ, schema, old.schema, "BACKWARD")...)
		}
		if forward {
			msgs = append(msgs, compatible(typ, old.schema, schema, "FORWARD")...)
		}
	}
	return msgs, nil
}
