package nats

import "testing"

func TestCheckSubject(t *testing.T) {
	for _, c := range []struct {
		s        string
		wild, ok bool
	}{
		{"a", false, true}, {"a.b.c", false, true}, {"a..b", false, false}, {".a", false, false}, {"a.", false, false},
		{"", false, false}, {"a b", false, false}, {"a.*", false, false}, {"a.*", true, true}, {"a.>", true, true},
		{"a.>.b", true, false}, {">", true, true}, {"a.b>", false, false}, {"a\\nb", false, true},
	} {
		if err := checkSubject(c.s, c.wild); (err == nil) != c.ok {
			t.Errorf("checkSubject(%q, %v) = %v", c.s, c.wild, err)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		w, s string
		ok   bool
	}{
		{"a.>", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "a", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.*", "a.>", false}, {"a.>", "a.*", true}, {"a.b", "a.b", true}, {"a.b", "a.*", false}, {">", "x.y", true},
	} {
		if got := covers(c.w, c.s); got != c.ok {
			t.Errorf("covers(%q, %q) = %v", c.w, c.s, got)
		}
	}
	if got := mergeSubjects([]string{"a.b", "a.c", "x"}, []string{"a.*"}); len(got) != 2 || got[0] != "x" || got[1] != "a.*" {
		t.Errorf("merge: %v", got)
	}
}
