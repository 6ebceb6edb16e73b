package rabbitmq_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/msgpack"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

type vector struct {
	Name     string `json:"name"`
	Topic    string `json:"topic"`
	Envelope struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Body      json.RawMessage `json:"body"`
		Timestamp int64           `json:"timestamp"`
	} `json:"envelope"`
	JSON    string `json:"json_b64"`
	Msgpack string `json:"msgpack_b64"`
}

// TestInteropVectors publishes Python Dispytch's wire vectors with a plain
// amqp091 client, as a Python service would, and checks that the listener
// decodes each one: ID, type, timestamp and body.
func TestInteropVectors(t *testing.T) {
	raw, err := os.ReadFile("../testdata/dispytch-wire-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vecs []vector
	if err := json.Unmarshal(raw, &vecs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		codec codec.Codec
		bytes func(v vector) string
		ct    string
	}{
		{"json", codec.JSON, func(v vector) string { return v.JSON }, "application/json"},
		{"msgpack", msgpack.Codec, func(v vector) string { return v.Msgpack }, "application/msgpack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			c := e.client()
			group := e.group("interop")
			type got struct {
				meta dispytch.Metadata
				body json.RawMessage
			}
			var mu sync.Mutex
			seen := map[string]got{}
			l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.Codecs(tc.codec), dispytch.WithLogger(quietLog()))
			for _, v := range vecs {
				topic := v.Topic
				if v.Name == "dynamic_topic_notification" {
					topic = "user.{user_id}.notification"
				}
				l.Handle(topic, v.Envelope.Type, func(ev dispytch.Event[map[string]any]) error {
					b, err := json.Marshal(ev.Body) // normalise msgpack's types
					if err != nil {
						return err
					}
					mu.Lock()
					seen[ev.ID] = got{meta: ev.Metadata, body: b}
					mu.Unlock()
					return nil
				}, dispytch.Name("h-"+v.Name))
			}
			run(t, l)

			ch := e.raw()
			for _, v := range vecs {
				body, err := base64.StdEncoding.DecodeString(tc.bytes(v))
				if err != nil {
					t.Fatal(err)
				}
				err = ch.PublishWithContext(context.Background(), e.x, v.Topic, false, false, amqp.Publishing{
					ContentType: tc.ct, DeliveryMode: amqp.Persistent, Body: body,
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 10*time.Second, "every vector handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) == len(vecs)
			})
			for _, v := range vecs {
				g := seen[v.Envelope.ID]
				if g.meta.Type != v.Envelope.Type || g.meta.Topic != v.Topic || g.meta.Timestamp.UnixMilli() != v.Envelope.Timestamp {
					t.Errorf("%s: got type %q topic %q ts %d", v.Name, g.meta.Type, g.meta.Topic, g.meta.Timestamp.UnixMilli())
				}
				var want, have any
				_ = json.Unmarshal(v.Envelope.Body, &want)
				_ = json.Unmarshal(g.body, &have)
				if !reflect.DeepEqual(want, have) {
					t.Errorf("%s: body\n got %s\nwant %s", v.Name, g.body, v.Envelope.Body)
				}
			}
			m := seen["0b1d2c3e-0000-4000-8000-000000000042"].meta
			if got := m.Segment("user_id"); got != "42" {
				t.Errorf("segment user_id = %q", got)
			}
		})
	}
}

// TestDelayedRetriesDeadLetterRedrive: a failing handler's retries wait in
// the broker's TTL tiers (holding no worker and no prefetch slot), the
// listener counts its attempts across the deliveries, and the last failure
// is dead-lettered with the tiers' x-death history and the failure
// headers; Redrive then sends it back.
func TestDelayedRetriesDeadLetterRedrive(t *testing.T) {
	e := setup(t)
	tiers := []time.Duration{150 * time.Millisecond, 300 * time.Millisecond}
	c := e.client(rabbitmq.RetryTiers(tiers...))
	group := e.group("retry", tiers...)

	var broken atomic.Bool
	broken.Store(true)
	var flakyOK atomic.Int64
	var mu sync.Mutex
	var attempts []int
	var redelivered []bool
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ctx context.Context, ev dispytch.Event[Order]) error {
		mu.Lock()
		attempts = append(attempts, ev.Delivery.Attempt)
		redelivered = append(redelivered, ev.Delivery.Redelivered)
		mu.Unlock()
		if broken.Load() {
			return errors.New("downstream unavailable")
		}
		flakyOK.Add(1)
		return nil
	}, dispytch.Name("flaky"), dispytch.Retries(2),
		dispytch.RetryBackoff(dispytch.ExponentialBackoff{Initial: tiers[0], Multiplier: 2}))
	run(t, l)

	ctx := ctxT(t, 60*time.Second)
	start := time.Now()
	if err := dispytch.NewEmitter(c).Emit(ctx, Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	ch := e.raw()
	dlqName := group + ".dlq"
	eventually(t, 20*time.Second, "the dead letter", func() bool { return queueDepth(t, ch, dlqName) == 1 })
	if el := time.Since(start); el < tiers[0]+tiers[1] {
		t.Errorf("dead-lettered after %v, before the tiers' delays passed", el)
	}
	mu.Lock()
	if want := []int{1, 2, 3}; !reflect.DeepEqual(attempts, want) {
		t.Errorf("attempts %v, want %v", attempts, want)
	}
	mu.Unlock()
	// The letter is in its queue a moment before the listener counts it.
	eventually(t, 10*time.Second, "the dead letter counted", func() bool { return l.Stats().DeadLettered == 1 })
	if st := l.Stats(); st.BrokerRetries != 2 || st.Retries != 2 || st.DeadLettered != 1 {
		t.Errorf("stats %+v", st)
	}

	// Inspect the dead letter with a plain client.
	d, ok, err := ch.Get(dlqName, false)
	if err != nil || !ok {
		t.Fatalf("get dead letter: %v %v", ok, err)
	}
	if err := d.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	deaths := rabbitmq.Deaths(d.Headers)
	byQueue := map[string]rabbitmq.Death{}
	for _, x := range deaths {
		byQueue[x.Queue] = x
	}
	for _, tr := range tiers {
		q := group + ".retry." + tr.String()
		if x, ok := byQueue[q]; !ok || x.Reason != "expired" || x.Count != 1 {
			t.Errorf("x-death for tier %s: %+v (all: %+v)", q, x, deaths)
		}
	}
	want := map[string]string{
		dispytch.HeaderDLReason:   "handler_error",
		dispytch.HeaderDLHandler:  "flaky",
		dispytch.HeaderDLTopic:    "orders",
		dispytch.HeaderDLAttempts: "3",
		dispytch.HeaderDLGroup:    group,
		dispytch.HeaderDLError:    "downstream unavailable",
		rabbitmq.HeaderRetry:      "2",
	}
	for k, v := range want {
		if got, _ := d.Headers[k].(string); got != v {
			t.Errorf("dead letter header %s = %q, want %q", k, got, v)
		}
	}

	// Redrive: the handler runs again, and now succeeds.
	broken.Store(false)
	n, err := dlq.Open(c, dlqName).Redrive(ctx, c, nil)
	if err != nil || n != 1 {
		t.Fatalf("redrive: %d, %v", n, err)
	}
	eventually(t, 10*time.Second, "the redriven message handled", func() bool { return flakyOK.Load() == 1 })
	if n := queueDepth(t, ch, dlqName); n != 0 {
		t.Errorf("%d messages left in the dead-letter queue", n)
	}
}

