// Package kafka is the Kafka backend of dispytch, built on franz-go
// (github.com/twmb/franz-go).
//
// # Producing
//
// NewProducer builds a Producer from options (Brokers, ClientID, TLS,
// SASLPlain, SASLScramSHA256, SASLScramSHA512, Compression, Linger,
// RequiredAcks, CloseTimeout; idempotent writes are on), and
// NewProducerFromClient wraps a *kgo.Client you built. Give it to
// dispytch.NewEmitter. Emit returns once the brokers acknowledged the
// record; EmitBatch and EmitAsync hand every record to franz-go's batching
// at once.
//
// The record value is the dispytch envelope, unchanged; the record key is
// dispytch.Key or the event's EventKey method; the headers are the emit
// headers plus content-type, dispytch-event-id and dispytch-event-type, so
// that tools can filter records without decoding them. The emit options
// Partition, Timestamp and RecordHeader set the rest of the record.
//
// Nothing is sent once the emit's context is done. A failed emit says
// whether Kafka may have the record: dispytch.ErrNotSent (never handed to
// franz-go, or failed where it cannot have been written: retry freely) or
// dispytch.ErrUnconfirmed (handed over and not acknowledged before the
// context ended: a retry may duplicate it); see Producer for how franz-go
// makes this so. Too-large records wrap dispytch.ErrTooLarge, broker
// rejections dispytch.ErrPermanent.
//
// Close(ctx) flushes and cannot hang: without a deadline on ctx it waits
// DefaultCloseTimeout (10s) at most, then fails what is still buffered
// (not sent or unconfirmed, as above) and says how many records were left
// and the last broker error.
//
// Topic auto-creation is off by default: producing to a topic that does not
// exist fails with ErrUnknownTopic after franz-go's few metadata retries.
// Create topics up front (Producer.CreateTopics, or your usual tooling), or
// opt in with AllowAutoTopicCreation. Dynamic topics ("user.{id}.events")
// work like any other topic once they exist.
//
// # Consuming
//
// NewConsumer returns a Consumer for dispytch.NewListener. Each listener
// is a member of a consumer group: the listener's dispytch.Group, which is
// required and is the one group setting (it also names the dead-letter
// topic, "<group>.dlq"). The listener is ready once the group is joined
// and its committed offsets are fetched, right before fetching starts.
// Until then Consume keeps trying, and when the listener's start timeout
// (dispytch.StartTimeout) or context ends first, Run returns
// dispytch.ErrNotReady wrapped around the last cause ("dial tcp …:
// connection refused"); refused credentials, missing group or topic
// permissions and an invalid group id end it at once, wrapping
// dispytch.ErrPermanent. The record's content-type header is the
// delivery's ContentType, and every record header is in its Headers. Literal topics are subscribed by name; topic
// patterns become an anchored regex subscription, and the topics it finds are
// matched again against the patterns in-process. Topics created later that
// match are picked up at the next metadata refresh (TopicRefresh, default
// 10s). A new group starts at the earliest offset (StartFrom(Latest) to
// start at the end); a group with committed offsets resumes from them.
//
// The consumer follows franz-go's goroutine-per-partition design: a poll
// loop with BlockRebalanceOnPoll routes records to one goroutine per
// assigned partition, which hands them to the listener in offset order. By
// default, the records of a partition are handled one at a time, in order;
// with OrderPerKey, records with different keys run in parallel and each
// key stays in order. When a partition's queue is full (PartitionQueue:
// 10000 records or 8 MiB by default), fetching that partition pauses until
// the queue is down to a quarter, so memory stays bounded with a large
// backlog, and a handler retrying or stuck on one record holds back only its
// own partition (or key). The consumer sets franz-go's fetch wait to 100ms
// (Kafka's default is 500ms, franz-go's 5s): a resumed partition waits for
// the fetch already in flight to its broker, which long-polls for that long
// when the other partitions are at their end. With 500ms, a consumer working
// through a backlog larger than its queues ran at a tenth of its speed in the
// benchmarks; override it with ClientOptions(kgo.FetchMaxWait(d)).
//
// # Commits
//
// An offset is committed only up to the contiguous low-water mark: one past
// the last record of the longest prefix of settled records. A record that
// finishes early never carries the commit past an earlier record still
// running or retrying, so a crash loses nothing: the records after the mark
// are handled again (at-least-once). Offsets are committed every
// CommitInterval (default 1s) from the poll loop, when partitions are
// revoked, and at shutdown.
//
// On a rebalance, OnPartitionsRevoked stops handing over the revoked
// partitions' records, waits up to RevokeTimeout for those in flight to be
// settled, commits the mark and forgets the partitions; whatever was still
// in flight is abandoned to the next owner, so duplicates happen only
// across a rebalance (or when franz-go detects a truncated log and fetches
// again: Stats.Refetched). Lost partitions (the member was fenced out of the
// group) are forgotten without a commit. Acks of forgotten records return an
// error wrapping dispytch.ErrClosed. From the revoke (or loss) on, the
// partition's deliveries are stale (backend.StaleChecker): the listener
// does not start the ones still queued, nor retry the ones running.
//
// Kafka cannot redeliver a single record, so a nack (the Redeliver failure
// policy, or a dead letter that could not be published) makes the consumer
// deliver the record again itself after RedeliveryDelay, out of order with
// the records after it; the commit mark stays before it until it is acked.
//
// # Dead letters
//
// The Consumer is also a backend.Producer, so the listener publishes dead
// letters to Kafka: by the core's rule to the topic "<group>.dlq" (create it
// like any other topic), with the original key, value and headers plus the
// dispytch-dlq-* failure headers. The consumer's own producer accepts a
// record batch up to the dead-letter topic's max.message.bytes plus 64 KiB
// before compression, so that a record the broker accepted can be
// dead-lettered; one the broker still refuses is dead-lettered truncated,
// with its coordinates (dispytch-dlq-partition, -offset, -truncated).
// A dead letter that cannot be published is redelivered, with a growing
// delivery count, until dispytch.DeadLetterConfig.Attempts; then its
// Fallback applies, and the commit moves on.
//
// The Consumer is a backend.DeadLetterStore:
// dispytch.DeadLetters(consumer, "users.dlq") lists, counts, purges and
// redrives a dead-letter topic. A log cannot delete records, so removal is
// a watermark in the consumer group "dispytch-dlq" (DeadLetterGroup); see
// Consumer.ScanDeadLetters for what that means for kept records and
// concurrent operators.
//
// # Health and lag
//
// A Producer reports its connection (backend.ConnReporter, read by
// dispytch.Emitter.Health): connecting, ready, or reconnecting from a
// failed broker connection until one succeeds; it pings the brokers in the
// background, at most every 2s, so that an idle producer notices an
// outage. A Consume call tells its listener when its broker connections or
// its group session fail and recover (dispytch.Listener.Health). The
// Consumer reports the lag of the partitions its running Consume calls own
// (backend.LagReporter; otel.WatchLag makes it a gauge).
package kafka
