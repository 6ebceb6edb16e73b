package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// Ev is the test event. Its topic is dynamic: the T field names it.
type Ev struct {
	T   string `json:"t"`
	Key string `json:"key"`
	Seq int    `json:"seq"`
	Pad string `json:"pad,omitempty"`
}

func (Ev) Topic() string      { return "{t}" }
func (Ev) EventType() string  { return "ev" }
func (e Ev) EventKey() string { return e.Key }
func (e Ev) String() string   { return fmt.Sprintf("%s/%s#%d", e.T, e.Key, e.Seq) }

// soak multiplies n by 10 when DISPYTCH_SOAK=1, for longer stress runs.
func soak(n int) int {
	if os.Getenv("DISPYTCH_SOAK") == "1" {
		return 10 * n
	}
	return n
}

// testLogger logs warnings and errors to stderr when -v is on, nothing
// otherwise; DISPYTCH_TEST_DEBUG=1 logs everything.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("DISPYTCH_TEST_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	var w io.Writer = io.Discard
	if testing.Verbose() || level == slog.LevelDebug {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// newCluster starts an in-process kfake cluster of 3 brokers with a low
// group heartbeat interval and session timeout floor, as kfake's own tests.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{
		kfake.NumBrokers(3),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
		kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "100"}),
	}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// groupOpts are the franz-go options tests give consumers: fast heartbeats
// and a short session, so dead members leave quickly.
func groupOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.SessionTimeout(3 * time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
	}
}

// retryOpts make a client retry quickly, for tests that inject faults.
func retryOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}
}

func newProducer(t testing.TB, c *kfake.Cluster, opts ...kafka.ProducerOption) *kafka.Producer {
	t.Helper()
	opts = append([]kafka.ProducerOption{kafka.Brokers(c.ListenAddrs()...), kafka.WithLogger(testLogger())}, opts...)
	p, err := kafka.NewProducer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func newConsumer(t testing.TB, c *kfake.Cluster, opts ...kafka.ConsumerOption) *kafka.Consumer {
	t.Helper()
	opts = append([]kafka.ConsumerOption{
		kafka.Brokers(c.ListenAddrs()...),
		kafka.WithLogger(testLogger()),
		kafka.ClientOptions(groupOpts()...),
		kafka.CommitInterval(200 * time.Millisecond),
		kafka.TopicRefresh(500 * time.Millisecond),
		kafka.RedeliveryDelay(50 * time.Millisecond),
	}, opts...)
	k, err := kafka.NewConsumer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Close(ctx)
	})
	return k
}

func createTopics(t testing.TB, c *kfake.Cluster, partitions int32, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); err != nil {
		t.Fatal(err)
	}
}

func adminClient(t testing.TB, c *kfake.Cluster) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// committed returns the group's committed offsets of topic by partition.
func committed(t testing.TB, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	out := map[int32]int64{}
	for _, po := range resp[topic] {
		if po.Err == nil {
			out[po.Partition] = po.At
		}
	}
	return out
}

// endOffsets returns the end offsets of topic by partition.
func endOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running is a listener running in the background.
type running struct {
	l      *dispytch.Listener
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs l until stop (or the test's end) and waits until it is ready.
func start(t testing.TB, l *dispytch.Listener) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop() })
	select {
	case <-l.Ready():
	case err := <-r.done:
		r.done <- err
		t.Fatalf("listener stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("listener not ready after 30s")
	}
	return r
}

// stop cancels the listener and returns Run's error.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(60 * time.Second):
			r.err = errors.New("listener did not stop within 60s")
		}
	})
	return r.err
}

// emitAll emits events in batches through EmitBatch.
func emitAll(t testing.TB, em *dispytch.Emitter, evs []Ev) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const batch = 1000
	for i := 0; i < len(evs); i += batch {
		part := evs[i:min(i+batch, len(evs))]
		b := make([]dispytch.Eventer, len(part))
		for j := range part {
			b[j] = part[j]
		}
		if err := em.EmitBatch(ctx, b); err != nil {
			t.Fatalf("emit batch at %d: %v", i, err)
		}
	}
}
