package rabbitmq

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
)

// Errors of this package. They are wrapped with context; test with errors.Is.
var (
	// ErrNacked reports a message the broker refused with a negative
	// publisher confirm (basic.nack), e.g. a full queue with
	// x-overflow=reject-publish.
	ErrNacked = errors.New("rabbitmq: message nacked by the broker")
	// ErrUnknownExchange reports an Exchange emit option naming an exchange
	// the client was not configured with.
	ErrUnknownExchange = errors.New("rabbitmq: exchange not configured on the client")
	// ErrConnectionLost reports a message whose publisher confirm was lost
	// with its connection; the client republishes such messages on the next
	// connection while the emit context allows, so it only surfaces wrapped
	// in the final error (with dispytch.ErrUnconfirmed).
	ErrConnectionLost = errors.New("rabbitmq: connection lost before the publisher confirm")
	// ErrQueueNotFound reports a queue that does not exist: a dead-letter
	// queue given to ScanDeadLetters or CountDeadLetters, say.
	ErrQueueNotFound = errors.New("rabbitmq: queue not found")

	// ErrAccessRefused reports that the broker refused the client: a wrong
	// user name or password (403 ACCESS_REFUSED), a user without access to
	// the virtual host, or without the permission an operation needs
	// (declaring, publishing to, reading from a resource). It wraps
	// dispytch.ErrPermanent: retrying does not help until the broker's
	// configuration or the client's URL changes.
	ErrAccessRefused error = &sentinel{"rabbitmq: access refused"}
	// ErrVhostNotFound reports a virtual host the broker does not have
	// (530 NOT_ALLOWED - vhost ... not found). It wraps
	// dispytch.ErrPermanent.
	ErrVhostNotFound error = &sentinel{"rabbitmq: virtual host not found"}
	// ErrPreconditionFailed reports a topology that contradicts the
	// broker's: a queue declared with other arguments (406
	// PRECONDITION_FAILED - inequivalent arg ...), or an existing exchange
	// whose type cannot carry what the client needs from it (a fanout
	// exchange, patterns on a direct exchange). It wraps
	// dispytch.ErrPermanent.
	ErrPreconditionFailed error = &sentinel{"rabbitmq: precondition failed"}
)

// sentinel is a permanent error kind: errors.Is(ErrAccessRefused,
// dispytch.ErrPermanent) holds.
type sentinel struct{ msg string }

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return dispytch.ErrPermanent }

// brokerError is a permanent failure with the broker's reason: kind is one
// of the sentinels, op what the client was doing, cause the broker's error
// (an *amqp.Error), hint what to do about it.
type brokerError struct {
	kind  error
	op    string
	cause error
	hint  string
}

func (e *brokerError) Error() string {
	var b strings.Builder
	b.WriteString(e.kind.Error())
	if e.op != "" {
		b.WriteString(": ")
		b.WriteString(e.op)
	}
	if e.cause != nil {
		b.WriteString(": ")
		b.WriteString(describe(e.cause))
	}
	if e.hint != "" {
		b.WriteString(" (")
		b.WriteString(e.hint)
		b.WriteString(")")
	}
	return b.String()
}

func (e *brokerError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// codeNames are the AMQP reply codes' names, for errors whose reason does
// not start with one (amqp091's own, such as ErrCredentials).
var codeNames = map[int]string{
	amqp.ContentTooLarge:    "CONTENT_TOO_LARGE",
	amqp.NoRoute:            "NO_ROUTE",
	amqp.NoConsumers:        "NO_CONSUMERS",
	amqp.ConnectionForced:   "CONNECTION_FORCED",
	amqp.InvalidPath:        "INVALID_PATH",
	amqp.AccessRefused:      "ACCESS_REFUSED",
	amqp.NotFound:           "NOT_FOUND",
	amqp.ResourceLocked:     "RESOURCE_LOCKED",
	amqp.PreconditionFailed: "PRECONDITION_FAILED",
	amqp.FrameError:         "FRAME_ERROR",
	amqp.SyntaxError:        "SYNTAX_ERROR",
	amqp.CommandInvalid:     "COMMAND_INVALID",
	amqp.ChannelError:       "CHANNEL_ERROR",
	amqp.UnexpectedFrame:    "UNEXPECTED_FRAME",
	amqp.ResourceError:      "RESOURCE_ERROR",
	amqp.NotAllowed:         "NOT_ALLOWED",
	amqp.NotImplemented:     "NOT_IMPLEMENTED",
	amqp.InternalError:      "INTERNAL_ERROR",
}

// describe formats an AMQP error as the broker says it: "403
// ACCESS_REFUSED - username or password not allowed". Other errors are
// formatted as they are.
func describe(err error) string {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return err.Error()
	}
	reason := ae.Reason
	if name, ok := codeNames[ae.Code]; ok && !strings.HasPrefix(reason, name) {
		reason = name + " - " + reason
	}
	return fmt.Sprintf("%d %s", ae.Code, reason)
}

