// Package testpb holds generated Protobuf messages for tests, with the
// Eventer methods that make them Dispytch events.
package testpb

// Topic makes UserRegistered an event.
func (*UserRegistered) Topic() string { return "user_events" }

// EventType makes UserRegistered an event.
func (*UserRegistered) EventType() string { return "user_registered" }

// Topic makes Order an event.
func (*Order) Topic() string { return "orders" }

// EventType makes Order an event.
func (*Order) EventType() string { return "order_placed" }
