package compare

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/redis"
)

// RedisDB is the database the Redis case uses, so that its streams
// (Dispytch's is "user_events") stay apart from anything else on the
// server; every run deletes what it wrote.
const RedisDB = 13

// RedisBatch is the pipeline size of the raw publisher, the size of
// Dispytch's EmitAsync pipelines; RedisPipelines how many are in flight
// at once on both. RedisRead is the XREADGROUP COUNT of the raw consumer
// and of Dispytch's (redis.DefaultReadCount).
const (
	RedisBatch     = 512
	RedisPipelines = 4
	RedisRead      = redis.DefaultReadCount
)

// RedisAddr is the Redis of the case: DISPYTCH_REDIS_ADDR, default the
// local one.
func RedisAddr() string {
	if a := os.Getenv("DISPYTCH_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func pingRedis(addr string) error {
	rc := goredis.NewClient(&goredis.Options{Addr: addr, DB: RedisDB, MaxRetries: -1, DialTimeout: 2 * time.Second})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return rc.Ping(ctx).Err()
}

func redisRaw() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: RedisAddr(), DB: RedisDB})
}

func redisCleanup(keys ...string) {
	rc := redisRaw()
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc.Del(ctx, keys...)
}

// dispytchRedis: redis.Client defaults (Streams; EmitAsync pipelines of up
// to 512, four in flight; XREADGROUP COUNT 128; acks batched) and a
// listener at Concurrency 64 (or -concurrency).
func dispytchRedis(ctx context.Context, env *runEnv) (*system, error) {
	group := "bench-dispytch-" + env.spec.RunID
	cli, err := redis.New("", redis.Addrs(RedisAddr()), redis.DB(RedisDB), redis.WithLogger(quietLog()),
		redis.BlockTime(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	redisCleanup(Topic, group+".dlq")
	opts := []dispytch.ListenerOption{dispytch.ConsumerGroup(group)}
	if env.spec.Concurrency > 0 {
		opts = append(opts, dispytch.Concurrency(env.spec.Concurrency))
	}
	cons := newListenerConsumer(cli, opts...)
	closeAll := func() {
		_ = cli.Close(context.Background())
		redisCleanup(Topic, group+".dlq")
	}
	// The group must exist before the publish phase (it starts at the
	// first entry anyway; this also creates the stream).
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

// rawRedisPublisher pipelines XADDs of the pre-encoded envelopes (field
// "data" alone), RedisBatch a pipeline, RedisPipelines in flight.
type rawRedisPublisher struct {
	// fields: as a user would write what Dispytch writes: encoding/json of
	// the envelope with a fresh UUID per event, and the id, type and
	// content-type fields next to it (go-redis-encoding-fields).
	fields  bool
	rc      *goredis.Client
	stream  string
	msgs    *Messages
	batch   []int
	slots   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error
	pending int
}

func (p *rawRedisPublisher) send(ctx context.Context, seq int) error {
	p.batch = append(p.batch, seq)
	if len(p.batch) >= RedisBatch {
		return p.exec(ctx)
	}
	return p.failed()
}

func (p *rawRedisPublisher) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *rawRedisPublisher) exec(ctx context.Context) error {
	if len(p.batch) == 0 {
		return p.failed()
	}
	seqs := p.batch
	p.batch = make([]int, 0, RedisBatch)
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.slots; p.wg.Done() }()
		pipe := p.rc.Pipeline()
		for _, s := range seqs {
			if !p.fields {
				pipe.XAdd(ctx, &goredis.XAddArgs{Stream: p.stream, Values: []any{"data", p.msgs.Wire[s]}})
				continue
			}
			id := backend.NewUUID()
			b, err := json.Marshal(Envelope{ID: id, Type: EventType, Body: p.msgs.Events[s], Timestamp: time.Now().UnixMilli()})
			if err != nil {
				p.mu.Lock()
				p.err = errors.Join(p.err, err)
				p.mu.Unlock()
				return
			}
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: p.stream, Values: []any{"id", id, "type", EventType, "content-type", "application/json", "data", b}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			p.mu.Lock()
			p.err = errors.Join(p.err, err)
			p.mu.Unlock()
		}
	}()
	return p.failed()
}

