package asyncapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"net/http"
	"strings"
)

// HTML writes the document as a self-contained HTML page: servers,
// channels with their parameters and messages, operations, messages with
// their headers and payload schemas, and the schemas. The page needs no
// script and loads nothing; every text of the document is escaped, so a
// document from anywhere can be shown.
func (d *Document) HTML(w io.Writer) error {
	v := newView(d.root)
	return pageTemplate.Execute(w, v)
}

// Handler serves the document: GET on a path ending in asyncapi.json or
// asyncapi.yaml returns it in that form, any other path the HTML view
// (whose links to the two are relative). Mount it under a prefix of your
// own, with or without http.StripPrefix:
//
//	mux.Handle("/asyncapi/", asyncapi.Handler(doc))
//
// The document is encoded once, when Handler is called.
func Handler(d *Document) http.Handler {
	h := &handler{}
	var err error
	if h.json, err = d.JSON(); err == nil {
		if h.yaml, err = d.YAML(); err == nil {
			var b bytes.Buffer
			err = d.HTML(&b)
			h.html = b.Bytes()
		}
	}
	h.err = err
	return h
}

type handler struct {
	json, yaml, html []byte
	err              error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if h.err != nil {
		http.Error(w, "asyncapi: the document does not encode: "+h.err.Error(), http.StatusInternalServerError)
		return
	}
	var body []byte
	switch {
	case strings.HasSuffix(r.URL.Path, "asyncapi.json"):
		w.Header().Set("Content-Type", "application/json")
		body = h.json
	case strings.HasSuffix(r.URL.Path, "asyncapi.yaml"):
		w.Header().Set("Content-Type", "application/yaml")
		body = h.yaml
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		body = h.html
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// view is what the page template shows, read from any document.
type view struct {
	Title, Version, Description, ID, DefaultContentType, AsyncAPI string
	Servers                                                       []serverView
	Channels                                                      []channelView
	Operations                                                    []operationView
	Messages                                                      []messageView
	Schemas                                                       []schemaView
	root                                                          *object
}

type serverView struct{ ID, Host, Protocol, Pathname, Description string }

type channelView struct {
	ID, Address, Description string
	Parameters               []paramView
	Messages                 []link
	Operations               []link
	Bindings                 string
}

type paramView struct{ Name, Description, Enum, Location string }

type link struct{ Anchor, Text string }

type operationView struct {
	ID, Action, Title, Summary, Description string
	Channel                                 link
	Messages                                []link
	Bindings                                string
}

type messageView struct {
	ID, Name, Title, Summary, ContentType string
	Headers, Payload                      template.HTML
	Bindings                              string
}

type schemaView struct {
	ID   string
	Body template.HTML
}

func newView(root *object) *view {
	v := &view{root: root}
	info := root.child("info")
	v.Title, v.Version, v.Description = info.str("title"), info.str("version"), info.str("description")
	v.ID, v.DefaultContentType, v.AsyncAPI = root.str("id"), root.str("defaultContentType"), root.str("asyncapi")
	if v.Title == "" {
		v.Title = "AsyncAPI document"
	}
	servers := root.child("servers")
	for _, id := range servers.ks() {
		s := v.deref(servers.at(id))
		v.Servers = append(v.Servers, serverView{ID: id, Host: s.str("host"), Protocol: s.str("protocol"), Pathname: s.str("pathname"), Description: s.str("description")})
	}
	channels := root.child("channels")
	opsByChannel := map[string][]link{}
	ops := root.child("operations")
	for _, id := range ops.ks() {
		o := v.deref(ops.at(id))
		ov := operationView{ID: id, Action: o.str("action"), Title: o.str("title"), Summary: o.str("summary"), Description: o.str("description"), Bindings: pretty(o.at("bindings"))}
		if ch := o.child("channel"); ch != nil {
			cid := strings.TrimPrefix(ch.str("$ref"), "#/channels/")
			ov.Channel = link{"channel-" + cid, cid}
			opsByChannel[cid] = append(opsByChannel[cid], link{"operation-" + id, id})
		}
		if list, ok := o.at("messages").([]any); ok {
			for _, m := range list {
				ov.Messages = append(ov.Messages, v.messageLink(m))
			}
		}
		v.Operations = append(v.Operations, ov)
	}
	for _, id := range channels.ks() {
		c := v.deref(channels.at(id))
		cv := channelView{ID: id, Address: c.str("address"), Description: c.str("description"), Operations: opsByChannel[id], Bindings: pretty(c.at("bindings"))}
		if cv.Address == "" {
			cv.Address = "(dynamic address)"
		}
		params := c.child("parameters")
		for _, name := range params.ks() {
			p := v.deref(params.at(name))
			enum := ""
			switch e := p.at("enum").(type) {
			case []any:
				enum = strings.Join(stringsOf(e), ", ")
			case []string:
				enum = strings.Join(e, ", ")
			}
			cv.Parameters = append(cv.Parameters, paramView{Name: name, Description: p.str("description"), Enum: enum, Location: p.str("location")})
		}
		msgs := c.child("messages")
		for _, mid := range msgs.ks() {
			cv.Messages = append(cv.Messages, v.messageLink(msgs.at(mid)))
		}
		v.Channels = append(v.Channels, cv)
	}
	comps := root.child("components")
	msgs := comps.child("messages")
	for _, id := range msgs.ks() {
		m := v.deref(msgs.at(id))
		mv := messageView{ID: id, Name: m.str("name"), Title: m.str("title"), Summary: m.str("summary"), ContentType: m.str("contentType"), Bindings: pretty(m.at("bindings"))}
		if mv.ContentType == "" {
			mv.ContentType = v.DefaultContentType
		}
		if h, ok := m.get("headers"); ok {
			mv.Headers = renderSchema(h, 0)
		}
		if p, ok := m.get("payload"); ok {
			mv.Payload = renderSchema(p, 0)
		}
		v.Messages = append(v.Messages, mv)
	}
	schemas := comps.child("schemas")
	for _, id := range schemas.ks() {
		v.Schemas = append(v.Schemas, schemaView{ID: id, Body: renderSchema(schemas.at(id), 0)})
	}
	return v
}

// deref follows a local $ref (once per hop, at most 32 hops) to the object
// it names; anything else gives an empty object.
func (v *view) deref(x any) *object {
	o, _ := x.(*object)
	for range 32 {
		ref := o.str("$ref")
		if ref == "" {
			break
		}
		t, ok := resolvePointer(v.root, ref)
		if !ok {
			return newObject()
		}
		o, _ = t.(*object)
	}
	if o == nil {
		return newObject()
	}
	return o
}

// messageLink links a reference to a message (in components, or in a
// channel that refers to components) to its section.
func (v *view) messageLink(x any) link {
	o, _ := x.(*object)
	name := ""
	for range 32 {
		ref := o.str("$ref")
		if ref == "" {
			break
		}
		if id, ok := strings.CutPrefix(ref, "#/components/messages/"); ok && !strings.Contains(id, "/") {
			id = unescapePointer(id)
			return link{"message-" + id, id}
		}
		if i := strings.LastIndex(ref, "/"); i >= 0 {
			name = unescapePointer(ref[i+1:])
		}
		t, ok := resolvePointer(v.root, ref)
		if !ok {
			break
		}
		o, _ = t.(*object)
	}
	if n := o.str("name"); n != "" {
		name = n
	}
	if name == "" {
		name = "(inline message)"
	}
	return link{"", name}
}

// resolvePointer resolves a local JSON pointer ("#/a/b") in root.
func resolvePointer(root *object, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#") {
		return nil, false
	}
	p := strings.TrimPrefix(ref, "#")
	if p == "" {
		return root, true
	}
	if !strings.HasPrefix(p, "/") {
		return nil, false
	}
	var cur any = root
	for _, tok := range strings.Split(p[1:], "/") {
		tok = unescapePointer(tok)
		switch c := cur.(type) {
		case *object:
			v, ok := c.get(tok)
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			var i int
			if _, err := fmt.Sscanf(tok, "%d", &i); err != nil || i < 0 || i >= len(c) || fmt.Sprint(i) != tok {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func unescapePointer(s string) string {
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(s)
}

func pretty(x any) string {
	if x == nil {
		return ""
	}
	var b bytes.Buffer
	if err := writeJSON(&b, x); err != nil {
		return ""
	}
	var out bytes.Buffer
	if json.Indent(&out, b.Bytes(), "", "  ") != nil {
		return b.String()
	}
	return out.String()
}

// renderSchema renders a schema as nested lists: types, formats and
// constraints, properties with a mark on the required ones, references as
// links to the schemas' sections (not expanded, so recursion ends).
func renderSchema(x any, depth int) template.HTML {
	var b strings.Builder
	writeSchema(&b, x, depth)
	return template.HTML(b.String())
}

var constraintKeys = []string{"format", "const", "enum", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
	"minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
	"contentEncoding", "default", "x-go-validate"}

func writeSchema(b *strings.Builder, x any, depth int) {
	e := html.EscapeString
	o, ok := x.(*object)
	if !ok || o == nil {
		b.WriteString(`<span class="type">` + e(fmt.Sprint(plain(x))) + `</span>`)
		return
	}
	if depth > 12 {
		b.WriteString(`<span class="more">…</span>`)
		return
	}
	if ref := o.str("$ref"); ref != "" {
		name := ref
		if strings.HasPrefix(ref, "#/components/schemas/") {
			name = unescapePointer(strings.TrimPrefix(ref, "#/components/schemas/"))
			b.WriteString(`<a class="ref" href="#schema-` + e(anchorID(name)) + `">` + e(name) + `</a>`)
		} else {
			b.WriteString(`<span class="ref">` + e(ref) + `</span>`)
		}
	}
	if sf := o.str("schemaFormat"); sf != "" {
		b.WriteString(`<span class="type">` + e(sf) + `</span><pre>` + e(pretty(o.vals["schema"])) + `</pre>`)
		return
	}
	if t, ok := o.vals["type"]; ok {
		ts := fmt.Sprint(plain(t))
		if list, ok := t.([]any); ok {
			ts = strings.Join(stringsOf(list), " | ")
		}
		b.WriteString(`<span class="type">` + e(ts) + `</span>`)
	}
	for _, k := range constraintKeys {
		if v, ok := o.vals[k]; ok {
			val := fmt.Sprint(plain(v))
			if list, ok := v.([]any); ok {
				val = strings.Join(stringsOf(list), ", ")
			}
			if s, ok := v.(string); ok {
				val = s
			}
			b.WriteString(` <span class="constraint">` + e(k) + `: ` + e(val) + `</span>`)
		}
	}
	if d := o.str("description"); d != "" {
		b.WriteString(` <span class="desc">` + string(markdown(d)) + `</span>`)
	}
	required := map[string]bool{}
	if list, ok := o.vals["required"].([]any); ok {
		for _, r := range list {
			required[fmt.Sprint(r)] = true
		}
	} else if list, ok := o.vals["required"].([]string); ok {
		for _, r := range list {
			required[r] = true
		}
	}
	if props := o.child("properties"); props.len() > 0 {
		b.WriteString(`<ul class="props">`)
		for _, name := range props.keys {
			b.WriteString(`<li><span class="prop">` + e(name) + `</span>`)
			if required[name] {
				b.WriteString(` <span class="req">required</span>`)
			}
			b.WriteString(` `)
			writeSchema(b, props.vals[name], depth+1)
			b.WriteString(`</li>`)
		}
		b.WriteString(`</ul>`)
	}
	for _, k := range []string{"items", "additionalProperties", "propertyNames", "not"} {
		if sub, ok := o.vals[k].(*object); ok {
			b.WriteString(`<ul class="props"><li><span class="kw">` + e(k) + `</span> `)
			writeSchema(b, sub, depth+1)
			b.WriteString(`</li></ul>`)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if list, ok := o.vals[k].([]any); ok {
			b.WriteString(`<ul class="props">`)
			for _, sub := range list {
				b.WriteString(`<li><span class="kw">` + e(k) + `</span> `)
				writeSchema(b, sub, depth+1)
				b.WriteString(`</li>`)
			}
			b.WriteString(`</ul>`)
		}
	}
}

// markdown renders the little Markdown descriptions use: `code` spans.
// Everything else stays text, escaped.
func markdown(s string) template.HTML {
	parts := strings.Split(s, "`")
	var b strings.Builder
	for i, p := range parts {
		switch {
		case i%2 == 1 && i < len(parts)-1:
			b.WriteString("<code>" + html.EscapeString(p) + "</code>")
		case i%2 == 1:
			b.WriteString("`" + html.EscapeString(p))
		default:
			b.WriteString(html.EscapeString(p))
		}
	}
	return template.HTML(b.String())
}

// anchorID makes an HTML id out of a document key.
func anchorID(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\'' || r == '<' || r == '>' || r == ' ' || r == '&' {
			return '_'
		}
		return r
	}, s)
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"anchor": anchorID, "md": markdown}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="dispytch asyncapi">
<title>{{.Title}} {{.Version}} — AsyncAPI</title>
<style>
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --bg:#f6f7f9; --send:#1f7a4d; --recv:#2456a6; --accent:#7a3fb0; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:20px 32px; }
header h1 { margin:0; font-size:24px; } header .meta { color:#b8c0cf; font-size:13px; margin-top:4px; }
header a { color:#b8d0ff; }
nav { float:left; width:260px; padding:16px 24px; position:sticky; top:0; max-height:100vh; overflow:auto; font-size:13px; }
nav h3 { margin:14px 0 4px; font-size:12px; text-transform:uppercase; color:var(--muted); }
nav a { display:block; color:var(--fg); text-decoration:none; padding:1px 0; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
main { margin-left:260px; padding:16px 32px 64px; max-width:1100px; }
h2 { border-bottom:2px solid var(--line); padding-bottom:4px; margin-top:32px; }
section.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 18px; margin:12px 0; }
section.card h3 { margin:0 0 6px; font-size:17px; }
code, .addr, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size:13px; }
.addr { background:#eef1f6; padding:2px 6px; border-radius:4px; }
.badge { display:inline-block; font-size:11px; font-weight:600; text-transform:uppercase; padding:2px 7px; border-radius:10px; color:#fff; margin-right:6px; vertical-align:middle; }
.send { background:var(--send); } .receive { background:var(--recv); }
.muted, .desc { color:var(--muted); }
table { border-collapse:collapse; width:100%; font-size:14px; } td, th { text-align:left; border-top:1px solid var(--line); padding:4px 8px; vertical-align:top; }
ul.props { list-style:none; padding-left:18px; margin:4px 0; border-left:1px dashed var(--line); }
.prop { font-family: ui-monospace, Menlo, monospace; font-weight:600; }
.type { color:var(--accent); font-family: ui-monospace, Menlo, monospace; margin-left:4px; }
.constraint { font-size:12px; background:#f1ecf7; border-radius:4px; padding:0 4px; margin-left:4px; }
.req { font-size:11px; color:#b3261e; margin-left:4px; }
.ref { font-family: ui-monospace, Menlo, monospace; }
details summary { cursor:pointer; color:var(--muted); font-size:13px; }
pre { background:#f3f4f7; padding:8px; border-radius:6px; overflow:auto; }
</style>
</head>
<body>
<header>
<h1 id="title">{{.Title}} <span class="muted">{{.Version}}</span></h1>
<div class="meta">AsyncAPI {{.AsyncAPI}}{{if .ID}} · {{.ID}}{{end}}{{if .DefaultContentType}} · {{.DefaultContentType}}{{end}} · <a href="asyncapi.json">asyncapi.json</a> · <a href="asyncapi.yaml">asyncapi.yaml</a></div>
</header>
<nav>
<h3>Channels</h3>{{range .Channels}}<a href="#channel-{{anchor .ID}}">{{.Address}}</a>{{end}}
<h3>Operations</h3>{{range .Operations}}<a href="#operation-{{anchor .ID}}">{{.ID}}</a>{{end}}
<h3>Messages</h3>{{range .Messages}}<a href="#message-{{anchor .ID}}">{{.ID}}</a>{{end}}
</nav>
<main>
{{if .Description}}<p id="description">{{md .Description}}</p>{{end}}
{{if .Servers}}<h2 id="servers">Servers</h2>
<table><tr><th>name</th><th>protocol</th><th>host</th><th>description</th></tr>
{{range .Servers}}<tr class="server"><td>{{.ID}}</td><td>{{.Protocol}}</td><td><code>{{.Host}}{{.Pathname}}</code></td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
<h2 id="channels">Channels</h2>
{{range .Channels}}<section class="card channel" id="channel-{{anchor .ID}}" data-id="{{.ID}}">
<h3><span class="addr">{{.Address}}</span></h3>
<div class="desc">{{md .Description}}</div>
{{if .Parameters}}<table class="params"><tr><th>parameter</th><th>description</th><th>values</th></tr>
{{range .Parameters}}<tr><td><code>{{.Name}}</code></td><td>{{md .Description}}{{if .Location}} <span class="muted">({{.Location}})</span>{{end}}</td><td>{{.Enum}}</td></tr>{{end}}
</table>{{end}}
<div>Messages: {{range .Messages}}<a class="msg" href="#{{anchor .Anchor}}">{{.Text}}</a> {{end}}</div>
{{if .Operations}}<div>Operations: {{range .Operations}}<a href="#{{anchor .Anchor}}">{{.Text}}</a> {{end}}</div>{{end}}
{{if .Bindings}}<details><summary>bindings</summary><pre>{{.Bindings}}</pre></details>{{end}}
</section>
{{end}}
<h2 id="operations">Operations</h2>
{{range .Operations}}<section class="card operation" id="operation-{{anchor .ID}}" data-id="{{.ID}}">
<h3><span class="badge {{.Action}}">{{.Action}}</span>{{.ID}}</h3>
{{if .Summary}}<div>{{.Summary}}</div>{{end}}
{{if .Description}}<div class="desc">{{md .Description}}</div>{{end}}
<div>Channel: <a href="#{{anchor .Channel.Anchor}}">{{.Channel.Text}}</a> · Messages: {{range .Messages}}<a href="#{{anchor .Anchor}}">{{.Text}}</a> {{end}}</div>
{{if .Bindings}}<details><summary>bindings</summary><pre>{{.Bindings}}</pre></details>{{end}}
</section>
{{end}}
<h2 id="messages">Messages</h2>
{{range .Messages}}<section class="card message" id="message-{{anchor .ID}}" data-id="{{.ID}}">
<h3>{{if .Title}}{{.Title}}{{else}}{{.ID}}{{end}} <span class="muted">{{.ContentType}}</span></h3>
{{if .Summary}}<div class="desc">{{.Summary}}</div>{{end}}
{{if .Headers}}<h4>Headers</h4><div class="schema">{{.Headers}}</div>{{end}}
{{if .Payload}}<h4>Payload</h4><div class="schema payload">{{.Payload}}</div>{{end}}
{{if .Bindings}}<details><summary>bindings</summary><pre>{{.Bindings}}</pre></details>{{end}}
</section>
{{end}}
{{if .Schemas}}<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<section class="card schema-def" id="schema-{{anchor .ID}}"><h3><code>{{.ID}}</code></h3>{{.Body}}</section>
{{end}}{{end}}
</main>
</body>
</html>
`))
