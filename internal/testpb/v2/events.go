// Package testpbv2 is the next version of testpb's UserRegistered, for
// schema evolution tests.
package testpbv2

// Topic makes UserRegistered an event.
func (*UserRegistered) Topic() string { return "user_events" }

// EventType makes UserRegistered an event.
func (*UserRegistered) EventType() string { return "user_registered" }
