package nats_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/nats"
)

type UserRegistered struct {
	UserID string `json:"user_id" validate:"required"`
	Email  string `json:"email" validate:"required,email"`
}

func (UserRegistered) Topic() string     { return "users.registered" }
func (UserRegistered) EventType() string { return "user_registered" }

// Example runs a listener and an emitter on NATS JetStream. The listener
// of group "mailer" creates the stream "EXAMPLE" with the subject
// "users.registered", the dead-letter stream "EXAMPLE_DLQ" with
// "mailer.dlq", and the durable consumer "mailer". A failed handler's
// retries wait in the server (NakWithDelay) before the message is
// dead-lettered.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := nats.New("nats://127.0.0.1:4222", nats.Stream("EXAMPLE"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(context.Background())

	handled := make(chan struct{})
	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("mailer"))
	listener.Handle("users.registered", "user_registered", func(ev dispytch.Event[UserRegistered]) error {
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
	if err := emitter.Emit(ctx, UserRegistered{UserID: "42", Email: "jane@example.com"}); err != nil {
		log.Fatal(err)
	}
	<-handled
}
