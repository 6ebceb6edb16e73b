package kafka_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// Environment of the crash test's child process.
const (
	envCrashChild   = "DISPYTCH_KAFKA_CRASH_CHILD"
	envCrashBrokers = "DISPYTCH_KAFKA_CRASH_BROKERS"
	envCrashOut     = "DISPYTCH_KAFKA_CRASH_OUT"
)

// TestCrashChild is the consumer process of TestCrashRestart. It runs only
// when re-executed by it: it handles the "crash" topic, writing one line per
// handled event to a file before the handler returns, until SIGTERM.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrashChild) != "1" {
		t.Skip("helper process of TestCrashRestart")
	}
	f, err := os.OpenFile(os.Getenv(envCrashOut), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	k, err := kafka.NewConsumer(kafka.Brokers(strings.Split(os.Getenv(envCrashBrokers), ",")...),
		kafka.ClientOptions(groupOpts()...), kafka.CommitInterval(100*time.Millisecond), kafka.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	l := dispytch.NewListener(k, dispytch.ConsumerGroup("crash-svc"), dispytch.Concurrency(8), dispytch.WithLogger(testLogger()))
	l.Handle("crash", "ev", func(ev dispytch.Event[Ev]) error {
		time.Sleep(50 * time.Microsecond)
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(f, "%s/%d\n", ev.Body.Key, ev.Body.Seq)
		return err
	})
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCrashRestart runs the consumer as a child process, kills it with
// SIGKILL mid-stream, restarts it, and checks that no event is lost: every
// event was written by one of the two processes. Kafka (kfake) stays up in
// this process throughout.
func TestCrashRestart(t *testing.T) {
	if os.Getenv(envCrashChild) == "1" {
		t.Skip("in the child")
	}
	n := soak(20_000)
	c := newCluster(t)
	createTopics(t, c, 4, "crash", "crash-svc.dlq")
	emitAll(t, dispytch.NewEmitter(newProducer(t, c)), events("crash", n, 40))
	out := filepath.Join(t.TempDir(), "handled.txt")

	spawn := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashChild+"=1", envCrashOut+"="+out,
			envCrashBrokers+"="+strings.Join(c.ListenAddrs(), ","))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Stdout = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			if t.Failed() {
				t.Logf("child output:\n%s", stderr.String())
			}
		})
		return cmd
	}
	lines := func() (total int, distinct map[string]bool) {
		distinct = map[string]bool{}
		f, err := os.Open(out)
		if err != nil {
			return 0, distinct
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			total++
			distinct[sc.Text()] = true
		}
		return total, distinct
	}

	first := spawn()
	eventually(t, 60*time.Second, "the first consumer to be mid-stream", func() bool {
		total, _ := lines()
		return total >= n/4
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killedAt, _ := lines()
	if killedAt >= n {
		t.Fatalf("the first consumer finished (%d lines) before it was killed", killedAt)
	}
	second := spawn()
	eventually(t, 120*time.Second, "every event handled after the restart", func() bool {
		_, d := lines()
		return len(d) == n
	})
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second consumer: %v", err)
	}
	total, distinct := lines()
	if len(distinct) != n {
		t.Fatalf("%d distinct events handled, want %d", len(distinct), n)
	}
	adm := adminClient(t, c)
	end := endOffsets(t, adm, "crash")
	got := committed(t, adm, "crash-svc", "crash")
	for p, e := range end {
		if got[p] != e {
			t.Fatalf("partition %d committed %d after a clean stop, end %d", p, got[p], e)
		}
	}
	t.Logf("killed after %d lines; %d handlings in total, %d duplicates from the crash", killedAt, total, total-n)
}
