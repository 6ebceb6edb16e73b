package redis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/redis"
)

// OrderPlaced is an event keyed by customer: one customer's orders are
// handled one at a time, in order.
type OrderPlaced struct {
	Customer string `json:"customer"`
	Amount   int    `json:"amount"`
}

func (OrderPlaced) Topic() string      { return "orders" }
func (OrderPlaced) EventType() string  { return "order_placed" }
func (o OrderPlaced) EventKey() string { return o.Customer }

// Example emits an event to a Redis stream and handles it with a listener
// in a consumer group, on the Redis at 127.0.0.1:6379.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := redis.New("redis://127.0.0.1:6379/0")
	if err != nil {
		panic(err)
	}
	defer client.Close(ctx)

	handled := make(chan struct{})
	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("billing"))
	listener.Handle("orders", "order_placed", func(ev dispytch.Event[OrderPlaced]) {
		fmt.Printf("%s ordered for %d (key %s)\n", ev.Body.Customer, ev.Body.Amount, ev.Delivery.Key)
		close(handled)
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- listener.Run(runCtx) }()
	<-listener.Ready() // the group exists on the stream: nothing emitted from now on is missed

	emitter := dispytch.NewEmitter(client)
	if err := emitter.Emit(ctx, OrderPlaced{Customer: "alice", Amount: 42}, dispytch.Header("source", "web")); err != nil {
		panic(err)
	}
	<-handled
	stop()
	fmt.Println("listener stopped:", <-done)
}

// Example_pubSub is the mode that meets Python Dispytch: PUBLISH and
// PSUBSCRIBE, at-most-once.
func Example_pubSub() {
	ctx := context.Background()
	client, err := redis.New("redis://127.0.0.1:6379", redis.WithMode(redis.PubSub))
	if err != nil {
		panic(err)
	}
	defer client.Close(ctx)
	listener := dispytch.NewListener(client)
	listener.Handle("user.{user_id}.notification", "user_notification", func(ev dispytch.Event[map[string]any]) {
		fmt.Println("for user", ev.Segment("user_id"), ev.Body["message"])
	})
	_ = listener // listener.Run(ctx) subscribes with PSUBSCRIBE user.*.notification
}
