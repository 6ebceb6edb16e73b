package asyncapi

import (
	"fmt"
	"regexp"
	"strings"
)

// ValidationError lists what is wrong with a document, each problem with
// the JSON pointer of where it is.
type ValidationError struct {
	Problems []Problem
}

// Problem is one thing wrong with a document.
type Problem struct {
	// Path is the JSON pointer of the value ("/channels/orders/address").
	Path string
	// Message says what is wrong.
	Message string
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "asyncapi: the document is not valid AsyncAPI %s (%d problem", Version, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString(")")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Path, p.Message)
	}
	return b.String()
}

var (
	keyPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	extPattern = regexp.MustCompile(`^x-[\w.\-]+$`)
)

// Allowed fields of the objects Validate checks field by field (AsyncAPI
// 3.0.0; x- extensions are allowed everywhere).
var fieldsOf = map[string][]string{
	"root":      {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"},
	"info":      {"title", "version", "description", "termsOfService", "contact", "license", "tags", "externalDocs"},
	"server":    {"host", "protocol", "protocolVersion", "pathname", "description", "title", "summary", "variables", "security", "tags", "externalDocs", "bindings"},
	"channel":   {"address", "messages", "parameters", "title", "summary", "description", "servers", "tags", "externalDocs", "bindings"},
	"operation": {"action", "channel", "messages", "reply", "traits", "title", "summary", "description", "security", "tags", "externalDocs", "bindings"},
	"message":   {"contentType", "headers", "payload", "correlationId", "tags", "summary", "name", "title", "description", "externalDocs", "deprecated", "examples", "bindings", "traits"},
	"parameter": {"enum", "default", "description", "examples", "location"},
	"components": {"schemas", "servers", "channels", "operations", "messages", "securitySchemes", "serverVariables", "parameters",
		"correlationIds", "replies", "replyAddresses", "externalDocs", "tags", "operationTraits", "messageTraits", "serverBindings",
		"channelBindings", "operationBindings", "messageBindings"},
}

// Validate checks the document against what AsyncAPI 3.0.0 requires of
// it: the version, info, the fields each object may have and their types,
// servers' host and protocol, that every declared channel parameter is in
// the channel's address, that operations send or receive on a channel and name only
// that channel's messages, component keys, and that every local $ref
// resolves (references to other files are reported: a document Build makes
// has none). It returns a *ValidationError listing every problem.
//
// It is no substitute for the official parser's full JSON Schema
// validation; this package's tests check that both agree on the documents
// Build makes and on broken ones.
func (d *Document) Validate() error {
	v := &validator{root: d.root}
	v.check()
	if len(v.problems) == 0 {
		return nil
	}
	seen := map[Problem]bool{}
	var ps []Problem
	for _, p := range v.problems {
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return &ValidationError{Problems: ps}
}

type validator struct {
	root     *object
	problems []Problem
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func escapeToken(s string) string { return jsonPointerEscape(s) }

func (v *validator) fields(o *object, path, kind string) {
	allowed := fieldsOf[kind]
	for _, k := range o.keys {
		if extPattern.MatchString(k) {
			continue
		}
		ok := false
		for _, a := range allowed {
			if a == k {
				ok = true
				break
			}
		}
		if !ok {
			v.add(path+"/"+escapeToken(k), "%s objects have no field %q", kind, k)
		}
	}
}

func (v *validator) str(o *object, path, key string, required bool) string {
	x, ok := o.get(key)
	if !ok {
		if required {
			v.add(path, "%q is required", key)
		}
		return ""
	}
	s, isStr := x.(string)
	if !isStr {
		v.add(path+"/"+key, "must be a string")
	}
	return s
}

// objectAt returns the object of a field, reporting a value that is not one.
func (v *validator) objectAt(o *object, path, key string, required bool) *object {
	x, ok := o.get(key)
	if !ok {
		if required {
			v.add(path, "%q is required", key)
		}
		return nil
	}
	c, isObj := x.(*object)
	if !isObj || c == nil {
		v.add(path+"/"+key, "must be an object")
		return nil
	}
	return c
}

// resolve follows a $ref to its target, reporting one that does not
// resolve. It returns o itself when o is no reference.
func (v *validator) resolve(o *object, path string) *object {
	for range 32 {
		x, ok := o.get("$ref")
		if !ok {
			return o
		}
		ref, isStr := x.(string)
		if !isStr {
			v.add(path+"/$ref", "must be a string")
			return nil
		}
		if !strings.HasPrefix(ref, "#") {
			v.add(path+"/$ref", "%q refers to another document, which is not supported", ref)
			return nil
		}
		t, ok := resolvePointer(v.root, ref)
		if !ok {
			v.add(path+"/$ref", "%q does not resolve", ref)
			return nil
		}
		next, isObj := t.(*object)
		if !isObj || next == nil {
			v.add(path+"/$ref", "%q does not name an object", ref)
			return nil
		}
		o = next
	}
	v.add(path+"/$ref", "references loop")
	return nil
}

func (v *validator) check() {
	r := v.root
	v.fields(r, "", "root")
	switch ver := v.str(r, "", "asyncapi", true); {
	case ver == "":
	case ver != Version:
		v.add("/asyncapi", "version %q: only %s is supported", ver, Version)
	}
	v.str(r, "", "id", false)
	v.str(r, "", "defaultContentType", false)
	if info := v.objectAt(r, "", "info", true); info != nil {
		v.fields(info, "/info", "info")
		v.str(info, "/info", "title", true)
		v.str(info, "/info", "version", true)
		v.str(info, "/info", "description", false)
	}
	servers := v.objectAt(r, "", "servers", false)
	for _, id := range servers.ks() {
		p := "/servers/" + escapeToken(id)
		s, _ := servers.at(id).(*object)
		if s == nil {
			v.add(p, "must be an object")
			continue
		}
		if s = v.resolve(s, p); s == nil {
			continue
		}
		v.fields(s, p, "server")
		v.str(s, p, "host", true)
		v.str(s, p, "protocol", true)
	}
	channels := v.objectAt(r, "", "channels", false)
	for _, id := range channels.ks() {
		v.checkChannel(channels, id)
	}
	ops := v.objectAt(r, "", "operations", false)
	for _, id := range ops.ks() {
		v.checkOperation(ops, id)
	}
	if comps := v.objectAt(r, "", "components", false); comps != nil {
		v.fields(comps, "/components", "components")
		for _, kind := range comps.keys {
			if extPattern.MatchString(kind) {
				continue
			}
			c, ok := comps.at(kind).(*object)
			if !ok || c == nil {
				v.add("/components/"+kind, "must be an object")
				continue
			}
			for _, k := range c.keys {
				if !keyPattern.MatchString(k) {
					v.add("/components/"+kind+"/"+escapeToken(k), "component keys are letters, digits, '.', '-' and '_'")
				}
			}
		}
		msgs, _ := comps.at("messages").(*object)
		for _, id := range msgs.ks() {
			p := "/components/messages/" + escapeToken(id)
			if m, ok := msgs.at(id).(*object); ok && m != nil {
				if m = v.resolve(m, p); m != nil {
					v.checkMessage(m, p)
				}
			}
		}
	}
	v.refs(r, "")
}

func (v *validator) checkChannel(channels *object, id string) {
	p := "/channels/" + escapeToken(id)
	c, _ := channels.at(id).(*object)
	if c == nil {
		v.add(p, "must be an object")
		return
	}
	if c = v.resolve(c, p); c == nil {
		return
	}
	v.fields(c, p, "channel")
	var address string
	if x, ok := c.get("address"); ok && x != nil {
		s, isStr := x.(string)
		if !isStr {
			v.add(p+"/address", "must be a string or null")
		}
		address = s
		if strings.ContainsAny(address, "?#") {
			v.add(p+"/address", "must not hold a query or a fragment")
		}
	}
	params := v.objectAt(c, p, "parameters", false)
	for _, name := range params.ks() {
		pp := p + "/parameters/" + escapeToken(name)
		if !strings.Contains(address, "{"+name+"}") {
			v.add(pp, "parameter %q does not appear in the address %q", name, address)
		}
		po, _ := params.at(name).(*object)
		if po == nil {
			v.add(pp, "must be an object")
			continue
		}
		if po = v.resolve(po, pp); po == nil {
			continue
		}
		v.fields(po, pp, "parameter")
		v.str(po, pp, "description", false)
		if loc := v.str(po, pp, "location", false); loc != "" && !strings.HasPrefix(loc, "$message.payload#") && !strings.HasPrefix(loc, "$message.header#") {
			v.add(pp+"/location", "must be a runtime expression $message.payload#/... or $message.header#/...")
		}
		for _, k := range []string{"enum", "examples"} {
			if x, ok := po.get(k); ok {
				list, isList := x.([]any)
				if sl, isSL := x.([]string); isSL {
					list, isList = make([]any, len(sl)), true
					for i := range sl {
						list[i] = sl[i]
					}
				}
				if !isList {
					v.add(pp+"/"+k, "must be a list of strings")
					continue
				}
				for i, e := range list {
					if _, ok := e.(string); !ok {
						v.add(fmt.Sprintf("%s/%s/%d", pp, k, i), "must be a string")
					}
				}
			}
		}
	}
	msgs := v.objectAt(c, p, "messages", false)
	for _, mid := range msgs.ks() {
		mp := p + "/messages/" + escapeToken(mid)
		m, _ := msgs.at(mid).(*object)
		if m == nil {
			v.add(mp, "must be an object")
			continue
		}
		if _, isRef := m.get("$ref"); !isRef {
			v.checkMessage(m, mp)
		}
	}
	if x, ok := c.get("servers"); ok {
		list, isList := x.([]any)
		if !isList {
			v.add(p+"/servers", "must be a list of references to servers")
		}
		for i, e := range list {
			ref, _ := e.(*object)
			if s := ref.str("$ref"); !strings.HasPrefix(s, "#/servers/") {
				v.add(fmt.Sprintf("%s/servers/%d", p, i), "must be a reference to a server (#/servers/...)")
			}
		}
	}
}

func (v *validator) checkOperation(ops *object, id string) {
	p := "/operations/" + escapeToken(id)
	o, _ := ops.at(id).(*object)
	if o == nil {
		v.add(p, "must be an object")
		return
	}
	if o = v.resolve(o, p); o == nil {
		return
	}
	v.fields(o, p, "operation")
	if a := v.str(o, p, "action", true); a != "" && a != "send" && a != "receive" {
		v.add(p+"/action", "must be send or receive, not %q", a)
	}
	ch := v.objectAt(o, p, "channel", true)
	chRef := ch.str("$ref")
	if ch != nil && !strings.HasPrefix(chRef, "#/channels/") {
		v.add(p+"/channel", "must be a reference to a channel (#/channels/...)")
	}
	if x, ok := o.get("messages"); ok {
		list, isList := x.([]any)
		if !isList {
			v.add(p+"/messages", "must be a list of references")
		}
		for i, e := range list {
			ref, _ := e.(*object)
			s := ref.str("$ref")
			if chRef != "" && !strings.HasPrefix(s, chRef+"/messages/") {
				v.add(fmt.Sprintf("%s/messages/%d", p, i), "%q is not a message of the operation's channel %q", s, chRef)
			}
		}
	}
}

func (v *validator) checkMessage(m *object, p string) {
	v.fields(m, p, "message")
	v.str(m, p, "name", false)
	v.str(m, p, "contentType", false)
	for _, k := range []string{"headers", "payload"} {
		x, ok := m.get(k)
		if !ok {
			continue
		}
		s, isObj := x.(*object)
		if !isObj {
			if _, isBool := x.(bool); !isBool || k == "headers" {
				v.add(p+"/"+k, "must be a schema")
			}
			continue
		}
		if _, multi := s.get("schemaFormat"); multi {
			v.str(s, p+"/"+k, "schemaFormat", true)
			if _, ok := s.get("schema"); !ok {
				v.add(p+"/"+k, "a multi-format schema needs \"schema\"")
			}
			continue
		}
		v.schema(s, p+"/"+k)
	}
}

var schemaTypes = map[string]bool{"string": true, "number": true, "integer": true, "boolean": true, "object": true, "array": true, "null": true}

// schema checks the parts of a JSON Schema that are easy to get wrong.
func (v *validator) schema(s *object, p string) {
	if s == nil {
		return
	}
	if t, ok := s.get("type"); ok {
		switch t := t.(type) {
		case string:
			if !schemaTypes[t] {
				v.add(p+"/type", "%q is no JSON Schema type", t)
			}
		case []any:
			for _, e := range t {
				if es, _ := e.(string); !schemaTypes[es] {
					v.add(p+"/type", "%v is no JSON Schema type", e)
				}
			}
		default:
			v.add(p+"/type", "must be a type name or a list of them")
		}
	}
	if props, ok := s.get("properties"); ok {
		po, isObj := props.(*object)
		if !isObj {
			v.add(p+"/properties", "must be an object")
		}
		for _, k := range po.ks() {
			if c, ok := po.at(k).(*object); ok {
				v.schema(c, p+"/properties/"+escapeToken(k))
			}
		}
	}
	if req, ok := s.get("required"); ok {
		switch req.(type) {
		case []any, []string:
		default:
			v.add(p+"/required", "must be a list of property names")
		}
	}
	for _, k := range []string{"items", "additionalProperties", "not", "propertyNames"} {
		if c, ok := s.at(k).(*object); ok {
			v.schema(c, p+"/"+k)
		}
	}
}

// refs checks every $ref of the document resolves.
func (v *validator) refs(x any, p string) {
	switch x := x.(type) {
	case *object:
		if x == nil {
			return
		}
		for _, k := range x.keys {
			if k == "$ref" {
				ref, ok := x.vals[k].(string)
				if !ok {
					v.add(p+"/$ref", "must be a string")
					continue
				}
				if !strings.HasPrefix(ref, "#") {
					v.add(p+"/$ref", "%q refers to another document, which is not supported", ref)
					continue
				}
				if _, ok := resolvePointer(v.root, ref); !ok {
					v.add(p+"/$ref", "%q does not resolve", ref)
				}
				continue
			}
			v.refs(x.vals[k], p+"/"+escapeToken(k))
		}
	case []any:
		for i, e := range x {
			v.refs(e, fmt.Sprintf("%s/%d", p, i))
		}
	}
}
