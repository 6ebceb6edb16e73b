package kafka_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/protobuf"
	"github.com/dispytch/dispytch-go/internal/testpb"
)

// TestEnvelopeModes (#13): on Kafka, CloudEvents binary mode writes the
// Kafka protocol binding's ce_ headers and content-type; header mode the
// dispytch-* headers with the body alone as the value; structured mode the
// event as application/cloudevents+json. One listener reads all three.
func TestEnvelopeModes(t *testing.T) {
	c := newCluster(t)
	const topic = "user_events"
	createTopics(t, c, 1, topic)
	p := newProducer(t, c)
	formats := []codec.EnvelopeFormat{
		codec.CloudEvents(codec.CloudEventsBinary, "urn:test:users"),
		codec.Headers,
		codec.CloudEvents(codec.CloudEventsStructured, "urn:test:users"),
	}
	k := newConsumer(t, c)
	l := dispytch.NewListener(k, dispytch.ConsumerGroup("envelopes"), dispytch.WithLogger(testLogger()),
		dispytch.Codecs(protobuf.Codec), dispytch.Envelopes(formats...))
	var mu sync.Mutex
	got := map[string]*testpb.UserRegistered{}
	done := make(chan struct{})
	l.Handle(topic, "user_registered", func(ev dispytch.Event[*testpb.UserRegistered]) {
		mu.Lock()
		defer mu.Unlock()
		got[ev.ID] = ev.Body
		if len(got) == len(formats) {
			close(done)
		}
	})
	start(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make([]string, len(formats))
	for i, f := range formats {
		ids[i] = "id-" + f.Name()
		em := dispytch.NewEmitter(p, dispytch.WithCodec(protobuf.Codec), dispytch.Envelopes(f))
		body := &testpb.UserRegistered{User: &testpb.User{Id: f.Name()}, Timestamp: int64(i)}
		if err := em.Emit(ctx, body, dispytch.EventID(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("handled %d of %d", len(got), len(formats))
	}
	for i, f := range formats {
		if b := got[ids[i]]; b.GetUser().GetId() != f.Name() {
			t.Errorf("%s: handled %v", f.Name(), b)
		}
	}

	// The records, as any Kafka client sees them.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < len(formats) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d records: %v", len(recs), err)
		}
		recs = append(recs, fs.Records()...)
	}
	hdr := func(r *kgo.Record) map[string]string {
		m := map[string]string{}
		for _, h := range r.Headers {
			m[h.Key] = string(h.Value)
		}
		return m
	}
	want, _ := proto.Marshal(&testpb.UserRegistered{User: &testpb.User{Id: formats[0].Name()}, Timestamp: 0})
	bin := hdr(recs[0])
	if bin["ce_specversion"] != "1.0" || bin["ce_id"] != ids[0] || bin["ce_type"] != "user_registered" || bin["ce_source"] != "urn:test:users" ||
		bin["ce_time"] == "" || bin["content-type"] != protobuf.ContentType || string(recs[0].Value) != string(want) {
		t.Errorf("binary mode record: headers %v, value %x", bin, recs[0].Value)
	}
	hm := hdr(recs[1])
	if hm[codec.HeaderEventID] != ids[1] || hm[codec.HeaderEventType] != "user_registered" || hm[codec.HeaderTimestamp] == "" || hm["content-type"] != protobuf.ContentType {
		t.Errorf("header mode record: %v", hm)
	}
	if st := hdr(recs[2]); st["content-type"] != codec.ContentTypeCloudEvents || !strings.Contains(string(recs[2].Value), `"data_base64":`) {
		t.Errorf("structured record: %v %s", st, recs[2].Value)
	}
}
