// Package dispytch is an event-handling framework for Go services: typed
// events with a topic and an event type, an Emitter, handler groups with
// FastAPI-style dependency injection in handler signatures, validated event
// bodies, retries, dead letters, topic patterns, and pluggable backends
// (package memory, kafka, rabbitmq, or your own backend.Producer and backend.Consumer).
//
// It speaks Python Dispytch's wire envelope, {"id","type","body","timestamp"},
// in JSON (JSON) or msgpack (package codec/msgpack), so Go and Python
// services interoperate.
//
// # Emitting
//
// An event type declares its topic and event type; the topic may hold
// {field} placeholders filled from the event's JSON fields:
//
//	type UserRegistered struct {
//		User      User  `json:"user" validate:"required"`
//		Timestamp int64 `json:"timestamp"`
//	}
//	func (UserRegistered) Topic() string     { return "user_events" }
//	func (UserRegistered) EventType() string { return "user_registered" }
//
//	err := dispytch.NewEmitter(broker).Emit(ctx, UserRegistered{...})
//
// # Handling
//
// Handlers declare what they need as parameters, resolved by type:
// context.Context, Event[T] (the decoded, validated body with metadata),
// Metadata, Segments[S] (typed topic segments) and anything a provider
// supplies:
//
//	l := dispytch.NewListener(broker, dispytch.Provide(NewUserService))
//	l.Handle("user_events", "user_registered",
//		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error {
//			return svc.Welcome(ctx, ev.Body.User)
//		}, dispytch.Retries(3))
//	err := l.Run(ctx) // blocks until ctx is done, then drains
//
// Run checks every handler's dependencies before consuming anything and
// reports all problems in one *GraphError.
//
// # Delivery
//
// A message is acked only after every handler of it succeeded, or its
// failure was dealt with by the failure policy: PolicyDeadLetter (the default),
// PolicyRedeliver or PolicyDrop. In-flight work is bounded (Concurrency) and pushes back
// on the consumer; messages with the same ordering key are handled in order.
// On shutdown the listener stops taking messages, waits for in-flight
// handlers up to ShutdownTimeout, and leaves the rest unacked for
// redelivery.
package dispytch
