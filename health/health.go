// Package health answers liveness and readiness probes for Dispytch
// listeners and emitters:
//
//	checks := health.New()
//	checks.Add("orders", listener)
//	checks.Add("events", emitter)
//	mux.Handle("/healthz", checks.Live())
//	mux.Handle("/readyz", checks.Ready())
//
// Readiness fails (503) while a listener is not subscribed (connecting,
// reconnecting after a lost connection, stopped: also one that never
// subscribed), while an emitter's broker connection is down, and while a
// listener makes no progress: messages wait in it and none was settled for
// StallAfter. Liveness fails only for what a restart may cure: a stalled
// listener, or one whose Run returned an error; a broker outage fails
// readiness, not liveness. Both answer with a JSON report of every
// component.
package health

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go"
)

// Healther is a listener or an emitter.
type Healther interface {
	Health() dispytch.Health
}

// Option configures a Checker.
type Option func(*Checker)

// StallAfter sets how long messages may wait in a listener with none
// settled before it counts as stalled (default 1 minute). Set it above
// your slowest handler's attempt timeout times its concurrency share.
func StallAfter(d time.Duration) Option {
	return func(c *Checker) {
		if d > 0 {
			c.stallAfter = d
		}
	}
}

// Checker checks listeners and emitters. It is safe for concurrent use.
type Checker struct {
	stallAfter time.Duration
	mu         sync.Mutex
	items      []item
}

type item struct {
	name, kind string
	h          Healther
}

// New returns a Checker with nothing to check yet.
func New(opts ...Option) *Checker {
	c := &Checker{stallAfter: time.Minute}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	return c
}

// Add registers a listener or an emitter under name.
func (c *Checker) Add(name string, h Healther) {
	kind := "emitter"
	if _, ok := h.(*dispytch.Listener); ok {
		kind = "listener"
	}
	c.mu.Lock()
	c.items = append(c.items, item{name: name, kind: kind, h: h})
	c.mu.Unlock()
}

// Component is one listener's or emitter's state in a Report.
type Component struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"` // "listener" or "emitter"
	State      string    `json:"state"`
	Error      string    `json:"error,omitempty"`
	Since      time.Time `json:"since"`
	Reconnects int64     `json:"reconnects"`
	InFlight   int64     `json:"in_flight,omitempty"`
	// StalledSeconds is how long messages have waited with none settled.
	StalledSeconds float64 `json:"stalled_seconds,omitempty"`
	// Ready and Live say whether this component passes each probe;
	// Problem says why not.
	Ready   bool   `json:"ready"`
	Live    bool   `json:"live"`
	Problem string `json:"problem,omitempty"`
}

// Report is the state of every component, and the probes' verdicts.
type Report struct {
	Ready      bool        `json:"ready"`
	Live       bool        `json:"live"`
	Components []Component `json:"components"`
}

// Check reads every component's health now.
func (c *Checker) Check() Report {
	c.mu.Lock()
	items := append([]item(nil), c.items...)
	c.mu.Unlock()
	r := Report{Ready: true, Live: true, Components: make([]Component, 0, len(items))}
	for _, it := range items {
		h := it.h.Health()
		cp := Component{Name: it.name, Kind: it.kind, State: h.State.String(), Since: h.Since, Reconnects: h.Reconnects,
			InFlight: h.InFlight, StalledSeconds: h.Stalled.Seconds(), Ready: true, Live: true}
		if h.Err != nil {
			cp.Error = h.Err.Error()
		}
		switch {
		case h.Stalled >= c.stallAfter:
			cp.Ready, cp.Live = false, false
			cp.Problem = "no progress: " + h.Stalled.Round(time.Millisecond).String() + " with messages waiting and none settled"
		case h.State == dispytch.HealthStopped && h.Err != nil && it.kind == "listener":
			cp.Ready, cp.Live = false, false
			cp.Problem = "stopped with an error"
		case h.State == dispytch.HealthStopped && it.kind == "listener":
			cp.Ready = false
			cp.Problem = "not running"
		case h.State == dispytch.HealthStopped:
			cp.Ready = false
			cp.Problem = "closed"
		case h.State == dispytch.HealthConnecting && it.kind == "listener":
			cp.Ready = false
			cp.Problem = "not subscribed yet"
		case h.State == dispytch.HealthConnecting:
			cp.Ready = false
			cp.Problem = "not connected yet"
		case h.State == dispytch.HealthReconnecting:
			cp.Ready = false
			cp.Problem = "disconnected; reconnecting"
		}
		r.Ready = r.Ready && cp.Ready
		r.Live = r.Live && cp.Live
		r.Components = append(r.Components, cp)
	}
	return r
}

// Ready returns the readiness probe's handler: 200 when every component
// is ready, else 503; the body is the Report as JSON.
func (c *Checker) Ready() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r := c.Check()
		write(w, r, r.Ready)
	})
}

// Live returns the liveness probe's handler: 200 unless a listener is
// stalled or stopped with an error, else 503; the body is the Report as
// JSON.
func (c *Checker) Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r := c.Check()
		write(w, r, r.Live)
	})
}

func write(w http.ResponseWriter, r Report, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(r)
}
