package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestRunClosedPortNotReady points a listener at a port nothing listens
// on: Run returns, within a bounded time after the start timeout, an error
// wrapping ErrNotReady that names the refused connection. It used to log
// "listener starting" and return nil.
func TestRunClosedPortNotReady(t *testing.T) {
	addr := closedPort(t)
	k, err := kafka.NewConsumer(kafka.Brokers(addr), kafka.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	l := dispytch.NewListener(k, dispytch.ConsumerGroup("nowhere"), dispytch.StartTimeout(2*time.Second), dispytch.WithLogger(testLogger()))
	l.Handle("t", "ev", func(ev dispytch.Event[Ev]) {})
	began := time.Now()
	err = l.Run(context.Background())
	took := time.Since(began)
	if !errors.Is(err, dispytch.ErrNotReady) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("run against a closed port: %v, want ErrNotReady naming the refused connection to %s", err, addr)
	}
	if took > 10*time.Second {
		t.Fatalf("run took %v with a 2s start timeout", took)
	}
	if werr := l.WaitReady(context.Background()); !errors.Is(werr, dispytch.ErrNotReady) {
		t.Fatalf("WaitReady after the failed run: %v", werr)
	}
	t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	// Nothing was dead-lettered: the consumer closes at once.
	began = time.Now()
	if err := k.Close(context.Background()); err != nil || time.Since(began) > 3*time.Second {
		t.Fatalf("consumer close: %v after %v", err, time.Since(began))
	}
}