func (p *rawRedisPublisher) flush(ctx context.Context) error {
	if err := p.exec(ctx); err != nil {
		return err
	}
	p.wg.Wait()
	return p.failed()
}

// rawRedisConsumer: one goroutine: XREADGROUP COUNT RedisRead BLOCK 100ms,
// decode each entry, then one XACK of the batch's IDs.
type rawRedisConsumer struct {
	rc     *goredis.Client
	stream string
	group  string
	cancel context.CancelFunc
	done   chan error
}

func (c *rawRedisConsumer) start(ctx context.Context, h func(seq int64)) error {
	ctx, c.cancel = context.WithCancel(ctx)
	c.done = make(chan error, 1)
	go func() {
		var loopErr error
		ids := make([]string, 0, RedisRead)
		for ctx.Err() == nil {
			res, err := c.rc.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: c.group, Consumer: "raw",
				Streams: []string{c.stream, ">"}, Count: RedisRead, Block: 100 * time.Millisecond}).Result()
			if err != nil {
				if !errors.Is(err, goredis.Nil) && ctx.Err() == nil {
					loopErr = errors.Join(loopErr, err)
				}
				continue
			}
			for _, st := range res {
				ids = ids[:0]
				for _, m := range st.Messages {
					data, _ := m.Values["data"].(string)
					seq, err := DecodeSeq([]byte(data))
					if err != nil {
						loopErr = errors.Join(loopErr, err)
					} else {
						h(seq)
					}
					ids = append(ids, m.ID)
				}
				if len(ids) > 0 {
					if err := c.rc.XAck(context.Background(), st.Stream, c.group, ids...).Err(); err != nil {
						loopErr = errors.Join(loopErr, err)
					}
				}
			}
		}
		c.done <- loopErr
	}()
	return nil
}

func (c *rawRedisConsumer) stop() error {
	c.cancel()
	return <-c.done
}

// rawRedis is go-redis without a framework: pipelined XADD (batches of
// RedisBatch, RedisPipelines in flight) and an XREADGROUP/XACK loop.
func rawRedis(ctx context.Context, env *runEnv) (*system, error) {
	stream := "bench-raw-" + env.spec.RunID
	group := "bench"
	prc, crc := redisRaw(), redisRaw()
	closeAll := func() {
		redisCleanup(stream)
		prc.Close()
		crc.Close()
	}
	if err := prc.XGroupCreateMkStream(ctx, stream, group, "0").Err(); err != nil {
		closeAll()
		return nil, err
	}
	return &system{
		pub: &rawRedisPublisher{fields: env.spec.Contender == "go-redis-encoding-fields", rc: prc, stream: stream, msgs: env.msgs, batch: make([]int, 0, RedisBatch),
			slots: make(chan struct{}, RedisPipelines)},
		cons:       &rawRedisConsumer{rc: crc, stream: stream, group: group},
		publishers: 1,
		close:      closeAll,
	}, nil
}

// watermillRedis is watermill-redisstream at its defaults: a publisher
// whose Publish waits for its XADD, a consumer group subscriber (from the
// stream's start), a Router; with concurrent, -publishers goroutines share
// the publisher.
func watermillRedis(concurrent bool) builder {
	return func(ctx context.Context, env *runEnv) (*system, error) {
		topic := "bench-wm-" + env.spec.RunID
		prc, crc := redisRaw(), redisRaw()
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: prc}, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{Client: crc, ConsumerGroup: "bench"}, watermill.NopLogger{})
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		var once sync.Once
		closeAll := func() {
			once.Do(func() {
				_ = pub.Close()
				_ = sub.Close()
				redisCleanup(topic)
				prc.Close()
				crc.Close()
			})
		}
		publishers := 1
		if concurrent {
			publishers = max(env.spec.Publishers, 1)
		}
		return &system{
			pub:        &watermillPublisher{pub: pub, topic: topic, msgs: env.msgs},
			cons:       &routerConsumer{sub: sub, topic: topic},
			publishers: publishers,
			close:      closeAll,
		}, nil
	}
}
