package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

func rabbitURL() string {
	return testenv.Getenv("DISPYTCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

// TestRabbitMQ runs the command against the RabbitMQ at
// DISPYTCH_RABBITMQ_URL (default the local one).
func TestRabbitMQ(t *testing.T) {
	u, err := url.Parse(rabbitURL())
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	if !strings.Contains(host, ":") {
		host += ":5672"
	}
	testenv.RequireTCP(t, "RabbitMQ", host)
	prefix := "cli" + backend.NewUUID()[:6] + "-"
	exchange := prefix + "x"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := rabbitmq.Dial(ctx, rabbitURL(), rabbitmq.Exchanges(exchange), rabbitmq.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(context.Background()) })
	t.Cleanup(func() {
		conn, err := amqp.Dial(rabbitURL())
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, q := range []string{prefix + "svc", prefix + "svc.dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	e := &brokerEnv{
		name:     "rabbitmq",
		flags:    []string{"-b", rabbitURL(), "--exchange", exchange},
		prefix:   prefix,
		consumer: client, producer: client, store: client,
	}
	e.untouched = func(t *testing.T) {
		// The tail's own queue went away with it; the service's queue is
		// consumed by the service alone.
		conn, err := amqp.Dial(rabbitURL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclarePassive(prefix+"svc", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Consumers != 1 {
			t.Errorf("the service queue has %d consumers, want the service's 1", q.Consumers)
		}
	}
	scenario(t, e)

	t.Run("no such exchange", func(t *testing.T) {
		r := runBin(t, "", nil, "tail", "-b", rabbitURL(), "--exchange", prefix+"nope", "a.b")
		if r.code != 1 || !strings.Contains(r.stderr, `exchange "`+prefix+`nope"`) || !strings.Contains(r.stderr, "NOT_FOUND") {
			t.Errorf("tail on a missing exchange: %d %q", r.code, r.stderr)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		bad := *u
		bad.User = url.UserPassword("guest", "wrong-password")
		r := runBin(t, "", nil, "emit", "-b", bad.String(), "--exchange", exchange, "a", "b", "{}")
		if r.code != 1 || strings.Contains(r.stderr, "wrong-password") || !strings.Contains(strings.ToLower(r.stderr), "access") {
			t.Errorf("wrong password: %d %q", r.code, r.stderr)
		}
	})
}
