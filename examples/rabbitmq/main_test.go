package main

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/internal/testenv"
)

// TestRun runs the example end to end against the local broker, as
// `go run ./examples/rabbitmq` does, then removes what it declared.
func TestRun(t *testing.T) {
	url := testenv.Getenv("DISPYTCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
	conn, err := amqp.Dial(url)
	if err != nil {
		testenv.Unavailable(t, "RabbitMQ at %s: %v", url, err)
		return
	}
	conn.Close()
	t.Cleanup(func() { cleanup(t, url) })
	if err := run(url); err != nil {
		t.Fatal(err)
	}
}

// cleanup deletes the example's queues and exchanges, on a fresh connection
// (another package's tests may restart the broker meanwhile).
func cleanup(t *testing.T, url string) {
	var conn *amqp.Connection
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if conn, err = amqp.Dial(url); err == nil {
			break
		}
	}
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range []string{"quickstart", "quickstart.dlq"} {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	}
	for _, x := range []string{"dispytch-quickstart", "dispytch-quickstart.dlx"} {
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(x, false, false)
			ch.Close()
		}
	}
}
