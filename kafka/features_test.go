package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/dlq"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestDeadLettersAndRedrive sends a failing handler's event, a panicking
// handler's event and a poison record to the group's dead-letter topic with
// their reasons, keeps serving good events, commits past the failures, and
// then redrives the dead letters from Kafka (dispytch.DeadLetters on the
// consumer) so that the fixed handler runs again.
func TestDeadLettersAndRedrive(t *testing.T) {
	c := newCluster(t)
	topic, group := "payments", "pay"
	dlqName := group + ".dlq"
	createTopics(t, c, 3, topic, dlqName)
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	ctx := context.Background()

	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	handled := map[int]int{}
	var redriven atomic.Int64
	handler := func(ev dispytch.Event[Ev]) error {
		if broken.Load() {
			switch ev.Body.Seq {
			case 3:
				return errors.New("card declined")
			case 4:
				panic("boom")
			}
		}
		if ev.Headers[dispytch.HeaderRedriveHandler] != "" {
			redriven.Add(1)
		}
		mu.Lock()
		handled[ev.Body.Seq]++
		mu.Unlock()
		return nil
	}
	newListener := func() *dispytch.Listener {
		l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
		l.Handle(topic, "ev", handler, dispytch.Name("charge"), dispytch.Retries(1), dispytch.RetryInterval(time.Millisecond))
		return l
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}

	r := start(t, newListener())
	for i := 1; i <= 10; i++ {
		if err := em.Emit(ctx, Ev{T: topic, Key: "cust-1", Seq: i}, dispytch.Header("trace", "tr-1")); err != nil {
			t.Fatal(err)
		}
	}
	poison := &kgo.Record{Topic: topic, Key: []byte("cust-1"), Value: []byte("not an envelope"),
		Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte("legacy")}}}
	if err := p.Client().ProduceSync(ctx, poison).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "8 good events handled", func() bool { return count() == 8 })
	dead := readAll(t, c, 3, dlqName)
	reasons := map[string]*kgo.Record{}
	for _, d := range dead {
		reason, _ := header(d, dispytch.HeaderDLReason)
		reasons[reason] = d
		if src, _ := header(d, dispytch.HeaderDLTopic); src != topic {
			t.Errorf("dead letter source topic %q", src)
		}
		if string(d.Key) != "cust-1" {
			t.Errorf("dead letter key %q", d.Key)
		}
	}
	for _, want := range []dispytch.Reason{dispytch.ReasonHandler, dispytch.ReasonPanic, dispytch.ReasonDecode} {
		if reasons[string(want)] == nil {
			t.Fatalf("no dead letter with reason %q; got %v", want, keys(reasons))
		}
	}
	he := reasons[string(dispytch.ReasonHandler)]
	if msg, _ := header(he, dispytch.HeaderDLError); !strings.Contains(msg, "card declined") {
		t.Errorf("error header %q", msg)
	}
	if att, _ := header(he, dispytch.HeaderDLAttempts); att != "2" {
		t.Errorf("attempts header %q, want 2", att)
	}
	if h, _ := header(he, dispytch.HeaderDLHandler); h != "charge" {
		t.Errorf("handler header %q", h)
	}
	if tr, _ := header(he, "trace"); tr != "tr-1" {
		t.Errorf("original header lost: trace=%q", tr)
	}
	if typ, _ := header(he, kafka.HeaderEventType); typ != "ev" {
		t.Errorf("event type header %q", typ)
	}
	pd := reasons[string(dispytch.ReasonDecode)]
	if string(pd.Value) != "not an envelope" {
		t.Errorf("poison value changed: %q", pd.Value)
	}
	if o, _ := header(pd, "origin"); o != "legacy" {
		t.Errorf("poison headers lost: %v", pd.Headers)
	}
	adm := adminClient(t, c)
	end := endOffsets(t, adm, topic)
	eventually(t, 10*time.Second, "offsets committed past the dead letters", func() bool {
		got := committed(t, adm, group, topic)
		for part, e := range end {
			if got[part] != e {
				return false
			}
		}
		return true
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	// Fix the handler and redrive the dead letters from Kafka: the poison
	// too, by naming its reason.
	broken.Store(false)
	rk := newConsumer(t, c)
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n, err := dlq.Open(rk, dlqName).Redrive(rctx, p,
		&dlq.Filter{Reasons: []dispytch.Reason{dispytch.ReasonHandler, dispytch.ReasonPanic, dispytch.ReasonDecode}})
	if err != nil || n != 3 {
		t.Fatalf("redrive: %d, %v", n, err)
	}
	start(t, newListener())
	eventually(t, 30*time.Second, "redriven events handled", func() bool { return count() == 10 })
	if redriven.Load() != 2 {
		t.Fatalf("%d redriven events reached the handler, want 2", redriven.Load())
	}
	// The poison record is poison again: it is dead-lettered a second time.
	readAll(t, c, 4, dlqName)
	if n, err := dlq.Open(rk, dlqName).Count(rctx, nil); err != nil || n != 1 {
		t.Fatalf("dead letters left: %d, %v; want the poison's new letter", n, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPatternSubscription subscribes to a literal topic and a pattern. Topics
// matching the pattern that exist at the start and that are created later
// are consumed, with their segment values; other topics are not.
func TestPatternSubscription(t *testing.T) {
	c := newCluster(t)
	group := "notify"
	createTopics(t, c, 2, "user.1.events", "audit", "other", group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	ctx := context.Background()

	var mu sync.Mutex
	got := map[string]int{}
	record := func(s string) {
		mu.Lock()
		got[s]++
		mu.Unlock()
	}
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	l.Handle("user.{id}.events", "ev", func(ev dispytch.Event[Ev]) { record("user:" + ev.Segment("id")) })
	l.Handle("audit", "ev", func(ev dispytch.Event[Ev]) { record("audit") })
	l.Handle("user.{id}.events", "ev", func(ev dispytch.Event[Ev]) { record("any:" + ev.Topic) }, dispytch.Name("second"))
	start(t, l)
	for _, topic := range []string{"user.1.events", "audit", "other"} {
		if err := em.Emit(ctx, Ev{T: topic}); err != nil {
			t.Fatal(err)
		}
	}
	createTopics(t, c, 2, "user.2.events")
	if err := em.Emit(ctx, Ev{T: "user.2.events"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"user:1": 1, "user:2": 1, "audit": 1, "any:user.1.events": 1, "any:user.2.events": 1}
	eventually(t, 30*time.Second, "pattern topics consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("handled %v, want %v", got, want)
		}
	}
}

// TestPatternRematch uses a two-character delimiter, whose regex
// over-matches: a topic the regex finds but the pattern does not match is
// skipped in-process, and its offsets are still committed.
func TestPatternRematch(t *testing.T) {
	c := newCluster(t)
	group := "rematch"
	createTopics(t, c, 1, "shop::eu::orders", "shop::eu::x::orders", group+".dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	var handled sync.Map
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup(group), dispytch.Delimiter("::"),
		dispytch.WithLogger(testLogger()))
	l.Handle("shop::{region}::orders", "ev", func(ev dispytch.Event[Ev]) { handled.Store(ev.Topic, ev.Segment("region")) })
	start(t, l)
	ctx := context.Background()
	for _, topic := range []string{"shop::eu::x::orders", "shop::eu::orders"} {
		if err := em.Emit(ctx, Ev{T: topic}); err != nil {
			t.Fatal(err)
		}
	}
	adm := adminClient(t, c)
	eventually(t, 30*time.Second, "both topics committed", func() bool {
		return committed(t, adm, group, "shop::eu::orders")[0] == 1 && committed(t, adm, group, "shop::eu::x::orders")[0] == 1
	})
	if v, ok := handled.Load("shop::eu::orders"); !ok || v != "eu" {
		t.Fatalf("matching topic: %v %v", v, ok)
	}
	if _, ok := handled.Load("shop::eu::x::orders"); ok {
		t.Fatal("a topic the pattern does not match reached the handler")
	}
}

// TestStartFromLatest starts a new group at the end: events emitted before
// the listener is ready are not handled, those emitted after are.
func TestStartFromLatest(t *testing.T) {
	c := newCluster(t)
	topic := "late"
	createTopics(t, c, 3, topic, "late-svc.dlq", "early-svc.dlq")
	em := dispytch.NewEmitter(newProducer(t, c))
	emitAll(t, em, events(topic, 30, 3))

	var mu sync.Mutex
	var late []int
	l := dispytch.NewListener(newConsumer(t, c, kafka.StartFrom(kafka.Latest)), dispytch.ConsumerGroup("late-svc"),
		dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) {
		mu.Lock()
		late = append(late, ev.Body.Seq)
		mu.Unlock()
	})
	start(t, l)
	for i := range 6 {
		if err := em.Emit(context.Background(), Ev{T: topic, Key: "new", Seq: 1000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	// The default, Earliest, sees all 36 on a new group.
	var early atomic.Int64
	le := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("early-svc"), dispytch.WithLogger(testLogger()))
	le.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { early.Add(1) })
	start(t, le)
	eventually(t, 30*time.Second, "earliest group handled all", func() bool { return early.Load() == 36 })
	eventually(t, 30*time.Second, "latest group handled the new events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(late) == 6
	})
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range late {
		if seq != 1000+i {
			t.Fatalf("latest group handled %v, want 1000..1005 in order", late)
		}
	}
}

// TestConsumeNeedsGroup: Kafka consumption needs a group, and the
// listener's dispytch.Group is the only place to give it: without one, Run
// fails at once (not after the start timeout) with ErrNoGroup, a permanent
// error, wrapped in ErrNotReady.
func TestConsumeNeedsGroup(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "t")
	l := dispytch.NewListener(newConsumer(t, c), dispytch.HandlerDefaults(dispytch.OnFailure(dispytch.PolicyDrop)), dispytch.PoisonPolicy(dispytch.PolicyDrop),
		dispytch.WithLogger(testLogger()))
	l.Handle("t", "ev", func(ev dispytch.Event[Ev]) {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	err := l.Run(ctx)
	if !errors.Is(err, kafka.ErrNoGroup) || !errors.Is(err, dispytch.ErrNotReady) || !errors.Is(err, dispytch.ErrPermanent) {
		t.Fatalf("run without a group: %v", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("run without a group took %v", d)
	}
}

// TestRedeliverPolicy nacks a record twice (OnFailure(Redeliver)): the
// consumer delivers it again itself, marked as redelivered with a growing
// delivery count, and the commit waits for it.
func TestRedeliverPolicy(t *testing.T) {
	c := newCluster(t)
	topic, group := "again", "again-svc"
	createTopics(t, c, 1, topic)
	em := dispytch.NewEmitter(newProducer(t, c))
	var mu sync.Mutex
	var counts []int
	var redelivered []bool
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Body.Seq != 1 {
			return nil
		}
		counts = append(counts, ev.Delivery.DeliveryCount)
		redelivered = append(redelivered, ev.Delivery.Redelivered)
		if len(counts) < 3 {
			return errors.New("try again")
		}
		return nil
	}, dispytch.OnFailure(dispytch.PolicyRedeliver))
	start(t, l)
	for i := 1; i <= 3; i++ {
		if err := em.Emit(context.Background(), Ev{T: topic, Seq: i}); err != nil {
			t.Fatal(err)
		}
	}
	adm := adminClient(t, c)
	eventually(t, 20*time.Second, "commit past the redelivered record", func() bool {
		return committed(t, adm, group, topic)[0] == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(counts) != "[1 2 3]" || fmt.Sprint(redelivered) != "[false true true]" {
		t.Fatalf("delivery counts %v, redelivered %v", counts, redelivered)
	}
	if s := k.Stats(); s.Redeliveries != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestPatternReadyBeforeTopicsExist: a listener whose only topic is a
// pattern that no topic matches yet is ready (franz-go joins the group only
// once a topic matches; it then reads the new topic from its start), and
// an event emitted to a matching topic created afterwards is handled. With
// the start timeout it used to fail with ErrNotReady.
func TestPatternReadyBeforeTopicsExist(t *testing.T) {
	c := newCluster(t)
	createTopics(t, c, 1, "unrelated")
	var got atomic.Int64
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("later"), dispytch.StartTimeout(10*time.Second),
		dispytch.WithLogger(testLogger()))
	l.Handle("later.{id}.events", "ev", func(ev dispytch.Event[Ev]) { got.Store(int64(ev.Body.Seq)) })
	began := time.Now()
	start(t, l)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("ready after %v", took)
	}
	createTopics(t, c, 2, "later.1.events")
	if err := dispytch.NewEmitter(newProducer(t, c)).Emit(context.Background(), Ev{T: "later.1.events", Seq: 9}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the event on the new topic handled", func() bool { return got.Load() == 9 })
}
