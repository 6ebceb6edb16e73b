// Package dlq operates dead letters, wherever the backend keeps them: list
// them with their failure decoded, count them, purge them, and redrive
// them to their original topics, so that only the handler that failed runs
// again. It works on any backend that implements backend.DeadLetterStore
// (the memory broker, Kafka, RabbitMQ); each backend's documentation says
// how to look at dead letters from outside Go.
package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Queue is one dead-letter destination ("users.dlq") of a backend, with
// the operations operators need: List, Count, Purge and Redrive.
type Queue struct {
	store backend.DeadLetterStore
	name  string
}

// Open returns the dead-letter destination name of store (a
// *memory.Broker, *kafka.Consumer or *rabbitmq.Client).
//
//	q := dlq.Open(client, "users.dlq")
//	letters, err := q.List(ctx, &dlq.Filter{Reasons: []dispytch.Reason{dispytch.ReasonHandler}})
//	n, err := q.Redrive(ctx, client, nil)
func Open(store backend.DeadLetterStore, name string) *Queue {
	return &Queue{store: store, name: name}
}

// Name returns the destination's name.
func (q *Queue) Name() string { return q.name }

// Filter selects dead letters; a nil Filter, or a zero field, selects
// everything.
type Filter struct {
	// Reasons selects letters failed for one of them. Redrive without
	// Reasons skips ReasonDecode and ReasonValidation, which fail the same
	// way again unless the code changed: name them to redrive them.
	Reasons []dispytch.Reason
	// Handlers selects letters of the named handlers.
	Handlers []string
	// Topics selects letters from these original topics.
	Topics []string
	// From and To select letters whose last failure is at or after From
	// and before To.
	From, To time.Time
	// Max stops after that many selected letters (List: returns at most
	// Max).
	Max int
	// DryRun makes Redrive and Purge count what they would move or remove,
	// and change nothing.
	DryRun bool

	skip []dispytch.Reason // Redrive's default: every reason but these
}

func (c *Filter) orAll() *Filter {
	if c == nil {
		return &Filter{}
	}
	return c
}

// selects reports whether the filters select f.
func (c *Filter) selects(f *dispytch.FailedMessage) bool {
	if len(c.Reasons) > 0 && !slices.Contains(c.Reasons, f.Reason) {
		return false
	}
	if slices.Contains(c.skip, f.Reason) {
		return false
	}
	if len(c.Handlers) > 0 && !slices.Contains(c.Handlers, f.Handler) {
		return false
	}
	if len(c.Topics) > 0 && !slices.Contains(c.Topics, f.Topic) {
		return false
	}
	if !c.From.IsZero() && f.LastFailure.Before(c.From) {
		return false
	}
	if !c.To.IsZero() && !f.LastFailure.Before(c.To) {
		return false
	}
	return true
}

// scan runs f over the selected dead letters; messages that are not dead
// letters (no failure headers) and unselected ones are kept.
func (q *Queue) scan(ctx context.Context, c *Filter, f func(*dispytch.FailedMessage) (backend.DeadLetterAction, error)) error {
	if q == nil || q.store == nil {
		return errors.New("dispytch: dead letters: no store")
	}
	if ctx == nil {
		return errors.New("dispytch: dead letters: nil context")
	}
	n := 0
	err := q.store.ScanDeadLetters(ctx, q.name, func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		if c.Max > 0 && n >= c.Max {
			return backend.ActionKeep, backend.ErrStopScan
		}
		fm, ok := Parse(q.name, d.Key, d.Value, d.Headers)
		if !ok {
			return backend.ActionKeep, nil
		}
		fm.Partition, fm.Offset = d.Info.Partition, d.Info.Offset
		if !c.selects(fm) {
			return backend.ActionKeep, nil
		}
		n++
		return f(fm)
	})
	if err != nil && !errors.Is(err, backend.ErrStopScan) {
		return fmt.Errorf("dispytch: dead letters %q: %w", q.name, err)
	}
	return nil
}

// List returns the selected dead letters, oldest first, without removing
// any: their failure headers decoded into FailedMessage (Err holds the
// recorded error text; Partition and Offset are the letter's own position
// in the dead-letter topic, when it has one).
func (q *Queue) List(ctx context.Context, f *Filter) ([]*dispytch.FailedMessage, error) {
	var out []*dispytch.FailedMessage
	err := q.scan(ctx, f.orAll(), func(fm *dispytch.FailedMessage) (backend.DeadLetterAction, error) {
		out = append(out, fm)
		return backend.ActionKeep, nil
	})
	return out, err
}

// Count returns how many dead letters the destination holds, or, with
// filters, how many of them they select.
func (q *Queue) Count(ctx context.Context, f *Filter) (int, error) {
	c := f.orAll()
	if cn, ok := q.store.(backend.DeadLetterCounter); ok && f == nil {
		n, err := cn.CountDeadLetters(ctx, q.name)
		if err != nil {
			return 0, fmt.Errorf("dispytch: dead letters %q: %w", q.name, err)
		}
		return n, nil
	}
	n := 0
	err := q.scan(ctx, c, func(*dispytch.FailedMessage) (backend.DeadLetterAction, error) {
		n++
		return backend.ActionKeep, nil
	})
	return n, err
}

