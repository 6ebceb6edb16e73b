package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestKafka runs the command against an embedded Kafka cluster (kfake).
func TestKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "100"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	seeds := cluster.ListenAddrs()
	prod, err := kafka.NewProducer(kafka.Brokers(seeds...), kafka.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prod.Close(context.Background()) })
	cons, err := kafka.NewConsumer(kafka.Brokers(seeds...), kafka.WithLogger(quietLogger()),
		kafka.ClientOptions(kgo.HeartbeatInterval(100*time.Millisecond), kgo.SessionTimeout(3*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cons.Close(context.Background()) })
	adm := kadm.NewClient(prod.Client())
	e := &brokerEnv{
		name:     "kafka",
		flags:    []string{"-b", "kafka://" + strings.Join(seeds, ",")},
		prefix:   "k" + backend.NewUUID()[:6] + "-",
		consumer: cons, producer: prod, store: cons,
		topics: func(t *testing.T, names ...string) {
			if err := prod.CreateTopics(context.Background(), 2, names...); err != nil {
				t.Fatal(err)
			}
		},
	}
	e.untouched = func(t *testing.T) {
		groups, err := adm.ListGroups(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups.Groups() {
			if g != e.prefix+"svc" {
				t.Errorf("tail left a consumer group %q", g)
			}
		}
	}
	scenario(t, e)

	t.Run("records", func(t *testing.T) {
		// What emit writes, as a Kafka client sees it.
		topicName := e.prefix + "raw"
		e.topics(t, topicName)
		r := mustRun(t, "", e.args("emit", topicName, "thing_happened", `{"a": [1, 2]}`, "--key", "k", "--header", "x-trace=1")...)
		id := strings.TrimSpace(r.stdout)
		r = mustRun(t, "", e.args("emit", topicName, "raw", `{"plain": true}`, "--envelope", "none")...)
		if r.stdout != "" || !strings.Contains(r.stderr, "sent 1 bodies without an envelope") {
			t.Errorf("--envelope none: stdout %q, stderr %q", r.stdout, r.stderr)
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topicName), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var recs []*kgo.Record
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for len(recs) < 2 && ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		}
		if len(recs) != 2 {
			t.Fatalf("%d records", len(recs))
		}
		for _, rec := range recs {
			h := map[string]string{}
			for _, rh := range rec.Headers {
				h[rh.Key] = string(rh.Value)
			}
			if string(rec.Key) == "k" {
				var env codec.Envelope
				if err := codec.JSON.DecodeEnvelope(rec.Value, &env); err != nil {
					t.Fatal(err)
				}
				if env.ID != id || env.Type != "thing_happened" || string(env.Body) != `{"a":[1,2]}` || env.Timestamp == 0 {
					t.Errorf("envelope %+v body %s", env, env.Body)
				}
				if h["x-trace"] != "1" || h["dispytch-event-id"] != id || h["dispytch-event-type"] != "thing_happened" || h["content-type"] != "application/json" {
					t.Errorf("headers %v", h)
				}
			} else if string(rec.Value) != `{"plain":true}` {
				t.Errorf("--envelope none wrote %q", rec.Value)
			}
		}
	})

	t.Run("tail text", func(t *testing.T) {
		// From the beginning of the topic "records" wrote, as text.
		tail := start(t, "dispytch: tailing", e.args("tail", e.prefix+"raw", "--from-beginning", "--count", "2", "--headers")...)
		tail.waitReady(t)
		tail.wait(t, 60*time.Second)
		lines := strings.Split(strings.TrimSpace(tail.stdout.String()), "\n")
		if tail.exitCode != 0 || len(lines) != 2 {
			t.Fatalf("tail: exit %d, %q, %s", tail.exitCode, tail.stdout.String(), tail.stderr.String())
		}
		for _, want := range []string{e.prefix + "raw[", " thing_happened id=", ` key="k"`, ` x-trace="1"`, ` {"a":[1,2]}`} {
			if !strings.Contains(lines[0]+lines[1], want) {
				t.Errorf("tail text lacks %q:\n%s", want, tail.stdout.String())
			}
		}
		if out := tail.stdout.String(); !strings.Contains(out, " (no envelope) ") || !strings.Contains(out, `{"plain":true} (envelope is missing`) {
			t.Errorf("tail does not show the bare body as no envelope:\n%s", tail.stdout.String())
		}
	})

	t.Run("unknown topic", func(t *testing.T) {
		r := runBin(t, "", nil, e.args("emit", e.prefix+"missing", "x", "{}", "--timeout", "5s")...)
		if r.code != 1 || !strings.Contains(r.stderr, "0 of 1 events sent") {
			t.Errorf("emit to a missing topic: %d %q", r.code, r.stderr)
		}
	})
}
