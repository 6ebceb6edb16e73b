package rabbitmq

import (
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Headers the client reads and writes itself.
const (
	// HeaderKey carries the message key (AMQP has none). The consumer moves
	// it into Delivery.Key and leaves it out of the event's headers.
	HeaderKey = "dispytch-key"
	// HeaderRetry counts the delayed retries a message went through
	// (RetryTiers).
	HeaderRetry = "dispytch-retry"
	// HeaderRetryTopic carries the topic of a message waiting in a retry
	// tier, whose routing key is the queue's name once it comes back.
	HeaderRetryTopic = "dispytch-retry-topic"
)

// headersToTable converts dispytch headers into AMQP headers, adding the key
// header. extra (typed headers from the Headers emit option) wins.
func headersToTable(h map[string]string, key []byte, extra amqp.Table) amqp.Table {
	n := len(h) + len(extra)
	if key != nil {
		n++
	}
	if n == 0 {
		return nil
	}
	t := make(amqp.Table, n)
	for k, v := range h {
		if k == backend.HeaderContentType {
			continue // a property, not a header
		}
		t[k] = v
	}
	if key != nil {
		t[HeaderKey] = string(key)
	}
	for k, v := range extra {
		t[k] = v
	}
	return t
}

// headersFromTable converts AMQP headers into dispytch headers. Values are
// formatted as text; nested tables and arrays (such as x-death) are left out
// and stay available through the raw delivery (see Deaths). The key header
// is returned separately; retry headers are kept only when keepRetry.
func headersFromTable(t amqp.Table, keepRetry bool) (h map[string]string, key []byte) {
	if len(t) == 0 {
		return nil, nil
	}
	for k, v := range t {
		switch k {
		case HeaderKey:
			if s, ok := formatHeader(v); ok {
				key = []byte(s)
			}
			continue
		case HeaderRetry, HeaderRetryTopic:
			if !keepRetry {
				continue
			}
		}
		s, ok := formatHeader(v)
		if !ok {
			continue
		}
		if h == nil {
			h = make(map[string]string, len(t))
		}
		h[k] = s
	}
	return h, key
}

// formatHeader formats a scalar AMQP field value as text. It reports false
// for tables, arrays and unknown types.
func formatHeader(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.FormatInt(int64(x), 10), true
	case int8:
		return strconv.FormatInt(int64(x), 10), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint8:
		return strconv.FormatUint(uint64(x), 10), true
	case uint16:
		return strconv.FormatUint(uint64(x), 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case time.Time:
		return x.UTC().Format(time.RFC3339), true
	case amqp.Decimal:
		return formatDecimal(x), true
	case nil:
		return "", true
	}
	return "", false
}

func formatDecimal(d amqp.Decimal) string {
	neg := d.Value < 0
	v := int64(d.Value)
	if neg {
		v = -v
	}
	s := strconv.FormatInt(v, 10)
	if sc := int(d.Scale); sc > 0 {
		for len(s) <= sc {
			s = "0" + s
		}
		s = s[:len(s)-sc] + "." + s[len(s)-sc:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// Death is one entry of RabbitMQ's x-death header: the broker dead-lettered
// the message from Queue for Reason, Count times.
type Death struct {
	// Queue is the queue the message was dead-lettered from.
	Queue string
	// Reason is "rejected", "expired", "maxlen" or "delivery_limit".
	Reason string
	// Exchange and RoutingKeys are where the message had been published to.
	Exchange    string
	RoutingKeys []string
	// Count is how many times this happened for this queue and reason.
	Count int64
	// Time is the first time (second precision).
	Time time.Time
}

// Deaths parses the x-death header of h, most recent first. Malformed
// entries and fields are skipped.
func Deaths(h amqp.Table) []Death {
	arr, ok := h["x-death"].([]any)
	if !ok {
		return nil
	}
	var out []Death
	for _, e := range arr {
		t, ok := e.(amqp.Table)
		if !ok {
			continue
		}
		var d Death
		d.Queue, _ = t["queue"].(string)
		d.Reason, _ = t["reason"].(string)
		d.Exchange, _ = t["exchange"].(string)
		if rks, ok := t["routing-keys"].([]any); ok {
			for _, rk := range rks {
				if s, ok := rk.(string); ok {
					d.RoutingKeys = append(d.RoutingKeys, s)
				}
			}
		}
		switch c := t["count"].(type) {
		case int64:
			d.Count = c
		case int32:
			d.Count = int64(c)
		case int:
			d.Count = int64(c)
		case int16:
			d.Count = int64(c)
		case int8:
			d.Count = int64(c)
		case uint8:
			d.Count = int64(c)
		case uint16:
			d.Count = int64(c)
		case uint32:
			d.Count = int64(c)
		}
		d.Time, _ = t["time"].(time.Time)
		out = append(out, d)
	}
	return out
}

// DeliveryOf returns the AMQP delivery an event came from, when it came from
// this package: its properties, routing key and raw headers (x-death among
// them).
func DeliveryOf(m *dispytch.Metadata) (amqp.Delivery, bool) {
	d, ok := m.Delivery.Raw.(amqp.Delivery)
	return d, ok
}
