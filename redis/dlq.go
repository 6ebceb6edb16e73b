package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dispytch/dispytch-go/backend"
)

// scanPage is how many entries ScanDeadLetters reads per XRANGE.
const scanPage = 256

// ScanDeadLetters implements backend.DeadLetterStore on the dead-letter
// stream dest ("<group>.dlq"), for dispytch.DeadLetters(client,
// "billing.dlq") and its List, Count, Purge and Redrive. It reads the
// entries up to the last one dest holds when the scan starts (XRANGE, in
// pages of 256), oldest first; a removed entry is deleted (XDEL, after
// each page); a kept one stays where it is. Dead letters written in
// PubSub mode go to streams too, so this works in both modes. The
// deliveries carry the entry's key, value, headers and content type
// (Info.Raw is the redis.XMessage); their Acker is nil.
func (c *Client) ScanDeadLetters(ctx context.Context, dest string, f func(*backend.Delivery) (backend.DeadLetterAction, error)) error {
	switch {
	case ctx == nil:
		return errors.New("redis: scan dead letters: nil context")
	case f == nil:
		return errors.New("redis: scan dead letters: nil function")
	case dest == "":
		return errors.New("redis: scan dead letters: empty stream name")
	}
	last, err := c.rc.XRevRangeN(ctx, dest, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("redis: scan dead letters of %s: %w", dest, err)
	}
	if len(last) == 0 {
		return nil
	}
	end := last[0].ID
	from := "-"
	for {
		page, err := c.rc.XRangeN(ctx, dest, from, end, scanPage).Result()
		if err != nil {
			return fmt.Errorf("redis: scan dead letters of %s: %w", dest, err)
		}
		var remove []string
		var ferr error
		for _, m := range page {
			d := toDelivery(dest, m)
			act, err := f(d)
			if err != nil {
				ferr = err
				break
			}
			if act == backend.ActionRemove {
				remove = append(remove, m.ID)
			}
		}
		if len(remove) > 0 {
			if err := c.rc.XDel(ctx, dest, remove...).Err(); err != nil {
				return fmt.Errorf("redis: remove dead letters from %s: %w", dest, err)
			}
		}
		if ferr != nil {
			if errors.Is(ferr, backend.ErrStopScan) {
				return nil
			}
			return ferr
		}
		if len(page) < scanPage || page[len(page)-1].ID == end {
			return nil
		}
		from = "(" + page[len(page)-1].ID
	}
}

// CountDeadLetters implements backend.DeadLetterCounter: XLEN of dest.
func (c *Client) CountDeadLetters(ctx context.Context, dest string) (int, error) {
	if ctx == nil {
		return 0, errors.New("redis: count dead letters: nil context")
	}
	n, err := c.rc.XLen(ctx, dest).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: count dead letters of %s: %w", dest, err)
	}
	return int(n), nil
}

// toDelivery turns a stream entry into a Delivery without an Acker.
func toDelivery(stream string, m goredis.XMessage) *backend.Delivery {
	var h map[string]string
	for k, v := range m.Values {
		if strings.HasPrefix(k, FieldHeaderPrefix) {
			if h == nil {
				h = make(map[string]string, len(m.Values))
			}
			h[k[len(FieldHeaderPrefix):]] = str(v)
		}
	}
	d := &backend.Delivery{
		Topic:       stream,
		Value:       []byte(str(m.Values[FieldData])),
		Headers:     h,
		ContentType: str(m.Values[FieldContentType]),
		Info:        backend.DeliveryInfo{DeliveryCount: 1, Partition: -1, Offset: -1, Raw: m},
	}
	if k := str(m.Values[FieldKey]); k != "" {
		d.Key = []byte(k)
	}
	return d
}

// EntryDelivery is the Delivery of a stream entry as the consumer builds
// it (the envelope, key, headers and content type from the entry's
// fields), without an Acker: for tools that read streams themselves.
func EntryDelivery(stream string, m goredis.XMessage) *backend.Delivery { return toDelivery(stream, m) }

// MessageDelivery is the Delivery of a pub/sub message (the bare envelope,
// or the PubSubHeaders frame), without an Acker.
func MessageDelivery(m *goredis.Message) *backend.Delivery {
	if vals, framed, err := decodeFrame([]byte(m.Payload)); framed && err == nil {
		d := toDelivery(m.Channel, goredis.XMessage{Values: vals})
		d.Info.Raw = m
		return d
	}
	return &backend.Delivery{Topic: m.Channel, Value: []byte(m.Payload),
		Info: backend.DeliveryInfo{DeliveryCount: 1, Partition: -1, Offset: -1, Raw: m}}
}
