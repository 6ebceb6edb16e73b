package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
)

// Dead letters. A listener's dead letters go to the subject "<group>.dlq"
// in the dead-letter stream (DeadLetterStream), each a message of its own
// with the original headers, key and value and the dispytch-dlq-* failure
// headers. ScanDeadLetters reads a subject's messages with an ordered
// consumer (no acks, nothing held), from the oldest to the last one stored
// when the scan starts; a message to remove is deleted from the stream by
// its sequence, one to keep stays where it is. Messages stored during the
// scan (a redriven letter that failed again) have later sequences, and the
// pass ends before them.

// ScanDeadLetters implements backend.DeadLetterStore for the dead-letter
// subject dest (see above). A subject no stream holds is an error wrapping
// jetstream.ErrStreamNotFound.
func (c *Client) ScanDeadLetters(ctx context.Context, dest string, f func(*backend.Delivery) (backend.DeadLetterAction, error)) error {
	switch {
	case ctx == nil:
		return errors.New("nats: scan dead letters: nil context")
	case f == nil:
		return errors.New("nats: scan dead letters: nil function")
	}
	st, n, last, err := c.dlStreamOf(ctx, dest)
	if err != nil || n == 0 {
		return err
	}
	oc, err := c.js.OrderedConsumer(ctx, st.CachedInfo().Config.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{dest},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("nats: scan %s: %w", dest, err)
	}
	for seen := 0; seen < n; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("nats: scan %s: stopped after %d of %d messages: %w", dest, seen, n, backend.ContextError(err))
		}
		batch, err := oc.Fetch(min(n-seen, 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("nats: scan %s: fetch: %w", dest, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("nats: scan %s: %w", dest, err)
			}
			seq := md.Sequence.Stream
			if seq > last {
				return nil
			}
			seen++
			h, key, ct := fromHeader(msg.Headers())
			act, ferr := f(&backend.Delivery{
				Topic: dest, Key: key, Value: msg.Data(), Headers: h, ContentType: ct,
				Info: backend.DeliveryInfo{DeliveryCount: int(md.NumDelivered), Partition: -1, Offset: -1, Raw: msg},
			})
			if ferr == nil && act == backend.ActionRemove {
				if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					return fmt.Errorf("nats: scan %s: delete message %d: %w", dest, seq, err)
				}
			}
			if ferr != nil {
				if errors.Is(ferr, backend.ErrStopScan) {
					return nil
				}
				return ferr
			}
			if md.NumPending == 0 || seq == last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("nats: scan %s: fetch: %w", dest, err)
		}
		if got == 0 {
			return nil // removed by others meanwhile
		}
	}
	return nil
}

// CountDeadLetters implements backend.DeadLetterCounter: the messages the
// stream holds on subject dest.
func (c *Client) CountDeadLetters(ctx context.Context, dest string) (int, error) {
	if ctx == nil {
		return 0, errors.New("nats: count dead letters: nil context")
	}
	_, n, _, err := c.dlStreamOf(ctx, dest)
	return n, err
}

// dlStreamOf returns the stream holding subject dest, the messages it has
// on it and its last sequence.
func (c *Client) dlStreamOf(ctx context.Context, dest string) (jetstream.Stream, int, uint64, error) {
	if err := checkSubject(dest, false); err != nil {
		return nil, 0, 0, fmt.Errorf("nats: dead letters: %w", err)
	}
	name, err := c.js.StreamNameBySubject(ctx, dest)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("nats: dead letters %s: no stream holds the subject: %w", dest, err)
	}
	st, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("nats: dead letters %s: stream %s: %w", dest, name, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(dest))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("nats: dead letters %s: stream %s: %w", dest, name, err)
	}
	return st, int(info.State.Subjects[dest]), info.State.LastSeq, nil
}
