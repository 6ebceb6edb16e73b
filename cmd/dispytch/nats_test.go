package main

import (
	"context"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/nats"
)

func natsURL() string { return testenv.Getenv("DISPYTCH_NATS_URL", "nats://127.0.0.1:4222") }

// TestNATS runs the command against the nats-server at DISPYTCH_NATS_URL
// (default the local one).
func TestNATS(t *testing.T) {
	testenv.RequireTCP(t, "nats-server", strings.TrimPrefix(natsURL(), "nats://"))
	prefix := "cli" + backend.NewUUID()[:6] + "-"
	stream := strings.ToUpper(strings.TrimSuffix(prefix, "-"))
	client, err := nats.New(natsURL(), nats.Stream(stream), nats.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(context.Background()) })
	nc, err := natsgo.Connect(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, stream)
		_ = js.DeleteStream(ctx, stream+"_DLQ")
	})
	e := &brokerEnv{
		name:     "nats",
		flags:    []string{"-b", natsURL()},
		prefix:   prefix,
		consumer: client, producer: client, store: client,
	}
	e.untouched = func(t *testing.T) {
		// The tail's ordered consumer is ephemeral: the stream's only
		// durable consumer is the service's.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		lister := st.ListConsumers(ctx)
		var durables []string
		for ci := range lister.Info() {
			if ci.Config.Durable != "" {
				durables = append(durables, ci.Config.Durable)
			}
		}
		if err := lister.Err(); err != nil {
			t.Fatal(err)
		}
		if len(durables) != 1 || durables[0] != prefix+"svc" {
			t.Errorf("durable consumers %v, want the service's alone", durables)
		}
	}
	scenario(t, e)

	t.Run("no stream for the subject", func(t *testing.T) {
		r := runBin(t, "", nil, "emit", "-b", natsURL(), prefix+"nowhere", "e", "{}")
		if r.code != 1 || !strings.Contains(r.stderr, "no stream holds the subject") {
			t.Errorf("emit to a subject no stream holds: %d %q", r.code, r.stderr)
		}
		r = runBin(t, "", nil, "tail", "-b", natsURL(), prefix+"nowhere")
		if r.code != 1 || !strings.Contains(r.stderr, "no stream holds subject") {
			t.Errorf("tail of a subject no stream holds: %d %q", r.code, r.stderr)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		r := runBin(t, "", nil, "emit", "-b", "nats://127.0.0.1:1", "--timeout", "2s", "a", "b", "{}")
		if r.code != 1 || !strings.Contains(r.stderr, "connect to nats://127.0.0.1:1") {
			t.Errorf("unreachable server: %d %q", r.code, r.stderr)
		}
	})
}
