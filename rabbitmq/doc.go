// Package rabbitmq is the RabbitMQ backend of dispytch, built on
// github.com/rabbitmq/amqp091-go. A Client is both the emitter's Producer
// and the listener's Consumer:
//
//	client, err := rabbitmq.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
//	defer client.Close()
//	emitter := dispytch.NewEmitter(client)
//	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("billing"))
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
// Nothing is published once the emit context is done. A failed Emit says
// whether the broker may have the message: an error wrapping
// dispytch.ErrNotSent was never handed to it (retrying cannot duplicate
// it), one wrapping dispytch.ErrUnconfirmed was, but its confirm did not
// arrive before the context ended. A batch's *backend.BatchError tells
// which messages are which. An unroutable message's error says what to do:
// start a listener of the consuming group, or declare its queue with
// DeclareGroup.
//
// # Topology
//
// For a listener of group G with the default options, Consume declares:
//   - the topic exchanges, durable, unless they exist: an existing
//     exchange is used as it is (see below);
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
// DeclareTopology(false) (nothing is declared). An emitter declares only its
// exchanges. A service that only emits declares the queue of the group
// that will consume its events with DeclareGroup (or DeclareSubscription,
// from that listener's Subscription), so that nothing is dropped before
// the listener first runs.
//
// An exchange that already exists with other settings is used as it is: a
// durable or non-durable topic exchange carries every subscription, a
// direct exchange (Python Dispytch's documented default) literal topics
// only. A pattern subscription on a direct exchange, and any use of a
// fanout, headers or plugin exchange, fail at once with
// ErrPreconditionFailed naming the exchange and its type. (AMQP cannot
// describe an exchange: the client learns its type from the broker's
// answer to a declaration, see topology.go.) The README's section "Sharing
// topics with Python Dispytch" shows both directions with Python Dispytch.
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
// time, and the listener handles its messages one by one. When the active
// consumer's connection is lost, the broker requeues what it had not acked
// and activates the next consumer; the deliveries of the dead channel are
// stale (backend.StaleChecker), so its listener starts none of those it
// still holds. The one exception is inherent: a handler already running
// (or started in the instant before the client learned of the loss) runs
// to its end; its ack fails or is lost, and its message's redelivery may
// start on the next consumer meanwhile. Handlers of ordered streams should
// therefore be idempotent.
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
// The Client is a backend.DeadLetterStore: dlq.Open(client,
// "G.dlq") lists, counts, purges and redrives the letters of a group, and
// each of these makes one pass over what the queue held when it started
// (see ScanDeadLetters for how, and its limits):
//
//	n, err := dlq.Open(client, "billing.dlq").Redrive(ctx, client, nil)
//
// Letters the broker dead-lettered itself read with the reasons
// ReasonDeliveryLimit, ReasonExpired, ReasonMaxLen and ReasonRejected,
// which a dlq.Filter can select. Without
// the management plugin, rabbitmqctl list_queues name messages shows the
// dead-letter queues' depths. A listener subscribed only to dead-letter
// topics ("G.dlq") consumes those queues directly.
//
// Delayed retries: with RetryTiers, deliveries are backend.DelayedNackers: a
// retry that would wait is republished to the TTL wait queue of the shortest
// tier at least as long as the wait, with the attempts made so far, and the
// original is acked; it comes back to the group's queue when the tier's TTL
// passes, and the listener's Retries limit holds across the deliveries
// (Stats.BrokerRetries counts them). A waiting retry holds no worker and no
// prefetch slot. The listener does this for messages with one handler and
// no ordering key; others, and groups without tiers, retry in the worker.
//
// # Connection failures
//
// A permanent failure fails Dial, Emit and Listener.Run at once with the
// broker's reason: a refused login (ErrAccessRefused: RabbitMQ answers it
// after 3 s), a missing virtual host (ErrVhostNotFound), a declaration the
// broker refuses (ErrPreconditionFailed, or ErrAccessRefused without the
// configure permission). All wrap dispytch.ErrPermanent. A transient one (a
// refused connection, a broker restarting) is retried with backoff until
// the caller's context ends; the error then wraps dispytch.ErrTimeout and
// ends with the last cause: "...: last error: dial tcp ...: connection
// refused". A Listener.Run that never subscribed returns
// dispytch.ErrNotReady with that cause after its StartTimeout. Dial returns
// a client only once it could publish; New returns one that connects in
// the background, and whose errors carry the cause the same way.
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
// context's deadline, then fails with an error wrapping dispytch.ErrTimeout
// and dispytch.ErrNotSent; a message whose confirm was lost with the
// connection is published again while its context allows (so it may
// arrive twice: delivery is at-least-once), and fails with
// dispytch.ErrUnconfirmed when it does not. While the broker
// blocks publishing (connection.blocked: a memory or disk alarm), publishers
// wait for the unblock up to their deadline instead of hanging in a socket
// write. conn.go explains why the client runs its own recovery loop rather
// than amqp091's experimental one.
package rabbitmq
