package state

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure a Store.
type Options struct {
	// KV is the bucket that holds the values (untrusted).
	KV jetstream.KeyValue
	// Conn, if set, is the connection to the NATS server that holds KV:
	// reads of a key's newest value are then JetStream direct gets of the
	// value alone, without the headers stored with it (direct.go). (An
	// Unsealed store then reads an empty value as absent.)
	Conn *nats.Conn
	// Anchor reaches the anchor. Required unless Unsealed.
	Anchor Transport
	// Unsealed stores values in the clear, with no anchor and no integrity
	// checks. It exists only as the baseline of the benchmarks and must
	// never serve real functions.
	Unsealed bool
	// MaxValueBytes bounds a value; 0 means DefaultMaxValueBytes.
	MaxValueBytes int
	// Pipeline is how many anchor batches of one function may be in
	// flight at once; 0 means 1. Fewer batches in flight make bigger
	// batches: in BenchmarkYCSB A, 1 sent 0.20 anchor requests per
	// operation where 2 sent 0.30 and 4 sent 0.42, for less CPU per
	// operation and no worse p50 or p99 (bench/README.md).
	Pipeline int
	// Metrics, if set, counts the store's anchor requests, combined puts
	// and direct reads, over all its functions.
	Metrics Metrics
	Logger  *slog.Logger
}

// Store is a worker's view of the sealed state of the functions it runs.
// It is safe for concurrent use.
type Store struct {
	o      Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	fns map[string]*Function

	direct string // the subject prefix of direct gets, if Options.Conn
}

// NewStore returns a store over o.KV.
func NewStore(o Options) (*Store, error) {
	if o.KV == nil {
		return nil, errors.New("state: Options.KV is required")
	}
	if o.Anchor == nil && !o.Unsealed {
		return nil, errors.New("state: Options.Anchor is required")
	}
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = DefaultMaxValueBytes
	}
	if o.Pipeline <= 0 {
		o.Pipeline = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{o: o, log: o.Logger.WithGroup("state"), ctx: ctx, cancel: cancel, fns: map[string]*Function{}}
	if o.Conn != nil {
		b := o.KV.Bucket()
		s.direct = "$JS.API.DIRECT.GET.KV_" + b + ".$KV." + b + "."
	}
	return s, nil
}

// Close stops the store's batching goroutines. Operations in flight fail
// with ErrClosed.
func (s *Store) Close() { s.cancel() }

// MaxValueBytes is the store's value limit.
func (s *Store) MaxValueBytes() int { return s.o.MaxValueBytes }

// Function returns the state of function (ns, name), sealed with stateKey
// (ignored when the store is unsealed). Handles are cached: a second call
// with the same key returns the same handle.
func (s *Store) Function(ns, name string, stateKey []byte) (*Function, error) {
	id := ns + "/" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if f, ok := s.fns[id]; ok && (s.o.Unsealed || subtle.ConstantTimeCompare(f.stateKey, stateKey) == 1) {
		return f, nil
	}
	f := &Function{s: s, ns: ns, name: name, id: id}
	if !s.o.Unsealed {
		k, err := newKeys(stateKey)
		if err != nil {
			return nil, err
		}
		f.k, f.stateKey = k, slices.Clone(stateKey)
		hb := make([]byte, 12)
		rand.Read(hb)
		f.holder = hex.EncodeToString(hb)
		f.q = make(chan *pending, 4*maxBatch)
		for range s.o.Pipeline {
			go f.batcher()
		}
	}
	s.fns[id] = f
	return f, nil
}

// Function is one function's state. Every operation is linearizable:
// writes take effect at the anchor, between their call and their return;
// reads ask the anchor, or rely on the handle's read lease, during which
// no other worker's write commits (docs/state.md).
//
// Its code lies by concern: reads in read.go, writes in write.go and
// puts.go, the batches of anchor requests in batch.go, the read lease in
// lease.go, and what the handle knows of each key in hints.go.
//
// A handle's locks, and what each guards:
//
//   - a keyWriter (one per key, in writers) serialises the handle's writes
//     of its key: commit holds it for the whole write, across the bucket's
//     I/O and the wait for the anchor's answer (lockKey);
//   - writersMu guards writers and each keyWriter's refs;
//   - putsMu guards puts and the groups in it (puts.go);
//   - knownMu guards known and the keyInfos in it (hints.go);
//   - lease.mu guards the lease and the entries it caches (lease.go);
//   - Store.mu, the store's, guards Store.fns.
//
// The order: a keyWriter first, then knownMu or lease.mu. A goroutine
// holds at most one keyWriter. The other locks are leaves: under one of
// them no other lock is taken and nothing waits (no I/O, no channel).
// putsMu is let go before a put's commit locks its keyWriter; writersMu is
// let go before a keyWriter is locked, and taken again only after it is
// unlocked.
//
// writing (a sync.Map) and lastVersion (an atomic) need no lock. A read
// waits on a writing's done or waits channel holding no lock; the writer
// closes them holding only its keyWriter. The batchers (batch.go) send
// batches, and so call the anchor and take its locks, holding no lock of
// the handle: a caller that holds a keyWriter while it waits for a batch
// cannot block them.
type Function struct {
	s            *Store
	ns, name, id string
	k            *keys
	stateKey     []byte
	q            chan *pending
	lastVersion  atomic.Uint64
	holder       string // names this handle's read lease at the anchor
	lease        lease
	// known holds, by key, its name in the bucket and what this handle
	// last saw of it (a hint).
	knownMu sync.Mutex
	known   map[string]*keyInfo
	writing sync.Map // string(key) → *writing
	// writers serialise this handle's writes of a key, so that a worker
	// stacks at most one uncommitted revision on a key at a time (and
	// writes of different keys never wait for each other).
	writersMu sync.Mutex
	writers   map[string]*keyWriter
	// puts holds the keys this handle is putting, and the puts waiting
	// for them (puts.go).
	putsMu sync.Mutex
	puts   map[string]*keyPuts
}

func (f *Function) checkKey(key []byte) error {
	if len(key) == 0 || len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: a key must be 1 to %d bytes", ErrInvalidKey, MaxKeyBytes)
	}
	return nil
}

func (f *Function) checkValue(v []byte) error {
	if len(v) > f.s.o.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, len(v), f.s.o.MaxValueBytes)
	}
	return nil
}

func (f *Function) plainName(key []byte) string {
	return "u." + f.ns + "." + f.name + "." + hex.EncodeToString(key)
}

func (f *Function) integrity(kind, detail string) error {
	f.s.log.Warn("state integrity violation detected", "function", f.id, "kind", kind)
	return &IntegrityError{Function: f.id, Kind: kind, Detail: detail}
}

func unavailable(err error) error { return fmt.Errorf("%w: %v", ErrUnavailable, err) }
