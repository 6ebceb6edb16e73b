package rabbitmq

import (
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
)

// pubSpec is what the emit options set for one message.
type pubSpec struct {
	exchange string
	pub      amqp.Publishing
}

// PublishOption is a RabbitMQ-specific emit option, a backend.Option
// of the "rabbitmq" backend. The functions of this package return it wrapped
// in a dispytch.EmitOption, ready to pass to Emit.
type PublishOption func(*pubSpec)

// Backend returns "rabbitmq".
func (PublishOption) Backend() string { return BackendName }

func opt(f PublishOption) dispytch.EmitOption { return dispytch.WithBackendOption(f) }

// Exchange publishes to the named exchange, which must be one of the
// client's Exchanges, instead of the first one.
func Exchange(name string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.exchange = name })
}

// Transient publishes with delivery mode 1: the broker may lose the message
// when it restarts. Messages are persistent (delivery mode 2) by default.
func Transient() dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.DeliveryMode = amqp.Transient })
}

// DeliveryMode sets the delivery mode: amqp091.Transient (1) or
// amqp091.Persistent (2, the default).
func DeliveryMode(mode uint8) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.DeliveryMode = mode })
}

// Priority sets the message priority (0 to 9; the queue needs
// x-max-priority for it to matter).
func Priority(p uint8) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.Priority = p })
}

// Expiration sets the per-message TTL; the broker drops (or dead-letters)
// the message when it waited longer in a queue. It is rounded down to
// milliseconds.
func Expiration(ttl time.Duration) dispytch.EmitOption {
	ms := strconv.FormatInt(max(ttl.Milliseconds(), 0), 10)
	return opt(func(s *pubSpec) { s.pub.Expiration = ms })
}

// Headers adds AMQP headers with typed values (int, bool, time.Time, nested
// tables...). String headers can also be set with dispytch.Header.
func Headers(h amqp.Table) dispytch.EmitOption {
	return opt(func(s *pubSpec) {
		if s.pub.Headers == nil {
			s.pub.Headers = make(amqp.Table, len(h))
		}
		for k, v := range h {
			s.pub.Headers[k] = v
		}
	})
}

// ContentType sets the content-type property. Default: the message's
// content-type header if any, else "application/json" or
// "application/msgpack" for the envelopes of those codecs, else none.
func ContentType(ct string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.ContentType = ct })
}

// ContentEncoding sets the content-encoding property.
func ContentEncoding(enc string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.ContentEncoding = enc })
}

// CorrelationID sets the correlation-id property.
func CorrelationID(id string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.CorrelationId = id })
}

// ReplyTo sets the reply-to property.
func ReplyTo(queue string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.ReplyTo = queue })
}

// MessageID sets the message-id property.
func MessageID(id string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.MessageId = id })
}

// Timestamp sets the timestamp property (second precision on the wire).
func Timestamp(t time.Time) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.Timestamp = t })
}

// Type sets the type property.
func Type(t string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.Type = t })
}

// UserID sets the user-id property; RabbitMQ checks that it names the
// connection's user.
func UserID(id string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.UserId = id })
}

// AppID sets the app-id property.
func AppID(id string) dispytch.EmitOption {
	return opt(func(s *pubSpec) { s.pub.AppId = id })
}
