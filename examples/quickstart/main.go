// Command quickstart runs Python Dispytch's two README examples together on
// the embedded memory broker: it emits UserRegistered events and handles them
// with an injected UserService, prints each handled event, and exits.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
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
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	broker := memory.New()
	defer broker.Close(context.Background())

	users := []User{
		{ID: backend.NewUUID(), Email: "example@mail.com", Name: "John Doe"},
		{ID: backend.NewUUID(), Email: "jane@mail.com", Name: "Jane Roe"},
		{ID: backend.NewUUID(), Email: "max@mail.com", Name: "Max Mustermann"},
	}

	// Handling: the UserService is injected by type.
	service := &UserService{}
	var wg sync.WaitGroup
	wg.Add(len(users))
	group := dispytch.NewHandlerGroup("", "")
	group.Handle("user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
			defer wg.Done()
			u := ev.Body.User
			fmt.Printf("[User Registered] %s - %s at %d\n", u.ID, u.Email, ev.Body.Timestamp)
			svc.DoSmthWithTheUser(ctx, u)
			return nil
		},
		dispytch.Retries(3), dispytch.RetryInterval(time.Second))

	listener := dispytch.NewListener(broker,
		dispytch.ConsumerGroup("quickstart"),
		dispytch.WithLogger(log),
		dispytch.Provide(func() *UserService { return service }))
	listener.AddGroup(group)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- listener.Run(runCtx) }()

	// Emitting.
	emitter := dispytch.NewEmitter(broker)
	for _, u := range users {
		if err := emitter.Emit(ctx, UserRegistered{User: u, Timestamp: time.Now().Unix()}); err != nil {
			return err
		}
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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
	fmt.Printf("handled %d events, %d users stored\n", listener.Stats().Handled, len(service.users))
	return nil
}
