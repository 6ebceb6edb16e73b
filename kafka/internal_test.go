package kafka

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// TestTrackerMark acks records in random orders and checks that the mark is
// always one past the longest done prefix, never past an unfinished record.
func TestTrackerMark(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := 1 + rng.IntN(300)
		tr := newTracker()
		offsets := make([]int64, n)
		seqs := make([]uint64, n)
		off := int64(rng.IntN(1000))
		for i := range n {
			off += 1 + int64(rng.IntN(3)) // gaps, as after compaction
			offsets[i] = off
			seqs[i] = tr.add(off, 5)
		}
		done := make([]bool, n)
		for _, i := range rng.Perm(n) {
			tr.done(seqs[i])
			done[i] = true
			prefix := 0
			for prefix < n && done[prefix] {
				prefix++
			}
			want := int64(-1)
			if prefix > 0 {
				want = offsets[prefix-1] + 1
			}
			if tr.mark != want {
				t.Fatalf("round %d: mark %d, want %d (prefix %d)", round, tr.mark, want, prefix)
			}
			if tr.inFlight() != n-prefix {
				t.Fatalf("round %d: %d in flight, want %d", round, tr.inFlight(), n-prefix)
			}
		}
		if tr.markEpoch != 5 {
			t.Fatalf("mark epoch %d", tr.markEpoch)
		}
		// Acks of passed or unknown records are ignored.
		if tr.done(seqs[0]) || tr.done(seqs[n-1]+10) {
			t.Fatal("a stale ack moved the mark")
		}
	}
}

// TestTrackerInterleaved adds records while earlier ones are acked, across
// ring growth and wrap-around.
func TestTrackerInterleaved(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tr := newTracker()
	var open []uint64
	offsets := map[uint64]int64{}
	doneSet := map[uint64]bool{}
	next := int64(0)
	lowest := func() uint64 { return slices.Min(open) }
	for range 20000 {
		if len(open) == 0 || rng.IntN(3) > 0 {
			seq := tr.add(next, 0)
			offsets[seq] = next
			next++
			open = append(open, seq)
			continue
		}
		i := rng.IntN(len(open))
		seq := open[i]
		open = slices.Delete(open, i, i+1)
		doneSet[seq] = true
		tr.done(seq)
		if len(open) > 0 {
			if want := offsets[lowest()]; tr.mark > want {
				t.Fatalf("mark %d passed the unfinished offset %d", tr.mark, want)
			}
		}
	}
	if len(open) > 0 && tr.mark != offsets[lowest()] && tr.mark != -1 {
		t.Fatalf("mark %d, want the lowest unfinished offset %d", tr.mark, offsets[lowest()])
	}
	// dropLast forgets only the newest record.
	before := tr.inFlight()
	seq := tr.add(next, 0)
	tr.dropLast(seq - 1)
	if tr.inFlight() != before+1 {
		t.Fatal("dropLast removed a record that is not the newest")
	}
	tr.dropLast(seq)
	if tr.inFlight() != before {
		t.Fatal("dropLast kept the newest record")
	}
}

// TestScanEnvelopeIDType checks the fast id/type scan on the emitter's own
// encoding and its refusals.
func TestScanEnvelopeIDType(t *testing.T) {
	env := codec.Envelope{ID: "5b6e0c52-7f4c-4e0a-9d0e-1b2c3d4e5f60", Type: "user_registered", Body: []byte(`{"a":1}`), Timestamp: 1}
	value, err := codec.JSON.AppendEnvelope(nil, &env)
	if err != nil {
		t.Fatal(err)
	}
	id, typ, ok := scanEnvelopeIDType(value)
	if !ok || string(id) != env.ID || string(typ) != env.Type {
		t.Fatalf("scan %q: %q %q %v", value, id, typ, ok)
	}
	for _, bad := range []string{
		``, `{}`, `{"type":"a","id":"b","body":{},"timestamp":1}`, `{"id":"a\"b","type":"t","body":{},"timestamp":1}`,
		`{"id":"a","type":"t\n"}`, `{"id":"a","type":"t"`, `{"id":"a","type":"t"x`, "{\"id\":\"\xff\",\"type\":\"t\",}",
	} {
		if _, _, ok := scanEnvelopeIDType([]byte(bad)); ok {
			t.Errorf("scan accepted %q", bad)
		}
	}
}

// TestRecordHeaders: sorted message headers, the id and type added unless
// present, raw headers last.
func TestRecordHeaders(t *testing.T) {
	value := []byte(`{"id":"i","type":"t","body":{},"timestamp":1}`)
	hs := recordHeaders(nil, &backend.Message{Headers: map[string]string{"b": "2", "a": "1"}, Value: value}, []kgo.RecordHeader{{Key: "raw", Value: []byte{0}}})
	var keys []string
	for _, h := range hs {
		keys = append(keys, h.Key+"="+string(h.Value))
	}
	want := []string{"a=1", "b=2", HeaderEventID + "=i", HeaderEventType + "=t", "raw=\x00"}
	if !slices.Equal(keys, want) {
		t.Fatalf("headers %q, want %q", keys, want)
	}
	hs = recordHeaders(nil, &backend.Message{Headers: map[string]string{HeaderEventID: "kept", HeaderEventType: "kept"}, Value: value}, nil)
	if len(hs) != 2 || string(hs[0].Value) != "kept" || string(hs[1].Value) != "kept" {
		t.Fatalf("existing id/type headers replaced: %v", hs)
	}
	if hs := recordHeaders(nil, &backend.Message{Value: []byte("poison")}, nil); len(hs) != 0 {
		t.Fatalf("headers for a non-envelope: %v", hs)
	}
	if got, _ := deliveryHeaders([]kgo.RecordHeader{{Key: "k", Value: []byte("1")}, {Key: "k", Value: []byte("2")}}); got["k"] != "2" {
		t.Fatalf("repeated header: %v", got)
	}
	// Every header reaches the delivery, the derived ones too, so that a
	// dead letter carries them; the content type is the delivery's too.
	got, ct := deliveryHeaders([]kgo.RecordHeader{{Key: HeaderEventID, Value: []byte("i")}, {Key: HeaderEventType, Value: []byte("t")},
		{Key: backend.HeaderContentType, Value: []byte("application/msgpack")}})
	if len(got) != 3 || got[HeaderEventID] != "i" || got[HeaderEventType] != "t" || ct != "application/msgpack" {
		t.Fatalf("delivery headers %v, content type %q", got, ct)
	}
}

