package asyncapi

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// schemas generates JSON Schemas (the AsyncAPI Schema Object, a superset of
// JSON Schema draft 07) from Go types, the way encoding/json encodes them
// and go-playground/validator checks them. Named struct types become
// components (#/components/schemas/<Name>) referenced with $ref, so that
// nested and recursive bodies are described once.
type schemas struct {
	defs  map[reflect.Type]*object // named structs, by type
	order []reflect.Type           // in the order first met
	busy  map[reflect.Type]bool    // being generated (recursion)
	names map[reflect.Type]string  // assigned by finish
}

func newSchemas() *schemas {
	return &schemas{defs: map[reflect.Type]*object{}, busy: map[reflect.Type]bool{}}
}

// typeRef stands for a $ref to a named struct's component until names are
// assigned: short names where they are unique, qualified by package where
// two types share one.
type typeRef struct{ t reflect.Type }

var (
	timeType     = reflect.TypeFor[time.Time]()
	durationType = reflect.TypeFor[time.Duration]()
	rawType      = reflect.TypeFor[json.RawMessage]()
	bytesType    = reflect.TypeFor[[]byte]()
	jsonMarsh    = reflect.TypeFor[json.Marshaler]()
	textMarsh    = reflect.TypeFor[encoding.TextMarshaler]()
)

// isRaw reports a body type that carries any payload (json.RawMessage,
// []byte, an interface).
func isRaw(t reflect.Type) bool {
	return t == nil || t == rawType || t == bytesType || t.Kind() == reflect.Interface
}

// of returns the schema of t, with the constraints of a validate tag.
func (g *schemas) of(t reflect.Type, validate string) *object {
	s := g.typeSchema(t)
	if validate != "" {
		g.constrain(s, t, validate)
	}
	return s
}

// typeSchema returns the schema of t, unconstrained. For named structs it
// returns a reference object the caller may extend (with a description,
// say): {"$ref": ...} siblings are allowed in AsyncAPI's schema dialect.
func (g *schemas) typeSchema(t reflect.Type) *object {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return obj("type", "string", "format", "date-time")
	case t == durationType:
		return obj("type", "integer", "description", "a duration in nanoseconds")
	case t == rawType:
		return newObject()
	case t.Kind() == reflect.Interface:
		return newObject()
	case t.Implements(jsonMarsh) || reflect.PointerTo(t).Implements(jsonMarsh):
		// A custom encoding: nothing can be said of its shape.
		return obj("description", "encoded by "+t.String()+"'s MarshalJSON")
	case t.Implements(textMarsh) || reflect.PointerTo(t).Implements(textMarsh):
		return obj("type", "string")
	}
	switch t.Kind() {
	case reflect.Bool:
		return obj("type", "boolean")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := obj("type", "integer")
		if t.Bits() < 64 {
			s.set("minimum", int64(-1)<<(t.Bits()-1)).set("maximum", int64(1)<<(t.Bits()-1)-1)
		}
		return s
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s := obj("type", "integer", "minimum", 0)
		if t.Bits() < 64 {
			s.set("maximum", uint64(1)<<t.Bits()-1)
		}
		return s
	case reflect.Float32, reflect.Float64:
		return obj("type", "number")
	case reflect.String:
		return obj("type", "string")
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(textMarsh) {
			return obj("type", "string", "contentEncoding", "base64")
		}
		return obj("type", "array", "items", g.typeSchema(t.Elem()))
	case reflect.Array:
		return obj("type", "array", "items", g.typeSchema(t.Elem()), "minItems", t.Len(), "maxItems", t.Len())
	case reflect.Map:
		s := obj("type", "object", "additionalProperties", g.typeSchema(t.Elem()))
		switch t.Key().Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			s.set("propertyNames", obj("pattern", `^-?[0-9]+$`))
		}
		return s
	case reflect.Struct:
		if t.Name() == "" {
			return g.structSchema(t, "")
		}
		if _, ok := g.defs[t]; !ok && !g.busy[t] {
			g.busy[t] = true
			g.order = append(g.order, t)
			g.defs[t] = g.structSchema(t, t.Name())
			delete(g.busy, t)
		}
		return obj("$ref", typeRef{t})
	}
	return obj("description", "a Go "+t.String()+", which encoding/json cannot encode")
}

// jsonField is one field as encoding/json sees it.
type jsonField struct {
	name      string
	index     []int
	typ       reflect.Type
	omitempty bool
	asString  bool
	validate  string
	desc      string
}

