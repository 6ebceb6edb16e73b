package rabbitmq_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

type UserRegistered struct {
	UserID string `json:"user_id" validate:"required"`
	Email  string `json:"email" validate:"required,email"`
}

func (UserRegistered) Topic() string     { return "user_events" }
func (UserRegistered) EventType() string { return "user_registered" }

// Example runs a listener and an emitter on RabbitMQ. The listener of group
// "mailer" declares the durable topic exchange "dispytch", the queue
// "mailer" bound to "user_events", and the dead-letter queue "mailer.dlq".
// A failed handler's retries wait in the broker's TTL tiers, not in a
// worker, before it is dead-lettered.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := rabbitmq.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/",
		rabbitmq.RetryTiers(5*time.Second, time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())

	handled := make(chan struct{})
	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("mailer"), dispytch.Concurrency(64))
	listener.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
		fmt.Println("welcome", ev.Body.Email)
		close(handled)
		return nil
	}, dispytch.Retries(2), dispytch.RetryInterval(5*time.Second))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		if err := listener.Run(runCtx); err != nil {
			log.Print(err)
		}
	}()
	<-listener.Ready()

	emitter := dispytch.NewEmitter(client)
	err = emitter.Emit(ctx, UserRegistered{UserID: "42", Email: "jane@example.com"},
		rabbitmq.Priority(3), rabbitmq.CorrelationID("signup-42"))
	if err != nil {
		log.Fatal(err)
	}
	<-handled
}
