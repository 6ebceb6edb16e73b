package compare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

// KafkaPartitions is the partition count of the benchmark topic.
const KafkaPartitions = 6

// StartKafka starts the in-process kfake cluster the Kafka cases share: one
// broker on 127.0.0.1.
func StartKafka() (*kfake.Cluster, error) {
	return kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(KafkaPartitions),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
}

// ResetKafkaTopic deletes the benchmark topic (with its records) and
// creates it again with KafkaPartitions partitions, so that every run starts
// from an empty topic.
func ResetKafkaTopic(ctx context.Context, addr string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if resp, err := adm.DeleteTopics(ctx, Topic); err != nil {
		return err
	} else if r, ok := resp[Topic]; ok && r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
		return r.Err
	}
	for {
		resp, err := adm.CreateTopics(ctx, KafkaPartitions, 1, nil, Topic)
		if err != nil {
			return err
		}
		r := resp[Topic]
		if r.Err == nil {
			return nil
		}
		if !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return r.Err
		}
		select { // deletion still in progress
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kafkaLag returns how many records of the topic the group has not
// committed.
func kafkaLag(ctx context.Context, addr, group string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return 0, err
	}
	l, ok := lags[group]
	if !ok {
		return 0, fmt.Errorf("group %s not described", group)
	}
	if l.Error() != nil {
		return 0, l.Error()
	}
	return l.Lag.Total(), nil
}

// commitCheck is an extra note: the group's lag after the consumer
// stopped, which is 0 when every consumed offset was committed.
func commitCheck(addr, group string) func() []string {
	return func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		lag, err := kafkaLag(ctx, addr, group)
		if err != nil {
			return []string{"lag check: " + err.Error()}
		}
		if lag != 0 {
			return []string{fmt.Sprintf("uncommitted lag %d after stop", lag)}
		}
		return nil
	}
}

func groupName(spec Spec) string { return "bench-" + spec.Contender + "-" + spec.RunID }

// dispytchKafka: kafka.Producer with EmitAsync (franz-go batching,
// idempotent, acks=all: the package defaults), and a listener on
// kafka.Consumer with the package defaults (one record at a time per
// partition, commits every second and at shutdown).
func dispytchKafka(ctx context.Context, env *runEnv) (*system, error) {
	if err := ResetKafkaTopic(ctx, env.spec.KafkaAddr); err != nil {
		return nil, err
	}
	popts := []kafka.ProducerOption{kafka.Brokers(env.spec.KafkaAddr), kafka.WithLogger(quietLog())}
	if env.spec.Contender == "dispytch-linger5ms" {
		popts = append(popts, kafka.Linger(5*time.Millisecond))
	}
	prod, err := kafka.NewProducer(popts...)
	if err != nil {
		return nil, err
	}
	group := groupName(env.spec)
	kc, err := kafka.NewConsumer(kafka.Brokers(env.spec.KafkaAddr), kafka.WithLogger(quietLog()),
		kafka.DeadLetterWith(prod))
	if err != nil {
		return nil, err
	}
	opts := []dispytch.ListenerOption{dispytch.ConsumerGroup(group)}
	if env.spec.Concurrency > 0 {
		opts = append(opts, dispytch.Concurrency(env.spec.Concurrency))
	}
	cons := newListenerConsumer(kc, opts...)
	cons.plain = env.spec.Contender == "dispytch-novalidate"
	return &system{
		pub:        &emitPublisher{em: dispytch.NewEmitter(prod), msgs: env.msgs, async: true},
		cons:       cons,
		publishers: 1,
		inFlight:   cons.inFlight,
		extra: func() []string {
			st := kc.Stats()
			notes := commitCheck(env.spec.KafkaAddr, group)()
			if env.spec.Mode == ModeBacklog {
				notes = append(notes, fmt.Sprintf("dispytch kafka: max %d records queued per partition, %d pauses", st.MaxQueued, st.Pauses))
			}
			return notes
		},
		close: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = kc.Close(ctx)
			_ = prod.Close(ctx)
		},
	}, nil
}

// franzPublisher produces the wire bytes with kgo's asynchronous Produce.
var jsonCT = []byte("application/json")

type franzPublisher struct {
	cl      *kgo.Client
	msgs    *Messages
	encode  bool // encode each event (franz-go-encoding) instead of sending pre-encoded bytes
	headers bool // add the three headers Dispytch's records carry (franz-go-encoding-headers)
	mu      sync.Mutex
	err     error
}

