package redis_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/redis"
)

// addr is the shared Redis of the tests (DISPYTCH_REDIS_ADDR).
func addr() string { return testenv.Getenv("DISPYTCH_REDIS_ADDR", "127.0.0.1:6379") }

func requireRedis(t testing.TB) {
	t.Helper()
	testenv.RequireTCP(t, "Redis", addr())
}

func testLogger() *slog.Logger {
	if os.Getenv("DISPYTCH_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// raw returns a plain go-redis client on the shared Redis.
func raw(t testing.TB) *goredis.Client {
	t.Helper()
	rc := goredis.NewClient(&goredis.Options{Addr: addr()})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// newClient returns a Client on the shared Redis, closed with the test.
func newClient(t testing.TB, opts ...redis.Option) *redis.Client {
	t.Helper()
	base := []redis.Option{redis.Addrs(addr()), redis.WithLogger(testLogger()), redis.BlockTime(100 * time.Millisecond)}
	c, err := redis.New("", append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// uniq returns a name unique to the test, for its streams and groups.
func uniq(t testing.TB) string {
	base := strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	return fmt.Sprintf("rt.%s.%d", base, time.Now().UnixNano()%1e9)
}

// cleanKeys deletes, when the test ends, the keys matching glob on the
// shared Redis.
func cleanKeys(t testing.TB, glob string) {
	t.Cleanup(func() {
		rc := goredis.NewClient(&goredis.Options{Addr: addr()})
		defer rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rc.Scan(ctx, 0, glob, 1000).Iterator()
		for iter.Next(ctx) {
			rc.Del(ctx, iter.Val())
		}
	})
}

// server is a redis-server the test starts on a free port, with the AOF
// on and fsync on every write.
type server struct {
	t     testing.TB
	bin   string
	dir   string
	port  int
	cmd   *exec.Cmd
	extra []string
	// ping checks that the server answers (default: a plain PING).
	ping func() error
}

func startServer(t testing.TB, extra ...string) *server {
	t.Helper()
	bin := testenv.Getenv("DISPYTCH_REDIS_SERVER", "/usr/bin/redis-server")
	if _, err := os.Stat(bin); err != nil {
		bin = testenv.RequireCommand(t, "redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{t: t, bin: bin, dir: t.TempDir(), port: port, extra: extra}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *server) start() {
	s.t.Helper()
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", filepath.Join(s.dir, "log")}
	s.cmd = exec.Command(s.bin, append(args, s.extra...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr(), time.Second)
		if err == nil {
			c.Close()
			if s.ping != nil {
				err = s.ping()
			} else {
				rc := goredis.NewClient(&goredis.Options{Addr: s.addr()})
				err = rc.Ping(context.Background()).Err()
				rc.Close()
				if err != nil && strings.Contains(err.Error(), "NOAUTH") {
					err = nil // it answers; the test authenticates
				}
			}
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
			s.t.Fatalf("redis-server on %s did not start: %v\n%s", s.addr(), err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL.
func (s *server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

type quietLog struct{}

func (quietLog) Printf(context.Context, string, ...interface{}) {}

func TestMain(m *testing.M) {
	if os.Getenv("DISPYTCH_TEST_LOG") != "1" {
		goredis.SetLogger(quietLog{}) // go-redis's dial-failure lines during the outage tests
	}
	os.Exit(m.Run())
}
