// Package redis is the Redis backend of Dispytch, on go-redis v9: Redis
// Streams with consumer groups (at-least-once, the default), and pub/sub
// (at-most-once, wire-compatible with Python Dispytch's Redis backend).
//
//	client, err := redis.New("redis://127.0.0.1:6379/0")
//	emitter := dispytch.NewEmitter(client)
//	listener := dispytch.NewListener(client, dispytch.ConsumerGroup("billing"))
//
// New builds the go-redis client from a URL and options (Addrs, Auth,
// TLS, DB; several addresses make a Cluster client, MasterName a Sentinel
// one); NewFromClient takes an existing redis.UniversalClient.
//
// # Streams mode
//
// One stream per topic, named as the topic. Emit is XADD with the
// envelope in field "data" and, so that tools (redis-cli XRANGE, XREAD)
// can filter without decoding it, the event id, type and content type in
// fields "id", "type" and "content-type", the key in "key" and each
// header as "h:<name>". Emit waits for Redis's reply; EmitAsync and
// EmitBatch pipeline. Trim and TrimAll bound streams (MAXLEN ~ n, or MINID
// ~ by age) on every XADD; nothing is trimmed by default.
//
// A listener reads with XREADGROUP for its group (ConsumerGroup; "dispytch"
// without one), created at the start on each stream (XGROUP CREATE
// MKSTREAM, from the first entry, or from the end with StartFrom(Latest)).
// The consumer name is one per Client: "<hostname>-<pid>-<random>", or
// ConsumerName ("<name>-2" for a second listener of the same group on the
// client). An entry is acked (XACK, batched per stream) only after
// every handler succeeded or it was dead-lettered; the listener's
// Concurrency bounds what is in flight, and a full listener stops the
// reading (backpressure): at most ReadCount entries wait in the consumer.
//
// Recovery: an entry pending on a consumer that died is reclaimed by the
// group's other consumers with XAUTOCLAIM once it has been idle for MinIdle
// (30s by default), and handled again; its delivery count, read from the
// pending entries list (XPENDING), sets Redelivered and DeliveryCount. A
// consumer keeps its own in-flight entries from going idle (XCLAIM to
// itself, every MinIdle/3), so a slow handler does not lose its entry. A
// nack (PolicyRedeliver) makes the entry idle at once, and the next
// XAUTOCLAIM delivers it again; at shutdown, what was not settled is made
// idle the same way, so the group's next consumer takes it at once. A
// retry that waits (RetryInterval, from 50ms up to MinIdle) goes to Redis too: the
// entry is given up with an idle time of MinIdle minus the wait, and comes
// back through XAUTOCLAIM when the wait is over, holding no worker
// (backend.DelayedNacker; each such retry counts towards DeliveryLimit). An
// entry delivered more than DeliveryLimit times (10 by default) goes to
// the group's dead letters with reason ReasonDeliveryLimit. After a
// connection loss, or a Redis restart, go-redis reconnects; the consumer
// reads its own pending entries again (XREADGROUP from 0), since the reply
// of a read in flight may be lost, and resumes the group where it was.
// Emits during an outage fail: ErrNotSent when the connection could not
// be made or Redis refused the command, ErrUnconfirmed when the command
// went out and no reply came (go-redis may have retried it: at-least-once).
//
// Ordering: Redis keeps one stream in order and XREADGROUP hands a consumer
// its entries in that order; the listener then orders by key (one key at a
// time, in order), so one consumer per group handles each key in order.
// Competing consumers of a group break it: they take entries of the same
// key at once, and a reclaimed entry comes after later ones.
//
// Patterns: Redis has no wildcard stream subscription. A listener with
// patterns ("user.{id}.created") looks for matching streams with SCAN
// MATCH <glob> TYPE stream (on every master of a Cluster) at the start and
// every StreamRefresh (5s), checks each name against the pattern itself,
// and creates its group on the new ones, from their first entry. The cost:
// each refresh walks the whole keyspace of the database (SCAN is
// incremental, O(keys) per pass, 1000 keys per call); with many keys,
// lengthen StreamRefresh or subscribe to literal topics.
//
// Dead letters go to the stream "<group>.dlq" with the original fields
// and the dispytch-dlq-* failure headers (as "h:" fields). The Client is a
// backend.DeadLetterStore: dispytch.DeadLetters (dlq.Open) lists, counts,
// purges (XDEL) and redrives them; kept entries stay where they are.
//
// In a Cluster, each command names one stream, except XREADGROUP, which the
// consumer issues once per hash slot for the streams of that slot.
//
// # PubSub mode
//
// WithMode(PubSub): Emit is PUBLISH <topic> <envelope>, the bare envelope
// bytes as Python Dispytch publishes them; a listener subscribes with
// SUBSCRIBE for literal topics and PSUBSCRIBE for patterns translated to
// globs (Glob: "user.{id}.created" becomes "user.*.created"). A glob's *
// also matches across delimiters ("user.1.2.created"), and its [ ] ? are
// escaped in literal segments; every message is checked against the
// pattern in the process, and a message that several subscriptions match
// is handled once. A Python emitter's message reaches a Go handler, and a
// Go emit reaches a Python subscriber.
//
// What this mode loses, plainly: anything published while no listener is
// subscribed is gone (Emit then fails with ErrUnroutable, since PUBLISH
// reports no receiver; not on a Cluster, where PUBLISH counts one node's
// subscribers); there are no consumer groups (every subscriber gets every
// message; no competing consumers); acks do nothing; a message in flight
// when the process dies is lost; a nack delivers the message again from
// memory only (lost at shutdown); the bare envelope carries no key and no
// headers (so no per-key order, no trace context), unless the emitter uses
// PubSubHeaders, a Go-only frame that Python cannot read; and Redis
// disconnects a subscriber whose output buffer overflows
// (client-output-buffer-limit pubsub), which a listener slower than its
// publishers becomes. Dead letters still go to streams ("<group>.dlq"),
// so they last and the dead-letter operations work.
package redis
