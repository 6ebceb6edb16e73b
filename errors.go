package dispytch

import (
	"context"
	"errors"
	"fmt"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

// Sentinel errors. Errors returned by this package and by the backends wrap
// them, so callers can test with errors.Is.
var (
	// ErrTimeout reports that an operation did not finish before its
	// context deadline. Errors wrapping it also wrap
	// context.DeadlineExceeded.
	ErrTimeout = backend.ErrTimeout
	// ErrClosed reports an operation on a closed producer, consumer or broker.
	ErrClosed = backend.ErrClosed
	// ErrTopicField reports a dynamic topic whose {field} placeholder
	// cannot be filled: the event has no such field, or its value is nil,
	// empty or of a kind that has no text form.
	ErrTopicField = errors.New("dispytch: topic placeholder has no matching event field")
	// ErrForeignOption reports a backend-specific emit option passed to a
	// producer of another backend.
	ErrForeignOption = backend.ErrForeignOption
	// ErrUnroutable reports a message the broker accepted but could not
	// route to any queue.
	ErrUnroutable = backend.ErrUnroutable
	// ErrEncode reports an event that could not be encoded.
	ErrEncode = errors.New("dispytch: encode failed")
	// ErrDecode reports a payload that is not a valid envelope, or a body
	// that does not decode into the handler's type.
	ErrDecode = errors.New("dispytch: decode failed")
	// ErrValidation reports an event body or topic segment that failed
	// validation.
	ErrValidation = errors.New("dispytch: validation failed")
	// ErrNoHandler reports a message no handler is registered for.
	ErrNoHandler = errors.New("dispytch: no handler")
	// ErrPanic reports a handler that panicked. The panic value and stack
	// are in the error text and the log.
	ErrPanic = errors.New("dispytch: handler panicked")
	// ErrInvalidGraph reports handlers or providers whose dependencies cannot
	// be resolved. Listener.Run returns it, wrapped in a *GraphError, before
	// consuming anything.
	ErrInvalidGraph = errors.New("dispytch: invalid dependency graph")
	// ErrStopping is returned by Inbox.Deliver once the listener is shutting
	// down and accepts no more deliveries.
	ErrStopping = backend.ErrStopping
	// ErrBadPattern reports a topic pattern or template that does not
	// parse.
	ErrBadPattern = topic.ErrBadPattern
	// ErrPermanent marks an error that must not be retried. See Permanent.
	// Backends wrap it around permanent broker errors too (access refused,
	// a missing virtual host, an inequivalent declaration), so a handler
	// whose emit failed that way is not retried.
	ErrPermanent = backend.ErrPermanent
	// ErrNotSent reports a message that was not sent: the context was done
	// before it was handed to the broker, or the producer could not send
	// it. Retrying it cannot create a duplicate.
	ErrNotSent = backend.ErrNotSent
	// ErrUnconfirmed reports a message that was handed to the broker but
	// whose confirmation did not arrive (the context ended, or the
	// connection was lost): the broker may or may not have stored it.
	// Retrying it may create a duplicate, which at-least-once consumers
	// tolerate.
	ErrUnconfirmed = backend.ErrUnconfirmed
	// ErrTooLarge reports a message larger than the broker accepts.
	ErrTooLarge = backend.ErrTooLarge
	// ErrNotReady reports a listener that never subscribed: Run returns it
	// when the start timeout passed, or its context ended, before the
	// consumer's subscription was in place, wrapped around the last cause.
	ErrNotReady = errors.New("dispytch: listener never became ready")
	// ErrAttemptTimeout reports a handler attempt that did not return
	// within its AttemptTimeout. It wraps context.DeadlineExceeded.
	ErrAttemptTimeout = fmt.Errorf("dispytch: handler attempt timed out: %w", context.DeadlineExceeded)
)

// ctxErr converts a context error into a dispytch error: a deadline wraps both
// ErrTimeout and context.DeadlineExceeded, a cancellation is returned as is.
func ctxErr(err error) error { return backend.ContextError(err) }

type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() []error {
	return []error{ErrPermanent, p.err}
}

// Permanent marks err as permanent: the handler is not retried, and the
// failure policy applies at once. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// isPermanent reports whether err was marked with Permanent, or is a decode
// or validation error, which retrying cannot fix.
func isPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrDecode) || errors.Is(err, ErrValidation)
}
