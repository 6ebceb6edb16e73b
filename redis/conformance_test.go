package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	"github.com/dispytch/dispytch-go/redis"
)

// deleteGroup removes the keys of a conformance test: the suite names its
// topics "bt.<id>.<base>.<n>" and groups "bt_<id>_<base>_<n>".
func deleteGroup(group string) {
	rest := strings.TrimPrefix(group, "bt_")
	id, rest, _ := strings.Cut(rest, "_")
	i := strings.LastIndexByte(rest, '_')
	if i < 0 {
		return
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc.Del(ctx, group+".dlq")
	iter := rc.Scan(ctx, 0, "bt."+id+"."+rest[:i]+"."+rest[i+1:]+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rc.Del(ctx, iter.Val())
	}
}

// cutConnections kills, with CLIENT KILL, every connection of the clients
// named name: the tests' own, not the other users of the shared Redis.
func cutConnections(t testing.TB, name string) {
	rc := goredis.NewClient(&goredis.Options{Addr: addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := rc.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name="+name+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if err := rc.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err == nil {
					n++
				}
			}
		}
	}
	if n == 0 {
		t.Fatalf("no connection named %s to cut", name)
	}
}

func TestConformance(t *testing.T) {
	requireRedis(t)
	name := "dispytch-conformance-" + strings.ReplaceAll(uniq(t), ".", "-")
	backendtest.Run(t, backendtest.Backend{
		Name: "redis",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			c := newClient(t, redis.MinIdle(2*time.Second), redis.StreamRefresh(200*time.Millisecond),
				redis.ClientOptions(func(o *goredis.UniversalOptions) { o.ClientName = name }))
			return c, c
		},
		Features: backendtest.Features{
			Persistent:        true,
			ConsumerGroups:    true,
			OrderPerKey:       true,
			NewTopics:         true,
			DeadLetterStore:   true,
			Subprocess:        true,
			DelayedRedelivery: true,
			CutConnections:    func(t testing.TB) { cutConnections(t, name) },
		},
		DeleteGroup: deleteGroup,
	})
}

// In PubSub mode: no persistence, no competing consumers; patterns pick
// up new channels by themselves; dead letters go to streams, so the
// dead-letter store works. The suite checks keys and headers, which the
// bare (Python) form does not carry: this run uses PubSubHeaders; the
// Python form has its own tests (python_test.go). Order per key holds on
// one subscriber since the key travels in the frame.
func TestConformancePubSub(t *testing.T) {
	requireRedis(t)
	name := "dispytch-conformance-ps-" + strings.ReplaceAll(uniq(t), ".", "-")
	backendtest.Run(t, backendtest.Backend{
		Name: "redis-pubsub",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			c := newClient(t, redis.WithMode(redis.PubSub), redis.PubSubHeaders(),
				redis.ClientOptions(func(o *goredis.UniversalOptions) { o.ClientName = name }))
			return c, c
		},
		Features: backendtest.Features{
			OrderPerKey:     true,
			NewTopics:       true,
			DeadLetterStore: true,
			CutConnections:  func(t testing.TB) { cutConnections(t, name) },
		},
		DeleteGroup: deleteGroup,
	})
}
