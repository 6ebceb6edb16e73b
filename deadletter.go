package dispytch

import (
	"strconv"
	"time"

	"github.com/dispytch/dispytch-go/backend"
)

// Reason says why a message failed.
type Reason string

// Failure reasons, written to the dispytch-dlq-reason header.
const (
	// ReasonHandler: the handler returned an error on its last attempt, or
	// a permanent one.
	ReasonHandler Reason = "handler_error"
	// ReasonPanic: the handler panicked on its last attempt.
	ReasonPanic Reason = "panic"
	// ReasonDecode: the payload is not an envelope, or the body does not
	// decode into the handler's type.
	ReasonDecode Reason = "decode"
	// ReasonValidation: the body or a topic segment failed validation.
	ReasonValidation Reason = "validation"
	// ReasonNoHandler: no handler is registered for the event type (when
	// the UnknownEvent policy is PolicyDeadLetter), or a redriven message names a
	// handler that no longer exists.
	ReasonNoHandler Reason = "no_handler"
	// ReasonDependency: a provider failed, so the handler could not be
	// called.
	ReasonDependency Reason = "dependency"
	// ReasonTimeout: the handler's last attempt did not return within its
	// AttemptTimeout.
	ReasonTimeout Reason = "timeout"
)

// Headers written on a dead letter, next to the original headers.
const (
	HeaderDLReason       = "dispytch-dlq-reason"
	HeaderDLError        = "dispytch-dlq-error"
	HeaderDLHandler      = "dispytch-dlq-handler"
	HeaderDLAttempts     = "dispytch-dlq-attempts"
	HeaderDLFirstFailure = "dispytch-dlq-first-failure"
	HeaderDLLastFailure  = "dispytch-dlq-last-failure"
	HeaderDLTopic        = "dispytch-dlq-topic"
	HeaderDLGroup        = "dispytch-dlq-group"
	// HeaderDLPartition and HeaderDLOffset are the original's position in
	// a partitioned log (Kafka), when it has one.
	HeaderDLPartition = "dispytch-dlq-partition"
	HeaderDLOffset    = "dispytch-dlq-offset"
	// HeaderDLTruncated, on a dead letter that was too large for the
	// broker, holds the original value's size in bytes: the letter carries
	// no value and only the failure headers; the original is at its
	// coordinates (topic, partition, offset).
	HeaderDLTruncated = "dispytch-dlq-truncated"
	// HeaderRedriveHandler, set by Redrive, limits a message to the named
	// handler.
	HeaderRedriveHandler = "dispytch-redrive-handler"
	// HeaderRedriveGroup, set by Redrive, limits a message to the listeners
	// of the group whose handler failed; other groups consuming the same
	// topic skip it.
	HeaderRedriveGroup = "dispytch-redrive-group"
	// HeaderContentType names the codec of the envelope.
	HeaderContentType = "content-type"
)

// FailedMessage describes a message that failed for good, together with why:
// what a dead letter carries.
type FailedMessage struct {
	// Topic is the topic the message was consumed from.
	Topic string
	// Key, Value and Headers are the original message, unchanged.
	Key     []byte
	Value   []byte
	Headers map[string]string
	// Group is the listener's consumer group.
	Group string
	// Reason classifies the failure; Err is the last error.
	Reason Reason
	Err    error
	// Handler names the handler that failed ("" when the message never
	// reached one).
	Handler string
	// Attempts is the number of attempts made.
	Attempts int
	// FirstFailure and LastFailure are the times of the first and the last
	// failed attempt.
	FirstFailure, LastFailure time.Time
	// DeadLetterTopic is where the listener's DeadLetterTopic rule sends the
	// message; set before dead-lettering.
	DeadLetterTopic string
	// Partition and Offset are the original's position in a partitioned log
	// (Kafka); -1 when the backend has none.
	Partition int32
	Offset    int64
	// Truncated, on a dead letter read back, is the size of the original
	// value that was left out because the letter was too large (0 when
	// nothing was left out).
	Truncated int
}

// Message builds the dead-letter message: the original key and value, the
// original headers, and the failure headers.
func (dl *FailedMessage) Message(topic string) *backend.Message {
	h := make(map[string]string, len(dl.Headers)+8)
	for k, v := range dl.Headers {
		h[k] = v
	}
	h[HeaderDLReason] = string(dl.Reason)
	if dl.Err != nil {
		h[HeaderDLError] = truncate(dl.Err.Error(), 4096)
	}
	if dl.Handler != "" {
		h[HeaderDLHandler] = dl.Handler
	}
	h[HeaderDLAttempts] = strconv.Itoa(dl.Attempts)
	h[HeaderDLFirstFailure] = dl.FirstFailure.UTC().Format(time.RFC3339Nano)
	h[HeaderDLLastFailure] = dl.LastFailure.UTC().Format(time.RFC3339Nano)
	h[HeaderDLTopic] = dl.Topic
	if dl.Group != "" {
		h[HeaderDLGroup] = dl.Group
	}
	if dl.Partition >= 0 && dl.Offset >= 0 {
		h[HeaderDLPartition] = strconv.FormatInt(int64(dl.Partition), 10)
		h[HeaderDLOffset] = strconv.FormatInt(dl.Offset, 10)
	}
	delete(h, HeaderRedriveHandler)
	delete(h, HeaderRedriveGroup)
	return &backend.Message{Topic: topic, Key: dl.Key, Value: dl.Value, Headers: h}
}

// truncatedMessage is the dead letter of a message too large to
// dead-letter whole: the failure headers and the original's coordinates,
// its event id, type and content type, and no value.
func (dl *FailedMessage) truncatedMessage(topic string) *backend.Message {
	small := *dl
	small.Headers = nil
	small.Value = nil
	m := small.Message(topic)
	for _, k := range []string{HeaderContentType, "dispytch-event-id", "dispytch-event-type"} {
		if v, ok := dl.Headers[k]; ok && len(v) <= 256 {
			m.Headers[k] = v
		}
	}
	m.Headers[HeaderDLTruncated] = strconv.Itoa(len(dl.Value))
	if len(dl.Key) > 1024 {
		m.Key = nil
	}
	return m
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
