package topic

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           map[string]string
		ok             bool
	}{
		{"user_events", "user_events", nil, true},
		{"user_events", "user_events2", nil, false},
		{"user.{id}.notification", "user.42.notification", map[string]string{"id": "42"}, true},
		{"user.{id}.notification", "user.42.x", nil, false},
		{"user.{id}.notification", "user.42.notification.x", nil, false},
		{"user.{id}.notification", "user..notification", map[string]string{"id": ""}, true},
		{"user.{id}", "user.1.2", nil, false},
		{"audit.{rest...}", "audit.a.b.c", map[string]string{"rest": "a.b.c"}, true},
		{"audit.{rest...}", "audit.a", map[string]string{"rest": "a"}, true},
		{"audit.{rest...}", "audit", nil, false},
		{"a.*.c", "a.b.c", nil, true},
		{"{a}.{b}", "x.y", map[string]string{"a": "x", "b": "y"}, true},
		{"{a}", "x.y", nil, false},
	}
	for _, c := range cases {
		p, err := Parse(c.pattern, ".")
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		got, ok := p.Match(c.topic)
		if ok != c.ok || (ok && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("%s ~ %s: got %v %v, want %v %v", c.pattern, c.topic, got, ok, c.want, c.ok)
		}
		re := regexp.MustCompile(p.Regexp())
		if re.MatchString(c.topic) != c.ok {
			t.Errorf("%s ~ %s: regexp %s disagrees", c.pattern, c.topic, p.Regexp())
		}
	}
}

func TestPatternDelimiter(t *testing.T) {
	p, err := Parse("user:{id}:events", ":")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := p.Match("user:7:events"); !ok || m["id"] != "7" {
		t.Fatal(m, ok)
	}
	if got := p.Format("*", "#"); got != "user:*:events" {
		t.Fatal(got)
	}
	p, _ = Parse("a.{x}.{y...}", ".")
	if got := p.Format("*", "#"); got != "a.*.#" {
		t.Fatal(got)
	}
	if p.IsLiteral() || !strings.Contains(p.Regexp(), `^a\.`) {
		t.Fatal(p.Regexp())
	}
}

func TestPatternErrors(t *testing.T) {
	for _, s := range []string{"", "a.{}", "a.{x", "a.x}", "a.b{x}", "{x}.{x}", "{r...}.a", "{1x}", "a.{x-y}"} {
		if _, err := Parse(s, "."); !errors.Is(err, ErrBadPattern) {
			t.Errorf("%q: err %v", s, err)
		}
	}
	if _, err := Parse("a", ""); err == nil {
		t.Error("empty delimiter accepted")
	}
}

// FuzzPattern checks that parsing and matching never panic, that matched
// wildcard values rebuild the topic, and that the regexp agrees.
func FuzzPattern(f *testing.F) {
	f.Add("user.{id}.notification", "user.42.notification", ".")
	f.Add("audit.{rest...}", "audit.a.b", ".")
	f.Add("a.*.c", "a.b.c", ".")
	f.Add("x::{y}", "x::z", "::")
	f.Fuzz(func(t *testing.T, pattern, topic, delim string) {
		p, err := Parse(pattern, delim)
		if err != nil {
			return
		}
		vals, ok := p.AppendMatch(nil, topic)
		if !ok {
			return
		}
		// Rebuild the topic from the literals and the values.
		var parts []string
		vi := 0
		for _, s := range p.Segments() {
			if s.Kind == KindLiteral {
				parts = append(parts, s.Value)
			} else {
				parts = append(parts, vals[vi])
				vi++
			}
		}
		if got := strings.Join(parts, delim); got != topic {
			t.Fatalf("%q ~ %q: rebuilt %q", pattern, topic, got)
		}
		if len(delim) == 1 && strings.ToValidUTF8(topic, "") == topic {
			re, err := regexp.Compile(p.Regexp())
			if err != nil {
				t.Fatalf("regexp %q: %v", p.Regexp(), err)
			}
			if !re.MatchString(topic) {
				t.Fatalf("%q ~ %q matched, regexp %q does not", pattern, topic, p.Regexp())
			}
		}
	})
}

func TestCheckAndTemplate(t *testing.T) {
	for _, s := range []string{"a.{x}y", "a.{x", "{x...}.b", "{1}", "a}"} {
		if err := Check(s); s != "a.{x}y" && !errors.Is(err, ErrBadPattern) {
			t.Errorf("Check(%q) = %v", s, err)
		}
	}
	// A wildcard inside a segment passes Check but not Parse.
	if _, err := Parse("a.{x}y", "."); !errors.Is(err, ErrBadPattern) {
		t.Error("a.{x}y parsed")
	}
	tpl, err := ParseTemplate("user.{user_id}.n{x}")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render(func(f string) (string, error) { return "<" + f + ">", nil })
	if err != nil || got != "user.<user_id>.n<x>" || strings.Join(tpl.Fields(), ",") != "user_id,x" {
		t.Fatalf("%q %v %v", got, err, tpl.Fields())
	}
	for _, s := range []string{"a{", "a}", "{}", "{a...}", "{{a}}"} {
		if _, err := ParseTemplate(s); !errors.Is(err, ErrBadPattern) {
			t.Errorf("template %q: %v", s, err)
		}
	}
}

// FuzzLex: the one brace scanner never panics, and what it accepts
// re-assembles to its input.
func FuzzLex(f *testing.F) {
	f.Add("user.{id}.notification")
	f.Add("a{b}c{d...}")
	f.Add("}{")
	f.Fuzz(func(t *testing.T, s string) {
		toks, err := lex(s)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, k := range toks {
			if k.brace {
				b.WriteString("{" + k.text)
				if k.rest {
					b.WriteString("...")
				}
				b.WriteString("}")
			} else {
				b.WriteString(k.text)
			}
		}
		if b.String() != s {
			t.Fatalf("%q re-assembled as %q", s, b.String())
		}
		_ = Check(s)
		_, _ = ParseTemplate(s)
	})
}

// FuzzTemplate checks that template parsing never panics and that a
// rendered topic holds every literal part and no placeholder.
func FuzzTemplate(f *testing.F) {
	f.Add("user.{user_id}.notification", "42")
	f.Add("{a}{b}", "x")
	f.Add("a}b{", "")
	f.Add("{}", "v")
	f.Fuzz(func(t *testing.T, tpl, val string) {
		tt, err := ParseTemplate(tpl)
		if err != nil {
			if !errors.Is(err, ErrBadPattern) {
				t.Fatalf("error does not wrap ErrBadPattern: %v", err)
			}
			return
		}
		out, err := tt.Render(func(name string) (string, error) {
			if name == "" || strings.ContainsAny(name, "{}") {
				t.Fatalf("bad placeholder name %q", name)
			}
			return val, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		for _, k := range tt.toks {
			if k.brace {
				want.WriteString(val)
			} else {
				if strings.ContainsAny(k.text, "{}") {
					t.Fatalf("literal part %q holds a brace", k.text)
				}
				want.WriteString(k.text)
			}
		}
		if out != want.String() {
			t.Fatalf("%q != %q", out, want.String())
		}
	})
}