// FuzzScanEnvelopeIDType: whenever both the fast scan and the JSON codec
// accept a payload, they agree on the id and type; the scan never reads
// outside the payload; and every envelope the codec writes with plain
// strings is accepted by the scan.
func FuzzScanEnvelopeIDType(f *testing.F) {
	f.Add([]byte(`{"id":"a","type":"b","body":{},"timestamp":1}`), "id", "type")
	f.Add([]byte(`{"id":"a","type":"b"}`), "x\"y", "é")
	f.Add([]byte("{\"id\":\"\xc3\",\"type\":\"b\",\"body\":1,\"timestamp\":1}"), "", "")
	f.Fuzz(func(t *testing.T, data []byte, id, typ string) {
		if sid, styp, ok := scanEnvelopeIDType(data); ok {
			if !bytes.Contains(data, sid) || !bytes.Contains(data, styp) {
				t.Fatal("scan result not from the payload")
			}
			var env codec.Envelope
			if err := codec.JSON.DecodeEnvelope(data, &env); err == nil {
				if env.ID != string(sid) || env.Type != string(styp) {
					t.Fatalf("scan %q/%q, codec %q/%q for %q", sid, styp, env.ID, env.Type, data)
				}
			}
		}
		if eid, etyp, ok := emittedIDType(data, id, typ); ok && (string(eid) != id || string(etyp) != typ) {
			t.Fatalf("emittedIDType(%q, %q, %q) = %q, %q", data, id, typ, eid, etyp)
		}
		env := codec.Envelope{ID: id, Type: typ, Body: []byte(`{}`), Timestamp: 1}
		value, err := codec.JSON.AppendEnvelope(nil, &env)
		if err != nil {
			return
		}
		// The emitter writes plain ids and types verbatim: the producer
		// takes them from the value.
		plain := func(s string) bool {
			return utf8.ValidString(s) && !strings.ContainsAny(s, `"\<>&`) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f })
		}
		if _, _, ok := emittedIDType(value, id, typ); plain(id) && plain(typ) && !ok {
			t.Fatalf("emittedIDType refused the emitter's %q", value)
		}
		gid, gtyp, ok := scanEnvelopeIDType(value)
		if plain(id) && plain(typ) && (!ok || string(gid) != id || string(gtyp) != typ) {
			t.Fatalf("envelope %q: got %q/%q %v, want %q/%q", value, gid, gtyp, ok, id, typ)
		}
	})
}

// The producer's slots never hand out more than max and never lose a
// wake-up: 8 goroutines × 20k acquire/release pairs through 3 slots finish.
func TestSlotsBoundAndWake(t *testing.T) {
	s := &slots{max: 3}
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20000 {
				if err := s.acquire(context.Background()); err != nil {
					t.Error(err)
					return
				}
				n := held.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				held.Add(-1)
				s.release()
			}
		}()
	}
	wg.Wait()
	if peak.Load() > 3 || s.used.Load() != 0 {
		t.Fatalf("peak %d, left %d", peak.Load(), s.used.Load())
	}
	// Full: acquire waits until ctx is done, or until a release.
	for range 3 {
		if err := s.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on full slots: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- s.acquire(context.Background()) }()
	s.release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// The producer bounds what it hands to franz-go at the client's own
// MaxBufferedRecords (an int64 option value), not a guess.
func TestProducerSlotsFollowClient(t *testing.T) {
	for _, c := range []struct {
		opts []kgo.Opt
		want int64
	}{{nil, 50000}, {[]kgo.Opt{kgo.MaxBufferedRecords(123)}, 123}} {
		p, err := NewProducer(Brokers("127.0.0.1:1"), ClientOptions(c.opts...))
		if err != nil {
			t.Fatal(err)
		}
		if p.slots.max != c.want {
			t.Errorf("slots %d, want %d", p.slots.max, c.want)
		}
		_ = p.Close(context.Background())
	}
}

// TestDeliveryContentType: a delivery carries its record's content-type
// header as Delivery.ContentType, and every header in Delivery.Headers.
func TestDeliveryContentType(t *testing.T) {
	p := &partition{s: &session{c: &Consumer{}}, okey: "t/0"}
	r := &kgo.Record{Topic: "t", Value: []byte("{}"), Headers: []kgo.RecordHeader{
		{Key: backend.HeaderContentType, Value: []byte("application/msgpack")}, {Key: HeaderEventID, Value: []byte("id-1")}}}
	d := p.newDelivery(r, 0)
	if d.d.ContentType != "application/msgpack" || d.d.Headers[HeaderEventID] != "id-1" || d.d.Headers[backend.HeaderContentType] != "application/msgpack" {
		t.Fatalf("delivery %+v", d.d)
	}
	if d := p.newDelivery(&kgo.Record{Topic: "t"}, 1); d.d.ContentType != "" || d.d.Headers != nil {
		t.Fatalf("delivery without headers %+v", d.d)
	}
}
