package compare

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	dnats "github.com/dispytch/dispytch-go/nats"
)

// NATSWindow is the async publish window of the raw publisher and of
// Dispytch's client (nats.PublishWindow); NATSBatch the pull batch and
// NATSMaxAckPending the consumers' MaxAckPending, of both.
const (
	NATSWindow        = 1024
	NATSBatch         = 256
	NATSMaxAckPending = 1024
)

// natsURL is the nats-server of the NATS case (DISPYTCH_NATS_URL).
func natsURL() string {
	if u := os.Getenv("DISPYTCH_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// natsStream names a run's stream: NATS names cannot hold '.'.
func natsStream(runID string) string {
	return "BENCH_" + strings.NewReplacer("-", "_", ".", "_").Replace(runID)
}

// natsPrepare connects and deletes streams an interrupted run left on the
// case's subject (streams may not share subjects).
func natsPrepare(ctx context.Context, opts ...jetstream.JetStreamOpt) (*natsgo.Conn, jetstream.JetStream, error) {
	nc, err := natsgo.Connect(natsURL(), natsgo.Timeout(3*time.Second))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, append([]jetstream.JetStreamOpt{jetstream.WithPublishAsyncMaxPending(NATSWindow)}, opts...)...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if name, err := js.StreamNameBySubject(ctx, Topic); err == nil && (strings.HasPrefix(name, "BENCH_") || name == Topic) {
		_ = js.DeleteStream(ctx, name)
	}
	return nc, js, nil
}

func natsDelete(js jetstream.JetStream, streams ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range streams {
		_ = js.DeleteStream(ctx, s)
	}
}

// dispytchNATS: nats.Client with PublishWindow(1024), PullBatch(256) and
// MaxAckPending(1024), EmitAsync, and a listener at its default
// Concurrency(64).
func dispytchNATS(ctx context.Context, env *runEnv) (*system, error) {
	nc, js, err := natsPrepare(ctx)
	if err != nil {
		return nil, err
	}
	stream := natsStream(env.spec.RunID)
	cli, err := dnats.New(natsURL(), dnats.Stream(stream), dnats.StreamSubjects(Topic), dnats.PublishWindow(NATSWindow),
		dnats.PullBatch(NATSBatch), dnats.MaxAckPending(NATSMaxAckPending), dnats.WithLogger(quietLog()))
	if err != nil {
		nc.Close()
		return nil, err
	}
	opts := []dispytch.ListenerOption{dispytch.ConsumerGroup("bench-dispytch")}
	if env.spec.Concurrency > 0 {
		opts = append(opts, dispytch.Concurrency(env.spec.Concurrency))
	}
	cons := newListenerConsumer(cli, opts...)
	cons.plain = env.spec.Contender == "dispytch-novalidate"
	closeAll := func() {
		_ = cli.Close(context.Background())
		natsDelete(js, stream, stream+"_DLQ")
		nc.Close()
	}
	// The group's consumer starts with what is published after it was
	// created: create it before the publish phase.
	if err := cons.declareOnly(ctx); err != nil {
		closeAll()
		return nil, err
	}
	return &system{
		pub:        &emitPublisher{em: dispytch.NewEmitter(cli), msgs: env.msgs, async: true},
		cons:       cons,
		publishers: 1,
		inFlight:   cons.inFlight,
		close:      closeAll,
	}, nil
}

// rawNATSPublisher publishes the pre-encoded envelopes with PublishMsgAsync,
// at most NATSWindow awaiting their ack (the JetStream context's limit),
// with Dispytch's four headers when headers is set; failures reach the
// context's async error handler (no goroutine per message).
type rawNATSPublisher struct {
	js      jetstream.JetStream
	msgs    *Messages
	headers bool
	mu      sync.Mutex
	errs    []error
}

func (p *rawNATSPublisher) send(_ context.Context, seq int) error {
	m := &natsgo.Msg{Subject: Topic, Data: p.msgs.Wire[seq]}
	if p.headers {
		id := backend.NewUUID()
		m.Header = natsgo.Header{
			"content-type": {"application/json"}, "dispytch-event-id": {id},
			"dispytch-event-type": {EventType}, jetstream.MsgIDHeader: {id},
		}
	}
	_, err := p.js.PublishMsgAsync(m)
	return err
}

// failed is the JetStream context's async error handler.
func (p *rawNATSPublisher) failed(_ jetstream.JetStream, _ *natsgo.Msg, err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

func (p *rawNATSPublisher) flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}

// rawNATSConsumer pulls from a durable consumer with explicit acks
// (Messages, PullMaxMessages(NATSBatch)) in one goroutine: decode, ack.
type rawNATSConsumer struct {
	cons jetstream.Consumer
	it   jetstream.MessagesContext
	done chan error
}

func (c *rawNATSConsumer) start(_ context.Context, h func(seq int64)) error {
	it, err := c.cons.Messages(jetstream.PullMaxMessages(NATSBatch))
	if err != nil {
		return err
	}
	c.it = it
	c.done = make(chan error, 1)
	go func() {
		var loopErr error
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					loopErr = errors.Join(loopErr, err)
				}
				break
			}
			seq, err := DecodeSeq(msg.Data())
			if err != nil {
				loopErr = errors.Join(loopErr, err)
				_ = msg.Term()
				continue
			}
			h(seq)
			if err := msg.Ack(); err != nil {
				loopErr = errors.Join(loopErr, err)
			}
		}
		c.done <- loopErr
	}()
	return nil
}

