package redis_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/redis"
)

// startCluster starts a three-master Redis Cluster on free ports (no
// replicas) and returns its addresses; it is shut down with the test.
func startCluster(t *testing.T) []string {
	t.Helper()
	bin := testenv.Getenv("DISPYTCH_REDIS_SERVER", "/usr/bin/redis-server")
	if _, err := os.Stat(bin); err != nil {
		bin = testenv.RequireCommand(t, "redis-server")
	}
	cli := testenv.RequireCommand(t, "redis-cli")
	var addrs []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		dir := t.TempDir()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s did not start", addr)
			}
		}
		addrs = append(addrs, addr)
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Wait until every node sees the cluster as ok.
	for _, a := range addrs {
		rc := goredis.NewClient(&goredis.Options{Addr: a})
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			info, _ := rc.ClusterInfo(context.Background()).Result()
			if strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				rc.Close()
				t.Fatalf("cluster not ok on %s: %s", a, info)
			}
		}
		rc.Close()
	}
	return addrs
}

// The conformance suite on a Redis Cluster the test starts: the
// subscription's streams spread over the three masters' slots, so
// XREADGROUP goes out per slot and the pattern SCAN runs on every master.
func TestConformanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	addrs := strings.Split(os.Getenv("DISPYTCH_CONFORMANCE_REDIS_CLUSTER"), ",")
	if addrs[0] == "" {
		addrs = startCluster(t)
	}
	backendtest.Run(t, backendtest.Backend{
		Name: "redis-cluster",
		New: func(t testing.TB) (backend.Producer, backend.Consumer) {
			c := newClient(t, redis.Addrs(addrs...), redis.MinIdle(2*time.Second), redis.StreamRefresh(200*time.Millisecond))
			if _, ok := c.Redis().(*goredis.ClusterClient); !ok {
				t.Fatalf("a %T, not a cluster client", c.Redis())
			}
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
		},
		Env: []string{"DISPYTCH_CONFORMANCE_REDIS_CLUSTER=" + strings.Join(addrs, ",")},
	})
}
