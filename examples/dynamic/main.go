// Command dynamic shows dynamic topics with typed segments, retries with
// exponential backoff, a dead letter, and Redrive, on the embedded broker.
//
// A notification service handles "user.{user_id}.notification" events. The
// mail gateway fails the first deliveries for user 13: the handler retries,
// gives up, and the event is dead-lettered with the reason. Once the gateway
// is back, Redrive sends the dead letter back and only the failed handler
// runs again.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/memory"
)

// UserNotification goes to a per-user topic, filled from UserID.
type UserNotification struct {
	UserID  int    `json:"user_id"`
	Message string `json:"message" validate:"required"`
}

// Topic has a placeholder filled from the event's user_id field.
func (UserNotification) Topic() string { return "user.{user_id}.notification" }

// EventType names the event.
func (UserNotification) EventType() string { return "user_notification" }

// Target is the topic's segments, bound and validated.
type Target struct {
	UserID int `segment:"user_id" validate:"gt=0"`
}

// Gateway sends mail; it is down for user 13 until Recover.
type Gateway struct{ up atomic.Bool }

var errGatewayDown = errors.New("mail gateway unavailable")

// Send delivers a mail.
func (g *Gateway) Send(user int, msg string) error {
	if user == 13 && !g.up.Load() {
		return errGatewayDown
	}
	fmt.Printf("  mail to user %d: %s\n", user, msg)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dynamic:", err)
		os.Exit(1)
	}
}

// settleObserver hands every settlement to a channel: a
// dispytch.MessageObserver that needs only the end.
type settleObserver chan dispytch.Settlement

func (o settleObserver) ObserveMessage(ctx context.Context, _ *dispytch.MessageInfo) (context.Context, func(dispytch.Settlement)) {
	return ctx, func(s dispytch.Settlement) { o <- s }
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	broker := memory.New()
	defer broker.Close(context.Background())
	gw := &Gateway{}

	settled := make(chan dispytch.Settlement, 16)
	listener := dispytch.NewListener(broker,
		dispytch.ConsumerGroup("notifier"),
		dispytch.WithLogger(quiet),
		dispytch.Value(gw),
		dispytch.Observe(settleObserver(settled)))

	listener.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[UserNotification], seg dispytch.Segments[Target], gw *Gateway) error {
			fmt.Printf("attempt %d for user %d (topic %s)\n", ev.Delivery.Attempt, seg.Value.UserID, ev.Topic)
			return gw.Send(seg.Value.UserID, ev.Body.Message)
		},
		dispytch.Name("mailer"),
		dispytch.Retries(2),
		dispytch.RetryBackoff(dispytch.ExponentialBackoff{Initial: 50 * time.Millisecond, Max: time.Second, Jitter: 0.2}),
		dispytch.RetryOn(errGatewayDown))

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- listener.Run(runCtx) }()

	emitter := dispytch.NewEmitter(broker)
	for _, n := range []UserNotification{{UserID: 42, Message: "Hey there!"}, {UserID: 13, Message: "Your order shipped"}} {
		if err := emitter.Emit(ctx, n); err != nil {
			return err
		}
	}
	var dead *dispytch.FailedMessage
	for range 2 {
		select {
		case s := <-settled:
			fmt.Printf("-> %s: %s\n", s.Topic, s.Outcome)
			if s.Outcome == dispytch.OutcomeDeadLettered {
				dead = s.Failures[0]
				fmt.Printf("   dead letter: reason=%s handler=%s attempts=%d err=%q\n", dead.Reason, dead.Handler, dead.Attempts, dead.Err)
			}
		case err := <-runErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if dead == nil {
		return errors.New("expected a dead letter")
	}

	fmt.Println("gateway recovered; redriving", dead.DeadLetterTopic)
	gw.up.Store(true)
	q := dlq.Open(broker, dead.DeadLetterTopic)
	letters, err := q.List(ctx, nil)
	if err != nil {
		return err
	}
	for _, l := range letters {
		fmt.Printf("   waiting: topic=%s reason=%s handler=%s err=%q\n", l.Topic, l.Reason, l.Handler, l.Err)
	}
	n, err := q.Redrive(ctx, broker, nil)
	if err != nil {
		return err
	}
	fmt.Println("redriven:", n)
	select {
	case s := <-settled:
		fmt.Printf("-> %s: %s\n", s.Topic, s.Outcome)
	case <-ctx.Done():
		return ctx.Err()
	}
	stop()
	return <-runErr
}
