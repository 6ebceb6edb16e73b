// Package topic parses the braces of Dispytch topics, once, for every place
// they appear: handler patterns ("user.{user_id}.notification",
// "audit.{rest...}", "a.*.c"), matched against concrete topics, and emit
// templates ("user.{user_id}.notification"), filled from an event's fields.
//
// Patterns follow net/http's ServeMux wildcards: {name} matches one segment,
// {name...} matches the rest (last segment only), and * is an anonymous
// one-segment wildcard. Backends subscribe natively from a parsed Pattern
// (Regexp for Kafka, Format("*", "#") for AMQP topic exchanges).
package topic

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrBadPattern reports a topic pattern or template that does not parse.
var ErrBadPattern = errors.New("dispytch: bad topic pattern")

// DefaultDelimiter separates topic segments unless a listener says
// otherwise.
const DefaultDelimiter = "."

// token is literal text or a {placeholder} of a topic.
type token struct {
	text  string // the text, or the placeholder's name (without "...")
	brace bool
	rest  bool // {name...}
}

// lex splits s into literal text and {placeholders}. Braces must pair up,
// and a placeholder must be non-empty and hold no brace.
func lex(s string) ([]token, error) {
	var toks []token
	rest := s
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if c := strings.IndexByte(rest, '}'); c >= 0 && (open < 0 || c < open) {
			return nil, fmt.Errorf("%w: %q: unmatched '}'", ErrBadPattern, s)
		}
		if open < 0 {
			toks = append(toks, token{text: rest})
			break
		}
		if open > 0 {
			toks = append(toks, token{text: rest[:open]})
		}
		rest = rest[open+1:]
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("%w: %q: unmatched '{'", ErrBadPattern, s)
		}
		name := rest[:end]
		if strings.IndexByte(name, '{') >= 0 {
			return nil, fmt.Errorf("%w: %q: unmatched '{'", ErrBadPattern, s)
		}
		if name == "" {
			return nil, fmt.Errorf("%w: %q: empty placeholder {}", ErrBadPattern, s)
		}
		n, isRest := strings.CutSuffix(name, "...")
		toks = append(toks, token{text: n, brace: true, rest: isRest})
		rest = rest[end+1:]
	}
	return toks, nil
}

// validName reports whether s is a wildcard name: letters, digits (not
// first) and underscores.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Check checks what can be checked of a pattern without knowing its
// delimiter: balanced braces, valid wildcard names, and {name...} only at
// the end. Parse checks the rest.
func Check(s string) error {
	toks, err := lex(s)
	if err != nil {
		return err
	}
	for i, t := range toks {
		if !t.brace {
			continue
		}
		if !validName(t.text) {
			return fmt.Errorf("%w: %q: bad wildcard name %q", ErrBadPattern, s, t.text)
		}
		if t.rest && i != len(toks)-1 {
			return fmt.Errorf("%w: %q: {%s...} must be the last segment", ErrBadPattern, s, t.text)
		}
	}
	return nil
}

// Kind is the kind of one segment of a pattern.
type Kind uint8

const (
	// KindLiteral matches its text exactly.
	KindLiteral Kind = iota
	// KindWildcard ({name}, or * for an anonymous one) matches exactly one
	// segment, which may be empty.
	KindWildcard
	// KindRest ({name...}) matches the rest of the topic: one or more
	// segments. It may only be the last segment.
	KindRest
)

// Segment is one segment of a parsed Pattern. Value is the literal text, or
// the name of a wildcard ("" for *).
type Segment struct {
	Kind  Kind
	Value string
}

// Pattern is a parsed topic pattern. A pattern without wildcards is literal
// and matches only the identical topic.
type Pattern struct {
	raw   string
	delim string
	segs  []Segment
	names []string // names of the wildcard segments in order; "" for *
	wild  bool
}

