package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A Follower serves reads of a key-value bucket from memory while a watch
// follows the bucket's keys under one prefix (docs/adr/0023-followed-buckets.md;
// the registry's entries, ADR 0021, and the gateway's OpenWhisk and
// sequence records): the hot path of an invocation then makes no store
// round trip for records that did not change. Without Follow, and for
// keys outside the followed prefix, every read goes to the store.
//
// Freshness. A change made through the Follower (Put, Delete, Wrote) is
// known at once; one made by another process when the watch delivers it,
// a few milliseconds after the write, as a read from a lagging replica
// would see it. An entry, or an absence, not confirmed for MaxFollowAge
// (by the watch, a read or a write) is read from the store again, so a
// watch that stalls without closing delays a change by at most that, and
// a record that does not change costs one read per MaxFollowAge instead of
// one per call. Revisions only move forward: an older delivery never
// replaces a newer entry.
type Follower struct {
	kv jetstream.KeyValue

	mu      sync.Mutex
	prefix  string
	synced  bool // the watch has delivered every entry that existed when it started
	entries map[string]followed
	// absent holds the keys a read did not find and nothing else has
	// reported, with when; at most maxAbsent of them, since callers may
	// ask for any key (a client calling names that do not exist).
	absent map[string]time.Time
	now    func() time.Time // time.Now; tests move it (SetClock)
}

// maxAbsent bounds Follower.absent; when full it starts again empty (the
// next read of each such key asks the store again).
const maxAbsent = 4096

// followed is a key's last known state, from the watch or a write. A
// deleted key has deleted set and keeps the revision that deleted it, so
// that an older put delivered late does not revive it.
type followed struct {
	rev     uint64
	value   []byte
	deleted bool
	at      time.Time // when the watch, a read or a write last confirmed it
}

// MaxFollowAge bounds how long a Follower serves an entry without its
// being confirmed.
const MaxFollowAge = 5 * time.Second

// KVEntry is a key's value and revision, as a Follower returns them.
type KVEntry struct {
	Value    []byte
	Revision uint64
}

// NewFollower wraps kv. It reads the store until Follow runs.
func NewFollower(kv jetstream.KeyValue) *Follower { return &Follower{kv: kv} }

// SetClock makes the Follower read the time from now (tests only).
func (f *Follower) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

func (f *Follower) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// Follow watches the keys that start with prefix ("" for the whole
// bucket; otherwise it ends with a dot) until ctx ends, and serves Get
// from memory meanwhile. Until the watch has delivered the entries that
// existed when it started, reads go to the store; they do again whenever
// the watch fails, until a new one, started after a wait (see Supervise,
// which logs to log), has delivered them.
//
// It returns once the first watch has started, or with the reason it
// could not start: the follower tries again regardless.
func (f *Follower) Follow(ctx context.Context, prefix string, log *slog.Logger) error {
	if prefix != "" && !strings.HasSuffix(prefix, ".") {
		return fmt.Errorf("following %q: the prefix must end with a dot", prefix)
	}
	started := make(chan error, 1)
	go Supervise(ctx, log, fmt.Sprintf("the watch of %s (%s>)", f.kv.Bucket(), prefix), func(ctx context.Context) error {
		return f.watch(ctx, prefix, started)
	})
	return <-started
}

// watch follows the keys under prefix until ctx ends or the watch fails.
// Whether it started goes to started, unless that holds a result already.
func (f *Follower) watch(ctx context.Context, prefix string, started chan<- error) error {
	report := func(err error) {
		select {
		case started <- err:
		default:
		}
	}
	w, err := f.kv.Watch(ctx, prefix+">")
	if err != nil {
		err = fmt.Errorf("following the bucket: %w", err)
		report(err)
		return err
	}
	f.mu.Lock()
	f.prefix, f.synced, f.entries, f.absent = prefix, false, map[string]followed{}, map[string]time.Time{}
	f.mu.Unlock()
	report(nil)
	defer func() {
		f.mu.Lock()
		f.synced, f.entries, f.absent = false, nil, nil // stale from now on: back to the store
		f.mu.Unlock()
		_ = w.Stop() // the watch is over either way
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return errors.New("the watch ended")
			case e == nil:
				f.mu.Lock()
				f.synced = true
				f.mu.Unlock()
			default:
				f.record(e.Key(), e.Revision(), e.Value(), e.Operation() != jetstream.KeyValuePut)
			}
		}
	}
}

