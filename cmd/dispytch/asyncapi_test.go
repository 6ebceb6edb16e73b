package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	shopDoc  = filepath.Join("..", "..", "asyncapi", "testdata", "shop.asyncapi.yaml")
	invalids = filepath.Join("..", "..", "asyncapi", "testdata", "invalid")
)

func TestAsyncAPIValidate(t *testing.T) {
	r := mustRun(t, "", "asyncapi", "validate", shopDoc)
	if !strings.Contains(r.stdout, "valid AsyncAPI 3.0.0") {
		t.Errorf("validate: %q", r.stdout)
	}
	r = runBin(t, "", nil, "asyncapi", "validate", shopDoc, filepath.Join(invalids, "foreign-message.yaml"), filepath.Join(invalids, "bad-action.yaml"))
	if r.code != 1 {
		t.Fatalf("validate of broken documents: exit %d", r.code)
	}
	for _, want := range []string{"foreign-message.yaml: 1 problem:", "/operations/op/messages/0: \"#/channels/b/messages/n\" is not a message of the operation's channel",
		"bad-action.yaml: 1 problem:", `/operations/op/action: must be send or receive, not "publish"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("validate stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "shop.asyncapi.yaml: valid") {
		t.Errorf("the valid one is not reported valid: %q", r.stdout)
	}
	r = runBin(t, "", nil, "asyncapi", "validate", "no-such-file.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "no-such-file.yaml") {
		t.Errorf("missing file: %d %q", r.code, r.stderr)
	}
}

func TestAsyncAPIRender(t *testing.T) {
	r := mustRun(t, "", "asyncapi", "render", shopDoc)
	for _, want := range []string{"<!DOCTYPE html>", `id="channel-orders.region.order_id"`, `id="message-order_created"`, "receive.reserve_stock"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("render lacks %q", want)
		}
	}
	out := filepath.Join(t.TempDir(), "doc.json")
	mustRun(t, "", "asyncapi", "render", "--format", "json", "-o", out, shopDoc)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "{\n  \"asyncapi\": \"3.0.0\"") {
		t.Errorf("render --format json: %.60q", data)
	}
	// JSON back to YAML gives the committed document, byte for byte.
	r = mustRun(t, "", "asyncapi", "render", "--format", "yaml", out)
	want, _ := os.ReadFile(shopDoc)
	if r.stdout != string(want) {
		t.Error("YAML → JSON → YAML changed the document")
	}
	if r := runBin(t, "", nil, "asyncapi", "render", "--format", "pdf", shopDoc); r.code != 2 {
		t.Errorf("--format pdf: exit %d", r.code)
	}
}

func TestAsyncAPIServe(t *testing.T) {
	srv := start(t, "dispytch: serving", "asyncapi", "serve", "--addr", "127.0.0.1:0", shopDoc)
	line := srv.waitReady(t)
	base := regexp.MustCompile(`http://\S+/`).FindString(line)
	if base == "" {
		t.Fatalf("no URL in %q", line)
	}
	get := func(path string) (string, string) {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, res.StatusCode)
		}
		return res.Header.Get("Content-Type"), string(b)
	}
	if ct, body := get(""); !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "orders.{region}.{order_id}") {
		t.Errorf("GET /: %s", ct)
	}
	want, _ := os.ReadFile(shopDoc)
	if ct, body := get("asyncapi.yaml"); ct != "application/yaml" || body != string(want) {
		t.Errorf("GET /asyncapi.yaml: %s", ct)
	}
	if ct, _ := get("asyncapi.json"); ct != "application/json" {
		t.Errorf("GET /asyncapi.json: %s", ct)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	srv.wait(t, 10*time.Second)
	if srv.exitCode != 0 {
		t.Errorf("serve exited %d after SIGINT: %s", srv.exitCode, srv.stderr.String())
	}
}
