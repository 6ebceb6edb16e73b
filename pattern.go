package dispytch

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrBadPattern reports a topic pattern that does not parse.
var ErrBadPattern = errors.New("dispytch: bad topic pattern")

// DefaultDelimiter separates topic segments unless the Delimiter option says
// otherwise.
const DefaultDelimiter = "."

// SegmentKind is the kind of one segment of a topic pattern.
type SegmentKind uint8

const (
	// Literal matches its text exactly.
	Literal SegmentKind = iota
	// Wildcard ({name}, or * for an anonymous one) matches exactly one
	// segment, which may be empty.
	Wildcard
	// Rest ({name...}) matches the rest of the topic: one or more segments.
	// It may only be the last segment.
	Rest
)

// PatternSegment is one segment of a parsed Pattern. Value is the literal
// text, or the name of a wildcard ("" for *).
type PatternSegment struct {
	Kind  SegmentKind
	Value string
}

// Pattern is a parsed topic pattern, such as "user.{user_id}.notification" or
// "audit.{rest...}". Patterns follow net/http's ServeMux wildcards:
// {name} matches one segment, {name...} matches the rest (last segment only),
// and * is an anonymous one-segment wildcard. A pattern without wildcards is
// literal and matches only the identical topic.
type Pattern struct {
	raw   string
	delim string
	segs  []PatternSegment
	names []string // names of the wildcard segments in order; "" for *
	wild  bool
}

// ParsePattern parses a topic pattern whose segments are separated by delim.
// Errors wrap ErrBadPattern.
func ParsePattern(s, delim string) (*Pattern, error) {
	if delim == "" {
		return nil, fmt.Errorf("%w: empty delimiter", ErrBadPattern)
	}
	if s == "" {
		return nil, fmt.Errorf("%w: empty topic", ErrBadPattern)
	}
	p := &Pattern{raw: s, delim: delim}
	parts := splitPattern(s, delim)
	seen := map[string]bool{}
	for i, part := range parts {
		switch {
		case part == "*":
			p.segs = append(p.segs, PatternSegment{Kind: Wildcard})
			p.names = append(p.names, "")
			p.wild = true
		case strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}") && len(part) >= 2:
			name := part[1 : len(part)-1]
			kind := Wildcard
			if n, ok := strings.CutSuffix(name, "..."); ok {
				if i != len(parts)-1 {
					return nil, fmt.Errorf("%w: %q: {%s} must be the last segment", ErrBadPattern, s, name)
				}
				name, kind = n, Rest
			}
			if !validName(name) {
				return nil, fmt.Errorf("%w: %q: bad wildcard name %q", ErrBadPattern, s, name)
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: %q: duplicate wildcard name %q", ErrBadPattern, s, name)
			}
			seen[name] = true
			p.segs = append(p.segs, PatternSegment{Kind: kind, Value: name})
			p.names = append(p.names, name)
			p.wild = true
		case strings.ContainsAny(part, "{}"):
			return nil, fmt.Errorf("%w: %q: a wildcard must be a whole segment, got %q", ErrBadPattern, s, part)
		default:
			p.segs = append(p.segs, PatternSegment{Kind: Literal, Value: part})
		}
	}
	return p, nil
}

// splitPattern splits s at delim, except inside braces: the delimiter may
// be ".", which also appears in "{name...}".
func splitPattern(s, delim string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); {
		switch {
		case s[i] == '{':
			depth++
		case s[i] == '}':
			if depth > 0 {
				depth--
			}
		case depth == 0 && strings.HasPrefix(s[i:], delim):
			parts = append(parts, s[start:i])
			i += len(delim)
			start = i
			continue
		}
		i++
	}
	return append(parts, s[start:])
}

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

// String returns the pattern as written.
func (p *Pattern) String() string { return p.raw }

// Delimiter returns the segment delimiter.
func (p *Pattern) Delimiter() string { return p.delim }

// IsLiteral reports whether the pattern has no wildcards.
func (p *Pattern) IsLiteral() bool { return !p.wild }

// Segments returns the parsed segments. The slice must not be modified.
func (p *Pattern) Segments() []PatternSegment { return p.segs }

// Names returns the names of the wildcard segments in order ("" for *).
func (p *Pattern) Names() []string { return p.names }

// Match reports whether topic matches p and returns the wildcard values by
// name (nil for a literal pattern).
func (p *Pattern) Match(topic string) (map[string]string, bool) {
	vals, ok := p.match(topic, nil)
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

// match appends the wildcard values to vals.
func (p *Pattern) match(topic string, vals []string) ([]string, bool) {
	if !p.wild {
		return vals, topic == p.raw
	}
	rest := topic
	for i, s := range p.segs {
		last := i == len(p.segs)-1
		if s.Kind == Rest {
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
		case Literal:
			if seg != s.Value {
				return vals, false
			}
		case Wildcard:
			vals = append(vals, seg)
		}
	}
	return vals, true
}

// Regexp returns an anchored regular expression matching the same topics as
// p, for backends that subscribe by regex (Kafka).
func (p *Pattern) Regexp() string {
	var b strings.Builder
	b.WriteString("^")
	d := regexp.QuoteMeta(p.delim)
	notDelim := "(?:[^" + regexp.QuoteMeta(p.delim[:1]) + "]*)"
	if len(p.delim) > 1 {
		// RE2 has no lookahead to exclude a multi-byte delimiter, so the
		// regex over-matches; consumers re-check every topic with Match.
		notDelim = "(?:.*?)"
	}
	for i, s := range p.segs {
		if i > 0 {
			b.WriteString(d)
		}
		switch s.Kind {
		case Literal:
			b.WriteString(regexp.QuoteMeta(s.Value))
		case Wildcard:
			b.WriteString(notDelim)
		case Rest:
			b.WriteString("(?:.*)")
		}
	}
	b.WriteString("$")
	return b.String()
}

// Format renders p with every wildcard replaced: one for each {name} or *,
// rest for {name...}. For AMQP topic exchanges that is Format("*", "#").
func (p *Pattern) Format(one, rest string) string {
	var b strings.Builder
	for i, s := range p.segs {
		if i > 0 {
			b.WriteString(p.delim)
		}
		switch s.Kind {
		case Literal:
			b.WriteString(s.Value)
		case Wildcard:
			b.WriteString(one)
		case Rest:
			b.WriteString(rest)
		}
	}
	return b.String()
}

// segmentMatch holds the wildcard values of one matched pattern.
type segmentMatch struct {
	names []string
	vals  []string
}

func (s *segmentMatch) get(name string) string {
	for i, n := range s.names {
		if n == name {
			return s.vals[i]
		}
	}
	return ""
}
