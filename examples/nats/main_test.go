package main

import (
	"context"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/internal/testenv"
)

// TestRun runs the example end to end against the local server, as
// `go run ./examples/nats` does, then removes the streams it created.
func TestRun(t *testing.T) {
	url := testenv.Getenv("DISPYTCH_NATS_URL", "nats://127.0.0.1:4222")
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second))
	if err != nil {
		testenv.Unavailable(t, "nats-server at %s: %v", url, err)
		return
	}
	t.Cleanup(nc.Close) // after the deletion below: cleanups run last first
	t.Cleanup(func() {
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, "QUICKSTART")
		_ = js.DeleteStream(ctx, "QUICKSTART_DLQ")
	})
	if err := run(url); err != nil {
		t.Fatal(err)
	}
}
