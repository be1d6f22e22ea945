// Package registry stores function versions in a NATS KV bucket. A deploy
// commits with one compare-and-set on the function's "latest" entry, which
// embeds the newest record, so an interrupted deploy leaves nothing half
// written. Each version is then copied to its own immutable key (KV create)
// for history; a missing copy is repaired by the next deploy. The bucket is
// untrusted storage: readers that act on a record verify its
// coordinator-signed certificate.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
)

// Errors.
var (
	ErrNotFound = errors.New("registry: function not found")
	ErrConflict = errors.New("registry: version conflict")
)

// Record is one registered function version.
type Record struct {
	Certificate certs.Signed    `json:"certificate"`
	Manifest    json.RawMessage `json:"manifest"`
	Object      string          `json:"object"`
	Size        int             `json:"size"`
	Created     time.Time       `json:"created"`
	// Function is Certificate's body, decoded WITHOUT verification, for
	// listing. Never trust it for a security decision.
	Function certs.Function `json:"-"`
	// Policy is the function's certified invoker policy (certs.Policy),
	// which covers all its versions: Get returns the current one with
	// every version; Put, given one, installs it as PolicyVersion. Nil
	// for a function registered before policies existed.
	Policy        *certs.Signed `json:"-"`
	PolicyVersion int           `json:"-"`
}

type latest struct {
	Version int  `json:"version"`
	Deleted bool `json:"deleted,omitempty"`
	// FirstLive is the first version deployed since the last delete; older
	// versions belong to a deleted function and are never served again.
	FirstLive int     `json:"first_live,omitempty"`
	Record    *Record `json:"record,omitempty"`
	// LiveBytes is the bundle bytes of the live versions (FirstLive to
	// Version), for quotas. Records written before it existed count their
	// latest bundle only.
	LiveBytes int64 `json:"live_bytes,omitempty"`
	// Policy is the function's certified invoker policy, and
	// PolicyVersion its version, which only grows (a delete clears the
	// policy, not the number).
	Policy        *certs.Signed `json:"policy,omitempty"`
	PolicyVersion int           `json:"policy_version,omitempty"`
}

// live reports whether l names a function that is served.
func (l latest) live() bool { return l.Version != 0 && !l.Deleted }

// liveBytes is LiveBytes, or the latest bundle's size for older records.
func (l latest) liveBytes() int64 {
	if l.LiveBytes == 0 && l.Record != nil {
		return int64(l.Record.Size)
	}
	return l.LiveBytes
}

// Registry reads and writes function records.
type Registry struct {
	js jetstream.JetStream // the bucket's, for listings (bus.Keys)
	kv jetstream.KeyValue
	// decoded keeps the latest entries decoded, by key, with the revision
	// they were decoded from. A read still fetches the entry (so it sees
	// every change) but decodes it only when its revision is new: the
	// records carry certificates, manifests and policies, and decoding
	// them was a measurable part of every invocation (bench/README.md).
	decoded decodeCache
	// follow, while Follow runs, serves the "latest" entries from memory
	// (docs/adr/0021-registry-follow.md).
	follow *bus.Follower
}

// New wraps kv, a registry bucket of js.
func New(js jetstream.JetStream, kv jetstream.KeyValue) *Registry {
	return &Registry{js: js, kv: kv, follow: bus.NewFollower(kv)}
}

// names lists the names of a namespace's functions, from the bucket's
// stream (bus.Keys: a listing that no concurrent deploy makes miss one).
// A deleted function may be named: reading it finds it deleted.
func (r *Registry) names(ctx context.Context, ns string) ([]string, error) {
	keys, err := bus.Keys(ctx, r.js, r.kv, "latest."+ns+".*")
	if err != nil {
		return nil, fmt.Errorf("listing: %w", err)
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, "latest."+ns+".")
	}
	return keys, nil
}

