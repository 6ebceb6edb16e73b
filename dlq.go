package dispytch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DeadLetterAction is what a scan of a dead-letter destination does with
// one message.
type DeadLetterAction uint8

const (
	// DeadLetterKeep leaves the message in the destination.
	DeadLetterKeep DeadLetterAction = iota
	// DeadLetterRemove removes the message for good.
	DeadLetterRemove
)

// ErrStopScan, returned by a scan's function, ends the scan early without
// an error; the message it was given is kept.
var ErrStopScan = errors.New("dispytch: stop scan")

// DeadLetterStore is implemented by backends whose dead-letter
// destinations can be read and edited: the memory broker, Kafka and
// RabbitMQ. DeadLetters builds the operations on it.
type DeadLetterStore interface {
	// ScanDeadLetters calls f with each message the destination dest holds
	// when the scan starts, oldest first, each once; messages that arrive
	// during the scan (a redriven message that failed again, say) are not
	// seen. f's action says whether the message stays or goes; the
	// delivery's Acker is nil.
	//
	// An error from f ends the scan: that message and the ones not yet
	// seen stay, and the error is returned (nil for ErrStopScan). Removals
	// are applied by the time ScanDeadLetters returns; after an error
	// some may not be, so a removed message can be seen again by a later
	// scan (at-least-once). Kept messages stay in dest; a backend may move
	// them to its end, and documents it.
	ScanDeadLetters(ctx context.Context, dest string, f func(*Delivery) (DeadLetterAction, error)) error
}

// DeadLetterCounter may be implemented by a DeadLetterStore that can count
// a destination's messages without reading them.
type DeadLetterCounter interface {
	CountDeadLetters(ctx context.Context, dest string) (int, error)
}

// DeadLetterQueue is one dead-letter destination ("users.dlq") of a
// backend, with the operations operators need: List, Count, Purge and
// Redrive. Build one with DeadLetters.
type DeadLetterQueue struct {
	store DeadLetterStore
	name  string
}

// DeadLetters returns the dead-letter destination name of store (a
// *memory.Broker, *kafka.Consumer or *rabbitmq.Client).
//
//	dlq := dispytch.DeadLetters(client, "users.dlq")
//	letters, err := dlq.List(ctx, dispytch.FilterReason(dispytch.ReasonHandler))
//	n, err := dlq.Redrive(ctx, client)
func DeadLetters(store DeadLetterStore, name string) *DeadLetterQueue {
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
func (q *DeadLetterQueue) scan(ctx context.Context, c *dlConfig, f func(*FailedMessage) (DeadLetterAction, error)) error {
	if q == nil || q.store == nil {
		return errors.New("dispytch: dead letters: no store")
	}
	if ctx == nil {
		return errors.New("dispytch: dead letters: nil context")
	}
	n := 0
	err := q.store.ScanDeadLetters(ctx, q.name, func(d *Delivery) (DeadLetterAction, error) {
		if c.limit > 0 && n >= c.limit {
			return DeadLetterKeep, ErrStopScan
		}
		fm, ok := ParseDeadLetter(q.name, d.Key, d.Value, d.Headers)
		if !ok {
			return DeadLetterKeep, nil
		}
		fm.Partition, fm.Offset = d.Info.Partition, d.Info.Offset
		if !c.selects(fm) {
			return DeadLetterKeep, nil
		}
		n++
		return f(fm)
	})
	if err != nil && !errors.Is(err, ErrStopScan) {
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
	err := q.scan(ctx, dlOptions(opts), func(f *FailedMessage) (DeadLetterAction, error) {
		out = append(out, f)
		return DeadLetterKeep, nil
	})
	return out, err
}

// Count returns how many dead letters the destination holds, or, with
// filters, how many of them they select.
func (q *DeadLetterQueue) Count(ctx context.Context, opts ...DeadLetterOption) (int, error) {
	c := dlOptions(opts)
	if cn, ok := q.store.(DeadLetterCounter); ok && len(opts) == 0 {
		n, err := cn.CountDeadLetters(ctx, q.name)
		if err != nil {
			return 0, fmt.Errorf("dispytch: dead letters %q: %w", q.name, err)
		}
		return n, nil
	}
	n := 0
	err := q.scan(ctx, c, func(*FailedMessage) (DeadLetterAction, error) {
		n++
		return DeadLetterKeep, nil
	})
	return n, err
}

// Purge removes the selected dead letters for good and returns how many it
// removed (with DryRun: how many it would remove).
func (q *DeadLetterQueue) Purge(ctx context.Context, opts ...DeadLetterOption) (int, error) {
	c := dlOptions(opts)
	n := 0
	err := q.scan(ctx, c, func(*FailedMessage) (DeadLetterAction, error) {
		n++
		if c.dryRun {
			return DeadLetterKeep, nil
		}
		return DeadLetterRemove, nil
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
func (q *DeadLetterQueue) Redrive(ctx context.Context, p Producer, opts ...DeadLetterOption) (int, error) {
	if p == nil {
		return 0, errors.New("dispytch: redrive: nil producer")
	}
	c := dlOptions(opts)
	if !c.reasonSet {
		c.reasons = []Reason{ReasonHandler, ReasonPanic, ReasonNoHandler, ReasonDependency, ReasonTimeout}
	}
	n := 0
	err := q.scan(ctx, c, func(f *FailedMessage) (DeadLetterAction, error) {
		if f.Truncated > 0 || f.Topic == "" {
			return DeadLetterKeep, nil
		}
		if c.dryRun {
			n++
			return DeadLetterKeep, nil
		}
		if err := p.Produce(ctx, redriveMessage(f)); err != nil {
			return DeadLetterKeep, fmt.Errorf("redrive to %q: %w", f.Topic, err)
		}
		n++
		return DeadLetterRemove, nil
	})
	return n, err
}

// redriveMessage turns a dead letter back into the original message, marked
// for the handler that failed.
func redriveMessage(f *FailedMessage) *Message {
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
	return &Message{Topic: f.Topic, Key: f.Key, Value: f.Value, Headers: h}
}
