package kafka_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	"github.com/dispytch/dispytch-go/kafka"
)

// The Kafka backend passes the conformance suite on an in-process kfake
// cluster. The SIGKILL test's subprocess reaches the parent's cluster by
// its address (DISPYTCH_CONFORMANCE_KAFKA). Kafka has no broker-side
// delayed redelivery, so that test is skipped.
func TestConformance(t *testing.T) {
	addrs := strings.Split(os.Getenv("DISPYTCH_CONFORMANCE_KAFKA"), ",")
	if addrs[0] == "" {
		c := newCluster(t)
		addrs = c.ListenAddrs()
	}
	backendtest.Run(t, backendtest.Backend{
		Name: "kafka",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			p, err := kafka.NewProducer(kafka.Brokers(addrs...), kafka.WithLogger(testLogger()))
			if err != nil {
				t.Fatal(err)
			}
			k, err := kafka.NewConsumer(kafka.Brokers(addrs...), kafka.WithLogger(testLogger()),
				kafka.ClientOptions(groupOpts()...), kafka.CommitInterval(200*time.Millisecond),
				kafka.TopicRefresh(300*time.Millisecond), kafka.RedeliveryDelay(50*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = k.Close(ctx)
				_ = p.Close(ctx)
			})
			return p, k
		},
		CreateTopics: func(t testing.TB, topics ...string) {
			cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := kadm.NewClient(cl).CreateTopics(ctx, 3, 1, nil, topics...)
			if err != nil {
				t.Fatal(err)
			}
			if err := resp.Error(); err != nil {
				t.Fatal(err)
			}
		},
		Features: backendtest.Features{
			Persistent:      true,
			ConsumerGroups:  true,
			OrderPerKey:     true,
			NewTopics:       true,
			DeadLetterStore: true,
			Subprocess:      true,
		},
		Env: []string{"DISPYTCH_CONFORMANCE_KAFKA=" + strings.Join(addrs, ",")},
	})
}
