package rabbitmq_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// The RabbitMQ client passes the backend conformance suite, with retry
// tiers (broker-side delayed retries), connection cuts and the SIGKILL
// test (the subprocess reaches the same broker by its URL).
func TestConformance(t *testing.T) {
	testenv.RequireTCP(t, "RabbitMQ", brokerAddr(t))
	const name = "dispytch-conformance"
	tiers := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, time.Second}
	backendtest.Run(t, backendtest.Backend{
		Name: "rabbitmq",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			c, err := rabbitmq.New(brokerURL(), rabbitmq.Exchanges("dispytch-conformance"),
				rabbitmq.RetryTiers(tiers...), rabbitmq.ConnectionName(name),
				rabbitmq.ReconnectBackoff(20*time.Millisecond, 500*time.Millisecond), rabbitmq.WithLogger(quietLog()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(context.Background()) })
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
			CutConnections: func(t testing.TB) {
				// Only this suite's connections: other tests may share the
				// broker.
				out, err := exec.Command("rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers").CombinedOutput()
				if err != nil {
					t.Fatalf("rabbitmqctl list_connections: %v\n%s", err, out)
				}
				cut := 0
				for _, line := range strings.Split(string(out), "\n") {
					if strings.Contains(line, `{"connection_name","`+name+`/`) {
						if err := exec.Command("rabbitmqctl", "close_connection", strings.Fields(line)[0], "conformance cut").Run(); err == nil {
							cut++
						}
					}
				}
				if cut == 0 {
					t.Fatal("no connection to cut")
				}
			},
		},
		Env: []string{"DISPYTCH_RABBITMQ_URL=" + brokerURL()},
		DeleteGroup: func(group string) {
			conn, err := amqp.Dial(brokerURL())
			if err != nil {
				return
			}
			defer conn.Close()
			names := []string{group, group + ".dlq"}
			for _, d := range tiers {
				names = append(names, group+".retry."+d.String())
			}
			for _, q := range names {
				if ch, err := conn.Channel(); err == nil {
					_, _ = ch.QueueDelete(q, false, false, false)
					_ = ch.Close()
				}
			}
		},
	})
}
