package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bin is the dispytch binary the tests run, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dispytch-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "dispytch")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building dispytch:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of the binary did.
type result struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary with args and stdin, and returns what it wrote
// and its exit status. The environment has no DISPYTCH_* variables but env.
func runBin(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("dispytch %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DISPYTCH_") {
			env = append(env, kv)
		}
	}
	return env
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := runBin(t, stdin, nil, args...)
	if r.code != 0 {
		t.Fatalf("dispytch %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// background is a run of the binary that goes on while the test works.
type background struct {
	cmd      *exec.Cmd
	stdout   bytes.Buffer
	stderr   *lockedBuffer
	ready    chan string
	done     chan struct{}
	waitErr  error
	exitCode int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs the binary in the background; ready receives the first line
// of standard error that starts with readyPrefix.
func start(t *testing.T, readyPrefix string, args ...string) *background {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	b := &background{cmd: cmd, stderr: &lockedBuffer{}, ready: make(chan string, 1), done: make(chan struct{})}
	cmd.Stdout = &b.stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			b.stderr.Write([]byte(line + "\n"))
			if strings.HasPrefix(line, readyPrefix) {
				select {
				case b.ready <- line:
				default:
				}
			}
		}
	}()
	go func() {
		b.waitErr = cmd.Wait()
		b.exitCode = cmd.ProcessState.ExitCode()
		pw.Close()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// waitReady waits for the ready line, failing the test if the command
// ends or the time passes first.
func (b *background) waitReady(t *testing.T) string {
	t.Helper()
	select {
	case line := <-b.ready:
		return line
	case <-b.done:
		t.Fatalf("dispytch ended before it was ready: exit %d\n%s", b.exitCode, b.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("dispytch not ready after 60s:\n%s", b.stderr.String())
	}
	return ""
}

// wait waits for the command to end by itself.
func (b *background) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(d):
		t.Fatalf("dispytch did not end within %v\nstdout: %s\nstderr: %s", d, b.stdout.String(), b.stderr.String())
	}
}

func quietLogger() *slog.Logger {
	if os.Getenv("DISPYTCH_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestHelpAndExitCodes(t *testing.T) {
	r := runBin(t, "", nil, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Commands:") || !strings.Contains(r.stdout, "dlq") {
		t.Errorf("--help: %d %q", r.code, r.stdout)
	}
	for _, cmd := range [][]string{{"emit", "--help"}, {"tail", "-h"}, {"dlq", "--help"}, {"dlq", "redrive", "--help"}, {"asyncapi", "--help"}, {"help", "emit"}, {"help", "brokers"}} {
		r := runBin(t, "", nil, cmd...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage") && !strings.Contains(r.stdout, "kafka://") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", cmd, r.code, r.stdout, r.stderr)
		}
	}
	usage := [][]string{{}, {"nope"}, {"emit"}, {"emit", "t"}, {"emit", "--bogus", "t", "e", "{}"}, {"tail"}, {"dlq"}, {"dlq", "frobnicate"},
		{"dlq", "ls"}, {"asyncapi"}, {"asyncapi", "validate"}, {"emit", "-b", "kafka://x:1", "--codec", "xml", "t", "e", "{}"},
		{"emit", "-b", "gopher://x", "t", "e", "{}"}, {"emit", "t", "e", "{}"}, {"emit", "-b", "kafka://x:1", "user.{id}", "e", "{}"}}
	for _, args := range usage {
		r := runBin(t, "", nil, args...)
		if r.code != 2 || r.stderr == "" || r.stdout != "" {
			t.Errorf("%v: exit %d (want 2), stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	// Failures exit 1 with the reason on standard error.
	r = runBin(t, "", nil, "emit", "-b", "nats://127.0.0.1:4222", "dispytch-no-stream-has-this", "e", "{}")
	if r.code != 1 || !strings.Contains(r.stderr, "no stream holds the subject") {
		t.Errorf("nats://: %d %q", r.code, r.stderr)
	}
	r = runBin(t, "", nil, "emit", "-b", "kafka://127.0.0.1:1", "--timeout", "1s", "t", "e", "not json")
	if r.code != 1 || !strings.Contains(r.stderr, "BODY is not JSON") {
		t.Errorf("bad body: %d %q", r.code, r.stderr)
	}
	r = runBin(t, "", []string{"DISPYTCH_BROKER=kafka://127.0.0.1:1"}, "emit", "--timeout", "2s", "t", "e", "{}")
	if r.code != 1 || !strings.Contains(r.stderr, "connect to kafka://127.0.0.1:1") {
		t.Errorf("unreachable broker from DISPYTCH_BROKER: %d %q", r.code, r.stderr)
	}
	r = runBin(t, "", nil, "emit", "-b", "amqp://guest:hunter2@127.0.0.1:1/", "--timeout", "1s", "t", "e", "{}")
	if r.code != 1 || strings.Contains(r.stderr, "hunter2") || !strings.Contains(r.stderr, "guest:xxxxx@") {
		t.Errorf("unreachable AMQP broker: %d %q (the password must not show)", r.code, r.stderr)
	}
}

func TestParseBrokerURL(t *testing.T) {
	u, err := parseBrokerURL("kafka://user:p%40ss@a:9092,b:9093/x")
	if err != nil || u.Host != "a:9092,b:9093" || u.User.Username() != "user" || u.Path != "/x" {
		t.Fatalf("%v %+v", err, u)
	}
	if p, _ := u.User.Password(); p != "p@ss" {
		t.Errorf("password %q", p)
	}
	if _, err := parseBrokerURL("kafka:///x"); err == nil {
		t.Error("a URL without a host parses")
	}
	if s := redact(u); strings.Contains(s, "p@ss") || strings.Contains(s, "p%40ss") {
		t.Errorf("redact = %s", s)
	}
}
