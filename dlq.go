package dispytch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dispytch/dispytch-go/backend"
)

// DeadLetterQueue is one dead-letter destination ("users.dlq") of a
// backend, with the operations operators need: List, Count, Purge and
// Redrive. Build one with DeadLetters.
type DeadLetterQueue struct {
	store backend.DeadLetterStore
	name  string
}

// DeadLetters returns the dead-letter destination name of store (a
// *memory.Broker, *kafka.Consumer or *rabbitmq.Client).
//
//	dlq := dispytch.DeadLetters(client, "users.dlq")
//	letters, err := dlq.List(ctx, dispytch.FilterReason(dispytch.ReasonHandler))
//	n, err := dlq.Redrive(ctx, client)
func DeadLetters(store backend.DeadLetterStore, name string) *DeadLetterQueue {
	return &DeadLetterQueue{store: store, name: name}
}

// Name returns the destination's name.
func (q *DeadLetterQueue) Name() string { return q.name }

// DeadLetterOption selects dead letters for List, Count, Purge and Redrive,
// or changes how they run.
type DeadLetterOption func(*dlConfig)

type dlConfig struct {
	reasons   []Reason
	handlers  []string
	topics    []string
	from, to  time.Time
	dryRun    bool
	limit     int
	reasonSet bool
}

// FilterReason selects dead letters failed for one of reasons. Redrive
// without it skips ReasonDecode and ReasonValidation, which fail the same
// way again unless the code changed: name them to redrive them.
func FilterReason(reasons ...Reason) DeadLetterOption {
	return func(c *dlConfig) { c.reasons, c.reasonSet = append(c.reasons, reasons...), true }
}

// FilterHandler selects dead letters of one of the named handlers.
func FilterHandler(names ...string) DeadLetterOption {
	return func(c *dlConfig) { c.handlers = append(c.handlers, names...) }
}

// FilterTopic selects dead letters from one of the original topics.
func FilterTopic(topics ...string) DeadLetterOption {
	return func(c *dlConfig) { c.topics = append(c.topics, topics...) }
}

// FilterFailedBetween selects dead letters whose last failure is at or
// after from and before to; a zero time leaves that side open.
func FilterFailedBetween(from, to time.Time) DeadLetterOption {
	return func(c *dlConfig) { c.from, c.to = from, to }
}

// DryRun makes Redrive and Purge count what they would move or remove,
// and change nothing.
func DryRun() DeadLetterOption { return func(c *dlConfig) { c.dryRun = true } }

// MaxLetters stops after n selected dead letters (List: returns at most n).
func MaxLetters(n int) DeadLetterOption { return func(c *dlConfig) { c.limit = n } }

func dlOptions(opts []DeadLetterOption) *dlConfig {
	c := &dlConfig{}
	for _, o := range opts {
		o(c)
	}
	return c
}

// selects reports whether the filters select f.
func (c *dlConfig) selects(f *FailedMessage) bool {
	if len(c.reasons) > 0 && !slices.Contains(c.reasons, f.Reason) {
		return false
	}
	if len(c.handlers) > 0 && !slices.Contains(c.handlers, f.Handler) {
		return false
	}
	if len(c.topics) > 0 && !slices.Contains(c.topics, f.Topic) {
		return false
	}
	if !c.from.IsZero() && f.LastFailure.Before(c.from) {
		return false
	}
	if !c.to.IsZero() && !f.LastFailure.Before(c.to) {
		return false
	}
	return true
}

// scan runs f over the selected dead letters; messages that are not dead
// letters (no failure headers) and unselected ones are kept.
func (q *DeadLetterQueue) scan(ctx context.Context, c *dlConfig, f func(*FailedMessage) (backend.DeadLetterAction, error)) error {
	if q == nil || q.store == nil {
		return errors.New("dispytch: dead letters: no store")
	}
	if ctx == nil {
		return errors.New("dispytch: dead letters: nil context")
	}
	n := 0
	err := q.store.ScanDeadLetters(ctx, q.name, func(d *backend.Delivery) (backend.DeadLetterAction, error) {
		if c.limit > 0 && n >= c.limit {
			return backend.ActionKeep, backend.ErrStopScan
		}
		fm, ok := ParseDeadLetter(q.name, d.Key, d.Value, d.Headers)
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
func (q *DeadLetterQueue) List(ctx context.Context, opts ...DeadLetterOption) ([]*FailedMessage, error) {
	var out []*FailedMessage
	err := q.scan(ctx, dlOptions(opts), func(f *FailedMessage) (backend.DeadLetterAction, error) {
		out = append(out, f)
		return backend.ActionKeep, nil
	})
	return out, err
}

// Count returns how many dead letters the destination holds, or, with
// filters, how many of them they select.
func (q *DeadLetterQueue) Count(ctx context.Context, opts ...DeadLetterOption) (int, error) {
	c := dlOptions(opts)
	if cn, ok := q.store.(backend.DeadLetterCounter); ok && len(opts) == 0 {
		n, err := cn.CountDeadLetters(ctx, q.name)
		if err != nil {
			return 0, fmt.Errorf("dispytch: dead letters %q: %w", q.name, err)
		}
		return n, nil
	}
	n := 0
	err := q.scan(ctx, c, func(*FailedMessage) (backend.DeadLetterAction, error) {
		n++
		return backend.ActionKeep, nil
	})
	return n, err
}

// Purge removes the selected dead letters for good and returns how many it
// removed (with DryRun: how many it would remove).
func (q *DeadLetterQueue) Purge(ctx context.Context, opts ...DeadLetterOption) (int, error) {
	c := dlOptions(opts)
	n := 0
	err := q.scan(ctx, c, func(*FailedMessage) (backend.DeadLetterAction, error) {
		n++
		if c.dryRun {
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
func (q *DeadLetterQueue) Redrive(ctx context.Context, p backend.Producer, opts ...DeadLetterOption) (int, error) {
	if p == nil {
		return 0, errors.New("dispytch: redrive: nil producer")
	}
	c := dlOptions(opts)
	if !c.reasonSet {
		c.reasons = []Reason{ReasonHandler, ReasonPanic, ReasonNoHandler, ReasonDependency, ReasonTimeout}
	}
	n := 0
	err := q.scan(ctx, c, func(f *FailedMessage) (backend.DeadLetterAction, error) {
		if f.Truncated > 0 || f.Topic == "" {
			return backend.ActionKeep, nil
		}
		if c.dryRun {
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
func redriveMessage(f *FailedMessage) *backend.Message {
	h := make(Headers, len(f.Headers)+2)
	for k, v := range f.Headers {
		h[k] = v
	}
	if f.Handler != "" {
		h[HeaderRedriveHandler] = f.Handler
	}
	if f.Group != "" {
		h[HeaderRedriveGroup] = f.Group
	}
	return &backend.Message{Topic: f.Topic, Key: f.Key, Value: f.Value, Headers: h}
}
