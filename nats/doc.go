// Package nats is the NATS JetStream backend of dispytch, on nats.go and
// its jetstream package: a Client is a backend.Producer for emitters, a
// backend.Consumer for listeners and a backend.DeadLetterStore for
// dlq.Open.
//
//	client, err := nats.New("nats://127.0.0.1:4222", nats.Stream("ORDERS"))
//	...
//	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("billing"))
//	emitter := dispytch.NewEmitter(client)
//
// # Topology
//
// Topics are subjects. Events are stored in one stream (Stream, default
// "DISPYTCH"), dead letters in another (DeadLetterStream, default the
// first's name plus "_DLQ"). The client creates the streams when they are
// missing, with file storage, and adds to them the subjects listeners
// consume and emitters publish to; with DeclareTopology(false) it uses
// what exists. A listener's patterns become NATS wildcards ({x} is *,
// {x...} is >), re-checked in process; they need the listener's Delimiter
// to be ".". Each consumer group is one durable pull consumer named after
// the group, with explicit acks, MaxAckPending sized from the listener's
// Concurrency, and AckWait (default 30 s): how long a delivery whose
// consumer died waits before the server redelivers it. Handlers may run
// longer than AckWait: the client sends InProgress for them.
//
// # Emitting
//
// Emit waits for the stream's ack. EmitAsync and EmitBatch publish
// asynchronously, at most PublishWindow messages awaiting their acks. The
// event id is the message's Nats-Msg-Id: the stream drops a message whose
// id it saw within its duplicate window (DuplicateWindow; 2 minutes by
// default), so that an emit retried after an unconfirmed publish is stored
// once. Headers carry the event id (dispytch-event-id), its type
// (dispytch-event-type), the codec's content type (content-type) and the
// key (dispytch-key). Errors say whether the message may have been stored:
// ErrNotSent (the context ended first, the connection is down, no stream
// holds the subject, the server refused it) or ErrUnconfirmed (sent, no ack).
// The first asynchronous publish to a subject no stream holds yet takes
// about half a second: nats.go retries it twice before the client adds the
// subject to the stream and publishes it again.
//
// # Delivery
//
// A delivery is acked once every handler succeeded, or once its dead
// letters are stored (it is then terminated). A retry that would wait goes
// back to the server with NakWithDelay, holding no worker (waits under
// MinServerDelay stay in the worker). Redelivered and
// DeliveryCount come from the message's metadata. MaxDeliver bounds the
// deliveries of a message: one delivered more often is dead-lettered with
// reason ReasonMaxDeliver.
//
// # Recovery
//
// nats.go reconnects by itself, without limit; pull subscriptions resume
// after a reconnect or a server restart, and a consumer deleted under a
// running listener is recreated from where the listener's deliveries end.
// Emits during an outage fail at once (the client's connection has no
// reconnect buffer).
//
// # Servers
//
// nats-server 2.9 and later. Before 2.10 a consumer takes one filter
// subject: a listener with several subjects then filters in process (see
// Consume).
//
// Core NATS (at-most-once, without JetStream) is not offered: use core
// nats.go for that.
package nats
