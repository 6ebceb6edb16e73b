package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/redis"
)

type redisBroker struct {
	client *redis.Client
	rc     goredis.UniversalClient
	pubsub bool
}

// openRedis connects to redis:// or rediss:// (TLS). The query parameter
// mode=pubsub selects pub/sub (Python Dispytch's wire); the default is
// Streams.
func openRedis(ctx context.Context, u *url.URL, b *brokerConfig) (broker, error) {
	q := u.Query()
	mode := strings.ToLower(q.Get("mode"))
	q.Del("mode")
	if mode != "" && mode != "streams" && mode != "pubsub" {
		return nil, usagef("redis URL: mode=%q: streams or pubsub", mode)
	}
	hosts := strings.Split(u.Host, ",")
	first := *u
	first.Host = hosts[0]
	first.RawQuery = q.Encode()
	if first.Scheme == "rediss" {
		first.Scheme = "redis" // TLS comes from tlsConfig, with the CLI's CA and certificate flags
	}
	var opts []redis.Option
	if len(hosts) > 1 {
		opts = append(opts, redis.Addrs(hosts...))
	}
	user, password := b.user, b.password
	if u.User != nil {
		if user == "" {
			user = u.User.Username()
		}
		if p, ok := u.User.Password(); ok && password == "" {
			password = p
		}
	}
	if user != "" || password != "" {
		opts = append(opts, redis.Auth(user, password))
	}
	tlsScheme := "redis+tcp" // tlsConfig takes a trailing "s" for TLS, and "redis" has one
	if u.Scheme == "rediss" {
		tlsScheme = "rediss"
	}
	tlsCfg, err := b.tlsConfig(tlsScheme)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		opts = append(opts, redis.TLS(tlsCfg))
	}
	if mode == "pubsub" {
		opts = append(opts, redis.WithMode(redis.PubSub))
	}
	c, err := redis.New(first.String(), opts...)
	if err != nil {
		return nil, err
	}
	// Reach Redis now, so that a wrong address or refused credentials fail
	// here with Redis's reason.
	if err := c.Redis().Ping(ctx).Err(); err != nil {
		_ = c.Close(context.Background())
		return nil, err
	}
	return &redisBroker{client: c, rc: c.Redis(), pubsub: mode == "pubsub"}, nil
}

func (r *redisBroker) producer() backend.Producer     { return r.client }
func (r *redisBroker) store() backend.DeadLetterStore { return r.client }

func (r *redisBroker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.client.Close(ctx)
}

// tail follows the matching streams with XREAD, without a consumer group
// (so nothing is acked and no group sees a new consumer), from their last
// entry (or their first); streams created later that match are followed
// from their first entry. In pub/sub mode it subscribes (PSUBSCRIBE).
func (r *redisBroker) tail(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error {
	if r.pubsub {
		return r.tailPubSub(ctx, sub, deliver, ready)
	}
	pos := map[string]string{} // stream -> the last ID seen
	var order []string
	add := func(ctx context.Context, fromStart bool) error {
		for _, p := range sub.patterns {
			iter := r.rc.ScanType(ctx, 0, redis.Glob(p), 1000, "stream").Iterator()
			for iter.Next(ctx) {
				name := iter.Val()
				if _, ok := pos[name]; ok || !sub.matches(name) {
					continue
				}
				id := "0-0"
				if !fromStart {
					last, err := r.rc.XRevRangeN(ctx, name, "+", "-", 1).Result()
					if err != nil {
						return err
					}
					if len(last) > 0 {
						id = last[0].ID
					}
				}
				pos[name] = id
				order = append(order, name)
			}
			if err := iter.Err(); err != nil {
				return err
			}
		}
		slices.Sort(order)
		return nil
	}
	if err := add(ctx, sub.fromBeginning); err != nil {
		return err
	}
	from := "their last entry"
	if sub.fromBeginning {
		from = "their first entry"
	}
	ready(fmt.Sprintf("redis streams %v from %s, and matching streams created later", slices.Clone(order), from))
	refresh := time.NewTicker(2 * time.Second)
	defer refresh.Stop()
	for ctx.Err() == nil {
		select {
		case <-refresh.C:
			if err := add(ctx, true); err != nil && ctx.Err() == nil {
				return err
			}
		default:
		}
		if len(order) == 0 {
			select {
			case <-ctx.Done():
			case <-refresh.C:
				if err := add(ctx, true); err != nil && ctx.Err() == nil {
					return err
				}
			}
			continue
		}
		args := append([]string(nil), order...)
		for _, s := range order {
			args = append(args, pos[s])
		}
		res, err := r.rc.XRead(ctx, &goredis.XReadArgs{Streams: args, Count: 256, Block: 500 * time.Millisecond}).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, st := range res {
			for _, m := range st.Messages {
				pos[st.Stream] = m.ID
				if err := deliver(redis.EntryDelivery(st.Stream, m)); err != nil {
					if errors.Is(err, errEnough) {
						return nil
					}
					return err
				}
			}
		}
	}
	return nil
}

func (r *redisBroker) tailPubSub(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error {
	globs := make([]string, 0, len(sub.patterns))
	for _, p := range sub.patterns {
		globs = append(globs, redis.Glob(p))
	}
	ps := r.rc.PSubscribe(ctx, globs...)
	defer ps.Close()
	for range globs {
		if _, err := ps.ReceiveTimeout(ctx, 10*time.Second); err != nil {
			return err
		}
	}
	ready(fmt.Sprintf("redis channels %v (pub/sub: only what is published from now on)", globs))
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	seen := map[string]bool{}
	for {
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !sub.matches(m.Channel) {
			continue
		}
		// A channel that several globs match arrives once per glob.
		key := m.Channel + "\x00" + m.Payload
		if len(globs) > 1 {
			if seen[key] {
				delete(seen, key)
				continue
			}
			seen[key] = true
		}
		if err := deliver(redis.MessageDelivery(m)); err != nil {
			if errors.Is(err, errEnough) {
				return nil
			}
			return err
		}
	}
}
