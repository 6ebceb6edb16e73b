// Package rabbitmq is the RabbitMQ backend of dispytch, built on
// github.com/rabbitmq/amqp091-go. A Client is both the emitter's Producer
// and the listener's Consumer:
//
//	client, err := rabbitmq.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
//	defer client.Close()
//	emitter := dispytch.NewEmitter(client)
//	listener := dispytch.NewListener(client, dispytch.Group("billing"))
//
// # Publishing
//
// Emit publishes to a durable topic exchange (default "dispytch"; see
// Exchanges for several, and the Exchange emit option to pick one) with the
// topic as routing key, persistent by default. It returns once the broker
// confirmed the message (publisher confirms, pipelined within a window of
// ConfirmWindow messages per channel, so batches, EmitAsync and concurrent
// Emits never pay a round trip per message). Messages are published with the
// mandatory flag: one no queue is bound for fails with an error wrapping
// dispytch.ErrUnroutable. The per-emit AMQP properties are emit options:
// Exchange, DeliveryMode/Transient, Priority, Expiration, Headers,
// ContentType, ContentEncoding, CorrelationID, ReplyTo, MessageID, Timestamp,
// Type, UserID, AppID. Options of other backends fail with
// dispytch.ErrForeignOption. The message key travels in the dispytch-key
// header.
//
// # Topology
//
// For a listener of group G with the default options, Consume declares:
//   - the topic exchanges, durable;
//   - the queue G (durable; classic, or quorum with WithQueueType), bound to
//     every exchange with each literal topic, and each pattern converted to
//     an AMQP binding key: {x} becomes *, {x...} becomes #;
//   - the dead-letter exchange "<first exchange>.dlx" (direct) and the
//     dead-letter queue "G.dlq" bound to it; G's x-dead-letter-exchange
//     points there too, so messages the broker itself dead-letters (quorum
//     delivery limit, TTL, overflow) land in the same queue;
//   - with RetryTiers, one wait queue per delay, "G.retry.<delay>".
//
// Bindings are only ever added: remove obsolete ones with your tooling. A
// listener without a group gets an exclusive, server-named queue that lives
// as long as its connection (a broadcast subscription: messages published
// while it is away are not kept). Bring your own topology with ExistingQueue
// (the group's queue is only checked, not declared or bound) or
// DeclareTopology(false) (nothing is declared).
//
// # Acknowledgements, prefetch and ordering
//
// Deliveries are acked manually, after all handlers of the message
// succeeded or their failure was dealt with. Prefetch (default 128) bounds
// the unacked messages of a consumer; keep it at least at the listener's
// Concurrency, or workers idle.
//
// Ordering caveats: a queue delivers in order, but the listener handles up
// to Concurrency messages at once, so completion order is arbitrary, except
// for messages with the same key (dispytch.Key, EventKey), which it handles
// one at a time in delivery order. Even then, order only holds within one
// consumer: competing consumers of a group split the queue between them,
// and a message requeued by a nack or by a lost connection is delivered
// again after later ones may have been handled. For a strictly ordered
// stream, use SingleActiveConsumer: one consumer of the group receives at a
// time, and the listener handles its messages one by one.
//
// # Failures
//
// The listener's failure policies map onto the broker as follows.
// DeadLetter (the default): the client publishes the original message, with
// its properties and AMQP headers (x-death included) plus the dispytch-dlq-*
// failure headers, to the dead-letter exchange and the queue "G.dlq", waits
// for the confirm and then acks the original. We chose this over nacking to
// the broker's dead-letter exchange because a nack cannot add the failure
// headers that Redrive needs (the handler that failed, the error); the
// broker's own dead-lettering still feeds the same queue, and such messages
// get equivalent headers when read (reason "broker_<x-death reason>").
// Redeliver: basic.nack with requeue; on quorum queues the broker counts
// deliveries (Info.DeliveryCount) and DeliveryLimit bounds them, after which
// the broker dead-letters the message to "G.dlq" with x-death reason
// "delivery_limit". Classic queues keep no count and do not bound
// redeliveries.
//
// dispytch.Redrive works with a Client as both consumer and producer: a
// subscription made only of dead-letter topics ("G.dlq") reads those queues
// directly, and republishes each message to its original topic.
//
// Delayed retries: the listener's Retries wait in the worker, holding a
// prefetch slot. With RetryTiers and the Client.DelayedRetries middleware, a
// failed attempt is republished to a TTL wait queue instead, and comes back
// after the delay for the failed handler only; see DelayedRetries.
//
// # Recovery
//
// Connections lost to a broker restart, rabbitmqctl close_all_connections
// or a network failure (detected by heartbeats) are redialed with
// exponential backoff. Consumers then declare their topology again and
// resume; a consumer cancelled by the broker (its queue was deleted) does the
// same. Deliveries of the lost channel are never acked on the new one: their
// acks fail with an error wrapping dispytch.ErrClosed, and the broker
// redelivers them. Publishing waits for the connection up to the emit
// context's deadline, then fails with an error wrapping dispytch.ErrTimeout;
// a message whose confirm was lost with the connection is published again
// (so it may arrive twice: delivery is at-least-once). While the broker
// blocks publishing (connection.blocked: a memory or disk alarm), publishers
// wait for the unblock up to their deadline instead of hanging in a socket
// write. conn.go explains why the client runs its own recovery loop rather
// than amqp091's experimental one.
package rabbitmq