// Following reports whether Get serves entries from memory.
func (f *Follower) Following() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// record notes revision rev of key unless a newer one is known; the
// known one it confirms.
func (f *Follower) record(key string, rev uint64, value []byte, deleted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries == nil || !strings.HasPrefix(key, f.prefix) {
		return
	}
	// A put of the revision a Delete here removed is older than the
	// deletion, though it carries the same revision.
	if cur, ok := f.entries[key]; ok && (rev < cur.rev || rev == cur.rev && cur.deleted && !deleted) {
		return
	}
	f.entries[key] = followed{rev: rev, value: value, deleted: deleted, at: f.clock()}
	delete(f.absent, key)
}

// recordAbsent notes that a read did not find key: an absence, or a
// known deletion, is confirmed; a known entry is left for the watch to
// settle, since the read may have been answered before that entry's write.
func (f *Follower) recordAbsent(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries == nil || !strings.HasPrefix(key, f.prefix) {
		return
	}
	if cur, ok := f.entries[key]; ok {
		if cur.deleted {
			cur.at = f.clock()
			f.entries[key] = cur
		}
		return
	}
	if len(f.absent) >= maxAbsent {
		clear(f.absent)
	}
	f.absent[key] = f.clock()
}

// cached returns key's entry from memory if it may be served.
func (f *Follower) cached(key string) (followed, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.synced || !strings.HasPrefix(key, f.prefix) {
		return followed{}, false
	}
	e, ok := f.entries[key]
	if !ok {
		at, ok := f.absent[key]
		e = followed{deleted: true, at: at}
		if !ok {
			return followed{}, false
		}
	}
	if f.clock().Sub(e.at) > MaxFollowAge {
		return followed{}, false
	}
	return e, true
}

// Get returns key's value, from memory when it may be served, otherwise
// from the store; jetstream.ErrKeyNotFound if there is none. The value is
// shared: callers must not change it.
func (f *Follower) Get(ctx context.Context, key string) (KVEntry, error) {
	if e, ok := f.cached(key); ok {
		if e.deleted {
			return KVEntry{}, jetstream.ErrKeyNotFound
		}
		return KVEntry{Value: e.value, Revision: e.rev}, nil
	}
	return f.Read(ctx, key)
}

// Read returns key's value from the store, and notes what it found.
func (f *Follower) Read(ctx context.Context, key string) (KVEntry, error) {
	e, err := f.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		f.recordAbsent(key)
		return KVEntry{}, err
	}
	if err != nil {
		return KVEntry{}, err
	}
	f.record(key, e.Revision(), e.Value(), false)
	return KVEntry{Value: e.Value(), Revision: e.Revision()}, nil
}

// Wrote notes a write this process made by other means (a compare-and-set
// Create or Update): value at revision rev.
func (f *Follower) Wrote(key string, rev uint64, value []byte) { f.record(key, rev, value, false) }

// Put writes key and notes it at once.
func (f *Follower) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := f.kv.Put(ctx, key, value)
	if err != nil {
		return 0, err
	}
	f.Wrote(key, rev, value)
	return rev, nil
}

// Delete deletes key, and notes the deletion at once: it deletes the
// revision it read (compare-and-set, retried when another write comes
// between), so that no delivery of that revision or an older one revives
// the key here. Deleting a key that does not exist is not an error.
func (f *Follower) Delete(ctx context.Context, key string) error {
	for {
		e, err := f.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			f.recordAbsent(key)
			return nil
		}
		if err != nil {
			return err
		}
		err = f.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // written since the read: read again
		}
		if err != nil {
			return err
		}
		f.record(key, e.Revision(), nil, true)
		return nil
	}
}
