// Command kafka is the quickstart on Kafka: it emits UserRegistered events
// and handles them with an injected UserService, through Kafka.
//
// It connects to the brokers given by -brokers or $DISPYTCH_KAFKA_BROKERS
// (comma-separated host:port). Without either, it starts an embedded
// in-process Kafka (franz-go's kfake) so that it runs on a fresh machine:
//
//	go run ./examples/kafka
//	go run ./examples/kafka -brokers localhost:9092
//
// It creates the topics it needs (user_events and the group's dead-letter
// topic quickstart.dlq) when they are missing, prints each handled event and
// exits 0 by itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
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

// EventKey keys the record by user, so that one user's events stay in order.
func (e UserRegistered) EventKey() string { return e.User.ID }

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
	brokers := flag.String("brokers", os.Getenv("DISPYTCH_KAFKA_BROKERS"),
		"comma-separated Kafka brokers (default $DISPYTCH_KAFKA_BROKERS; empty starts an embedded cluster)")
	flag.Parse()
	if err := run(*brokers); err != nil {
		fmt.Fprintln(os.Stderr, "kafka example:", err)
		os.Exit(1)
	}
}

func run(brokers string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	var seeds []string
	if brokers == "" {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return fmt.Errorf("start embedded kafka: %w", err)
		}
		defer cluster.Close()
		seeds = cluster.ListenAddrs()
		fmt.Println("no brokers given: started an embedded Kafka at", strings.Join(seeds, ","))
	} else {
		seeds = strings.Split(brokers, ",")
	}

	producer, err := kafka.NewProducer(kafka.Brokers(seeds...), kafka.WithLogger(log))
	if err != nil {
		return err
	}
	// Close flushes what is still buffered. Give it a deadline: with
	// unreachable brokers it then fails the rest (as not sent or
	// unconfirmed) instead of waiting. (Without one it waits
	// kafka.DefaultCloseTimeout at most.)
	defer closeWithin(5*time.Second, "producer", producer.Close)
	// Topics are not auto-created: create them (existing ones are kept).
	if err := producer.CreateTopics(ctx, 3, "user_events", "quickstart.dlq"); err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(kafka.Brokers(seeds...), kafka.WithLogger(log))
	if err != nil {
		return err
	}
	defer closeWithin(5*time.Second, "consumer", consumer.Close)

	users := []User{
		{ID: backend.NewUUID(), Email: "example@mail.com", Name: "John Doe"},
		{ID: backend.NewUUID(), Email: "jane@mail.com", Name: "Jane Roe"},
		{ID: backend.NewUUID(), Email: "max@mail.com", Name: "Max Mustermann"},
	}
	want := map[string]bool{}
	for _, u := range users {
		want[u.ID] = true
	}

	// Handling: the UserService is injected by type.
	service := &UserService{}
	var mu sync.Mutex
	done := make(chan struct{})
	group := dispytch.NewHandlerGroup("", "")
	group.Handle("user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
			u := ev.Body.User
			mu.Lock()
			defer mu.Unlock()
			if !want[u.ID] {
				return nil // an event from an earlier run on the same brokers
			}
			fmt.Printf("[User Registered] %s - %s at %d (partition %d, offset %d)\n",
				u.ID, u.Email, ev.Body.Timestamp, ev.Delivery.Partition, ev.Delivery.Offset)
			svc.DoSmthWithTheUser(ctx, u)
			delete(want, u.ID)
			if len(want) == 0 {
				close(done)
			}
			return nil
		},
		dispytch.Retries(3), dispytch.RetryInterval(time.Second))

	listener := dispytch.NewListener(consumer,
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

	// Emitting: Emit returns once Kafka acknowledged the record. A failed
	// emit says whether Kafka may have it: dispytch.ErrNotSent (safe to
	// retry) or dispytch.ErrUnconfirmed (a retry may duplicate it).
	emitter := dispytch.NewEmitter(producer)
	for _, u := range users {
		if err := emitter.Emit(ctx, UserRegistered{User: u, Timestamp: time.Now().Unix()}); err != nil {
			if errors.Is(err, dispytch.ErrNotSent) {
				return fmt.Errorf("not sent, safe to retry: %w", err)
			}
			return fmt.Errorf("maybe sent: %w", err)
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
	fmt.Printf("handled %d events, %d users stored\n", listener.Stats().Handled, len(service.users))
	return nil
}

// closeWithin closes a producer or consumer within d, and reports a failed
// close (records left unacknowledged, the last broker error).
func closeWithin(d time.Duration, what string, closeFn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := closeFn(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "close %s: %v\n", what, err)
	}
}
