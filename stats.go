package dispytch

import "sync/atomic"

// Stats are a listener's counters since it was created.
type Stats struct {
	// Received counts deliveries accepted from the consumer.
	Received int64
	// Handled counts successful handler calls (one per handler per message).
	Handled int64
	// Retries counts handler retries, in the worker or through the broker.
	Retries int64
	// BrokerRetries counts the retries handed to the broker to wait there
	// (see BrokerRetries); they are in Retries too.
	BrokerRetries int64
	// Failed counts handlers that failed for good.
	Failed int64
	// Panics counts handler attempts that panicked.
	Panics int64
	// DeadLettered counts dead letters written.
	DeadLettered int64
	// DeadLetterErrors counts messages whose dead-lettering failed; they
	// were nacked for redelivery instead.
	DeadLetterErrors int64
	// Redelivered counts messages nacked for redelivery.
	Redelivered int64
	// Dropped counts failed messages acked and dropped (PolicyDrop).
	Dropped int64
	// Unhandled counts messages no handler was registered for.
	Unhandled int64
	// Poison counts payloads that were not valid envelopes.
	Poison int64
	// SkippedDeadLetters counts dead letters that reached a pattern
	// subscription and were not handled.
	SkippedDeadLetters int64
	// Abandoned counts messages left unsettled for redelivery at shutdown.
	Abandoned int64
	// AckErrors counts failed acks and nacks.
	AckErrors int64
	// Timeouts counts handler attempts that failed at their
	// AttemptTimeout.
	Timeouts int64
	// DeadLetterDropped counts messages that could not be dead-lettered
	// after DeadLetterAttempts deliveries (or for a permanent cause) and
	// were dropped by the DeadLetterFallback (also counted in Dropped).
	DeadLetterDropped int64
	// InFlight is the number of messages accepted and not yet settled.
	InFlight int64
}

// counter is an atomic counter on a cache line of its own: the consumer's
// goroutine and the workers update different counters on every message.
type counter struct {
	atomic.Int64
	_ [56]byte
}

type counters struct {
	received, finished, handled, retries, failed, panics, deadLettered, deadLetterErrors counter
	redelivered, dropped, unhandled, poison, skippedDeadLetters, abandoned, ackErrors    counter
	timeouts, deadLetterDropped, retriesLater                                            counter
}

func (c *counters) snapshot() Stats {
	return Stats{
		Received: c.received.Load(), Handled: c.handled.Load(), Retries: c.retries.Load(),
		Failed: c.failed.Load(), Panics: c.panics.Load(), DeadLettered: c.deadLettered.Load(),
		DeadLetterErrors: c.deadLetterErrors.Load(), Redelivered: c.redelivered.Load(),
		Dropped: c.dropped.Load(), Unhandled: c.unhandled.Load(), Poison: c.poison.Load(),
		SkippedDeadLetters: c.skippedDeadLetters.Load(), Abandoned: c.abandoned.Load(),
		AckErrors: c.ackErrors.Load(), InFlight: c.received.Load() - c.finished.Load(),
		Timeouts: c.timeouts.Load(), DeadLetterDropped: c.deadLetterDropped.Load(),
		BrokerRetries: c.retriesLater.Load(),
	}
}
