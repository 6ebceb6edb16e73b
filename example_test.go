package dispytch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/memory"
)

// The quickstart: emit an event and handle it with an injected service, on
// the embedded broker.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	broker := memory.New()
	defer broker.Close(context.Background())

	handled := make(chan string, 1)
	users := dispytch.NewHandlerGroup("", "")
	users.Handle("user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
			handled <- fmt.Sprintf("%s registered (service %s)", ev.Body.User.Email, svc.actor)
			return nil
		},
		dispytch.Retries(3), dispytch.RetryInterval(time.Second))

	listener := dispytch.NewListener(broker,
		dispytch.ConsumerGroup("users"),
		dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		dispytch.Provide(func() *UserService { return &UserService{actor: "signup"} }))
	listener.AddGroup(users)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- listener.Run(runCtx) }()

	emitter := dispytch.NewEmitter(broker)
	err := emitter.Emit(ctx, UserRegistered{User: User{ID: "1", Email: "example@mail.com", Name: "John Doe"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-handled)
	stop()
	fmt.Println("run:", <-done)
	// Output:
	// example@mail.com registered (service signup)
	// run: <nil>
}

// Dynamic topics: the emitter fills {user_id} from the event; the handler's
// pattern binds the segment, typed and validated.
func ExampleSegments() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	broker := memory.New()
	defer broker.Close(context.Background())

	type target struct {
		UserID int `segment:"user_id" validate:"gt=0"`
	}
	got := make(chan string, 1)
	l := dispytch.NewListener(broker, dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	l.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[Notification], seg dispytch.Segments[target]) {
			got <- fmt.Sprintf("to user %d on %s: %s", seg.Value.UserID, ev.Topic, ev.Body.Message)
		})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go l.Run(runCtx)

	_ = dispytch.NewEmitter(broker).Emit(ctx, Notification{UserID: 42, Message: "Hey there!"})
	fmt.Println(<-got)
	// Output: to user 42 on user.42.notification: Hey there!
}

// chanBroker is a minimal custom backend: a Go channel. Anything with
// Produce and Consume plugs into the emitter and the listener.
type chanBroker struct{ ch chan *backend.Message }

func (b *chanBroker) Produce(ctx context.Context, msgs ...*backend.Message) error {
	for _, m := range msgs {
		select {
		case b.ch <- m:
		case <-ctx.Done():
			return backend.ContextError(ctx.Err())
		}
	}
	return nil
}

func (b *chanBroker) Consume(ctx context.Context, sub backend.Subscription, inbox backend.Inbox) error {
	inbox.Ready()
loop:
	for {
		select {
		case m := <-b.ch:
			if !sub.Matches(m.Topic) {
				continue
			}
			d := &backend.Delivery{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers, Acker: logAcker{m.Topic}}
			if err := inbox.Deliver(ctx, d); err != nil {
				break loop
			}
		case <-ctx.Done():
			break loop
		}
	}
	<-inbox.Done() // let in-flight handlers finish and settle
	return nil
}

// logAcker settles by printing; a real backend acks with its broker.
type logAcker struct{ topic string }

func (a logAcker) Ack(context.Context) error  { fmt.Println("ack", a.topic); return nil }
func (a logAcker) Nack(context.Context) error { fmt.Println("nack", a.topic); return nil }

// A custom backend: implement backend.Producer and backend.Consumer.
func Example_customBackend() {
	b := &chanBroker{ch: make(chan *backend.Message, 16)}
	handled := make(chan struct{})
	l := dispytch.NewListener(b, dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	l.Handle("user_events", "user_registered", func(ev dispytch.Event[UserRegistered]) {
		fmt.Println("handled", ev.Body.User.ID)
		close(handled)
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	_ = dispytch.NewEmitter(b).Emit(context.Background(), UserRegistered{User: User{ID: "7", Email: "a@b.co"}})
	<-handled
	stop()
	fmt.Println("run:", <-done)
	// Output:
	// handled 7
	// ack user_events
	// run: <nil>
}
