package asyncapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/internal/testenv"
)

// parserResult is what testdata/node/validate.mjs says of one file.
type parserResult struct {
	File        string `json:"file"`
	OK          bool   `json:"ok"`
	Diagnostics []struct {
		Severity, Code, Message, Path string
	} `json:"diagnostics"`
	Summary struct {
		Version    string   `json:"version"`
		Channels   []string `json:"channels"`
		Operations []string `json:"operations"`
		Messages   []string `json:"messages"`
	} `json:"summary"`
}

// officialParser runs @asyncapi/parser (npm) on files and returns its
// verdict on each. It skips the test when node or the parser is missing,
// unless DISPYTCH_REQUIRE_BROKERS=1.
func officialParser(t *testing.T, files ...string) map[string]parserResult {
	t.Helper()
	node := testenv.RequireCommand(t, "node")
	dir, err := filepath.Abs("testdata/node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@asyncapi", "parser")); err != nil {
		testenv.Unavailable(t, "@asyncapi/parser is not installed: run `npm ci --prefix asyncapi/testdata/node` (.ci/run does)")
	}
	cmd := exec.Command(node, append([]string{filepath.Join(dir, "validate.mjs")}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output() // exit 1 when a document fails: read the verdicts
	results := map[string]parserResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r parserResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("parser output %q: %v", sc.Text(), err)
		}
		results[r.File] = r
	}
	if len(results) != len(files) {
		t.Fatalf("the parser answered for %d of %d files; stderr: %s", len(results), len(files), stderr.String())
	}
	return results
}

// writeDoc writes doc as name.json and name.yaml into dir.
func writeDoc(t *testing.T, dir, name string, doc *asyncapi.Document) (jsonFile, yamlFile string) {
	t.Helper()
	j, err := doc.JSON()
	if err != nil {
		t.Fatal(err)
	}
	y, err := doc.YAML()
	if err != nil {
		t.Fatal(err)
	}
	jsonFile, yamlFile = filepath.Join(dir, name+".json"), filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(jsonFile, j, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(yamlFile, y, 0o644); err != nil {
		t.Fatal(err)
	}
	return jsonFile, yamlFile
}

// checkVerdicts fails t for any error or warning of the parser on the JSON
// and YAML forms of one document, and returns the parser's view of it.
func checkVerdicts(t *testing.T, res map[string]parserResult, jf, yf string) parserResult {
	t.Helper()
	for _, f := range []string{jf, yf} {
		r := res[f]
		for _, d := range r.Diagnostics {
			if d.Severity == "error" || d.Severity == "warning" {
				t.Errorf("%s: %s %s at %s: %s", filepath.Base(f), d.Severity, d.Code, d.Path, d.Message)
			}
		}
		if !r.OK {
			t.Errorf("%s: the parser rejects it", filepath.Base(f))
		}
	}
	if strings.Join(res[jf].Summary.Channels, ",") != strings.Join(res[yf].Summary.Channels, ",") ||
		strings.Join(res[jf].Summary.Messages, ",") != strings.Join(res[yf].Summary.Messages, ",") {
		t.Errorf("JSON and YAML read differently: %+v vs %+v", res[jf].Summary, res[yf].Summary)
	}
	return res[jf]
}

// requireValid checks with the official parser that doc, as JSON and as
// YAML, has no error and no warning, and returns the parser's view of it.
func requireValid(t *testing.T, name string, doc *asyncapi.Document) parserResult {
	t.Helper()
	jf, yf := writeDoc(t, t.TempDir(), name, doc)
	return checkVerdicts(t, officialParser(t, jf, yf), jf, yf)
}
