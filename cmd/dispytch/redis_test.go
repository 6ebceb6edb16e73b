package main

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/redis"
)

func redisAddr() string { return testenv.Getenv("DISPYTCH_REDIS_ADDR", "127.0.0.1:6379") }

// TestRedis runs the command against the Redis at DISPYTCH_REDIS_ADDR
// (default the local one), in Streams mode.
func TestRedis(t *testing.T) {
	testenv.RequireTCP(t, "Redis", redisAddr())
	prefix := "cli" + backend.NewUUID()[:6] + "-"
	client, err := redis.New("redis://"+redisAddr(), redis.WithLogger(quietLogger()), redis.BlockTime(100*time.Millisecond),
		redis.StreamRefresh(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(context.Background()) })
	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr()})
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rc.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rc.Del(ctx, iter.Val())
		}
		rc.Close()
	})
	e := &brokerEnv{
		name:     "redis",
		flags:    []string{"-b", "redis://" + redisAddr()},
		prefix:   prefix,
		consumer: client, producer: client, store: client,
	}
	e.untouched = func(t *testing.T) {
		// tail joined no group: the service's group is the only one, with
		// the service's consumer alone.
		ctx := context.Background()
		groups, err := rc.XInfoGroups(ctx, prefix+"jobs").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(groups) != 1 || groups[0].Name != prefix+"svc" {
			t.Errorf("groups on the stream: %+v", groups)
		}
	}
	scenario(t, e)

	t.Run("entry fields", func(t *testing.T) {
		stream := prefix + "raw"
		r := mustRun(t, "", e.args("emit", stream, "thing_happened", `{"a": 1}`, "--key", "k", "--header", "x-trace=1")...)
		id := strings.TrimSpace(r.stdout)
		msgs, err := rc.XRange(context.Background(), stream, "-", "+").Result()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("XRANGE: %v %v", msgs, err)
		}
		v := msgs[0].Values
		if v["id"] != id || v["type"] != "thing_happened" || v["key"] != "k" || v["h:x-trace"] != "1" {
			t.Errorf("fields %v", v)
		}
	})
	t.Run("pubsub tail", func(t *testing.T) {
		ch := prefix + "ps.one"
		url := "redis://" + redisAddr() + "?mode=pubsub"
		tail := start(t, "dispytch: tailing", "tail", "-b", url, prefix+"ps.{x}", "--count", "1")
		tail.waitReady(t)
		mustRun(t, "", "emit", "-b", url, ch, "ping", `{"n": 1}`)
		tail.wait(t, 30*time.Second)
		if out := tail.stdout.String(); tail.exitCode != 0 || !strings.Contains(out, "ping") || !strings.Contains(out, ch) {
			t.Errorf("tail: exit %d, printed %q, stderr %s", tail.exitCode, out, tail.stderr.String())
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		r := runBin(t, "", nil, "emit", "-b", "redis://nobody-"+prefix+":wrong-password@"+redisAddr(), "a", "b", "{}")
		if r.code != 1 || strings.Contains(r.stderr, "wrong-password") || !strings.Contains(r.stderr, "WRONGPASS") {
			t.Errorf("wrong password: %d %q", r.code, r.stderr)
		}
	})
}
