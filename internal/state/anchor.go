package state

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
)

// Limits bound one function's state. Zero fields take the defaults.
type Limits struct {
	// MaxKeys bounds the live keys of a function.
	MaxKeys int
	// MaxBytes bounds the sum of the sizes of a function's live values.
	MaxBytes int64
}

// Default limits.
const (
	DefaultMaxKeys  = 100_000
	DefaultMaxBytes = 256 << 20
	// MaxKeyBytes bounds a key.
	MaxKeyBytes = 512
	// DefaultMaxValueBytes bounds a value (Options.MaxValueBytes).
	DefaultMaxValueBytes = 256 << 10
	// maxBatch bounds the operations of one anchor request.
	maxBatch = 512
	// maxList bounds the keys one list returns.
	maxList = 1000
)

func (l Limits) withDefaults() Limits {
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// AnchorConfig configures an Anchor.
type AnchorConfig struct {
	// Dir holds the anchor's sealed log.
	Dir string
	// Master is the coordinator's master secret: state keys are derived
	// from it, and so is the key that seals the log.
	Master []byte
	Limits Limits
	// Lease is how long a read lease lasts (see docs/state.md); 0 means
	// DefaultLease, negative disables leases (every read asks the anchor).
	Lease  time.Duration
	Logger *slog.Logger
	// Now is the anchor's clock (tests); nil means time.Now.
	Now func() time.Time
}

// DefaultLease is the default read lease.
const DefaultLease = 2 * time.Second

// Anchor is the trusted record of which version of every key of every
// function is current. It runs in the coordinator's TEE. It keeps each
// function's index in memory and appends every change to a sealed,
// hash-chained log in Dir, which it replays when it opens. It is safe for
// concurrent use.
type Anchor struct {
	master []byte
	limits Limits
	log    *slog.Logger
	keys   sync.Map // fnID → *keys, for valid names only

	lease   time.Duration
	now     func() time.Time
	started time.Time
	// recovered is set when the log held records at start: leases
	// granted before the restart may still run.
	recovered bool

	mu    sync.Mutex
	fns   map[string]*index
	store *anchorLog
}

// index is one function's current entries, tombstones included.
type index struct {
	entries map[string]*entry
	live    int
	bytes   int64
	// leases are the read leases granted, by holder, with their expiry.
	// While one holder's lease runs, no other holder's write commits.
	leases map[string]time.Time
	// revoking is set while a write waits for other holders' leases to
	// run out: no lease is granted or renewed meanwhile, nor for a while
	// after (noLeaseUntil): a function that several workers write is
	// served without leases.
	revoking     bool
	noLeaseUntil time.Time
}

func (x *index) apply(key string, e *entry) {
	if old := x.entries[key]; old != nil && !old.Deleted {
		x.live--
		x.bytes -= int64(old.Size)
	}
	x.entries[key] = e
	if !e.Deleted {
		x.live++
		x.bytes += int64(e.Size)
	}
}

// OpenAnchor opens (or creates) the anchor's log in cfg.Dir and replays it.
func OpenAnchor(cfg AnchorConfig) (*Anchor, error) {
	if len(cfg.Master) < 32 {
		return nil, errors.New("state anchor: master secret missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	a := &Anchor{master: cfg.Master, limits: cfg.Limits.withDefaults(), log: cfg.Logger.WithGroup("state"), fns: map[string]*index{},
		lease: cfg.Lease, now: cfg.Now, started: cfg.Now()}
	st, err := openAnchorLog(cfg.Dir, cfg.Master, func(fn string, changes []change) {
		a.recovered = true
		x := a.fn(fn)
		for _, c := range changes {
			x.apply(string(c.Key), c.Entry)
		}
	}, a.log)
	if err != nil {
		return nil, err
	}
	a.store = st
	return a, nil
}

// Close closes the log, syncing it to disk.
func (a *Anchor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.store.close()
}

func (a *Anchor) fn(id string) *index {
	x := a.fns[id]
	if x == nil {
		x = &index{entries: map[string]*entry{}, leases: map[string]time.Time{}}
		a.fns[id] = x
	}
	return x
}

// fnID names a function in the anchor's caches.
type fnID struct{ ns, name string }

// keysFor returns the keys of function (ns, name). A function is cached
// only once its names were found valid, so a hit needs no check.
func (a *Anchor) keysFor(ns, name string) (*keys, error) {
	if k, ok := a.keys.Load(fnID{ns, name}); ok {
		return k.(*keys), nil
	}
	if !bundle.ValidName(ns) || !bundle.ValidName(name) {
		return nil, fmt.Errorf("%w: invalid function name", ErrBadRequest)
	}
	sk, err := DeriveKey(a.master, ns, name)
	if err != nil {
		return nil, err
	}
	defer clear(sk)
	k, err := newKeys(sk)
	if err != nil {
		return nil, err
	}
	a.keys.Store(fnID{ns, name}, k)
	return k, nil
}

// ErrBadRequest means an anchor request is malformed or does not
// authenticate under the function's state key.
var ErrBadRequest = errors.New("state anchor: request refused")

// ErrMalformedRequest means an anchor request on the wire does not decode.
var ErrMalformedRequest = errors.New("state anchor: malformed request")

// Handle answers one request: it applies the batch's operations in order
// and makes its changes durable in the log before it answers.
func (a *Anchor) Handle(req *AnchorRequest) (*AnchorReply, error) {
	k, err := a.keysFor(req.Namespace, req.Name)
	if err != nil {
		return nil, err
	}
	pt, err := k.openMessage(requestAAD(req.Namespace, req.Name), req.Nonce, req.Sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	ops, err := decodeOps(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	id := req.Namespace + "/" + req.Name
	a.mu.Lock()
	x := a.fn(id)
	results := make([]result, len(ops))
	var changes []change
	var undo []change
	for i := range ops {
		results[i] = a.apply(x, &ops[i], &changes, &undo)
	}
	if len(changes) > 0 {
		if err := a.store.append(id, changes); err != nil {
			// Not durable: undo in reverse order and fail the batch.
			for i := len(undo) - 1; i >= 0; i-- {
				if undo[i].Entry == nil {
					if old := x.entries[string(undo[i].Key)]; old != nil && !old.Deleted {
						x.live--
						x.bytes -= int64(old.Size)
					}
					delete(x.entries, string(undo[i].Key))
				} else {
					x.apply(string(undo[i].Key), undo[i].Entry)
				}
			}
			a.mu.Unlock()
			a.log.Error("state anchor log append failed", "function", id, "err", err)
			return nil, fmt.Errorf("%w: anchor log: %v", ErrUnavailable, err)
		}
	}
	a.mu.Unlock()
	out, err := appendResults(make([]byte, 0, 64*len(results)), results)
	if err != nil {
		return nil, err
	}
	nonce, sealed := k.sealMessage(replyAAD(req.Namespace, req.Name, req.Nonce), out)
	return &AnchorReply{Nonce: nonce, Sealed: sealed}, nil
}

// HandleBinary is Handle for a request in its wire encoding
// (AnchorRequest.AppendBinary), answered in the reply's; it is what the
// coordinator serves on the bus. A request that does not decode is
// ErrMalformedRequest.
func (a *Anchor) HandleBinary(b []byte) ([]byte, error) {
	var req AnchorRequest
	if err := req.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRequest, err)
	}
	rep, err := a.Handle(&req)
	if err != nil {
		return nil, err
	}
	return rep.AppendBinary(make([]byte, 0, 1+nonceSize+len(rep.Sealed)))
}

// apply runs one operation on x. Changes are recorded in changes (for the
// log) and the entries they replaced in undo.
func (a *Anchor) apply(x *index, o *op, changes, undo *[]change) result {
	if o.Kind != opList && o.Kind != opLease && (len(o.Key) == 0 || len(o.Key) > MaxKeyBytes) {
		return result{Status: stInvalid, Msg: "invalid key"}
	}
	key := string(o.Key)
	cur := x.entries[key]
	var curV uint64
	if cur != nil {
		curV = cur.Version
	}
	switch o.Kind {
	case opGet:
		return result{Status: stOK, Entry: cur}
	case opList:
		return a.list(x, o)
	case opLease:
		return a.grant(x, o.Holder)
	case opPut, opCAS, opDel:
	default:
		return result{Status: stInvalid, Msg: "unknown operation"}
	}
	if len(o.Digest) != sha256.Size || o.Size < 0 || o.Version == 0 {
		return result{Status: stInvalid, Msg: "malformed commit"}
	}
	if wait := a.blocked(x, o.Holder); wait > 0 {
		return result{Status: stRetry, RetryMS: max(1, wait.Milliseconds())}
	}
	if o.Version <= curV || (o.Kind == opCAS && o.Expect != curV) {
		return result{Status: stConflict, Entry: cur}
	}
	ne := &entry{Version: o.Version, Rev: o.Rev, Digest: o.Digest, Size: o.Size, Deleted: o.Kind == opDel || o.Tomb}
	if ne.Deleted {
		if cur == nil || cur.Deleted {
			// Nothing to delete; no tombstone needed.
			return result{Status: stOK, Entry: cur}
		}
		ne.Size = 0
	} else {
		live, size := x.live, x.bytes+int64(o.Size)
		if cur == nil || cur.Deleted {
			live++
		} else {
			size -= int64(cur.Size)
		}
		if live > a.limits.MaxKeys {
			return result{Status: stQuota, Msg: fmt.Sprintf("the function has %d keys, the limit", a.limits.MaxKeys)}
		}
		if size > a.limits.MaxBytes {
			return result{Status: stQuota, Msg: fmt.Sprintf("the function's values would take %d bytes, over the limit of %d", size, a.limits.MaxBytes)}
		}
	}
	*undo = append(*undo, change{Key: o.Key, Entry: cur})
	*changes = append(*changes, change{Key: o.Key, Entry: ne})
	x.apply(key, ne)
	return result{Status: stOK, Entry: cur}
}

// grant gives holder a read lease, unless a write waits for leases to
// run out.
func (a *Anchor) grant(x *index, holder string) result {
	if a.lease < 0 || holder == "" || len(holder) > 64 {
		return result{Status: stOK}
	}
	now := a.now()
	a.expire(x, now)
	if x.revoking && len(x.leases) == 0 {
		x.revoking, x.noLeaseUntil = false, now.Add(10*a.lease)
	}
	if x.revoking || now.Before(x.noLeaseUntil) {
		return result{Status: stOK}
	}
	x.leases[holder] = now.Add(a.lease)
	return result{Status: stOK, LeaseMS: a.lease.Milliseconds()}
}

// blocked returns how long a commit from holder must wait: until the
// leases of every other holder have run out, and, after the anchor
// started, until any lease granted before it could have run out.
func (a *Anchor) blocked(x *index, holder string) time.Duration {
	if a.lease < 0 {
		return 0
	}
	now := a.now()
	if d := a.started.Add(a.lease).Sub(now); d > 0 && a.recovered {
		return d
	}
	a.expire(x, now)
	var until time.Time
	for h, exp := range x.leases {
		if h != holder && exp.After(until) {
			until = exp
		}
	}
	if until.IsZero() {
		if x.revoking {
			x.revoking = false
			x.noLeaseUntil = now.Add(10 * a.lease)
		}
		return 0
	}
	x.revoking = true
	return until.Sub(now)
}

func (a *Anchor) expire(x *index, now time.Time) {
	for h, exp := range x.leases {
		if !exp.After(now) {
			delete(x.leases, h)
		}
	}
}

func (a *Anchor) list(x *index, o *op) result {
	limit := o.Limit
	if limit <= 0 || limit > maxList {
		limit = maxList
	}
	var keys [][]byte
	for k, e := range x.entries {
		kb := []byte(k)
		if e.Deleted || !bytes.HasPrefix(kb, o.Prefix) || bytes.Compare(kb, o.Start) <= 0 {
			continue
		}
		keys = append(keys, kb)
	}
	slices.SortFunc(keys, bytes.Compare)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	return result{Status: stOK, Keys: keys, More: more}
}