// TestRedeliverBoundedByQuorumDeliveryLimit: with the Redeliver policy, a
// quorum queue counts deliveries; past DeliveryLimit the broker dead-letters
// the message to the group's dead-letter queue, where Redrive finds it.
func TestRedeliverBoundedByQuorumDeliveryLimit(t *testing.T) {
	e := setup(t)
	c := e.client(rabbitmq.WithQueueType(rabbitmq.Quorum), rabbitmq.DeliveryLimit(2))
	group := e.group("limit")
	var mu sync.Mutex
	var counts []int
	var fail atomic.Bool
	fail.Store(true)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup(group), dispytch.WithLogger(quietLog()))
	l.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) error {
		mu.Lock()
		counts = append(counts, ev.Delivery.DeliveryCount)
		mu.Unlock()
		if fail.Load() {
			return errors.New("nope")
		}
		return nil
	}, dispytch.OnFailure(dispytch.PolicyRedeliver))
	run(t, l)
	ctx := ctxT(t, 60*time.Second)
	if err := dispytch.NewEmitter(c).Emit(ctx, Order{N: 1}); err != nil {
		t.Fatal(err)
	}
	ch := e.raw()
	dlqName := group + ".dlq"
	eventually(t, 20*time.Second, "the broker to dead-letter the message", func() bool { return queueDepth(t, ch, dlqName) == 1 })
	mu.Lock()
	got := append([]int(nil), counts...)
	mu.Unlock()
	if want := []int{1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("delivery counts %v, want %v (limit 2: the first delivery and two redeliveries)", got, want)
	}
	// Listed, the broker's dead letter reads like the client's own, from
	// its x-death header; listing leaves it as it was, x-death included.
	letters, err := dlq.Open(c, dlqName).List(ctx, nil)
	if err != nil || len(letters) != 1 {
		t.Fatalf("list: %d letters, %v", len(letters), err)
	}
	if f := letters[0]; f.Reason != rabbitmq.ReasonDeliveryLimit || f.Topic != "orders" || f.Err == nil {
		t.Errorf("letter: reason %q topic %q err %v", f.Reason, f.Topic, f.Err)
	}
	d, ok, err := ch.Get(dlqName, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	_ = d.Nack(false, true)
	if ds := rabbitmq.Deaths(d.Headers); len(ds) == 0 || ds[0].Reason != "delivery_limit" || ds[0].Queue != group {
		t.Errorf("x-death: %+v", ds)
	}
	fail.Store(false)
	// A quorum queue takes a requeued message back asynchronously.
	eventually(t, 10*time.Second, "the letter back in its queue", func() bool { return queueDepth(t, ch, dlqName) == 1 })
	// A client with default options (classic queues) can redrive the quorum
	// dead-letter queue: it takes the existing queue as it is. Redrive
	// takes the broker's reasons by default, and a filter selects them.
	if n, err := dlq.Open(c, dlqName).Redrive(ctx, c, &dlq.Filter{DryRun: true}); err != nil || n != 1 {
		t.Errorf("default redrive of a delivery-limit letter: %d, %v; want it taken", n, err)
	}
	rc := e.client()
	n, err := dlq.Open(rc, dlqName).Redrive(ctx, rc, &dlq.Filter{Reasons: []dispytch.Reason{rabbitmq.ReasonDeliveryLimit}})
	if err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	eventually(t, 10*time.Second, "the redriven message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(counts) == 4
	})
}
