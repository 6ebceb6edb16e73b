package kafka_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// OrderPlaced is an event keyed by customer, so that one customer's orders
// stay in one partition, in order.
type OrderPlaced struct {
	Customer string `json:"customer"`
	Amount   int    `json:"amount"`
}

func (OrderPlaced) Topic() string      { return "orders" }
func (OrderPlaced) EventType() string  { return "order_placed" }
func (o OrderPlaced) EventKey() string { return o.Customer }

// Example emits an event to Kafka and handles it with a listener in a
// consumer group. An in-process kfake cluster stands in for your brokers.
func Example() {
	cluster, _ := kfake.NewCluster(kfake.NumBrokers(1))
	defer cluster.Close()
	brokers := kafka.Brokers(cluster.ListenAddrs()...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	producer, err := kafka.NewProducer(brokers)
	if err != nil {
		panic(err)
	}
	defer producer.Close(ctx)
	// Topics are not auto-created: the topic and the group's dead-letter
	// topic must exist.
	if err := producer.CreateTopics(ctx, 3, "orders", "billing.dlq"); err != nil {
		panic(err)
	}

	consumer, err := kafka.NewConsumer(brokers, kafka.CommitInterval(time.Second))
	if err != nil {
		panic(err)
	}
	defer consumer.Close(ctx)
	handled := make(chan struct{})
	listener := dispytch.NewListener(consumer, dispytch.ConsumerGroup("billing"))
	listener.Handle("orders", "order_placed", func(ev dispytch.Event[OrderPlaced]) {
		fmt.Printf("%s ordered for %d (key %s)\n", ev.Body.Customer, ev.Body.Amount, ev.Delivery.Key)
		close(handled)
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- listener.Run(runCtx) }()
	<-listener.Ready()

	emitter := dispytch.NewEmitter(producer)
	if err := emitter.Emit(ctx, OrderPlaced{Customer: "alice", Amount: 42},
		dispytch.Header("source", "web"), kafka.Timestamp(time.Now())); err != nil {
		panic(err)
	}
	<-handled
	stop()
	fmt.Println("listener stopped:", <-done)
	// Output:
	// alice ordered for 42 (key alice)
	// listener stopped: <nil>
}
