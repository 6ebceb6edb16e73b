package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispytch/dispytch-go/internal/testenv"
)

// TestDocument builds the example's document, checks it with Validate and
// with the official AsyncAPI parser, JSON and YAML alike.
func TestDocument(t *testing.T) {
	doc, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(); err != nil {
		t.Fatal(err)
	}
	y, err := doc.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"address: user.{user_id}.notification", "receive.mailer", "send.user_registered", "groupId", "users.dlq"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("the document lacks %q", want)
		}
	}
	j, err := doc.JSON()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "example.yaml"), filepath.Join(dir, "example.json")}
	if err := os.WriteFile(files[0], y, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], j, 0o644); err != nil {
		t.Fatal(err)
	}
	node := testenv.RequireCommand(t, "node")
	check := filepath.Join("..", "..", "asyncapi", "testdata", "node")
	if _, err := os.Stat(filepath.Join(check, "node_modules", "@asyncapi", "parser")); err != nil {
		testenv.Unavailable(t, "@asyncapi/parser is not installed: run `npm ci --prefix asyncapi/testdata/node` (.ci/run does)")
	}
	out, err := exec.Command(node, append([]string{filepath.Join(check, "validate.mjs")}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("the official parser rejects the example's document: %v\n%s", err, out)
	}
	if strings.Count(string(out), `"ok":true`) != 2 {
		t.Fatalf("parser output:\n%s", out)
	}
}