func (p *franzPublisher) send(ctx context.Context, seq int) error {
	value := p.msgs.Wire[seq]
	if p.encode {
		// As a user of franz-go would: encoding/json of the envelope with
		// a fresh UUID, per event.
		b, err := json.Marshal(Envelope{ID: backend.NewUUID(), Type: EventType, Body: p.msgs.Events[seq], Timestamp: time.Now().UnixMilli()})
		if err != nil {
			return err
		}
		value = b
	}
	r := &kgo.Record{Topic: Topic, Value: value}
	if p.headers {
		r.Headers = []kgo.RecordHeader{{Key: "content-type", Value: jsonCT},
			{Key: kafka.HeaderEventID, Value: []byte(backend.NewUUID())}, {Key: kafka.HeaderEventType, Value: []byte(EventType)}}
	}
	p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			p.mu.Lock()
			p.err = errors.Join(p.err, err)
			p.mu.Unlock()
		}
	})
	return nil
}

func (p *franzPublisher) flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.err
	p.err = nil
	return err
}

// franzConsumer is a group consumer polling in a loop: decode every
// record, then commit the poll's offsets synchronously. Stopping ends the
// polling, not a commit in progress; a last commit follows.
type franzConsumer struct {
	addr, group string
	cl          *kgo.Client
	cancel      context.CancelFunc
	done        chan error
}

func (c *franzConsumer) start(ctx context.Context, h func(seq int64)) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addr), kgo.ConsumerGroup(c.group), kgo.ConsumeTopics(Topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	c.cl = cl
	pollCtx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	c.done = make(chan error, 1)
	commit := func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return cl.CommitUncommittedOffsets(cctx)
	}
	go func() {
		var loopErr error
		for {
			fs := cl.PollFetches(pollCtx)
			if fs.IsClientClosed() || pollCtx.Err() != nil {
				break
			}
			fs.EachError(func(t string, p int32, err error) {
				loopErr = errors.Join(loopErr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
			})
			fs.EachRecord(func(r *kgo.Record) {
				seq, err := DecodeSeq(r.Value)
				if err != nil {
					loopErr = errors.Join(loopErr, err)
					return
				}
				h(seq)
			})
			if err := commit(); err != nil {
				loopErr = errors.Join(loopErr, err)
			}
		}
		c.done <- errors.Join(loopErr, commit())
	}()
	return nil
}

func (c *franzConsumer) stop() error {
	c.cancel()
	err := <-c.done
	c.cl.Close()
	return err
}

// rawFranz is franz-go without a framework: batched asynchronous produce
// (defaults: idempotent, acks=all, no linger), group consume with a commit
// per poll.
func rawFranz(ctx context.Context, env *runEnv) (*system, error) {
	if err := ResetKafkaTopic(ctx, env.spec.KafkaAddr); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.spec.KafkaAddr))
	if err != nil {
		return nil, err
	}
	group := groupName(env.spec)
	return &system{
		pub: &franzPublisher{cl: cl, msgs: env.msgs, encode: strings.HasPrefix(env.spec.Contender, "franz-go-encoding"),
			headers: env.spec.Contender == "franz-go-encoding-headers"},
		cons:       &franzConsumer{addr: env.spec.KafkaAddr, group: group},
		publishers: 1,
		extra:      commitCheck(env.spec.KafkaAddr, group),
		close:      cl.Close,
	}, nil
}

// watermillKafka is watermill-kafka v3 (Sarama) with its default sync
// publisher config, and a subscriber with its default config plus
// Consumer.Offsets.Initial = OffsetOldest, behind a Router.
func watermillKafka(ctx context.Context, env *runEnv) (*system, error) {
	if err := ResetKafkaTopic(ctx, env.spec.KafkaAddr); err != nil {
		return nil, err
	}
	brokers := []string{env.spec.KafkaAddr}
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: brokers, Marshaler: wmkafka.DefaultMarshaler{}},
		watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	scfg := wmkafka.DefaultSaramaSubscriberConfig()
	scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	group := groupName(env.spec)
	sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{Brokers: brokers, Unmarshaler: wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: scfg, ConsumerGroup: group}, watermill.NopLogger{})
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	publishers := 1
	if env.spec.Contender == "watermill-kafka-concurrent" {
		publishers = max(env.spec.Publishers, 1)
	}
	return &system{
		pub:        &watermillPublisher{pub: pub, topic: Topic, msgs: env.msgs},
		cons:       &routerConsumer{sub: sub, topic: Topic},
		publishers: publishers,
		extra:      commitCheck(env.spec.KafkaAddr, group),
		close: func() {
			_ = pub.Close()
			_ = sub.Close()
		},
	}, nil
}