// Follow watches the bucket's "latest" entries until ctx ends or the watch
// stops, so that Get and Latest skip the store round trip for an entry
// whose current revision the registry has (bench/README.md: the gateway
// made one on every call); each revision is decoded once. Every other
// read, and every write, still goes to the store. Freshness is
// bus.Follower's: a change made elsewhere arrives with the watch, a few
// milliseconds after the write, as a read from a lagging replica would see
// it; this registry's own writes at once; an entry unconfirmed for
// bus.MaxFollowAge is read again. A version newer than the one last seen
// is read from the store (Get). Follow returns once the watch has started,
// or with why it could not: it is tried again (and started again when it
// fails), with its failures in log. Until a watch has delivered the
// entries that existed when it started, reads go to the store.
func (r *Registry) Follow(ctx context.Context, log *slog.Logger) error {
	if err := r.follow.Follow(ctx, "latest.", log); err != nil {
		return fmt.Errorf("following the registry: %w", err)
	}
	return nil
}

// decodeCache holds decoded "latest" entries by key and revision.
type decodeCache struct {
	mu sync.Mutex
	m  map[string]decodedLatest
}

type decodedLatest struct {
	rev uint64
	l   latest
}

// maxDecoded bounds the cache; when full it starts again empty (a read
// after that costs one decode).
const maxDecoded = 4096

func (c *decodeCache) get(key string, rev uint64) (latest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[key]
	if !ok || d.rev != rev {
		return latest{}, false
	}
	return d.l.clone(), true
}

func (c *decodeCache) put(key string, rev uint64, l latest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxDecoded {
		c.m = make(map[string]decodedLatest)
	}
	c.m[key] = decodedLatest{rev: rev, l: l.clone()}
}

// clone copies l and its record, so that a caller that sets a record's
// fields (Get sets Function and Policy) never changes the cached one.
func (l latest) clone() latest {
	if l.Record != nil {
		rec := *l.Record
		l.Record = &rec
	}
	return l
}

// latest reads a function's latest entry from the store, with its
// revision: writes need the exact revision for their compare-and-set.
func (r *Registry) latest(ctx context.Context, ns, name string) (latest, uint64, error) {
	key := bus.LatestKey(ns, name)
	e, err := r.follow.Read(ctx, key)
	return r.decodeLatest(key, e, err)
}

// followed is latest for reads that may be served from memory: when the
// registry follows the bucket (Follow), no store round trip is made for an
// entry whose current revision it has.
func (r *Registry) followed(ctx context.Context, ns, name string) (latest, error) {
	key := bus.LatestKey(ns, name)
	e, err := r.follow.Get(ctx, key)
	l, _, err := r.decodeLatest(key, e, err)
	return l, err
}

// decodeLatest decodes an entry once per revision.
func (r *Registry) decodeLatest(key string, e bus.KVEntry, err error) (latest, uint64, error) {
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return latest{}, 0, nil
	}
	if err != nil {
		return latest{}, 0, fmt.Errorf("reading latest: %w", err)
	}
	if l, ok := r.decoded.get(key, e.Revision); ok {
		return l, e.Revision, nil
	}
	var l latest
	if err := json.Unmarshal(e.Value, &l); err != nil {
		return latest{}, 0, fmt.Errorf("decoding latest: %w", err)
	}
	if l.Record != nil {
		withFunction(l.Record)
	}
	r.decoded.put(key, e.Revision, l)
	return l, e.Revision, nil
}

// Refresh reads a function's latest entry from the store, so that a
// following registry serves what another process (the coordinator, at a
// deploy) has just written without waiting for the watch.
func (r *Registry) Refresh(ctx context.Context, ns, name string) error {
	_, _, err := r.latest(ctx, ns, name)
	return err
}

