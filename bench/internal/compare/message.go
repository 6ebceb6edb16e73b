package compare

import (
	"encoding/json"
	"fmt"

	"github.com/dispytch/dispytch-go"
)

// Topic is the topic (Kafka topic, AMQP routing key, Watermill topic) every
// contender publishes to, unless a broker case makes it unique per run.
const Topic = "user_events"

// EventType is the Dispytch event type of UserEvent.
const EventType = "user_registered"

// UserEvent is the benchmark event: a ~150-byte JSON user record. Dispytch
// validates it (validate tags, as in the README); the peers only decode it.
// Seq is 0 on untraced messages and the trace id on the messages whose
// emit→handle latency is measured.
type UserEvent struct {
	UserID    string `json:"user_id" validate:"required"`
	Email     string `json:"email" validate:"required,email"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	CreatedAt int64  `json:"created_at"`
	Seq       int64  `json:"seq"`
}

// PlainUserEvent is UserEvent without validate tags: the body type of the
// "dispytch-novalidate" contender, which shows what validation costs.
type PlainUserEvent struct {
	UserID    string `json:"user_id"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	Plan      string `json:"plan"`
	CreatedAt int64  `json:"created_at"`
	Seq       int64  `json:"seq"`
}

// Topic implements dispytch.Eventer.
func (UserEvent) Topic() string { return Topic }

// EventType implements dispytch.Eventer.
func (UserEvent) EventType() string { return EventType }

// Envelope is what the peers' handlers decode: Dispytch's wire envelope
// with the typed body, so that every contender does the same JSON work on
// the same bytes.
type Envelope struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Body      UserEvent `json:"body"`
	Timestamp int64     `json:"timestamp"`
}

// DecodeSeq decodes a wire message into an Envelope, as every peer handler
// does, and returns its trace sequence number.
func DecodeSeq(b []byte) (int64, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return 0, err
	}
	if e.Body.UserID == "" {
		return 0, fmt.Errorf("decoded an empty event from %q", b)
	}
	return e.Body.Seq, nil
}

// Messages is the pre-generated data of one run, built before any timing:
// the event values Dispytch emitters take, and the wire bytes (Dispytch's
// envelope, as its emitter encodes them) the peers publish. Index 0 is the
// untraced template; index k in 1..traces carries Seq k.
type Messages struct {
	Events []UserEvent
	Wire   [][]byte
}

func baseEvent() UserEvent {
	return UserEvent{
		UserID:    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		Email:     "john.doe@example.com",
		Name:      "John Doe",
		Plan:      "pro",
		CreatedAt: 1700000000123,
	}
}

// NewMessages pre-generates the template and traces traced messages.
func NewMessages(traces int) (*Messages, error) {
	em := dispytch.NewEmitter(nil)
	m := &Messages{Events: make([]UserEvent, traces+1), Wire: make([][]byte, traces+1)}
	for k := range traces + 1 {
		ev := baseEvent()
		ev.Seq = int64(k)
		msg, err := em.Message(ev)
		if err != nil {
			return nil, err
		}
		m.Events[k] = ev
		m.Wire[k] = msg.Value
	}
	return m, nil
}

// BodySize is the size of the template's JSON body.
func BodySize() int {
	b, _ := json.Marshal(baseEvent())
	return len(b)
}
