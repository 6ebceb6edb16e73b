package asyncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/internal/testenv"
)

func get(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestHandler(t *testing.T) {
	doc := buildShop(t)
	mux := http.NewServeMux()
	mux.Handle("/docs/", asyncapi.Handler(doc))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	wantJSON, _ := doc.JSON()
	wantYAML, _ := doc.YAML()
	res, body := get(t, "GET", srv.URL+"/docs/asyncapi.json")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, wantJSON) {
		t.Errorf("asyncapi.json: %d %s, %d bytes", res.StatusCode, res.Header.Get("Content-Type"), len(body))
	}
	res, body = get(t, "GET", srv.URL+"/docs/asyncapi.yaml")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(body, wantYAML) {
		t.Errorf("asyncapi.yaml: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	res, body = get(t, "GET", srv.URL+"/docs/")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("HTML view: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	page := string(body)
	for _, want := range []string{"orders.{region}.{order_id}", "audit.{path}", "order_created", "order_paid", "receive.reserve_stock",
		`href="asyncapi.json"`, `id="schema-OrderCreated"`, `href="#schema-Customer"`, "uuid"} {
		if !strings.Contains(page, want) {
			t.Errorf("the HTML view lacks %q", want)
		}
	}
	res, body = get(t, "HEAD", srv.URL+"/docs/asyncapi.yaml")
	if res.StatusCode != 200 || len(body) != 0 {
		t.Errorf("HEAD: %d, %d bytes", res.StatusCode, len(body))
	}
	res, _ = get(t, "POST", srv.URL+"/docs/")
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
}

func TestHTMLEscapesTheDocument(t *testing.T) {
	doc, err := asyncapi.Parse([]byte(`asyncapi: 3.0.0
info: {title: "<script>alert(1)</script>", version: "1", description: "a \"quote\" & <b>tag</b> and ` + "`<i>code</i>`" + `"}
channels:
  "x\"><img src=x onerror=alert(1)>":
    address: "<svg onload=alert(1)>"
    messages:
      m: {$ref: "#/components/messages/m"}
components:
  messages:
    m:
      payload: {type: object, properties: {"<p>": {type: string, description: "<iframe>"}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := doc.HTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script>alert", "<img", "<svg", "<iframe>", "<b>tag", "<p>", "<i>code"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q unescaped", bad)
		}
	}
	if !strings.Contains(page, "<code>&lt;i&gt;code&lt;/i&gt;</code>") {
		t.Error("a code span is not rendered as code")
	}
}

// renderCheck runs in the browser after the page's body: it reports each
// channel, operation and message section with its laid-out size and its
// rendered text, into the DOM that --dump-dom prints.
const renderCheck = `<script nonce="check">
(function () {
  var out = {};
  ["channel", "operation", "message"].forEach(function (kind) {
    out[kind] = [];
    document.querySelectorAll("section." + kind).forEach(function (s) {
      var r = s.getBoundingClientRect(), st = getComputedStyle(s);
      out[kind].push({id: s.dataset.id, width: r.width, height: r.height,
        shown: st.display !== "none" && st.visibility !== "hidden", text: s.innerText});
    });
  });
  var pre = document.createElement("pre");
  pre.id = "render-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>`

// withRenderCheck serves h's HTML view with renderCheck added, and a CSP
// that lets only that script run.
func withRenderCheck(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		body := rec.Body.Bytes()
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-check'")
			body = bytes.Replace(body, []byte("</body>"), []byte(renderCheck+"</body>"), 1)
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// chromium runs headless Chromium with args and returns its standard
// output.
func chromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func TestHTMLViewRendersInChromium(t *testing.T) {
	bin := testenv.RequireCommand(t, "chromium")
	doc := buildShop(t)
	srv := httptest.NewServer(withRenderCheck(asyncapi.Handler(doc)))
	defer srv.Close()

	dom := chromium(t, bin, "--dump-dom", srv.URL+"/")
	m := regexp.MustCompile(`(?s)<pre id="render-check">(.*?)</pre>`).FindSubmatch(dom)
	if m == nil {
		t.Fatalf("the render check did not run; DOM:\n%.2000s", dom)
	}
	var got map[string][]struct {
		ID            string
		Width, Height float64
		Shown         bool
		Text          string
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"channel": {"audit.path", "orders.region.order_id", "queue.shop", "shop.dlq", "stock", "stock.segment2.changes"},
		"message": {"audit_entry", "dispytch.DeadLetter", "order_cancelled", "order_created", "order_paid", "stock_changed"},
	}
	text := map[string]string{
		"orders.region.order_id": "orders.{region}.{order_id}",
		"order_created":          "body required OrderCreated",
		"stock.segment2.changes": "segment2",
	}
	for kind, ids := range want {
		var seen []string
		for _, s := range got[kind] {
			seen = append(seen, s.ID)
			if !s.Shown || s.Width < 200 || s.Height < 40 {
				t.Errorf("%s %s is not laid out: %+v", kind, s.ID, s)
			}
			if w, ok := text[s.ID]; ok && !strings.Contains(strings.Join(strings.Fields(s.Text), " "), w) {
				t.Errorf("%s %s renders %q, without %q", kind, s.ID, s.Text, w)
			}
		}
		if strings.Join(seen, ",") != strings.Join(ids, ",") {
			t.Errorf("%s sections = %v, want %v", kind, seen, ids)
		}
	}
	if len(got["operation"]) != 12 {
		t.Errorf("%d operations rendered, want 12", len(got["operation"]))
	}

	dir := t.ArtifactDir()
	if d := os.Getenv("DISPYTCH_SCREENSHOT_DIR"); d != "" {
		dir = d
	}
	shot := filepath.Join(dir, "asyncapi-view.png")
	chromium(t, bin, "--window-size=1280,2000", "--hide-scrollbars", "--screenshot="+shot, srv.URL+"/")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	b := img.Bounds()
	if b.Dx() != 1280 || b.Dy() != 2000 {
		t.Errorf("screenshot is %dx%d", b.Dx(), b.Dy())
	}
	// Something is drawn: the header is dark, the cards light.
	dark, light := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			r, g, bl, _ := img.At(x, y).RGBA()
			switch lum := (r + g + bl) / 3 >> 8; {
			case lum < 80:
				dark++
			case lum > 230:
				light++
			}
		}
	}
	if dark < 1000 || light < 10000 {
		t.Errorf("the screenshot looks blank: %d dark, %d light samples", dark, light)
	}
	t.Logf("screenshot: %s", shot)
}