// Latest returns the latest live version of a function.
func (r *Registry) Latest(ctx context.Context, ns, name string) (int, error) {
	l, err := r.followed(ctx, ns, name)
	if err != nil {
		return 0, err
	}
	if l.Version == 0 || l.Deleted {
		return 0, fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	return l.Version, nil
}

// NextVersion returns the version number the next deploy must carry.
// Numbers are never reused, even after a delete.
func (r *Registry) NextVersion(ctx context.Context, ns, name string) (int, error) {
	l, _, err := r.latest(ctx, ns, name)
	return l.Version + 1, err
}

// Get returns one version (0 = latest).
func (r *Registry) Get(ctx context.Context, ns, name string, version int) (*Record, error) {
	l, err := r.followed(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if version > l.Version && r.follow.Following() {
		// Deployed since the follow last saw the entry (a client that
		// deploys and then calls the new version at once): read it.
		if l, _, err = r.latest(ctx, ns, name); err != nil {
			return nil, err
		}
	}
	if l.Version == 0 || l.Deleted || version > l.Version || version < 0 || (version != 0 && version < l.FirstLive) {
		return nil, fmt.Errorf("%w: %s/%s version %s", ErrNotFound, ns, name, versionName(version))
	}
	if version == 0 || version == l.Version {
		if l.Record == nil {
			return nil, fmt.Errorf("%w: %s/%s latest record missing", ErrNotFound, ns, name)
		}
		l.Record.Policy, l.Record.PolicyVersion = l.Policy, l.PolicyVersion
		return l.Record, nil
	}
	e, err := r.kv.Get(ctx, bus.FunctionKey(ns, name, version))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s/%s version %d", ErrNotFound, ns, name, version)
	}
	if err != nil {
		return nil, fmt.Errorf("reading function: %w", err)
	}
	rec, err := decode(e.Value())
	if err != nil {
		return nil, err
	}
	rec.Policy, rec.PolicyVersion = l.Policy, l.PolicyVersion
	return rec, nil
}

// Policy returns a function's current certified invoker policy (nil if it
// has none: registered before policies existed), its version, and whether
// the function is live (deployed and not deleted).
func (r *Registry) Policy(ctx context.Context, ns, name string) (*certs.Signed, int, bool, error) {
	l, _, err := r.latest(ctx, ns, name)
	if err != nil {
		return nil, 0, false, err
	}
	if !l.live() {
		return nil, l.PolicyVersion, false, nil
	}
	return l.Policy, l.PolicyVersion, true, nil
}

// SetPolicy installs a live function's new certified invoker policy. It
// fails with ErrConflict unless version is past the current one (and if
// another change comes between the read and the write: compare-and-set),
// so that concurrent updates cannot both win, and with ErrNotFound if the
// function is not live.
func (r *Registry) SetPolicy(ctx context.Context, ns, name string, version int, policy certs.Signed) error {
	l, rev, err := r.latest(ctx, ns, name)
	if err != nil {
		return err
	}
	if !l.live() {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	if version <= l.PolicyVersion {
		return fmt.Errorf("%w: the policy of %s/%s is at version %d, past %d", ErrConflict, ns, name, l.PolicyVersion, version)
	}
	l.Policy, l.PolicyVersion = &policy, version
	lb, err := json.Marshal(l)
	if err != nil {
		return err
	}
	newRev, err := r.kv.Update(ctx, bus.LatestKey(ns, name), lb, rev)
	if err != nil {
		return fmt.Errorf("%w: %s/%s changed during the policy update: %v", ErrConflict, ns, name, err)
	}
	r.follow.Wrote(bus.LatestKey(ns, name), newRev, lb)
	return nil
}

func versionName(v int) string {
	if v == 0 {
		return "latest"
	}
	return fmt.Sprint(v)
}

func withFunction(rec *Record) {
	_ = json.Unmarshal(rec.Certificate.Body, &rec.Function) // Function is for listing only (never trusted): a body that does not decode leaves it empty
}

func decode(b []byte) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decoding record: %w", err)
	}
	withFunction(&rec)
	return &rec, nil
}