// Parse parses a topic pattern whose segments are separated by delim.
// Errors wrap ErrBadPattern.
func Parse(s, delim string) (*Pattern, error) {
	if delim == "" {
		return nil, fmt.Errorf("%w: empty delimiter", ErrBadPattern)
	}
	if s == "" {
		return nil, fmt.Errorf("%w: empty topic", ErrBadPattern)
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	// Split at the delimiter, outside braces only: the delimiter may be
	// ".", which also appears in "{name...}".
	segs := [][]token{nil}
	for _, t := range toks {
		if t.brace {
			segs[len(segs)-1] = append(segs[len(segs)-1], t)
			continue
		}
		parts := strings.Split(t.text, delim)
		for i, part := range parts {
			if i > 0 {
				segs = append(segs, nil)
			}
			if part != "" {
				segs[len(segs)-1] = append(segs[len(segs)-1], token{text: part})
			}
		}
	}
	p := &Pattern{raw: s, delim: delim}
	seen := map[string]bool{}
	for i, seg := range segs {
		switch {
		case len(seg) == 1 && seg[0].brace:
			t := seg[0]
			kind := KindWildcard
			if t.rest {
				if i != len(segs)-1 {
					return nil, fmt.Errorf("%w: %q: {%s...} must be the last segment", ErrBadPattern, s, t.text)
				}
				kind = KindRest
			}
			if !validName(t.text) {
				return nil, fmt.Errorf("%w: %q: bad wildcard name %q", ErrBadPattern, s, t.text)
			}
			if seen[t.text] {
				return nil, fmt.Errorf("%w: %q: duplicate wildcard name %q", ErrBadPattern, s, t.text)
			}
			seen[t.text] = true
			p.segs = append(p.segs, Segment{Kind: kind, Value: t.text})
			p.names = append(p.names, t.text)
			p.wild = true
		case len(seg) == 1 && seg[0].text == "*":
			p.segs = append(p.segs, Segment{Kind: KindWildcard})
			p.names = append(p.names, "")
			p.wild = true
		case len(seg) > 1:
			var b strings.Builder
			for _, t := range seg {
				if t.brace {
					b.WriteString("{" + t.text + "}")
				} else {
					b.WriteString(t.text)
				}
			}
			return nil, fmt.Errorf("%w: %q: a wildcard must be a whole segment, got %q", ErrBadPattern, s, b.String())
		default:
			text := ""
			if len(seg) == 1 {
				text = seg[0].text
			}
			p.segs = append(p.segs, Segment{Kind: KindLiteral, Value: text})
		}
	}
	return p, nil
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.raw }

// Delimiter returns the segment delimiter.
func (p *Pattern) Delimiter() string { return p.delim }

// IsLiteral reports whether the pattern has no wildcards.
func (p *Pattern) IsLiteral() bool { return !p.wild }

// Segments returns the parsed segments. The slice must not be modified.
func (p *Pattern) Segments() []Segment { return p.segs }

// Names returns the names of the wildcard segments in order ("" for *).
func (p *Pattern) Names() []string { return p.names }

// Match reports whether topic matches p and returns the wildcard values by
// name (nil for a literal pattern).
func (p *Pattern) Match(topic string) (map[string]string, bool) {
	vals, ok := p.AppendMatch(nil, topic)
	if !ok {
		return nil, false
	}
	var m map[string]string
	for i, n := range p.names {
		if n == "" {
			continue
		}
		if m == nil {
			m = make(map[string]string, len(p.names))
		}
		m[n] = vals[i]
	}
	return m, true
}

// AppendMatch reports whether topic matches p and appends the values of
// its wildcard segments, in order, to vals.
func (p *Pattern) AppendMatch(vals []string, topic string) ([]string, bool) {
	if !p.wild {
		return vals, topic == p.raw
	}
	rest := topic
	for i, s := range p.segs {
		last := i == len(p.segs)-1
		if s.Kind == KindRest {
			return append(vals, rest), true
		}
		var seg string
		if j := strings.Index(rest, p.delim); j >= 0 {
			if last {
				return vals, false
			}
			seg, rest = rest[:j], rest[j+len(p.delim):]
		} else {
			if !last {
				return vals, false
			}
			seg, rest = rest, ""
		}
		switch s.Kind {
		case KindLiteral:
			if seg != s.Value {
				return vals, false
			}
		case KindWildcard:
			vals = append(vals, seg)
		}
	}
	return vals, true
}

// Regexp returns an anchored regular expression matching the same topics as
// p, for backends that subscribe by regex (Kafka). With a delimiter of more
// than one byte it may match more; re-check topics with Match.
func (p *Pattern) Regexp() string {
	var b strings.Builder
	b.WriteString("^")
	d := regexp.QuoteMeta(p.delim)
	notDelim := "(?:[^" + regexp.QuoteMeta(p.delim[:1]) + "]*)"
	if len(p.delim) > 1 {
		// RE2 has no lookahead to exclude a multi-byte delimiter.
		notDelim = "(?:.*?)"
	}
	for i, s := range p.segs {
		if i > 0 {
			b.WriteString(d)
		}
		switch s.Kind {
		case KindLiteral:
			b.WriteString(regexp.QuoteMeta(s.Value))
		case KindWildcard:
			b.WriteString(notDelim)
		case KindRest:
			b.WriteString("(?:.*)")
		}
	}
	b.WriteString("$")
	return b.String()
}

// Format renders p with every wildcard replaced: one for each {name} or *,
// rest for {name...}. For AMQP topic exchanges that is Format("*", "#"); for
// NATS subjects Format("*", ">").
func (p *Pattern) Format(one, rest string) string {
	var b strings.Builder
	for i, s := range p.segs {
		if i > 0 {
			b.WriteString(p.delim)
		}
		switch s.Kind {
		case KindLiteral:
			b.WriteString(s.Value)
		case KindWildcard:
			b.WriteString(one)
		case KindRest:
			b.WriteString(rest)
		}
	}
	return b.String()
}

// Template is an emit topic with {field} placeholders, such as
// "user.{user_id}.notification", filled from an event's fields.
type Template struct {
	raw  string
	toks []token
}

// ParseTemplate parses a topic template. Placeholders may name any field
// (no brace inside); {name...} has no meaning in a template and is an
// error.
func ParseTemplate(s string) (*Template, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	for _, t := range toks {
		if t.rest {
			return nil, fmt.Errorf("%w: topic %q: {%s...} is a pattern wildcard, not a field", ErrBadPattern, s, t.text)
		}
	}
	return &Template{raw: s, toks: toks}, nil
}

// String returns the template as written.
func (t *Template) String() string { return t.raw }

// Fields returns the names of the placeholders in order.
func (t *Template) Fields() []string {
	var out []string
	for _, k := range t.toks {
		if k.brace {
			out = append(out, k.text)
		}
	}
	return out
}

// Render fills the placeholders with lookup's values.
func (t *Template) Render(lookup func(field string) (string, error)) (string, error) {
	var b strings.Builder
	for _, k := range t.toks {
		if !k.brace {
			b.WriteString(k.text)
			continue
		}
		v, err := lookup(k.text)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	return b.String(), nil
}
