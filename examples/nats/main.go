// Command nats runs the quickstart on NATS JetStream: it emits UserRegistered
// events, handles them with an injected UserService, prints each handled
// event, and exits.
//
//	go run ./examples/nats                       # nats://127.0.0.1:4222
//	go run ./examples/nats -url nats://host:4222
//	DISPYTCH_NATS_URL=nats://... go run ./examples/nats
//
// It creates the stream "QUICKSTART" (subject "user_events"), its
// dead-letter stream "QUICKSTART_DLQ" (subject "quickstart.dlq") and the
// durable consumer "quickstart"; they stay for the next run. A failed
// handler's retries wait in the server (NakWithDelay), not in a worker.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/nats"
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

// UserService is the handler's dependency.
type UserService struct {
	mu    sync.Mutex
	users []User
}

// DoSmthWithTheUser records the user.
func (s *UserService) DoSmthWithTheUser(_ context.Context, u User) {
	s.mu.Lock()
	s.users = append(s.users, u)
	s.mu.Unlock()
}

func main() {
	def := os.Getenv("DISPYTCH_NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	url := flag.String("url", def, "NATS URL (or set DISPYTCH_NATS_URL)")
	flag.Parse()
	if err := run(*url); err != nil {
		fmt.Fprintln(os.Stderr, "nats example:", err)
		os.Exit(1)
	}
}

func run(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	client, err := nats.New(url, nats.Stream("QUICKSTART"), nats.WithLogger(log))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer client.Close(context.Background())

	users := []User{
		{ID: backend.NewUUID(), Email: "example@mail.com", Name: "John Doe"},
		{ID: backend.NewUUID(), Email: "jane@mail.com", Name: "Jane Roe"},
		{ID: backend.NewUUID(), Email: "max@mail.com", Name: "Max Mustermann"},
	}
	want := map[string]bool{}
	for _, u := range users {
		want[u.ID] = true
	}

	// Handling: the UserService is injected by type. Events left over from an
	// earlier, interrupted run are handled too, but only ours are awaited.
	service := &UserService{}
	var mu sync.Mutex
	done := make(chan struct{})
	group := dispytch.NewHandlerGroup("", "")
	group.Handle("user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
			u := ev.Body.User
			fmt.Printf("[User Registered] %s - %s at %d\n", u.ID, u.Email, ev.Body.Timestamp)
			svc.DoSmthWithTheUser(ctx, u)
			mu.Lock()
			defer mu.Unlock()
			if want[u.ID] {
				delete(want, u.ID)
				if len(want) == 0 {
					close(done)
				}
			}
			return nil
		},
		dispytch.Retries(3), dispytch.RetryInterval(time.Second))

	listener := dispytch.NewListener(client,
		dispytch.ConsumerGroup("quickstart"),
		dispytch.WithLogger(log),
		dispytch.Provide(func() *UserService { return service }))
	listener.AddGroup(group)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- listener.Run(runCtx) }()
	select {
	case <-listener.Ready():
	case err := <-runErr:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}

	// Emitting: Emit returns once the stream acknowledged the message; the
	// event id is its Nats-Msg-Id, so a retried emit is stored once.
	emitter := dispytch.NewEmitter(client)
	for _, u := range users {
		if err := emitter.Emit(ctx, UserRegistered{User: u, Timestamp: time.Now().Unix()}); err != nil {
			return err
		}
	}

	select {
	case <-done:
	case err := <-runErr:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	stop()
	if err := <-runErr; err != nil {
		return err
	}
	service.mu.Lock()
	defer service.mu.Unlock()
	fmt.Printf("handled %d events, %d users stored\n", listener.Stats().Handled, len(service.users))
	return nil
}