// amqpError returns the AMQP error in err's chain, or nil.
func amqpError(err error) *amqp.Error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// dialError classifies a failed connection attempt: a permanent
// *brokerError for a refused login or a missing virtual host, err itself
// for what may pass (a refused connection, a broker starting up, a
// connection limit).
func dialError(err error, target string) error {
	ae := amqpError(err)
	if ae == nil {
		return err
	}
	op := "connect to " + target
	switch {
	case ae.Code == amqp.AccessRefused:
		return &brokerError{kind: ErrAccessRefused, op: op, cause: err,
			hint: "check the user name and password in the URL; the broker's log has the details"}
	case ae.Code == amqp.NotAllowed && strings.Contains(ae.Reason, "not found"):
		return &brokerError{kind: ErrVhostNotFound, op: op, cause: err,
			hint: "create it with rabbitmqctl add_vhost, or fix the URL's path"}
	case ae.Code == amqp.NotAllowed && strings.Contains(ae.Reason, "refused"):
		return &brokerError{kind: ErrAccessRefused, op: op, cause: err,
			hint: "grant the user access with rabbitmqctl set_permissions"}
	}
	return err
}

// declareError classifies a failed declaration or binding: permanent for a
// refused access or an inequivalent declaration, err itself otherwise (a
// lost connection, a missing exchange or queue that the user's tooling may
// still create).
func declareError(op string, err error) error {
	if errors.Is(err, dispytch.ErrPermanent) {
		return err
	}
	ae := amqpError(err)
	if ae == nil {
		return fmt.Errorf("rabbitmq: %s: %w", op, err)
	}
	switch ae.Code {
	case amqp.AccessRefused:
		return &brokerError{kind: ErrAccessRefused, op: op, cause: err,
			hint: "the user needs the configure permission to declare; or declare the topology yourself and use DeclareTopology(false) or ExistingQueue"}
	case amqp.PreconditionFailed:
		return &brokerError{kind: ErrPreconditionFailed, op: op, cause: err,
			hint: "it exists with other arguments: delete it, or make the client's options match it (WithQueueType, QueueArgs, DeliveryLimit, SingleActiveConsumer), or use ExistingQueue"}
	}
	return fmt.Errorf("rabbitmq: %s: %w", op, err)
}

// publishError classifies the error that closed a publisher channel: the
// broker's reason for the messages it was carrying.
func publishError(err error) error {
	ae := amqpError(err)
	if ae == nil || !ae.Server {
		return err
	}
	switch {
	case ae.Code == amqp.AccessRefused:
		return &brokerError{kind: ErrAccessRefused, op: "publish", cause: err}
	case ae.Code == amqp.ContentTooLarge || ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "larger than"):
		return fmt.Errorf("rabbitmq: publish: %w: %s", dispytch.ErrTooLarge, describe(err))
	case ae.Code == amqp.NotFound:
		return fmt.Errorf("rabbitmq: publish: %s (declare the exchange, or let the client declare it: DeclareTopology(true))", describe(err))
	}
	return fmt.Errorf("rabbitmq: publish: %w", err)
}

var inequivalentRE = regexp.MustCompile(`inequivalent arg '([^']+)' for exchange .*: received (.*) but current is (.*)$`)

// inequivalent parses the reason of a 406 for an exchange declaration: the
// argument that differs and the exchange's current value of it (without
// quotes).
func inequivalent(err error) (arg, current string, ok bool) {
	ae := amqpError(err)
	if ae == nil || ae.Code != amqp.PreconditionFailed {
		return "", "", false
	}
	m := inequivalentRE.FindStringSubmatch(ae.Reason)
	if m == nil {
		return "", "", false
	}
	return m[1], strings.Trim(m[3], "'"), true
}

// permanent reports an error that retrying does not fix.
func permanent(err error) bool { return errors.Is(err, dispytch.ErrPermanent) }