// Put writes a new version. It fails with ErrConflict unless version is
// exactly the latest plus one, so concurrent deploys cannot both win.
func (r *Registry) Put(ctx context.Context, ns, name string, version int, rec *Record) error {
	l, rev, err := r.latest(ctx, ns, name)
	if err != nil {
		return err
	}
	if version != l.Version+1 {
		return fmt.Errorf("%w: %s/%s is at version %d; deploy version %d", ErrConflict, ns, name, l.Version, l.Version+1)
	}
	if l.Record != nil {
		if err := r.copyVersion(ctx, ns, name, l.Version, l.Record); err != nil {
			return err
		}
	}
	first, bytes := l.FirstLive, l.liveBytes()+int64(rec.Size)
	policy, policyVersion := l.Policy, l.PolicyVersion
	if l.Deleted || first == 0 {
		first, bytes, policy = version, int64(rec.Size), nil
	}
	if rec.Policy != nil {
		if rec.PolicyVersion <= l.PolicyVersion {
			return fmt.Errorf("%w: the policy of %s/%s is at version %d; the deploy carries version %d", ErrConflict, ns, name, l.PolicyVersion, rec.PolicyVersion)
		}
		policy, policyVersion = rec.Policy, rec.PolicyVersion
	}
	lb, err := json.Marshal(latest{Version: version, FirstLive: first, Record: rec, LiveBytes: bytes, Policy: policy, PolicyVersion: policyVersion})
	if err != nil {
		return err
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = r.kv.Create(ctx, bus.LatestKey(ns, name), lb)
	} else {
		newRev, err = r.kv.Update(ctx, bus.LatestKey(ns, name), lb, rev)
	}
	if err != nil {
		return fmt.Errorf("%w: %s/%s changed during the deploy: %v", ErrConflict, ns, name, err)
	}
	r.follow.Wrote(bus.LatestKey(ns, name), newRev, lb)
	// Committed. The history copy is best effort here and repaired by the
	// next deploy.
	_ = r.copyVersion(ctx, ns, name, version, rec)
	return nil
}

// copyVersion writes a version's immutable history key if it is missing.
func (r *Registry) copyVersion(ctx context.Context, ns, name string, version int, rec *Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := r.kv.Create(ctx, bus.FunctionKey(ns, name, version), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("writing version history: %w", err)
	}
	return nil
}

// Delete marks a function deleted. Its versions stay readable to auditors
// in the bucket history but are no longer served.
func (r *Registry) Delete(ctx context.Context, ns, name string) error {
	l, rev, err := r.latest(ctx, ns, name)
	if err != nil {
		return err
	}
	if l.Version == 0 || l.Deleted {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	l.Deleted = true
	lb, _ := json.Marshal(l) // plain data: cannot fail
	newRev, err := r.kv.Update(ctx, bus.LatestKey(ns, name), lb, rev)
	if err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	r.follow.Wrote(bus.LatestKey(ns, name), newRev, lb)
	return nil
}

// Usage is what a namespace holds in the registry, for quotas.
type Usage struct {
	// Functions is the number of live functions.
	Functions int
	// Bytes is the bundle bytes of their live versions.
	Bytes int64
}

// Usage adds up a namespace's live functions and their bundle bytes.
func (r *Registry) Usage(ctx context.Context, ns string) (Usage, error) {
	var u Usage
	names, err := r.names(ctx, ns)
	if err != nil {
		return u, err
	}
	for _, n := range names {
		l, _, err := r.latest(ctx, ns, n)
		if err != nil {
			return u, err
		}
		if l.live() {
			u.Functions++
			u.Bytes += l.liveBytes()
		}
	}
	return u, nil
}

// LiveVersions returns how many versions of a function are served (0 when
// it does not exist or was deleted).
func (r *Registry) LiveVersions(ctx context.Context, ns, name string) (int, error) {
	l, _, err := r.latest(ctx, ns, name)
	if err != nil || !l.live() {
		return 0, err
	}
	return l.Version - max(l.FirstLive, 1) + 1, nil
}

// List returns the latest live version of every function in a namespace,
// in name order.
func (r *Registry) List(ctx context.Context, ns string) ([]*Record, error) {
	out, _, err := r.ListPage(ctx, ns, "", 0)
	return out, err
}

// ListPage returns, in name order, the latest live version of the first
// limit functions of a namespace whose names sort after after ("": from
// the first; limit <= 0: all of them), and whether a live function
// follows the last one returned. It lists the names (keys only) and reads
// the records of the page alone, plus those it passes over because they
// were deleted, plus one to tell whether more follow.
func (r *Registry) ListPage(ctx context.Context, ns, after string, limit int) ([]*Record, bool, error) {
	all, err := r.names(ctx, ns)
	if err != nil {
		return nil, false, err
	}
	var names []string
	for _, n := range all {
		if n > after {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []*Record
	for _, n := range names {
		rec, err := r.Get(ctx, ns, n, 0)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if limit > 0 && len(out) == limit {
			return out, true, nil
		}
		out = append(out, rec)
	}
	return out, false, nil
}
