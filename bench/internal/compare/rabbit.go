package compare

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

// AMQPWindow is the confirm window of the raw publisher and of Dispytch's
// client (rabbitmq.ConfirmWindow), and AMQPPrefetch the consumer prefetch of
// the raw consumer, of Dispytch's client and of the tuned Watermill
// subscriber.
const (
	AMQPWindow   = 256
	AMQPPrefetch = 256
)

// amqpCleanup deletes queues and exchanges a run declared.
func amqpCleanup(url string, queues, exchanges []string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for _, q := range queues {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
	for _, x := range exchanges {
		_ = ch.ExchangeDelete(x, false, false)
	}
}

// dispytchRabbit: rabbitmq.Client with ConfirmWindow(256) and
// Prefetch(256), EmitAsync, and a listener at its default Concurrency(64).
func dispytchRabbit(ctx context.Context, env *runEnv) (*system, error) {
	x := "bench-" + env.spec.RunID
	group := "bench-dispytch-" + env.spec.RunID
	cli, err := rabbitmq.Dial(ctx, env.spec.AMQPURL, rabbitmq.Exchanges(x), rabbitmq.ConfirmWindow(AMQPWindow),
		rabbitmq.Prefetch(AMQPPrefetch), rabbitmq.WithLogger(quietLog()))
	if err != nil {
		return nil, err
	}
	opts := []dispytch.ListenerOption{dispytch.ConsumerGroup(group)}
	if env.spec.Concurrency > 0 {
		opts = append(opts, dispytch.Concurrency(env.spec.Concurrency))
	}
	cons := newListenerConsumer(cli, opts...)
	closeAll := func() {
		_ = cli.Close(context.Background())
		amqpCleanup(env.spec.AMQPURL, []string{group, group + ".dlq"}, []string{x, x + ".dlx"})
	}
	// The listener declares and binds the group queue: do it before the
	// publish phase, or every message would be unroutable.
	if err := cons.declareOnly(ctx); err != nil {
		closeAll()
		return nil, fmt.Errorf("declare topology: %w", err)
	}
	return &system{
		pub:        &emitPublisher{em: dispytch.NewEmitter(cli), msgs: env.msgs, async: true},
		cons:       cons,
		publishers: 1,
		inFlight:   cons.inFlight,
		close:      closeAll,
	}, nil
}

// rawAMQPPublisher publishes on one channel in confirm mode with at most
// AMQPWindow messages awaiting their confirm: persistent and mandatory,
// as Dispytch's client publishes.
type rawAMQPPublisher struct {
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	out      int
	x        string
	msgs     *Messages
}

func (p *rawAMQPPublisher) send(ctx context.Context, seq int) error {
	if p.out == AMQPWindow {
		if err := p.awaitOne(ctx); err != nil {
			return err
		}
	}
	err := p.ch.PublishWithContext(ctx, p.x, Topic, true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: p.msgs.Wire[seq],
	})
	if err != nil {
		return err
	}
	p.out++
	return nil
}

