package dispytch

import (
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/codec"
)

// Eventer is an event that can be emitted. Topic returns the topic, which may
// hold {field} placeholders filled from the event's own fields at emit time;
// EventType returns the event type written into the envelope.
//
// An event may also have two optional methods, which the emitter looks for:
// EventID() string supplies the event's own ID (without it, or when it
// returns "", the event gets a random UUID v4), and EventKey() string the
// message key (Kafka's partition key, the memory broker's ordering key),
// which the Key emit option overrides.
//
//	type UserRegistered struct {
//		User      User  `json:"user" validate:"required"`
//		Timestamp int64 `json:"timestamp"`
//	}
//	func (UserRegistered) Topic() string     { return "user_events" }
//	func (UserRegistered) EventType() string { return "user_registered" }
type Eventer interface {
	Topic() string
	EventType() string
}

// eventIDer and eventKeyer are the optional methods of an Eventer.
type (
	eventIDer  interface{ EventID() string }
	eventKeyer interface{ EventKey() string }
)

// Metadata is everything about an event except its body. Handlers and
// providers can take it as a parameter.
type Metadata struct {
	// ID is the envelope's event ID.
	ID string
	// Type is the envelope's event type.
	Type string
	// Topic is the concrete topic the message was consumed from.
	Topic string
	// Timestamp is the envelope's emit time (millisecond precision).
	Timestamp time.Time
	// Headers are the message headers (nil when there are none). Treat them
	// as read-only.
	Headers map[string]string
	// Delivery describes the delivery and the handler attempt.
	Delivery backend.DeliveryInfo

	seg   *segmentMatch
	codec codec.Codec // the codec the message was written with
}

// Segment returns the value of the topic segment named name by the
// handler's topic pattern ({name} or {name...}), or "" when there is none.
func (m *Metadata) Segment(name string) string {
	if m.seg == nil {
		return ""
	}
	return m.seg.get(name)
}

// Event is a decoded, validated event as a handler receives it. T is the body
// type; use json.RawMessage or []byte for untyped handlers.
type Event[T any] struct {
	Metadata
	// Body is the decoded and validated event body.
	Body T
}
