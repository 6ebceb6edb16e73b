package main

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/internal/testenv"
)

// TestRun runs the example end to end against the local Redis, as
// `go run ./examples/redis` does, on database 12, then deletes its keys.
func TestRun(t *testing.T) {
	addr := testenv.Getenv("DISPYTCH_REDIS_ADDR", "127.0.0.1:6379")
	testenv.RequireTCP(t, "Redis", addr)
	t.Cleanup(func() {
		rc := goredis.NewClient(&goredis.Options{Addr: addr, DB: 12})
		defer rc.Close()
		rc.Del(context.Background(), "user_events", "quickstart.dlq")
	})
	if err := run("redis://" + addr + "/12"); err != nil {
		t.Fatal(err)
	}
}