// jsonFields lists the fields encoding/json encodes, with embedded structs'
// fields promoted (a shallower field wins over a deeper one of the same
// name, as in encoding/json; two at the same depth cancel out).
func jsonFields(t reflect.Type) []jsonField {
	type cand struct {
		f     jsonField
		depth int
		tag   bool
	}
	var all []cand
	var walk func(t reflect.Type, index []int, depth int, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, index []int, depth int, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(append([]int(nil), index...), i)
			ft := sf.Type
			if sf.Anonymous {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if !sf.IsExported() && et.Kind() != reflect.Struct {
					continue
				}
				if name == "" && et.Kind() == reflect.Struct {
					walk(et, idx, depth+1, seen)
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			f := jsonField{name: name, index: idx, typ: ft, validate: sf.Tag.Get("validate"), desc: sf.Tag.Get("description")}
			if f.name == "" {
				f.name = sf.Name
			}
			for o := range strings.SplitSeq(opts, ",") {
				switch o {
				case "omitempty", "omitzero":
					f.omitempty = true
				case "string":
					switch ft.Kind() {
					case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
						reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
						reflect.Float32, reflect.Float64, reflect.String:
						f.asString = true
					}
				}
			}
			all = append(all, cand{f, depth, name != ""})
		}
	}
	walk(t, nil, 0, map[reflect.Type]bool{})
	byName := map[string][]cand{}
	var names []string
	for _, c := range all {
		if _, ok := byName[c.f.name]; !ok {
			names = append(names, c.f.name)
		}
		byName[c.f.name] = append(byName[c.f.name], c)
	}
	var out []jsonField
	for _, n := range names {
		cs := byName[n]
		best, tie := cs[0], false
		for _, c := range cs[1:] {
			switch {
			case c.depth < best.depth || c.depth == best.depth && c.tag && !best.tag:
				best, tie = c, false
			case c.depth == best.depth && c.tag == best.tag:
				tie = true
			}
		}
		if !tie {
			out = append(out, best.f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return lessIndex(out[i].index, out[j].index) })
	return out
}

func lessIndex(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func (g *schemas) structSchema(t reflect.Type, title string) *object {
	props := newObject()
	var required []string
	for _, f := range jsonFields(t) {
		var s *object
		if f.asString {
			s = obj("type", "string", "description", f.typ.String()+", written as a JSON string")
		} else {
			s = g.of(f.typ, f.validate)
		}
		if f.desc != "" {
			s.set("description", f.desc)
		}
		props.set(f.name, s)
		if isRequired(f.validate) {
			required = append(required, f.name)
		}
	}
	s := newObject().setNonEmpty("title", title)
	s.set("type", "object").set("properties", props)
	if len(required) > 0 {
		s.set("required", required)
	}
	return s
}

// isRequired reports a validate tag whose first level says required.
func isRequired(tag string) bool {
	rules, _ := splitValidate(tag)
	for _, r := range rules {
		if r.name == "required" && !r.or {
			return true
		}
	}
	return false
}

// rule is one validate tag rule.
type rule struct {
	name, param string
	or          bool // one alternative of an a|b rule: not expressed
}

// splitValidate splits a go-playground/validator tag at its first dive:
// the rules of the value, and the tag its elements get.
func splitValidate(tag string) (rules []rule, dive string) {
	parts := strings.Split(tag, ",")
	for i, p := range parts {
		if p == "dive" {
			return rules, strings.Join(parts[i+1:], ",")
		}
		alts := strings.Split(p, "|")
		for _, a := range alts {
			name, param, _ := strings.Cut(a, "=")
			param = strings.NewReplacer("0x2C", ",", "0x7C", "|").Replace(param)
			rules = append(rules, rule{name: name, param: param, or: len(alts) > 1})
		}
	}
	return rules, ""
}

// Patterns for validator's string rules that JSON Schema has no format for.
var rulePatterns = map[string]string{
	"alpha":       `^[a-zA-Z]+$`,
	"alphanum":    `^[a-zA-Z0-9]+$`,
	"numeric":     `^[-+]?[0-9]+(?:\.[0-9]+)?$`,
	"number":      `^[0-9]+$`,
	"hexadecimal": `^(0[xX])?[0-9a-fA-F]+$`,
	"lowercase":   `^[^A-Z]*$`,
	"uppercase":   `^[^a-z]*$`,
	"e164":        `^\+[1-9]?[0-9]{7,14}$`,
	"ascii":       `^[\x00-\x7F]*$`,
}

// Formats JSON Schema names for validator's rules.
var ruleFormats = map[string]string{
	"email": "email", "url": "uri", "uri": "uri", "http_url": "uri",
	"uuid": "uuid", "uuid3": "uuid", "uuid4": "uuid", "uuid5": "uuid", "uuid_rfc4122": "uuid", "uuid4_rfc4122": "uuid",
	"ipv4": "ipv4", "ipv6": "ipv6", "hostname": "hostname", "hostname_rfc1123": "hostname", "fqdn": "hostname",
}

// constrain adds what validate says of a value of type t to its schema s.
// Rules JSON Schema cannot express are kept in x-go-validate, so that no
// constraint is silently left out.
func (g *schemas) constrain(s *object, t reflect.Type, tag string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	rules, dive := splitValidate(tag)
	kind := schemaKind(t)
	var unexpressed []string
	for _, r := range rules {
		if r.or {
			unexpressed = append(unexpressed, r.name)
			continue
		}
		if !g.apply(s, kind, r) {
			unexpressed = append(unexpressed, r.name)
		}
	}
	if dive != "" {
		switch kind {
		case "array":
			if items := s.child("items"); items != nil {
				g.constrain(items, t.Elem(), dive)
			}
		case "object":
			keys, rest := splitKeys(dive)
			if keys != "" {
				pn := obj("type", "string")
				g.constrain(pn, t.Key(), keys)
				pn.del("type")
				s.set("propertyNames", pn)
			}
			if rest != "" {
				if ap := s.child("additionalProperties"); ap != nil {
					g.constrain(ap, t.Elem(), rest)
				}
			}
		default:
			unexpressed = append(unexpressed, "dive")
		}
	}
	if len(unexpressed) > 0 {
		s.set("x-go-validate", tag)
	}
}

// splitKeys splits "keys,...,endkeys,rest" into the keys' tag and the rest.
func splitKeys(tag string) (keys, rest string) {
	if !strings.HasPrefix(tag, "keys,") {
		return "", tag
	}
	k, r, _ := strings.Cut(strings.TrimPrefix(tag, "keys,"), "endkeys")
	return strings.Trim(k, ","), strings.Trim(r, ",")
}

// schemaKind names the JSON type a Go type encodes to.
func schemaKind(t reflect.Type) string {
	switch {
	case t == timeType:
		return "string"
	case t == bytesType:
		return "bytes"
	case t.Implements(textMarsh) || reflect.PointerTo(t).Implements(textMarsh):
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "array"
	case reflect.Map:
		return "object"
	case reflect.Struct:
		return "struct"
	case reflect.Bool:
		return "boolean"
	}
	return ""
}

// apply adds one rule to s and reports whether JSON Schema could say it.
func (g *schemas) apply(s *object, kind string, r rule) bool {
	num := func() (any, bool) {
		if kind == "number" {
			if n, err := strconv.ParseInt(r.param, 10, 64); err == nil {
				return n, true
			}
			if f, err := strconv.ParseFloat(r.param, 64); err == nil {
				return f, true
			}
			return nil, false
		}
		n, err := strconv.Atoi(r.param)
		return n, err == nil && n >= 0
	}
	lenKeys := map[string][2]string{
		"string": {"minLength", "maxLength"},
		"array":  {"minItems", "maxItems"},
		"object": {"minProperties", "maxProperties"},
	}
	switch r.name {
	case "", "omitempty", "omitnil", "omitzero", "required", "isdefault":
		return true
	case "min", "max", "len", "gt", "gte", "lt", "lte", "eq", "ne":
		v, ok := num()
		if !ok {
			if r.name == "eq" && kind == "string" {
				s.set("const", r.param)
				return true
			}
			if r.name == "ne" && kind == "string" {
				s.set("not", obj("const", r.param))
				return true
			}
			return false
		}
		if kind == "number" {
			switch r.name {
			case "min", "gte":
				s.set("minimum", v)
			case "max", "lte":
				s.set("maximum", v)
			case "gt":
				s.set("exclusiveMinimum", v)
			case "lt":
				s.set("exclusiveMaximum", v)
			case "eq", "len":
				s.set("const", v)
			case "ne":
				s.set("not", obj("const", v))
			}
			return true
		}
		keys, ok := lenKeys[kind]
		if !ok {
			return false
		}
		n := v.(int)
		switch r.name {
		case "min", "gte":
			s.set(keys[0], n)
		case "max", "lte":
			s.set(keys[1], n)
		case "gt":
			s.set(keys[0], n+1)
		case "lt":
			if n == 0 {
				return false
			}
			s.set(keys[1], n-1)
		case "len", "eq":
			s.set(keys[0], n).set(keys[1], n)
		default:
			return false
		}
		return true
	case "oneof":
		vals := oneofValues.FindAllString(r.param, -1)
		enum := make([]any, 0, len(vals))
		for _, v := range vals {
			if kind == "number" {
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return false
				}
				enum = append(enum, json.Number(strconv.FormatFloat(n, 'g', -1, 64)))
				continue
			}
			enum = append(enum, strings.Trim(v, "'"))
		}
		s.set("enum", enum)
		return kind == "string" || kind == "number"
	case "unique":
		if kind == "array" {
			s.set("uniqueItems", true)
			return true
		}
		return false
	case "contains", "startswith", "endswith", "excludes":
		if kind != "string" {
			return false
		}
		q := regexp.QuoteMeta(r.param)
		p := map[string]string{"contains": q, "startswith": "^" + q, "endswith": q + "$", "excludes": "^(?:(?!" + q + ").)*$"}[r.name]
		if r.name == "excludes" {
			return false // JSON Schema's ECMA regexes have lookahead, Go's parser does not check it: left out
		}
		addPattern(s, p)
		return true
	case "datetime":
		s.set("description", "a time in Go layout "+strconv.Quote(r.param))
		return kind == "string"
	case "base64", "base64url":
		if kind == "string" {
			s.set("contentEncoding", "base64")
			return true
		}
		return false
	}
	if f, ok := ruleFormats[r.name]; ok && kind == "string" {
		s.set("format", f)
		return true
	}
	if p, ok := rulePatterns[r.name]; ok && kind == "string" {
		addPattern(s, p)
		return true
	}
	return false
}

// addPattern sets a pattern, or adds it to allOf when there is one already.
func addPattern(s *object, p string) {
	if _, ok := s.get("pattern"); !ok {
		s.set("pattern", p)
		return
	}
	all, _ := s.get("allOf")
	list, _ := all.([]any)
	s.set("allOf", append(list, obj("pattern", p)))
}

// finish names the components and replaces every typeRef in the trees
// with its $ref. It returns the components, sorted by name.
func (g *schemas) finish(trees ...any) *object {
	byShort := map[string][]reflect.Type{}
	for _, t := range g.order {
		byShort[sanitizeName(t.Name())] = append(byShort[sanitizeName(t.Name())], t)
	}
	g.names = map[reflect.Type]string{}
	used := map[string]bool{}
	for _, t := range g.order {
		name := sanitizeName(t.Name())
		if len(byShort[name]) > 1 {
			name = sanitizeName(pkgName(t) + "." + t.Name())
		}
		base := name
		for i := 2; used[name]; i++ {
			name = base + "-" + strconv.Itoa(i)
		}
		used[name] = true
		g.names[t] = name
	}
	comps := newObject()
	for _, t := range g.order {
		comps.set(g.names[t], g.defs[t])
	}
	comps.sortKeys()
	for _, t := range g.order {
		g.resolve(g.defs[t])
	}
	for _, tr := range trees {
		g.resolve(tr)
	}
	return comps
}

func (g *schemas) resolve(v any) {
	switch v := v.(type) {
	case *object:
		for _, k := range v.keys {
			if r, ok := v.vals[k].(typeRef); ok {
				v.vals[k] = "#/components/schemas/" + g.names[r.t]
				continue
			}
			g.resolve(v.vals[k])
		}
	case []any:
		for _, e := range v {
			g.resolve(e)
		}
	}
}

func pkgName(t reflect.Type) string {
	p := t.PkgPath()
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return p
}

// oneofValues splits a oneof rule's values: words, or 'quoted words'.
var oneofValues = regexp.MustCompile(`'[^']*'|\S+`)

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// sanitizeName makes a component or map key out of s: AsyncAPI keys are
// letters, digits, '.', '-' and '_'.
func sanitizeName(s string) string {
	s = strings.Trim(unsafeName.ReplaceAllString(s, "_"), "_")
	if s == "" {
		return "unnamed"
	}
	return s
}

// describeRules summarises a segment's schema for a parameter's
// description: "integer, > 0".
func describeRules(s *object) string {
	var parts []string
	if t := s.str("type"); t != "" {
		parts = append(parts, t)
	}
	if f := s.str("format"); f != "" {
		parts = append(parts, f)
	}
	for _, k := range []struct{ key, op string }{
		{"exclusiveMinimum", "> "}, {"minimum", ">= "}, {"exclusiveMaximum", "< "}, {"maximum", "<= "},
		{"minLength", "length >= "}, {"maxLength", "length <= "}, {"pattern", "matching "},
	} {
		if v, ok := s.get(k.key); ok {
			parts = append(parts, fmt.Sprintf("%s%v", k.op, v))
		}
	}
	return strings.Join(parts, ", ")
}
