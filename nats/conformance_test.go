package nats_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	dnats "github.com/dispytch/dispytch-go/nats"
)

const (
	envURL    = "DISPYTCH_NATS_TEST_URL"
	envStream = "DISPYTCH_NATS_TEST_STREAM"
)

// suiteBackend is the conformance suite's backend on the server at url,
// with an events stream of its own (the SIGKILL test's subprocess gets
// the same through Env).
func suiteBackend(t *testing.T, url string) backendtest.Backend {
	stream := os.Getenv(envStream)
	if stream == "" {
		var opts []dnats.Option
		stream, opts = streams(t, url)
		_ = opts
	}
	js := jsFor(t, url)
	return backendtest.Backend{
		Name: "nats",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			c := newClient(t, url, dnats.Stream(stream), dnats.Name("dispytch-conformance"), dnats.AckWait(2*time.Second),
				dnats.WithLogger(quietLog()), dnats.ReconnectBackoff(20*time.Millisecond, 500*time.Millisecond))
			return c, c
		},
		Features: backendtest.Features{
			Persistent:        true,
			ConsumerGroups:    true,
			OrderPerKey:       true,
			NewTopics:         true,
			DelayedRedelivery: true,
			DeadLetterStore:   true,
			Subprocess:        true,
		},
		Env: []string{envURL + "=" + url, envStream + "=" + stream},
		DeleteGroup: func(group string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = js.DeleteConsumer(ctx, stream, group)
		},
	}
}

// The client passes the conformance suite on the shared nats-server
// (DISPYTCH_NATS_URL, 127.0.0.1:4222), an old one (2.9) on CI machines.
func TestConformance(t *testing.T) {
	url := os.Getenv(envURL)
	if url == "" {
		url = requireShared(t)
	}
	backendtest.Run(t, suiteBackend(t, url))
}

// The client passes the conformance suite on a nats-server run in process
// (the version of the test dependency), with connections cut and the
// server restarted mid-stream (JetStream file storage).
func TestConformanceInProcess(t *testing.T) {
	url := os.Getenv(envURL)
	var srv *inProcess
	if url == "" {
		srv = startServer(t)
		url = srv.url()
	}
	b := suiteBackend(t, url)
	if srv != nil {
		b.Features.CutConnections = func(t testing.TB) {
			if srv.cut("dispytch-conformance") == 0 {
				t.Fatal("no connection to cut")
			}
		}
		b.Features.RestartBroker = func(testing.TB) { srv.restart() }
	}
	backendtest.Run(t, b)
}
