package kafka_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// TestLargePoisonDeadLetteredAtDefaults: at Kafka's defaults (kfake's
// message.max.bytes is Kafka's 1,048,588, checked here), a foreign
// producer writes two malformed records of about 1 MB that the broker
// accepts: a compressible 1,048,576-byte value (compressed on the wire)
// and an incompressible one that just fits uncompressed. The listener
// dead-letters the first whole and the second truncated (the broker
// refuses it with the failure headers added: MESSAGE_TOO_LARGE, which the
// producer reports as ErrTooLarge), with its coordinates; the partition's
// commit passes both, and the good record after them is handled and
// committed. With franz-go's default batch limit (1,000,012 bytes) the
// consumer could not dead-letter either, and the commit stayed behind
// them forever.
func TestLargePoisonDeadLetteredAtDefaults(t *testing.T) {
	c := newCluster(t)
	adm := adminClient(t, c)
	ctx := context.Background()
	bcfg, err := adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var maxBytes string
	for _, rc := range bcfg {
		for _, cfg := range rc.Configs {
			if cfg.Key == "message.max.bytes" && cfg.Value != nil {
				maxBytes = *cfg.Value
			}
		}
	}
	if maxBytes != "1048588" {
		t.Fatalf("kfake's message.max.bytes is %q, not Kafka's default 1048588", maxBytes)
	}
	topic, group := "big", "big-svc"
	dlq := group + ".dlq"
	createTopics(t, c, 1, topic, dlq)

	compressible := bytes.Repeat([]byte("not an envelope "), 1048576/16)
	random := make([]byte, 1048400)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	random[0] = 'x' // neither JSON nor msgpack
	foreign := func(codec kgo.CompressionCodec, r *kgo.Record) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchMaxBytes(2<<20),
			kgo.ProducerBatchCompression(codec))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("the broker refused the foreign %d-byte record: %v", len(r.Value), err)
		}
	}
	foreign(kgo.SnappyCompression(), &kgo.Record{Topic: topic, Key: []byte("k"), Value: compressible})
	foreign(kgo.NoCompression(), &kgo.Record{Topic: topic, Key: []byte("k"), Value: random})
	em := dispytch.NewEmitter(newProducer(t, c))
	if err := em.Emit(ctx, Ev{T: topic, Key: "k", Seq: 3}); err != nil {
		t.Fatal(err)
	}

	var good atomic.Int64
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup(group), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { good.Add(int64(ev.Body.Seq)) })
	start(t, l)
	eventually(t, 30*time.Second, "the good record after the poison handled", func() bool { return good.Load() == 3 })
	eventually(t, 30*time.Second, "the commit past all three", func() bool { return committed(t, adm, group, topic)[0] == 3 })

	letters := readAll(t, c, 2, dlq)
	byOffset := map[string]*kgo.Record{}
	for _, r := range letters {
		off, _ := header(r, dispytch.HeaderDLOffset)
		byOffset[off] = r
		if reason, _ := header(r, dispytch.HeaderDLReason); reason != string(dispytch.ReasonDecode) {
			t.Fatalf("dead letter reason %q", reason)
		}
		if p, _ := header(r, dispytch.HeaderDLPartition); p != "0" {
			t.Fatalf("dead letter partition header %q", p)
		}
	}
	whole, cut := byOffset["0"], byOffset["1"]
	if whole == nil || cut == nil {
		t.Fatalf("dead letters by original offset: %v", keys(byOffset))
	}
	if !bytes.Equal(whole.Value, compressible) {
		t.Fatalf("the compressible poison was dead-lettered with %d bytes, want it whole", len(whole.Value))
	}
	if n, _ := header(cut, dispytch.HeaderDLTruncated); n != strconv.Itoa(len(random)) || len(cut.Value) != 0 {
		t.Fatalf("the incompressible poison's letter: truncated=%q, %d value bytes", n, len(cut.Value))
	}
	if s := l.Stats(); s.DeadLettered != 2 || s.DeadLetterDropped != 0 {
		t.Fatalf("listener stats %+v", s)
	}
}

// TestDeadLetterTopicMissingFallback: the dead-letter topic does not exist
// and auto-creation is off. A record whose handler fails for good is
// delivered DeadLetterAttempts times (the consumer redelivers it itself,
// counting 1, 2, 3 and marking it redelivered), then the fallback drops it
// (Stats.DeadLetterDropped), the commit passes it, and the next record is
// handled and committed.
func TestDeadLetterTopicMissingFallback(t *testing.T) {
	c := newCluster(t)
	topic, group := "nodlq", "nodlq-svc"
	createTopics(t, c, 1, topic) // no nodlq-svc.dlq
	ctx := context.Background()
	em := dispytch.NewEmitter(newProducer(t, c))
	for seq := 1; seq <= 2; seq++ {
		if err := em.Emit(ctx, Ev{T: topic, Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var counts []int
	var redelivered []bool
	var good atomic.Int64
	k := newConsumer(t, c, kafka.ClientOptions(kgo.UnknownTopicRetries(1)))
	l := dispytch.NewListener(k, dispytch.ConsumerGroup(group), dispytch.DeadLettering(dispytch.DeadLetterConfig{Attempts: 3}), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) error {
		if ev.Body.Seq == 2 {
			good.Add(1)
			return nil
		}
		mu.Lock()
		counts = append(counts, ev.Delivery.DeliveryCount)
		redelivered = append(redelivered, ev.Delivery.Redelivered)
		mu.Unlock()
		return dispytch.Permanent(errors.New("cannot handle this one"))
	})
	start(t, l)
	adm := adminClient(t, c)
	eventually(t, 60*time.Second, "commit past the failed record and the good one", func() bool {
		return committed(t, adm, group, topic)[0] == 2
	})
	if good.Load() != 1 {
		t.Fatalf("good record handled %d times", good.Load())
	}
	if s := l.Stats(); s.DeadLetterDropped != 1 || s.DeadLettered != 0 {
		t.Fatalf("listener stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(counts) != "[1 2 3]" || fmt.Sprint(redelivered) != "[false true true]" {
		t.Fatalf("delivery counts %v, redelivered %v; want [1 2 3], [false true true]", counts, redelivered)
	}
}
