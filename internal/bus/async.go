package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Async invocations, activations, triggers and sequences.
const (
	// StreamAsync is the work queue of asynchronous invocations
	// (WorkQueuePolicy: a message is removed once a worker acknowledges it).
	StreamAsync = "CLOISTER_ASYNC"
	// SubjectAsyncPrefix + namespace carries wire.AsyncJob.
	SubjectAsyncPrefix = "cloister.async."
	// ConsumerAsync is the durable consumer every worker pulls from.
	ConsumerAsync = "workers"
	// StreamDead keeps dead letters (wire.DeadLetter) durably.
	StreamDead = "CLOISTER_DEAD"
	// SubjectDeadPrefix + namespace carries dead letters.
	SubjectDeadPrefix = "cloister.dead."
	// HeaderDeadReason repeats a dead letter's code on its message.
	HeaderDeadReason = "Cloister-Dead-Reason"
	// TriggerQueue is the queue group of subject-trigger subscriptions, so
	// that one of many trigger runners handles each message.
	TriggerQueue = "triggers"

	// BucketActivations holds activation records ("a.<ns>.<id>") and
	// idempotency keys ("i.<ns>.<sha256>" → id).
	BucketActivations = "cloister_activations"
	// BucketAsyncNonces remembers the nonces of async sealed requests with
	// the activation they belong to, so a redelivery of the same activation
	// is recognised and anything else is a replay.
	BucketAsyncNonces = "cloister_async_nonces"
	// BucketTriggers holds triggers ("t.<ns>.<name>") and rules ("r.<ns>.<name>").
	BucketTriggers = "cloister_triggers"
	// BucketSequences holds sequence definitions ("s.<ns>.<name>").
	BucketSequences = "cloister_sequences"
	// BucketOpenWhisk holds what the OpenWhisk-compatible API keeps beside
	// a function, trigger or sequence: default parameters and annotations
	// ("a.<ns>.<name>", "t.<ns>.<name>"), and the gateway's per-namespace
	// deploy keys ("k.<ns>"). See docs/openwhisk.md.
	BucketOpenWhisk = "cloister_openwhisk"
)

// AsyncNonceWindow is how long an async request's nonce is remembered.
// Requests are refused when first seen more than half of it after sealing.
const AsyncNonceWindow = 24 * time.Hour

// AsyncDedupWindow is how long JetStream remembers a job's message id
// (the activation id) to drop a duplicate publish.
const AsyncDedupWindow = 10 * time.Minute

// AsyncStores are the JetStream stores of async invocations, triggers and
// sequences.
type AsyncStores struct {
	JS          jetstream.JetStream
	Queue       jetstream.Stream
	Dead        jetstream.Stream
	Activations jetstream.KeyValue
	Nonces      jetstream.KeyValue
	Triggers    jetstream.KeyValue
	Sequences   jetstream.KeyValue
	OpenWhisk   jetstream.KeyValue
}

// OpenAsync creates (or opens) the async streams and buckets.
func OpenAsync(ctx context.Context, js jetstream.JetStream, replicas int) (*AsyncStores, error) {
	if replicas < 1 {
		replicas = 1
	}
	s := &AsyncStores{JS: js}
	var err error
	s.Queue, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamAsync, Subjects: []string{SubjectAsyncPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: replicas, Duplicates: AsyncDedupWindow, MaxMsgSize: MaxPayload,
	})
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", StreamAsync, err)
	}
	s.Dead, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamDead, Subjects: []string{SubjectDeadPrefix + ">"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Replicas: replicas, MaxAge: 30 * 24 * time.Hour, MaxMsgSize: MaxPayload,
	})
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", StreamDead, err)
	}
	kv := func(name string, ttl time.Duration) (jetstream.KeyValue, error) {
		b, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Storage: jetstream.FileStorage, Replicas: replicas, TTL: ttl, History: 1,
			MaxValueSize: MaxPayload,
		})
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", name, err)
		}
		return b, nil
	}
	if s.Activations, err = kv(BucketActivations, 0); err != nil {
		return nil, err
	}
	if s.Nonces, err = kv(BucketAsyncNonces, AsyncNonceWindow); err != nil {
		return nil, err
	}
	if s.Triggers, err = kv(BucketTriggers, 0); err != nil {
		return nil, err
	}
	if s.Sequences, err = kv(BucketSequences, 0); err != nil {
		return nil, err
	}
	if s.OpenWhisk, err = kv(BucketOpenWhisk, 0); err != nil {
		return nil, err
	}
	return s, nil
}
