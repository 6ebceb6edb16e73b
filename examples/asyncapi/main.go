// Command asyncapi describes the quickstart and dynamic examples' service as
// an AsyncAPI 3.0 document, built from its listener and emitter: it prints
// the document (YAML, or JSON with -json), or serves its HTML view with
// -serve.
//
//	go run ./examples/asyncapi                 # the YAML document
//	go run ./examples/asyncapi -serve :8080    # http://localhost:8080/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/memory"
)

// User is the user in the event body.
type User struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
	Name  string `json:"name"`
}

// UserRegistered is emitted when a user signs up.
type UserRegistered struct {
	User      User  `json:"user" validate:"required"`
	Timestamp int64 `json:"timestamp"`
}

// Topic is where UserRegistered events go.
func (UserRegistered) Topic() string { return "user_events" }

// EventType names the event in the envelope.
func (UserRegistered) EventType() string { return "user_registered" }

// UserNotification goes to a per-user topic, filled from UserID.
type UserNotification struct {
	UserID  int    `json:"user_id" validate:"gt=0"`
	Message string `json:"message" validate:"required"`
}

// Topic has a placeholder filled from the event's user_id field.
func (UserNotification) Topic() string { return "user.{user_id}.notification" }

// EventType names the event.
func (UserNotification) EventType() string { return "user_notification" }

// Target is the notification topic's segments, bound and validated.
type Target struct {
	UserID int `segment:"user_id" validate:"gt=0"`
}

// document builds the service's document. The handlers are never run:
// only their signatures and options matter.
func document() (*asyncapi.Document, error) {
	broker := memory.New()
	defer broker.Close(context.Background())
	listener := dispytch.NewListener(broker, dispytch.ConsumerGroup("users"))
	listener.Handle("user_events", "user_registered", func(ctx context.Context, ev dispytch.Event[UserRegistered]) error {
		return nil
	}, dispytch.Name("welcome"), dispytch.Retries(3))
	listener.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[UserNotification], seg dispytch.Segments[Target]) error { return nil },
		dispytch.Name("mailer"), dispytch.Retries(2))
	emitter := dispytch.NewEmitter(broker)
	emitter.Declare(UserRegistered{}, UserNotification{})

	return asyncapi.Build(asyncapi.Info{
		Title:       "users",
		Version:     "1.0.0",
		Description: "Registers users, welcomes them and sends them notifications.",
		Contact:     &asyncapi.Contact{Name: "Users team", URL: "https://example.com/users", Email: "users@example.com"},
		License:     &asyncapi.License{Name: "Apache-2.0", URL: "https://www.apache.org/licenses/LICENSE-2.0"},
	},
		asyncapi.Listener(listener),
		asyncapi.Emitter(emitter),
		asyncapi.Server("production", "kafka://kafka-1.example.com:9092"),
		asyncapi.Server("rabbitmq", "amqp://rabbit.example.com:5672/users"),
	)
}

func main() {
	asJSON := flag.Bool("json", false, "print JSON instead of YAML")
	serve := flag.String("serve", "", "serve the HTML view, asyncapi.json and asyncapi.yaml at this address")
	flag.Parse()
	if err := run(*asJSON, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "asyncapi:", err)
		os.Exit(1)
	}
}

func run(asJSON bool, serve string) error {
	doc, err := document()
	if err != nil {
		return err
	}
	if serve != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		srv := &http.Server{Addr: serve, Handler: asyncapi.Handler(doc), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shut)
		}()
		fmt.Fprintf(os.Stderr, "serving the AsyncAPI document at http://%s/\n", serve)
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	out, err := doc.YAML()
	if asJSON {
		out, err = doc.JSON()
	}
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
