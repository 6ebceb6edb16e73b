package compare

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/memory"
)

// quietLog discards everything: no contender pays for logging.
func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Service is the dependency Dispytch handlers receive through DI.
type Service struct{ n atomic.Int64 }

// Handled counts a handled event.
func (s *Service) Handled() { s.n.Add(1) }

// emitPublisher publishes with a Dispytch emitter: Emit, or EmitAsync
// when async is set (then flush waits for every callback).
type emitPublisher struct {
	em    *dispytch.Emitter
	msgs  *Messages
	async bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func (p *emitPublisher) send(ctx context.Context, seq int) error {
	if !p.async {
		return p.em.Emit(ctx, p.msgs.Events[seq])
	}
	p.wg.Add(1)
	p.em.EmitAsync(ctx, p.msgs.Events[seq], func(err error) {
		if err != nil {
			p.mu.Lock()
			p.err = errors.Join(p.err, err)
			p.mu.Unlock()
		}
		p.wg.Done()
	})
	return nil
}

func (p *emitPublisher) flush(context.Context) error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.err
	p.err = nil
	return err
}

// listenerConsumer runs a Dispytch listener whose handler takes the typed,
// validated event and a *Service through DI.
type listenerConsumer struct {
	// plain makes the handler take Event[PlainUserEvent]: no validation.
	plain       bool
	newListener func() *dispytch.Listener
	l           *dispytch.Listener
	cancel      context.CancelFunc
	errc        chan error
}

func newListenerConsumer(c backend.Consumer, opts ...dispytch.ListenerOption) *listenerConsumer {
	svc := &Service{}
	lc := &listenerConsumer{}
	lc.newListener = func() *dispytch.Listener {
		opts := append([]dispytch.ListenerOption{dispytch.WithLogger(quietLog()),
			dispytch.Provide(func() *Service { return svc })}, opts...)
		return dispytch.NewListener(c, opts...)
	}
	return lc
}

func (c *listenerConsumer) start(ctx context.Context, h func(seq int64)) error {
	l := c.newListener()
	// Handle1: the typed path users take for a handler with one injected
	// dependency.
	if c.plain {
		dispytch.Handle1(l, Topic, EventType, func(_ context.Context, ev dispytch.Event[PlainUserEvent], svc *Service) error {
			svc.Handled()
			h(ev.Body.Seq)
			return nil
		})
	} else {
		dispytch.Handle1(l, Topic, EventType, func(_ context.Context, ev dispytch.Event[UserEvent], svc *Service) error {
			svc.Handled()
			h(ev.Body.Seq)
			return nil
		})
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.errc = make(chan error, 1)
	c.l = l
	go func() { c.errc <- l.Run(ctx) }()
	select {
	case <-l.Ready():
		return nil
	case err := <-c.errc:
		c.errc <- err
		if err == nil {
			err = errors.New("listener stopped before it was ready")
		}
		return err
	}
}

func (c *listenerConsumer) stop() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	return <-c.errc
}

func (c *listenerConsumer) inFlight() int64 {
	if c.l == nil {
		return 0
	}
	return c.l.Stats().InFlight
}

// declareOnly runs the listener until it is ready and stops it: brokers
// whose queues the listener declares need them before the publish phase.
func (c *listenerConsumer) declareOnly(ctx context.Context) error {
	if err := c.start(ctx, func(int64) {}); err != nil {
		return err
	}
	err := c.stop()
	c.cancel = nil
	return err
}

// dispytchMemory is the full Dispytch pipeline on the memory broker.
func dispytchMemory(_ context.Context, env *runEnv) (*system, error) {
	broker := memory.New(memory.Capacity(max(env.spec.N+env.spec.LatN, 1<<20)))
	cons := newListenerConsumer(broker, dispytch.ConsumerGroup("bench"), dispytch.Concurrency(env.concurrency()))
	cons.plain = env.spec.Contender == "dispytch-novalidate"
	return &system{
		pub:        &emitPublisher{em: dispytch.NewEmitter(broker), msgs: env.msgs},
		cons:       cons,
		publishers: 1,
		inFlight:   cons.inFlight,
		extra: func() []string {
			if gs, ok := broker.GroupStats("bench"); ok && (gs.Ready > 0 || gs.Unacked > 0) {
				return []string{"memory group left non-empty"}
			}
			return nil
		},
		close: func() { _ = broker.Close(context.Background()) },
	}, nil
}

// watermillPublisher publishes the pre-generated wire bytes as Watermill
// messages, each with a fresh Watermill UUID, one Publish call per message.
type watermillPublisher struct {
	pub   message.Publisher
	topic string
	msgs  *Messages
}

func (p *watermillPublisher) send(_ context.Context, seq int) error {
	return p.pub.Publish(p.topic, message.NewMessage(watermill.NewUUID(), p.msgs.Wire[seq]))
}

func (p *watermillPublisher) flush(context.Context) error { return nil }

// routerConsumer is a Watermill Router with one consumer handler that
// json.Unmarshals the payload; the router acks when it returns nil.
type routerConsumer struct {
	sub    message.Subscriber
	topic  string
	router *message.Router
	done   chan error
}

func (c *routerConsumer) start(ctx context.Context, h func(seq int64)) error {
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	r.AddConsumerHandler("bench", c.topic, c.sub, func(m *message.Message) error {
		seq, err := DecodeSeq(m.Payload)
		if err != nil {
			return err
		}
		h(seq)
		return nil
	})
	c.router = r
	c.done = make(chan error, 1)
	go func() { c.done <- r.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-r.Running():
		return nil
	case err := <-c.done:
		return errors.Join(errors.New("router stopped"), err)
	}
}

func (c *routerConsumer) stop() error {
	if c.router == nil {
		return nil
	}
	err := c.router.Close()
	return errors.Join(err, <-c.done)
}

// watermillGoChannel is Watermill's GoChannel Pub/Sub with a Router, at
// GoChannel's defaults. With all messages queued first it must be
// Persistent: a non-persistent GoChannel drops messages without subscribers.
func watermillGoChannel(_ context.Context, env *runEnv) (*system, error) {
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: env.spec.Mode != ModeTogether}, watermill.NopLogger{})
	return &system{
		pub:        &watermillPublisher{pub: ps, topic: Topic, msgs: env.msgs},
		cons:       &routerConsumer{sub: ps, topic: Topic},
		publishers: 1,
		close:      func() { _ = ps.Close() },
	}, nil
}

// bareLoop is the physical limit: a buffered channel of the wire bytes
// feeding GOMAXPROCS workers that json.Unmarshal each into an Envelope.
type bareLoop struct {
	ch   chan []byte
	msgs *Messages
	wg   sync.WaitGroup
}

func (b *bareLoop) send(_ context.Context, seq int) error {
	b.ch <- b.msgs.Wire[seq]
	return nil
}

func (b *bareLoop) flush(context.Context) error { return nil }

func (b *bareLoop) start(_ context.Context, h func(seq int64)) error {
	for range runtime.GOMAXPROCS(0) {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for m := range b.ch {
				seq, err := DecodeSeq(m)
				if err != nil {
					panic(err)
				}
				h(seq)
			}
		}()
	}
	return nil
}

func (b *bareLoop) stop() error {
	close(b.ch)
	b.wg.Wait()
	return nil
}

func bare(_ context.Context, env *runEnv) (*system, error) {
	size := 1024
	if env.spec.Mode != ModeTogether {
		size = env.spec.N + env.spec.LatN
	}
	b := &bareLoop{ch: make(chan []byte, size), msgs: env.msgs}
	return &system{pub: b, cons: b, publishers: 1}, nil
}
