package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/internal/testenv"
	"github.com/dispytch/dispytch-go/kafka"
)

func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	bin := testenv.RequireCommand(t, "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// TestKcatProducesListenerHandles has kcat (librdkafka) produce Dispytch
// envelopes, as a Python Dispytch service would, with a key and a header;
// the listener handles them with their id, type, timestamp, body, key and
// header.
func TestKcatProducesListenerHandles(t *testing.T) {
	testenv.RequireCommand(t, "kcat")
	c := newCluster(t)
	createTopics(t, c, 3, "from-kcat", "kcat-svc.dlq")
	type got struct {
		id, typ, key, trace string
		ts                  int64
		body                Ev
	}
	var mu sync.Mutex
	var seen []got
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("kcat-svc"), dispytch.WithLogger(testLogger()))
	l.Handle("from-kcat", "ev", func(ev dispytch.Event[Ev]) {
		mu.Lock()
		seen = append(seen, got{ev.ID, ev.Type, string(ev.Delivery.Key), ev.Headers["trace"], ev.Timestamp.UnixMilli(), ev.Body})
		mu.Unlock()
	})
	start(t, l)
	var in strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&in, "user-%d|{\"id\":\"kcat-%d\",\"type\":\"ev\",\"body\":{\"t\":\"from-kcat\",\"key\":\"user-%d\",\"seq\":%d},\"timestamp\":17000000000%02d}\n", i, i, i, i, i)
	}
	kcat(t, in.String(), "-b", strings.Join(c.ListenAddrs(), ","), "-t", "from-kcat", "-P", "-K|", "-H", "trace=kc-1")
	eventually(t, 30*time.Second, "kcat's events handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	for _, g := range seen {
		var i int
		if _, err := fmt.Sscanf(g.id, "kcat-%d", &i); err != nil {
			t.Fatalf("event id %q", g.id)
		}
		want := got{fmt.Sprintf("kcat-%d", i), "ev", fmt.Sprintf("user-%d", i), "kc-1", 1700000000000 + int64(i),
			Ev{T: "from-kcat", Key: fmt.Sprintf("user-%d", i), Seq: i}}
		if g != want {
			t.Fatalf("handled %+v, want %+v", g, want)
		}
	}
}

// TestKcatConsumesEmitted has kcat consume what the emitter produced and
// checks the record byte for byte: the value is exactly the envelope the
// emitter encoded, in Dispytch's key order, and the key and headers are
// there.
func TestKcatConsumesEmitted(t *testing.T) {
	testenv.RequireCommand(t, "kcat")
	c := newCluster(t)
	createTopics(t, c, 1, "to-kcat")
	p := newProducer(t, c)
	em := dispytch.NewEmitter(p)
	ctx := context.Background()
	m, err := em.Message(Ev{T: "to-kcat", Key: "user-7", Seq: 7}, dispytch.EventID("3f0c1d2e-0000-4000-8000-000000000007"),
		dispytch.Header("trace", "tr-7"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Produce(ctx, m); err != nil {
		t.Fatal(err)
	}
	out := kcat(t, "", "-b", strings.Join(c.ListenAddrs(), ","), "-t", "to-kcat", "-C", "-o", "beginning", "-c", "1", "-e",
		"-f", "KEY=%k\nVALUE=%s\nHEADERS=%h\nEND\n")
	re := regexp.MustCompile(`(?s)^KEY=(.*)\nVALUE=(.*)\nHEADERS=(.*)\nEND\n$`)
	parts := re.FindStringSubmatch(out)
	if parts == nil {
		t.Fatalf("kcat output %q", out)
	}
	if parts[1] != "user-7" {
		t.Fatalf("key %q", parts[1])
	}
	if parts[2] != string(m.Value) {
		t.Fatalf("value differs from the emitted envelope:\nkcat: %s\nsent: %s", parts[2], m.Value)
	}
	envRe := regexp.MustCompile(`^\{"id":"3f0c1d2e-0000-4000-8000-000000000007","type":"ev","body":\{"t":"to-kcat","key":"user-7","seq":7\},"timestamp":\d{13}\}$`)
	if !envRe.MatchString(parts[2]) {
		t.Fatalf("envelope bytes %s are not Dispytch's {id,type,body,timestamp}", parts[2])
	}
	headers := map[string]string{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		headers[k] = v
	}
	want := map[string]string{"trace": "tr-7", kafka.HeaderEventID: "3f0c1d2e-0000-4000-8000-000000000007", kafka.HeaderEventType: "ev"}
	for k, v := range want {
		if headers[k] != v {
			t.Fatalf("headers %v, want %v", headers, want)
		}
	}
}

// TestKcatReadsDeadLetters runs the README's command for looking at dead
// letters from outside Go, kcat -b <brokers> -C -t users.dlq -f '%h %s\n'
// -e: each line shows the failure headers and the original value.
func TestKcatReadsDeadLetters(t *testing.T) {
	testenv.RequireCommand(t, "kcat")
	c := newCluster(t)
	createTopics(t, c, 1, "signups", "users.dlq")
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("users"), dispytch.WithLogger(testLogger()))
	l.Handle("signups", "ev", func(ev dispytch.Event[Ev]) error { return errors.New("mailer down") }, dispytch.Name("welcome"))
	start(t, l)
	if err := dispytch.NewEmitter(newProducer(t, c)).Emit(context.Background(), Ev{T: "signups", Seq: 7}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the dead letter", func() bool { return l.Stats().DeadLettered == 1 })
	out := kcat(t, "", "-b", strings.Join(c.ListenAddrs(), ","), "-C", "-t", "users.dlq", "-f", `%h %s\n`, "-e")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("kcat printed %q", out)
	}
	for _, want := range []string{"dispytch-dlq-reason=handler_error", "dispytch-dlq-error=mailer down", "dispytch-dlq-handler=welcome",
		"dispytch-dlq-topic=signups", `"seq":7`} {
		if !strings.Contains(lines[0], want) {
			t.Fatalf("kcat line %q lacks %q", lines[0], want)
		}
	}
}
