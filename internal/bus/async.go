package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
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
	// ConsumerAsync was the one durable consumer every worker pulled from,
	// in stream order across namespaces. Workers now pull from one
	// consumer per namespace (AsyncConsumerName) and delete this one at
	// start: a work queue keeps a message until it is acknowledged, so
	// the jobs it held are delivered again by the new consumers.
	ConsumerAsync = "workers"
	// ConsumerAsyncPrefix + namespace names the durable consumer of one
	// namespace's jobs, shared by every worker (see AsyncConsumerName).
	ConsumerAsyncPrefix = "workers_"
	// SubjectAsyncQueued carries a namespace name, published (core NATS,
	// best effort) after a job of that namespace is queued, so that idle
	// workers look at once instead of at their next poll.
	SubjectAsyncQueued = "cloister.events.queued"
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

// Defaults of AsyncLimits.
const (
	DefaultMaxQueuedPerNamespace = 1000
	DefaultMaxQueueJobs          = 1_000_000
	DefaultMaxQueueBytes         = 8 << 30
	DefaultActivationTTL         = 7 * 24 * time.Hour
)

// AsyncLimits bound the async queue and the records it leaves. A zero
// field takes its default; a negative one turns that limit off.
type AsyncLimits struct {
	// MaxQueuedPerNamespace is how many jobs one namespace may have in
	// the queue, waiting or running (acknowledged by no worker yet).
	// Submitting one more is refused with quota_exceeded (package async
	// enforces it; docs/adr/0001-async-fairness.md). Default 1000.
	MaxQueuedPerNamespace int
	// MaxQueueJobs and MaxQueueBytes bound the whole jobs stream, every
	// namespace together (defaults 1,000,000 jobs and 8 GiB). The stream
	// discards new messages at the limit: a full queue refuses a
	// submission (overloaded) and never drops a queued job.
	// MaxQueueBytes, when set, must be at least MaxPayload.
	MaxQueueJobs  int64
	MaxQueueBytes int64
	// ActivationTTL is how long an activation record or an idempotency
	// key is kept after its last write (default 7 days). It must outlast
	// the longest wait in the queue: a job whose record expired is
	// dead-lettered when a worker reaches it.
	ActivationTTL time.Duration
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l AsyncLimits) WithDefaults() AsyncLimits {
	if l.MaxQueuedPerNamespace == 0 {
		l.MaxQueuedPerNamespace = DefaultMaxQueuedPerNamespace
	}
	if l.MaxQueueJobs == 0 {
		l.MaxQueueJobs = DefaultMaxQueueJobs
	}
	if l.MaxQueueBytes == 0 {
		l.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if l.ActivationTTL == 0 {
		l.ActivationTTL = DefaultActivationTTL
	}
	return l
}

// ErrAsyncLimits reports limits that cannot be applied.
var ErrAsyncLimits = errors.New("invalid async limits")

// unlimited maps a negative limit to JetStream's -1 (no limit).
func unlimited(n int64) int64 { return max(n, -1) }

// AsyncConsumerName returns the durable consumer of the jobs on subject
// (SubjectAsyncPrefix + namespace): ConsumerAsyncPrefix + namespace. A
// subject whose last part is not a namespace name (published by
// something other than a gateway) gets a name derived from its hash, so
// that its messages can still be consumed and dead-lettered. Namespace
// names are lower case, so the two forms never meet.
func AsyncConsumerName(subject string) string {
	ns := strings.TrimPrefix(subject, SubjectAsyncPrefix)
	if len(ns) > 0 && len(ns) <= 63 && strings.Trim(ns, "abcdefghijklmnopqrstuvwxyz0123456789_-") == "" {
		return ConsumerAsyncPrefix + ns
	}
	h := sha256.Sum256([]byte(subject))
	return ConsumerAsyncPrefix + "X" + hex.EncodeToString(h[:16])
}

// AsyncStores are the JetStream stores of async invocations, triggers and
// sequences.
type AsyncStores struct {
	// Limits are the limits the stores were opened with, defaults applied.
	Limits      AsyncLimits
	JS          jetstream.JetStream
	Queue       jetstream.Stream
	Dead        jetstream.Stream
	Activations jetstream.KeyValue
	Nonces      jetstream.KeyValue
	Triggers    jetstream.KeyValue
	Sequences   jetstream.KeyValue
	OpenWhisk   jetstream.KeyValue
}

// OpenAsync creates (or opens) the async streams and buckets, and applies
// lim (defaults for its zero fields) to the jobs stream and the
// activations bucket. The roles that own these settings open the stores
// with it (the gateway and the trigger runner, from their flags); every
// such process must pass the same limits: the last one to open them sets
// the stream's configuration. Workers use BindAsync, which leaves them.
//
// Applying limits to an existing stream never removes a queued job:
// the stream discards new messages, and a stream over a lowered limit
// only refuses submissions until it drains. The per-namespace limit is
// not a stream setting (JetStream's per-subject limit deletes the oldest
// messages when it is lowered); package async enforces it. A TTL set on
// an existing bucket removes the records already older than it.
func OpenAsync(ctx context.Context, js jetstream.JetStream, replicas int, lim AsyncLimits) (*AsyncStores, error) {
	return openAsync(ctx, js, replicas, lim, true)
}

// BindAsync opens the async streams and buckets as they are, creating
// only those that are missing (with the default limits): a worker binds to
// what the gateways configured instead of setting it back to its own idea
// of the limits. The returned Limits are the defaults, except for the
// jobs stream's and the activations bucket's, read from them.
func BindAsync(ctx context.Context, js jetstream.JetStream, replicas int) (*AsyncStores, error) {
	return openAsync(ctx, js, replicas, AsyncLimits{}, false)
}

// openAsync is OpenAsync (apply) or BindAsync.
func openAsync(ctx context.Context, js jetstream.JetStream, replicas int, lim AsyncLimits, apply bool) (*AsyncStores, error) {
	if replicas < 1 {
		replicas = 1
	}
	lim = lim.WithDefaults()
	if lim.MaxQueueBytes > 0 && lim.MaxQueueBytes < MaxPayload {
		return nil, fmt.Errorf("%w: MaxQueueBytes %d is less than one message (%d bytes)", ErrAsyncLimits, lim.MaxQueueBytes, MaxPayload)
	}
	s := &AsyncStores{JS: js, Limits: lim}
	stream := func(cfg jetstream.StreamConfig) (jetstream.Stream, error) {
		var st jetstream.Stream
		err := RetryTransient(ctx, func(ctx context.Context) (err error) {
			if apply {
				st, err = js.CreateOrUpdateStream(ctx, cfg)
				return err
			}
			if st, err = js.Stream(ctx, cfg.Name); !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			if st, err = js.CreateStream(ctx, cfg); errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				st, err = js.Stream(ctx, cfg.Name) // another process created it meanwhile
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("opening stream %s: %w", cfg.Name, err)
		}
		return st, nil
	}
	var err error
	if s.Queue, err = stream(jetstream.StreamConfig{
		Name: StreamAsync, Subjects: []string{SubjectAsyncPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: replicas, Duplicates: AsyncDedupWindow, MaxMsgSize: MaxPayload,
		Discard: jetstream.DiscardNew, MaxMsgs: unlimited(lim.MaxQueueJobs), MaxBytes: unlimited(lim.MaxQueueBytes),
	}); err != nil {
		return nil, err
	}
	if s.Dead, err = stream(jetstream.StreamConfig{
		Name: StreamDead, Subjects: []string{SubjectDeadPrefix + ">"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Replicas: replicas, MaxAge: 30 * 24 * time.Hour, MaxMsgSize: MaxPayload,
	}); err != nil {
		return nil, err
	}
	kv := func(name string, ttl time.Duration) (jetstream.KeyValue, error) {
		cfg := jetstream.KeyValueConfig{Bucket: name, Storage: jetstream.FileStorage, Replicas: replicas, TTL: ttl, History: 1,
			MaxValueSize: MaxPayload}
		var b jetstream.KeyValue
		err := RetryTransient(ctx, func(ctx context.Context) (err error) {
			if apply {
				b, err = js.CreateOrUpdateKeyValue(ctx, cfg)
				return err
			}
			if b, err = js.KeyValue(ctx, name); !errors.Is(err, jetstream.ErrBucketNotFound) {
				return err
			}
			if b, err = js.CreateKeyValue(ctx, cfg); errors.Is(err, jetstream.ErrBucketExists) {
				b, err = js.KeyValue(ctx, name) // another process created it meanwhile
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", name, err)
		}
		return b, nil
	}
	if s.Activations, err = kv(BucketActivations, max(lim.ActivationTTL, 0)); err != nil {
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
	if !apply {
		// What the stores were configured with.
		c := s.Queue.CachedInfo().Config
		s.Limits.MaxQueueJobs, s.Limits.MaxQueueBytes = c.MaxMsgs, c.MaxBytes
		if st, err := s.Activations.Status(ctx); err == nil {
			s.Limits.ActivationTTL = st.TTL()
		}
	}
	return s, nil
}
