package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestRun runs the example as `go run ./examples/observability -once` does.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run("127.0.0.1:0", 20, true, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/metrics", "/healthz", "/readyz", "process orders.{region}", "dispytch.outcome=dead_lettered",
		"20 orders: 38 handler calls succeeded, 1 retried, 1 dead-lettered."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The service's /metrics, scraped after a known workload and parsed with
// the Prometheus text parser: the families are there with the values the
// workload implies, labelled by group, pattern and handler; the probes
// answer ready and live.
func TestPrometheusScrape(t *testing.T) {
	s, err := newService(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.shutdown(context.Background()) })
	srv := httptest.NewServer(s.mux)
	defer srv.Close()
	if code := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before the listener runs: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lctx, lcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.listener.Run(lctx) }()
	defer func() {
		lcancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	if err := s.listener.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 20
	if err := s.workload(ctx, n); err != nil {
		t.Fatal(err)
	}
	if code := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d", code)
	}
	if code := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	orders := map[string]string{"messaging_consumer_group_name": "orders", "messaging_destination_template": "orders.{region}", "messaging_system": "memory"}
	ships := map[string]string{"messaging_consumer_group_name": "orders", "messaging_destination_template": "shipments", "messaging_system": "memory"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	checks := []struct {
		family string
		typ    dto.MetricType
		labels map[string]string
		want   float64
	}{
		{"messaging_client_consumed_messages_total", dto.MetricType_COUNTER, orders, n},
		{"messaging_client_consumed_messages_total", dto.MetricType_COUNTER, ships, n - 1},
		{"dispytch_messages_settled_total", dto.MetricType_COUNTER, with(orders, "dispytch_outcome", "acked"), n - 1},
		{"dispytch_messages_settled_total", dto.MetricType_COUNTER, with(orders, "dispytch_outcome", "dead_lettered", "dispytch_reason", "handler_error"), 1},
		{"dispytch_messages_dead_lettered_total", dto.MetricType_COUNTER, with(orders, "dispytch_outcome", "dead_lettered", "dispytch_reason", "handler_error"), 1},
		{"dispytch_handler_retries_total", dto.MetricType_COUNTER, with(orders, "dispytch_handler", "place-order"), 1},
		{"dispytch_messages_in_flight", dto.MetricType_GAUGE, orders, 0},
		// histograms: the count of observations
		{"dispytch_handler_attempt_duration_seconds", dto.MetricType_HISTOGRAM, with(orders, "dispytch_handler", "place-order", "dispytch_outcome", "ok"), n - 1},
		{"dispytch_handler_attempt_duration_seconds", dto.MetricType_HISTOGRAM, with(orders, "dispytch_handler", "place-order", "dispytch_outcome", "failed", "error_type", "handler_error"), 2},
		{"messaging_process_duration_seconds", dto.MetricType_HISTOGRAM, with(ships, "dispytch_outcome", "acked"), n - 1},
		{"messaging_client_sent_messages_total", dto.MetricType_COUNTER, map[string]string{"messaging_system": "memory", "messaging_operation_name": "send", "messaging_destination_template": "orders.{region}"}, n},
		{"messaging_client_operation_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"messaging_system": "memory", "messaging_operation_name": "send", "messaging_destination_template": "shipments"}, n - 1},
		{"dispytch_connection_state", dto.MetricType_GAUGE, map[string]string{"dispytch_component": "orders", "dispytch_component_kind": "listener", "dispytch_state": "ready"}, 1},
		{"dispytch_connection_state", dto.MetricType_GAUGE, map[string]string{"dispytch_component": "orders", "dispytch_component_kind": "listener", "dispytch_state": "reconnecting"}, 0},
		{"dispytch_connection_state", dto.MetricType_GAUGE, map[string]string{"dispytch_component": "events", "dispytch_component_kind": "emitter", "dispytch_state": "ready"}, 1},
		{"dispytch_connection_reconnects_total", dto.MetricType_COUNTER, map[string]string{"dispytch_component": "orders", "dispytch_component_kind": "listener"}, 0},
		{"dispytch_listener_stalled_seconds", dto.MetricType_GAUGE, map[string]string{"dispytch_component": "orders", "dispytch_component_kind": "listener"}, 0},
	}
	for _, c := range checks {
		f := fams[c.family]
		if f == nil {
			t.Errorf("no family %s (have %v)", c.family, names(fams))
			continue
		}
		if f.GetType() != c.typ {
			t.Errorf("%s: type %v, want %v", c.family, f.GetType(), c.typ)
		}
		got, ok := value(f, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.family, c.labels, got, ok, c.want)
		}
	}
	// Bounded labels: no concrete topic, no event id.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "messaging_destination_name" || lp.GetName() == "messaging_message_id" ||
					strings.HasPrefix(lp.GetValue(), "orders.eu") || strings.HasPrefix(lp.GetValue(), "orders.us") {
					t.Errorf("%s has an unbounded label %s=%q", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func names(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range fams {
		out = append(out, n)
	}
	return out
}

// value is the value of the family's series whose labels, otel_scope_*
// aside, are exactly want: a counter's or a gauge's value, a histogram's
// count.
func value(f *dto.MetricFamily, want map[string]string) (float64, bool) {
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			if !strings.HasPrefix(lp.GetName(), "otel_scope_") {
				got[lp.GetName()] = lp.GetValue()
			}
		}
		if len(got) != len(want) {
			continue
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