func (p *rawAMQPPublisher) awaitOne(ctx context.Context) error {
	select {
	case c, ok := <-p.confirms:
		if !ok {
			return amqp.ErrClosed
		}
		if !c.Ack {
			return errors.New("publish nacked")
		}
		p.out--
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *rawAMQPPublisher) flush(ctx context.Context) error {
	for p.out > 0 {
		if err := p.awaitOne(ctx); err != nil {
			return err
		}
	}
	return nil
}

// rawAMQPConsumer consumes with manual acks at AMQPPrefetch: decode, then
// ack, one delivery at a time.
type rawAMQPConsumer struct {
	conn *amqp.Connection
	q    string
	ch   *amqp.Channel
	done chan error
}

func (c *rawAMQPConsumer) start(_ context.Context, h func(seq int64)) error {
	ch, err := c.conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(AMQPPrefetch, 0, false); err != nil {
		return err
	}
	ds, err := ch.Consume(c.q, "bench", false, false, false, false, nil)
	if err != nil {
		return err
	}
	c.ch = ch
	c.done = make(chan error, 1)
	go func() {
		var loopErr error
		for d := range ds {
			seq, err := DecodeSeq(d.Body)
			if err != nil {
				loopErr = errors.Join(loopErr, err)
				_ = d.Nack(false, false)
				continue
			}
			h(seq)
			if err := d.Ack(false); err != nil {
				loopErr = errors.Join(loopErr, err)
			}
		}
		c.done <- loopErr
	}()
	return nil
}

func (c *rawAMQPConsumer) stop() error {
	if err := c.ch.Cancel("bench", false); err != nil {
		return err
	}
	err := <-c.done
	return errors.Join(err, c.ch.Close())
}

// rawAMQP is amqp091-go without a framework: a durable topic exchange and a
// durable classic queue, windowed confirms of 256 on one channel, prefetch
// 256 with manual acks, a connection for each side.
func rawAMQP(ctx context.Context, env *runEnv) (*system, error) {
	x := "bench-" + env.spec.RunID
	q := "bench-raw-" + env.spec.RunID
	pconn, err := amqp.Dial(env.spec.AMQPURL)
	if err != nil {
		return nil, err
	}
	cconn, err := amqp.Dial(env.spec.AMQPURL)
	if err != nil {
		pconn.Close()
		return nil, err
	}
	closeAll := func() {
		pconn.Close()
		cconn.Close()
		amqpCleanup(env.spec.AMQPURL, []string{q}, []string{x})
	}
	ch, err := pconn.Channel()
	if err == nil {
		err = ch.ExchangeDeclare(x, "topic", true, false, false, false, nil)
	}
	if err == nil {
		_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	}
	if err == nil {
		err = ch.QueueBind(q, Topic, x, false, nil)
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	return &system{
		pub: &rawAMQPPublisher{ch: ch, confirms: ch.NotifyPublish(make(chan amqp.Confirmation, AMQPWindow+1)),
			x: x, msgs: env.msgs},
		cons:       &rawAMQPConsumer{conn: cconn, q: q},
		publishers: 1,
		close:      closeAll,
	}, nil
}

// watermillAMQP is watermill-amqp v3 with NewDurableQueueConfig: at its
// defaults (a channel opened and closed per Publish, no publisher
// confirms, prefetch 1), or tuned (a pool of Publishers channels with
// publisher confirms, used by as many concurrent publishers, prefetch 256).
func watermillAMQP(tuned bool) builder {
	return func(ctx context.Context, env *runEnv) (*system, error) {
		topic := "bench-wm-" + env.spec.RunID
		cfg := wmamqp.NewDurableQueueConfig(env.spec.AMQPURL)
		publishers := 1
		if tuned {
			publishers = max(env.spec.Publishers, 1)
			cfg.Publish.ChannelPoolSize = publishers
			cfg.Publish.ConfirmDelivery = true
			cfg.Consume.Qos.PrefetchCount = AMQPPrefetch
		}
		pub, err := wmamqp.NewPublisher(cfg, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		sub, err := wmamqp.NewSubscriber(cfg, watermill.NopLogger{})
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		var once sync.Once
		closeAll := func() {
			once.Do(func() {
				_ = pub.Close()
				_ = sub.Close()
				amqpCleanup(env.spec.AMQPURL, []string{topic}, nil)
			})
		}
		// Declare the queue before the publish phase: the default exchange
		// drops messages for a queue that does not exist yet.
		if err := sub.SubscribeInitialize(topic); err != nil {
			closeAll()
			return nil, err
		}
		return &system{
			pub:        &watermillPublisher{pub: pub, topic: topic, msgs: env.msgs},
			cons:       &routerConsumer{sub: sub, topic: topic},
			publishers: publishers,
			close:      closeAll,
		}, nil
	}
}