// Purge removes the selected dead letters for good and returns how many it
// removed (with DryRun: how many it would remove).
func (q *Queue) Purge(ctx context.Context, f *Filter) (int, error) {
	c := f.orAll()
	n := 0
	err := q.scan(ctx, c, func(*dispytch.FailedMessage) (backend.DeadLetterAction, error) {
		n++
		if c.DryRun {
			return backend.ActionKeep, nil
		}
		return backend.ActionRemove, nil
	})
	return n, err
}

// Redrive makes one pass over what the destination holds when it starts
// and republishes each selected dead letter through p to its original
// topic, with the original key, value and headers, marked so that only the
// handler that failed (of the group that failed) runs again. A letter is
// removed only after p accepted its republish; a letter that fails again
// is dead-lettered anew, after the pass's end, and is not taken again by
// the same pass. It returns how many letters it moved (with DryRun: how
// many it would move).
//
// Without FilterReason, Redrive skips letters that failed to decode or
// validate: the same bytes fail the same way unless the code changed.
// Letters truncated because they were too large (see HeaderDLTruncated)
// have no value to republish and are skipped. A failed republish stops the
// pass with the error; what was moved so far stays moved.
func (q *Queue) Redrive(ctx context.Context, p backend.Producer, f *Filter) (int, error) {
	if p == nil {
		return 0, errors.New("dispytch: redrive: nil producer")
	}
	c := *f.orAll()
	if c.Reasons == nil {
		c.skip = []dispytch.Reason{dispytch.ReasonDecode, dispytch.ReasonValidation}
	}
	n := 0
	err := q.scan(ctx, &c, func(f *dispytch.FailedMessage) (backend.DeadLetterAction, error) {
		if f.Truncated > 0 || f.Topic == "" {
			return backend.ActionKeep, nil
		}
		if c.DryRun {
			n++
			return backend.ActionKeep, nil
		}
		if err := p.Produce(ctx, redriveMessage(f)); err != nil {
			return backend.ActionKeep, fmt.Errorf("redrive to %q: %w", f.Topic, err)
		}
		n++
		return backend.ActionRemove, nil
	})
	return n, err
}

// redriveMessage turns a dead letter back into the original message, marked
// for the handler that failed.
func redriveMessage(f *dispytch.FailedMessage) *backend.Message {
	h := make(map[string]string, len(f.Headers)+2)
	for k, v := range f.Headers {
		h[k] = v
	}
	if f.Handler != "" {
		h[dispytch.HeaderRedriveHandler] = f.Handler
	}
	if f.Group != "" {
		h[dispytch.HeaderRedriveGroup] = f.Group
	}
	return &backend.Message{Topic: f.Topic, Key: f.Key, Value: f.Value, Headers: h}
}

// Parse reads the failure headers of a dead letter (a message on topic, the
// dead-letter topic) back into a FailedMessage: Err holds the recorded
// error text, Headers the original headers. It reports false when headers
// mark no dead letter.
func Parse(topic string, key, value []byte, headers map[string]string) (*dispytch.FailedMessage, bool) {
	if _, ok := headers[dispytch.HeaderDLReason]; !ok {
		return nil, false
	}
	f := &dispytch.FailedMessage{
		Topic:           headers[dispytch.HeaderDLTopic],
		Key:             key,
		Value:           value,
		Group:           headers[dispytch.HeaderDLGroup],
		Reason:          dispytch.Reason(headers[dispytch.HeaderDLReason]),
		Handler:         headers[dispytch.HeaderDLHandler],
		DeadLetterTopic: topic,
		Partition:       -1,
		Offset:          -1,
	}
	if e := headers[dispytch.HeaderDLError]; e != "" {
		f.Err = errors.New(e)
	}
	f.Attempts, _ = strconv.Atoi(headers[dispytch.HeaderDLAttempts])
	f.FirstFailure, _ = time.Parse(time.RFC3339Nano, headers[dispytch.HeaderDLFirstFailure])
	f.LastFailure, _ = time.Parse(time.RFC3339Nano, headers[dispytch.HeaderDLLastFailure])
	if p, err := strconv.ParseInt(headers[dispytch.HeaderDLPartition], 10, 32); err == nil {
		f.Partition = int32(p)
	}
	if o, err := strconv.ParseInt(headers[dispytch.HeaderDLOffset], 10, 64); err == nil {
		f.Offset = o
	}
	f.Truncated, _ = strconv.Atoi(headers[dispytch.HeaderDLTruncated])
	h := make(map[string]string, len(headers))
	for k, v := range headers {
		if !strings.HasPrefix(k, "dispytch-dlq-") {
			h[k] = v
		}
	}
	f.Headers = h
	return f, true
}
