package rabbitmq_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// brokerURLWith returns the broker's URL with another password or vhost.
func brokerURLWith(t testing.TB, password, vhost string) string {
	u, err := url.Parse(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	if password != "" {
		u.User = url.UserPassword(u.User.Username(), password)
	}
	if vhost != "" {
		u.Path = "/" + vhost
	}
	return u.String()
}

// within fails t when f does not return within d, and returns how long f
// took.
func within(t *testing.T, d time.Duration, what string, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	f()
	el := time.Since(start)
	if el > d {
		t.Errorf("%s took %v, want under %v", what, el, d)
	}
	return el
}

func wantErr(t *testing.T, what string, err error, kinds []error, texts ...string) {
	t.Helper()
	for _, k := range kinds {
		if !errors.Is(err, k) {
			t.Errorf("%s: %v\n  does not wrap %v", what, err, k)
		}
	}
	for _, s := range texts {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("%s: %v\n  does not say %q", what, err, s)
		}
	}
}

// TestPermanentFailuresFailFast: a wrong password, a missing virtual host
// and an exchange of a type the client cannot use fail Dial, Emit and
// Listener.Run as soon as the broker answers (the contexts allow 20s),
// with the broker's reason and a sentinel wrapping dispytch.ErrPermanent.
// RabbitMQ answers a refused login after 3 seconds: it closes the
// connection of a client that does not advertise the
// authentication_failure_close capability (amqp091-go does not) after its
// silent-close delay.
func TestPermanentFailuresFailFast(t *testing.T) {
	e := setup(t)
	// An exchange the client cannot route by topic through.
	ch := e.raw()
	if err := ch.ExchangeDeclare(e.x, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		url   string
		kind  error
		max   time.Duration
		texts []string
	}{
		{"wrong password", brokerURLWith(t, "wrong-"+e.prefix, ""), rabbitmq.ErrAccessRefused, 5 * time.Second,
			[]string{"403 ACCESS_REFUSED", "username or password not allowed", "127.0.0.1"}},
		{"missing vhost", brokerURLWith(t, "", "nope-"+e.prefix), rabbitmq.ErrVhostNotFound, time.Second,
			[]string{"530 NOT_ALLOWED", "vhost nope-" + e.prefix + " not found"}},
		{"fanout exchange", brokerURL(), rabbitmq.ErrPreconditionFailed, time.Second,
			[]string{"exchange \"" + e.x + "\" is a fanout exchange", "406 PRECONDITION_FAILED", "current is 'fanout'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []rabbitmq.Option{rabbitmq.Exchanges(e.x, e.x2), rabbitmq.WithLogger(quietLog())}
			kinds := []error{tc.kind, dispytch.ErrPermanent}
			c, err := rabbitmq.New(tc.url, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			l := dispytch.NewListener(c, dispytch.ConsumerGroup(e.group("ff")), dispytch.WithLogger(quietLog()), dispytch.StartTimeout(20*time.Second))
			l.Handle("orders", "order_placed", func(dispytch.Event[Order]) {})
			// The three at once: each waits for the broker's answer.
			var wg sync.WaitGroup
			wg.Add(3)
			go within(t, tc.max, "Dial", func() {
				defer wg.Done()
				c, err := rabbitmq.Dial(ctxT(t, 20*time.Second), tc.url, opts...)
				if c != nil {
					c.Close(context.Background())
				}
				wantErr(t, "Dial", err, kinds, tc.texts...)
				t.Logf("Dial: %v", err)
			})
			go within(t, tc.max, "Emit", func() {
				defer wg.Done()
				err := dispytch.NewEmitter(c).Emit(ctxT(t, 20*time.Second), Order{N: 1})
				wantErr(t, "Emit", err, append(kinds, dispytch.ErrNotSent), tc.texts...)
			})
			go within(t, tc.max, "Run", func() {
				defer wg.Done()
				err := l.Run(ctxT(t, 20*time.Second))
				wantErr(t, "Run", err, append(kinds, dispytch.ErrNotReady), tc.texts...)
				t.Logf("Run: %v", err)
			})
			wg.Wait()
			// The report of issue #9: Run used to log "listener starting"
			// and return nil when its context ended.
			if err := l.WaitReady(context.Background()); !errors.Is(err, tc.kind) {
				t.Errorf("WaitReady after the failed Run: %v", err)
			}
		})
	}
}

// TestQueuePreconditionFailsFast: a group queue that exists with other
// arguments fails Listener.Run and DeclareGroup at once with
// ErrPreconditionFailed and the broker's "inequivalent arg".
func TestQueuePreconditionFailsFast(t *testing.T) {
	e := setup(t)
	group := e.group("precond")
	c := e.client()
	ch := e.raw()
	if _, err := ch.QueueDeclare(group, true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil {
		t.Fatal(err)
	}
	texts := []string{"406 PRECONDITION_FAILED", "inequivalent arg", "queue '" + group + "'"}
	kinds := []error{rabbitmq.ErrPreconditionFailed, dispytch.ErrPermanent}
	within(t, 3*time.Second, "Run", func() {
		l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
		l.Handle("orders", "order_placed", func(dispytch.Event[Order]) {})
		err := l.Run(ctxT(t, 20*time.Second))
		wantErr(t, "Run", err, append(kinds, dispytch.ErrNotReady), texts...)
	})
	within(t, 3*time.Second, "DeclareGroup", func() {
		err := c.DeclareGroup(ctxT(t, 20*time.Second), group, "orders")
		wantErr(t, "DeclareGroup", err, kinds, texts...)
	})
}

// TestTransientFailureCarriesCause: with nothing listening on the port,
// Dial and Emit retry until their deadline and then fail with
// dispytch.ErrTimeout and the last cause, the refused connection.
// Listener.Run gives up at its StartTimeout with dispytch.ErrNotReady,
// naming the refusal too.
func TestTransientFailureCarriesCause(t *testing.T) {
	const closed = "amqp://guest:guest@127.0.0.1:1/"
	opts := []rabbitmq.Option{rabbitmq.WithLogger(quietLog()), rabbitmq.ReconnectBackoff(20*time.Millisecond, 100*time.Millisecond)}
	kinds := []error{dispytch.ErrTimeout, context.DeadlineExceeded, syscall.ECONNREFUSED}
	texts := []string{"last error: dial tcp 127.0.0.1:1", "connection refused"}
	el := within(t, 3*time.Second, "Dial", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := rabbitmq.Dial(ctx, closed, opts...)
		wantErr(t, "Dial", err, kinds, texts...)
		if errors.Is(err, dispytch.ErrPermanent) {
			t.Errorf("Dial: a refused connection is not permanent: %v", err)
		}
	})
	if el < 450*time.Millisecond {
		t.Errorf("Dial gave up after %v, before its deadline", el)
	}
	c, err := rabbitmq.New(closed, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	el = within(t, 3*time.Second, "Run", func() {
		l := dispytch.NewListener(c, dispytch.ConsumerGroup("nobody"), dispytch.WithLogger(quietLog()), dispytch.StartTimeout(2*time.Second))
		l.Handle("orders", "order_placed", func(dispytch.Event[Order]) {})
		err := l.Run(context.Background())
		wantErr(t, "Run", err, []error{dispytch.ErrNotReady, syscall.ECONNREFUSED}, "start timeout", "connection refused")
	})
	if el < 1900*time.Millisecond {
		t.Errorf("Run gave up after %v, before its start timeout", el)
	}
}
