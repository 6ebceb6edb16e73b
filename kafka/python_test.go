package kafka_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
)

// wireVector is one entry of the repository's wire vectors: an envelope
// and the bytes Python Dispytch writes for it (json.dumps with its default
// ", " and ": " separators; msgpack).
type wireVector struct {
	Name     string          `json:"name"`
	Envelope json.RawMessage `json:"envelope"`
	JSON     string          `json:"json_b64"`
	Msgpack  string          `json:"msgpack_b64"`
}

func loadVector(t *testing.T, name string) (wireVector, []byte, []byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "dispytch-wire-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []wireVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Name == name {
			js, err1 := base64.StdEncoding.DecodeString(v.JSON)
			mp, err2 := base64.StdEncoding.DecodeString(v.Msgpack)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			return v, js, mp
		}
	}
	t.Fatalf("no wire vector %q", name)
	return wireVector{}, nil, nil
}

// PyUser and PyRegistered are the body of the user_registered vector.
type PyUser struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

type PyRegistered struct {
	User      PyUser `json:"user"`
	Timestamp int64  `json:"timestamp"`
}

// TestPythonShapedRecords produces records as Python Dispytch on aiokafka
// does: the value is the envelope, with no headers at all, msgpack, or JSON
// written with Python's ", " and ": " separators. A raw franz-go client
// and kcat (librdkafka) write them; a Go listener with the default JSON
// codec handles each with the envelope's id, type, timestamp and body.
func TestPythonShapedRecords(t *testing.T) {
	vec, js, mp := loadVector(t, "user_registered")
	if !strings.Contains(string(js), `", "type": "`) {
		t.Fatalf("the JSON vector is not Python-shaped: %s", js)
	}
	var want struct {
		ID        string       `json:"id"`
		Type      string       `json:"type"`
		Body      PyRegistered `json:"body"`
		Timestamp int64        `json:"timestamp"`
	}
	if err := json.Unmarshal(vec.Envelope, &want); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t)
	topic := "py-events"
	createTopics(t, c, 2, topic, "py-svc.dlq")
	type got struct {
		id, typ string
		ts      int64
		body    PyRegistered
		headers int
	}
	var mu sync.Mutex
	seen := map[string]got{} // by record key
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("py-svc"), dispytch.WithLogger(testLogger()))
	l.Handle(topic, want.Type, func(ev dispytch.Event[PyRegistered]) {
		mu.Lock()
		seen[string(ev.Delivery.Key)] = got{ev.ID, ev.Type, ev.Timestamp.UnixMilli(), ev.Body, len(ev.Headers)}
		mu.Unlock()
	})
	start(t, l)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Topic: topic, Key: []byte("kgo-json"), Value: js},
		&kgo.Record{Topic: topic, Key: []byte("kgo-msgpack"), Value: mp},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	keys := []string{"kgo-json", "kgo-msgpack"}
	if _, err := exec.LookPath("kcat"); err == nil {
		dir := t.TempDir()
		for name, value := range map[string][]byte{"kcat-json": js, "kcat-msgpack": mp} {
			file := filepath.Join(dir, name)
			if err := os.WriteFile(file, value, 0o600); err != nil {
				t.Fatal(err)
			}
			// The whole file is one message: binary msgpack survives.
			kcat(t, "", "-b", strings.Join(c.ListenAddrs(), ","), "-t", topic, "-P", "-k", name, file)
			keys = append(keys, name)
		}
	} else {
		t.Log("kcat is not installed: only the franz-go records are produced")
	}
	eventually(t, 30*time.Second, "Python-shaped records handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == len(keys)
	})
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		g := seen[k]
		if g.id != want.ID || g.typ != want.Type || g.ts != want.Timestamp || g.body != want.Body || g.headers != 0 {
			t.Fatalf("%s handled as %+v, want %+v", k, g, want)
		}
	}
}

// upperCodec is the JSON codec under its own content type, except that
// event types decode upper-cased: a handler of "EV" runs only for messages
// this codec decodes.
type upperCodec struct{}

func (upperCodec) ContentType() string           { return "application/x-upper" }
func (upperCodec) Marshal(v any) ([]byte, error) { return codec.JSON.Marshal(v) }
func (upperCodec) Unmarshal(d []byte, v any, strict bool) error {
	return codec.JSON.Unmarshal(d, v, strict)
}
func (upperCodec) AppendEnvelope(dst []byte, e *codec.Envelope) ([]byte, error) {
	return codec.JSON.AppendEnvelope(dst, e)
}
func (upperCodec) DecodeEnvelope(data []byte, e *codec.Envelope) error {
	if err := codec.JSON.DecodeEnvelope(data, e); err != nil {
		return err
	}
	e.Type = strings.ToUpper(e.Type)
	return nil
}

// TestContentTypeHeaderPicksCodec: a record's content-type header reaches
// the listener (Delivery.ContentType, see TestDeliveryContentType) and
// picks the codec, even when the first byte looks like JSON; a record
// without one is sniffed. The header used to be dropped.
func TestContentTypeHeaderPicksCodec(t *testing.T) {
	c := newCluster(t)
	topic := "typed"
	createTopics(t, c, 1, topic, "typed-svc.dlq")
	var mu sync.Mutex
	var upper, plain []string
	l := dispytch.NewListener(newConsumer(t, c), dispytch.ConsumerGroup("typed-svc"), dispytch.Codecs(upperCodec{}),
		dispytch.WithLogger(testLogger()))
	l.Handle(topic, "EV", func(ev dispytch.Event[Ev]) {
		mu.Lock()
		upper = append(upper, ev.ID)
		mu.Unlock()
	})
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) {
		mu.Lock()
		plain = append(plain, ev.ID)
		mu.Unlock()
	})
	start(t, l)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	value := func(id string) []byte {
		return []byte(`{"id":"` + id + `","type":"ev","body":{"t":"typed","seq":1},"timestamp":1700000000000}`)
	}
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: topic, Value: value("with-header"), Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/x-upper")}}},
		&kgo.Record{Topic: topic, Value: value("sniffed")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "both records handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(upper)+len(plain) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if len(upper) != 1 || upper[0] != "with-header" || len(plain) != 1 || plain[0] != "sniffed" {
		t.Fatalf("upper-codec handler saw %v, JSON handler saw %v", upper, plain)
	}
}
