package compare

import "slices"

// Contender is one implementation compared in a case.
type Contender struct {
	Name string
	// Settings documents how it is configured, for the report.
	Settings string
	build    builder
}

// Case is a group of contenders measured alternately on the same workload.
type Case struct {
	Name  string
	Title string
	Mode  Mode
	// Kafka, AMQP and Redis say which broker the case needs.
	Kafka, AMQP, Redis bool
	// ResetRSSBeforeConsume: the peak RSS reported is the consumer's alone.
	ResetRSSBeforeConsume bool
	Contenders            []Contender
	// Notes are printed under the case's table.
	Notes []string
}

var memoryContenders = []Contender{
	{Name: "dispytch", Settings: "memory broker; Emit; listener Concurrency(GOMAXPROCS), handler takes Event[UserEvent] (decoded, validated) and a *Service via DI", build: dispytchMemory},
	{Name: "watermill", Settings: "GoChannel defaults (OutputChannelBuffer 0) + Router, handler json.Unmarshals the payload; Persistent when all messages are queued first", build: watermillGoChannel},
	{Name: "bare", Settings: "buffered channel feeding GOMAXPROCS workers that json.Unmarshal the same bytes", build: bare},
}

// Cases lists every case, in the order they run.
func Cases() []Case {
	return []Case{
		{
			Name: "memory-queued", Title: "In memory, all messages queued first", Mode: ModeQueued,
			Contenders: append(slices.Clone(memoryContenders), Contender{Name: "dispytch-novalidate",
				Settings: "as dispytch, with a body type without validate tags (no go-playground/validator call): what validation costs", build: dispytchMemory}),
			Notes: []string{
				"Watermill's GoChannel keeps messages only when Persistent; on Subscribe it starts one goroutine per persisted message.",
				"The bare channel's buffer holds all N messages.",
			},
		},
		{
			Name: "memory-together", Title: "In memory, producer and consumer together", Mode: ModeTogether,
			Contenders: memoryContenders,
			Notes: []string{
				"Consume is end-to-end: N ÷ (last handled − first emit). Latency is sampled (≤8192 traced messages) under that saturating load, so it mostly measures how deep each design lets the queue grow: the bare channel holds 1024, the memory broker up to its capacity, GoChannel one goroutine per message.",
			},
		},
		{
			Name: "kafka", Title: "Kafka (kfake, 1 broker, 6 partitions)", Mode: ModeQueued, Kafka: true,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "kafka.Producer defaults (idempotent, acks=all, linger 0) with EmitAsync; kafka.Consumer defaults (one record at a time per partition, commit every 1s and at shutdown); listener Concurrency 64", build: dispytchKafka},
				{Name: "franz-go", Settings: "kgo defaults (idempotent, acks=all, linger 0), async Produce of pre-encoded envelopes + Flush; group consumer, one goroutine: PollFetches, decode, CommitUncommittedOffsets per poll", build: rawFranz},
				{Name: "franz-go-encoding", Settings: "as franz-go, but each event is encoded as a user would: encoding/json of the envelope with a fresh UUID", build: rawFranz},
				{Name: "franz-go-encoding-headers", Settings: "as franz-go-encoding, with the three headers Dispytch's records carry (content-type, dispytch-event-id, dispytch-event-type)", build: rawFranz},
				{Name: "dispytch-linger5ms", Settings: "as dispytch, with kafka.Linger(5ms) (Kafka's own clients' default since 4.0)", build: dispytchKafka},
				{Name: "watermill-kafka", Settings: "watermill-kafka v3.0.6 / Sarama defaults (sync producer, V1_0_0_0), one publisher; subscriber defaults + OffsetOldest (auto-commit every 1s), Router", build: watermillKafka},
				{Name: "watermill-kafka-concurrent", Settings: "as watermill-kafka, with -publishers goroutines sharing the sync publisher", build: watermillKafka},
				{Name: "dispytch-novalidate", Settings: "as dispytch, with a body type without validate tags: what validation costs", build: dispytchKafka},
			},
			Notes: []string{
				"The kfake cluster runs in the harness's parent process; contenders run in their own processes and reach it over loopback. Its CPU time competes with the contender's on the same 2 cores.",
				"Consume+commit: after the consumer stops, the group's lag is checked to be 0 (a note says otherwise).",
			},
		},
		{
			Name: "rabbitmq", Title: "RabbitMQ (local broker)", Mode: ModeQueued, AMQP: true,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "rabbitmq.Client ConfirmWindow(256), Prefetch(256), durable topic exchange + durable classic queue, persistent, mandatory; EmitAsync; listener Concurrency 64, manual acks", build: dispytchRabbit},
				{Name: "amqp091", Settings: "one channel, windowed confirms 256, persistent, mandatory; prefetch 256, one goroutine: decode, ack", build: rawAMQP},
				{Name: "watermill-amqp", Settings: "watermill-amqp v3.0.2 NewDurableQueueConfig defaults: a channel opened and closed per Publish, NO publisher confirms, prefetch 1; Router", build: watermillAMQP(false)},
				{Name: "watermill-amqp-tuned", Settings: "NewDurableQueueConfig + ConfirmDelivery, ChannelPoolSize = -publishers, as many concurrent publishers (each waits for its confirm), prefetch 256; Router", build: watermillAMQP(true)},
			},
			Notes: []string{
				"watermill-amqp's default publisher does not wait for confirms: its publish rate is not 'with confirms' and is not comparable as such. Its subscriber handles one message at a time per subscription (it waits for the ack before taking the next delivery), whatever the prefetch.",
			},
		},
		{
			Name: "nats", Title: "NATS JetStream (local nats-server, file storage)", Mode: ModeQueued,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "nats.Client PublishWindow(1024), PullBatch(256), MaxAckPending(1024); EmitAsync (headers: event id as Nats-Msg-Id, type, content type); listener Concurrency 64, explicit acks", build: dispytchNATS},
				{Name: "nats.go", Settings: "jetstream PublishMsgAsync of pre-encoded envelopes, window 1024, no headers; durable pull consumer, MaxAckPending 1024, Messages(PullMaxMessages(256)), one goroutine: decode, Ack", build: rawNATS},
				{Name: "nats.go-headers", Settings: "as nats.go, with the four headers Dispytch's messages carry (content-type, dispytch-event-id, dispytch-event-type, Nats-Msg-Id: the server deduplicates)", build: rawNATS},
				{Name: "watermill-nats", Settings: "watermill-nats v2.1.3 pkg/jetstream defaults: a synchronous PublishMsg per message; ephemeral consumer, Consume callback handing one message at a time to the Router, synchronous double ack", build: watermillNATS},
			},
			Notes: []string{
				"The server is the machine's nats-server (DISPYTCH_NATS_URL, default nats://127.0.0.1:4222), a separate process on the same cores; each run has a stream of its own, deleted afterwards.",
			},
		},
		{
			Name: "redis", Title: "Redis Streams (local server, database 13)", Mode: ModeQueued, Redis: true,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "redis.Client defaults: Streams, EmitAsync (pipelines of up to 512, 4 in flight), XREADGROUP COUNT 128, XACKs batched after the handlers; listener Concurrency 64", build: dispytchRedis},
				{Name: "go-redis", Settings: "go-redis v9: pipelined XADD of pre-encoded envelopes (field data only), 512 a pipeline, 4 in flight; one goroutine: XREADGROUP COUNT 128, decode, one XACK per batch", build: rawRedis},
				{Name: "go-redis-encoding-fields", Settings: "as go-redis, but each event is encoded as a user would (encoding/json of the envelope with a fresh UUID, in the pipeline goroutines) and written with the id, type and content-type fields Dispytch's entries carry", build: rawRedis},
				{Name: "watermill-redisstream", Settings: "watermill-redisstream v1.4.5 defaults: Publish waits for each XADD; consumer group subscriber, Router", build: watermillRedis(false)},
				{Name: "watermill-redisstream-concurrent", Settings: "as watermill-redisstream, with -publishers goroutines sharing the publisher", build: watermillRedis(true)},
			},
			Notes: []string{
				"Redis runs on the same 2 cores as the contender; its CPU time competes with the contender's.",
				"Dispytch's entries carry id, type and content-type fields next to the envelope; the raw publisher writes the envelope alone.",
			},
		},
		{
			Name: "backlog-memory", Title: "Backlog: N events queued on the memory broker before the listener starts", Mode: ModeBacklog,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "memory broker; Emit; listener Concurrency(GOMAXPROCS)", build: dispytchMemory},
			},
			Notes: []string{
				"Peak RSS includes the queued messages themselves: the broker is in the process.",
			},
		},
		{
			Name: "backlog-kafka", Title: "Backlog: N events in Kafka before the listener starts", Mode: ModeBacklog, Kafka: true,
			ResetRSSBeforeConsume: true,
			Contenders: []Contender{
				{Name: "dispytch", Settings: "as in the Kafka case (PartitionQueue defaults)", build: dispytchKafka},
				{Name: "franz-go", Settings: "as in the Kafka case (kgo default fetch sizes)", build: rawFranz},
			},
			Notes: []string{
				"The records live in kfake (the parent process). Peak RSS is the consuming process's, reset after its publish phase, so it is the consumer's alone.",
			},
		},
	}
}

func lookup(caseName, contender string) (builder, bool) {
	for _, c := range Cases() {
		if c.Name != caseName {
			continue
		}
		for _, ct := range c.Contenders {
			if ct.Name == contender {
				return ct.build, true
			}
		}
	}
	return nil, false
}
