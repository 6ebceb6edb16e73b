package asyncapi_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispytch/dispytch-go/asyncapi"
)

// Broken documents: Validate and the official parser both reject each.
var invalidDocs = map[string]string{
	"missing-info.yaml":        `"info" is required`,
	"stray-parameter.yaml":     `parameter "id" does not appear in the address "user"`,
	"foreign-message.yaml":     `is not a message of the operation's channel`,
	"bad-action.yaml":          `must be send or receive, not "publish"`,
	"dangling-ref.yaml":        `"#/components/messages/missing" does not resolve`,
	"unknown-field.yaml":       `channel objects have no field "topic"`,
	"server-without-host.yaml": `"host" is required`,
	"bad-schema-type.yaml":     `"text" is no JSON Schema type`,
}

func TestValidateRejectsWhatTheParserRejects(t *testing.T) {
	var files []string
	for name, want := range invalidDocs {
		path := filepath.Join("testdata", "invalid", name)
		files = append(files, path)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := asyncapi.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		err = doc.Validate()
		var ve *asyncapi.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v, want a problem %q", name, err, want)
		}
	}
	for f, r := range officialParser(t, files...) {
		if r.OK {
			t.Errorf("%s: the official parser accepts it", f)
		}
	}
}

func TestValidateAcceptsBuiltDocuments(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "shop.asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := asyncapi.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(); err != nil {
		t.Fatal(err)
	}
	if doc.Title() != "users" {
		t.Errorf("Title = %q", doc.Title())
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"":                            "empty",
		"[1, 2]":                      "not an object",
		`{"a": 1, "a": 2}`:            `key "a" appears twice`,
		`{"a": 1} {}`:                 "data after the JSON document",
		`{"a": `:                      "bad JSON",
		"a: 1\na: 2\n":                "appears twice",
		"a: [1, 2\n":                  "bad YAML",
		"a: &x [*x]\n":                "",
		"a: .inf\n":                   "no JSON form",
		"? [1]\n: 2\n":                "must be a scalar",
		"a: 1\n---\nb: 2\n":           "",
		strings.Repeat(`{"a":`, 2000): "deeper",
	}
	for in, want := range cases {
		_, err := asyncapi.Parse([]byte(in))
		if err == nil {
			if want != "" {
				t.Errorf("Parse(%.30q) = nil error, want %q", in, want)
			}
			continue
		}
		if want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.30q) = %v, want %q", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{"asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\n", `{"asyncapi":"3.0.0"}`, "a: &a [*a, *a]\nb: *a\n", "{}", "- 1\n", "a: !!binary aGk=\n"} {
		f.Add([]byte(seed))
	}
	if data, err := os.ReadFile(filepath.Join("testdata", "shop.asyncapi.yaml")); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := asyncapi.Parse(data)
		if err != nil {
			return
		}
		_ = doc.Validate()
		j, err := doc.JSON()
		if err != nil {
			t.Fatalf("a parsed document does not encode: %v", err)
		}
		again, err := asyncapi.Parse(j)
		if err != nil {
			t.Fatalf("its JSON does not parse back: %v\n%s", err, j)
		}
		j2, _ := again.JSON()
		if string(j) != string(j2) {
			t.Fatalf("JSON round trip differs:\n%s\n%s", j, j2)
		}
		if _, err := doc.YAML(); err != nil {
			t.Fatalf("a parsed document has no YAML: %v", err)
		}
		_ = doc.HTML(discard{})
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