func (c *rawNATSConsumer) stop() error {
	c.it.Stop()
	return <-c.done
}

// rawNATS is nats.go's jetstream package without a framework: a stream
// with file storage, async publish in a window of 1024, a durable pull
// consumer (explicit acks, MaxAckPending 1024) read in batches of 256 by one
// goroutine that decodes and acks.
func rawNATS(ctx context.Context, env *runEnv) (*system, error) {
	pub := &rawNATSPublisher{msgs: env.msgs, headers: env.spec.Contender == "nats.go-headers"}
	nc, js, err := natsPrepare(ctx, jetstream.WithPublishAsyncErrHandler(pub.failed))
	if err != nil {
		return nil, err
	}
	cnc, err := natsgo.Connect(natsURL())
	if err != nil {
		nc.Close()
		return nil, err
	}
	stream := natsStream(env.spec.RunID)
	closeAll := func() {
		natsDelete(js, stream)
		cnc.Close()
		nc.Close()
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{Topic}, Storage: jetstream.FileStorage}); err != nil {
		closeAll()
		return nil, err
	}
	cjs, err := jetstream.New(cnc)
	if err != nil {
		closeAll()
		return nil, err
	}
	pub.js = js
	cons, err := cjs.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "bench-raw", AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: NATSMaxAckPending, AckWait: 30 * time.Second})
	if err != nil {
		closeAll()
		return nil, err
	}
	return &system{
		pub:        pub,
		cons:       &rawNATSConsumer{cons: cons},
		publishers: 1,
		close:      closeAll,
	}, nil
}

// watermillNATS is watermill-nats v2's jetstream package at its defaults:
// a synchronous PublishMsg per message; a subscriber with an ephemeral
// consumer (explicit acks, the Consume callback handing one message at a
// time to the Router, a synchronous double ack); the stream named after
// the topic.
func watermillNATS(ctx context.Context, env *runEnv) (*system, error) {
	nc, js, err := natsPrepare(ctx)
	if err != nil {
		return nil, err
	}
	nc.Close()
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{URL: natsURL(), Logger: watermill.NopLogger{}})
	if err != nil {
		return nil, err
	}
	sub, err := wmnats.NewSubscriber(wmnats.SubscriberConfig{URL: natsURL(), Logger: watermill.NopLogger{}})
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			_ = pub.Close()
			_ = sub.Close()
			if nc, err := natsgo.Connect(natsURL()); err == nil {
				if js, err := jetstream.New(nc); err == nil {
					natsDelete(js, Topic)
				}
				nc.Close()
			}
		})
	}
	_ = js
	if err := sub.SubscribeInitialize(Topic); err != nil {
		closeAll()
		return nil, err
	}
	return &system{
		pub:        &watermillPublisher{pub: pub, topic: Topic, msgs: env.msgs},
		cons:       &routerConsumer{sub: sub, topic: Topic},
		publishers: 1,
		close:      closeAll,
	}, nil
}
