package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/journal"
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
	// Dir holds the anchor's sealed file log when JS is nil. With JS, an
	// anchor.log left there by an earlier version is moved into the
	// journal the first time the anchor leads (then renamed
	// anchor.log.migrated); Dir may be empty.
	Dir string
	// JS, if set, is where the anchor's log lives: the journal
	// bus.StreamAnchorJournal (internal/journal), which every coordinator
	// of the deployment reads, so that a standby can take over.
	JS jetstream.JetStream
	// Replicas is the journal stream's replica count (bus.Stores.Replicas).
	Replicas int
	// Standby opens the anchor as a follower of the journal (JS is
	// required): it serves no request until Lead. Otherwise the anchor
	// leads from the start.
	Standby bool
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

// Errors of an anchor that does not serve. Both wrap ErrUnavailable.
var (
	// ErrNotLeading: the anchor is a standby (AnchorConfig.Standby) that
	// has not been told to Lead.
	ErrNotLeading = fmt.Errorf("%w: the state anchor is a standby: another coordinator is the active one", ErrUnavailable)
	// ErrFenced: the anchor stopped for good, because another coordinator
	// appended to its journal, or because the journal no longer verifies
	// (Anchor.Fenced).
	ErrFenced = fmt.Errorf("%w: the state anchor stopped: another coordinator wrote to its journal, or the journal no longer verifies", ErrUnavailable)
)

// Anchor is the trusted record of which version of every key of every
// function is current. It runs in the coordinator's TEE. It keeps each
// function's index in memory and makes every change durable before it
// answers: in a sealed, hash-chained log, either a journal in a replicated
// JetStream stream that standby coordinators follow (AnchorConfig.JS) or a
// file in AnchorConfig.Dir, which it replays when it opens. Changes are
// written by group commit (anchorcommit.go). It is safe for concurrent
// use.
type Anchor struct {
	master []byte
	limits Limits
	log    *slog.Logger
	keys   sync.Map // fnID → *keys, for valid names only
	lease  time.Duration
	now    func() time.Time
	dir    string

	// store is where changes become durable: the file log, or the journal
	// (then also journal, which Lead, CatchUp and the migration read).
	store    anchorStore
	journal  *journal.Journal
	js       jetstream.JetStream
	replicas int

	// transition serialises Lead and CatchUp, the owner's calls that read
	// the journal or change the anchor's role.
	transition sync.Mutex
	// stop is closed by Close: a settle in progress gives up.
	stop chan struct{}
	// fenced is closed when the anchor stops for good (Fenced).
	fenced    chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu  sync.Mutex
	fns map[string]*index
	// started is when the anchor began to lead. recovered is set when
	// leases granted before then, by this coordinator before a restart or
	// by the previous active one, may still run: writes then wait until a
	// lease granted at started would have run out (blocked).
	started   time.Time
	recovered bool
	// leading: the anchor serves requests; otherwise it is a standby.
	leading bool
	// halted, once set, is why the anchor serves nothing any more
	// (ErrFenced, or closed); down is set while the holder of the log
	// recovers from a failed append, and requests are refused meanwhile.
	halted, down error
	// appending: a goroutine holds the log, appending the queued flights
	// (commit); idle is signalled when it gives the log up.
	appending bool
	idle      sync.Cond
	// queue holds the flights waiting to be appended, oldest first;
	// inflight is the one being appended.
	queue    []*flight
	inflight *flight
	// unsettled is the record of an append whose outcome is unknown,
	// while the holder of the log reads the journal to learn it (settle).
	unsettled []byte
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

// apply makes e key's entry; nil removes the entry (when a change that
// created it is undone).
func (x *index) apply(key string, e *entry) {
	if old := x.entries[key]; old != nil && !old.Deleted {
		x.live--
		x.bytes -= int64(old.Size)
	}
	if e == nil {
		delete(x.entries, key)
		return
	}
	x.entries[key] = e
	if !e.Deleted {
		x.live++
		x.bytes += int64(e.Size)
	}
}

// OpenAnchor opens the anchor's log and rebuilds its index from it: with
// cfg.JS it opens the journal and reads it to the end, then leads unless
// cfg.Standby (see Lead); otherwise it opens (or creates) the file log in
// cfg.Dir and replays it.
func OpenAnchor(cfg AnchorConfig) (*Anchor, error) {
	if len(cfg.Master) < 32 {
		return nil, errors.New("state anchor: master secret missing")
	}
	if cfg.Standby && cfg.JS == nil {
		return nil, errors.New("state anchor: a standby needs the journal (JS)")
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
		lease: cfg.Lease, now: cfg.Now, dir: cfg.Dir, js: cfg.JS, replicas: cfg.Replicas,
		stop: make(chan struct{}), fenced: make(chan struct{})}
	a.idle.L = &a.mu
	if cfg.JS == nil {
		l, err := openAnchorLog(cfg.Dir, cfg.Master, a.applyRecord, a.log)
		if err != nil {
			return nil, err
		}
		a.store = l
		// Nobody else writes the file: the anchor leads at once.
		// started (now) and recovered (the log held records) cover a
		// restart of this coordinator.
		if err := a.startLeading(l.seq > 0); err != nil {
			return nil, err
		}
		return a, nil
	}
	ctx := context.Background()
	j, err := a.openJournal(ctx, func(_ uint64, pt []byte) error { return a.applyRecord(pt) })
	if err != nil {
		return nil, err
	}
	a.journal, a.store = j, journalStore{j}
	if _, err := j.CatchUp(ctx); err != nil {
		return nil, fmt.Errorf("state anchor: reading the journal: %w", err)
	}
	if !cfg.Standby {
		if err := a.Lead(ctx); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Close stops serving, waits for the changes already accepted to be
// durable (their requests are answered) and closes the file log.
func (a *Anchor) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		if a.halted == nil {
			a.halted = fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
		}
		a.mu.Unlock()
		close(a.stop)
		a.mu.Lock()
		for a.appending {
			a.idle.Wait()
		}
		a.mu.Unlock()
		a.closeErr = a.store.close()
	})
	return a.closeErr
}

// Fenced is closed when the anchor stops for good: another coordinator
// appended to the journal (this one lost its lead without noticing), or
// the journal no longer verifies. The anchor then refuses every request
// (ErrFenced), and the coordinator should exit.
func (a *Anchor) Fenced() <-chan struct{} { return a.fenced }

// applyRecord applies one durable record (one or more log records) to the
// index. It is the one path by which the index is rebuilt: the file log's
// replay, the journal's catch-up (a standby's and a settling leader's) and
// the migration of a file log into the journal. A record is decoded whole
// before any of it is applied, so one that does not decode changes
// nothing (the journal hands it again on the next catch-up).
func (a *Anchor) applyRecord(pt []byte) error {
	recs, err := decodeLogRecords(pt)
	if err != nil {
		return fmt.Errorf("state anchor: malformed log record: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leading {
		// A leader reads the journal only to settle an append whose
		// outcome was unknown (settle): the one record it may find is
		// that append's. Anything else was written by another
		// coordinator.
		if !bytes.Equal(pt, a.unsettled) {
			return errOtherWriter
		}
		a.unsettled = nil
	}
	for _, r := range recs {
		x := a.fn(r.Function)
		for _, c := range r.Changes {
			x.apply(string(c.Key), c.Entry)
		}
	}
	return nil
}

// refusal is why the anchor cannot serve a request now, or nil. a.mu is
// held.
func (a *Anchor) refusal() error {
	switch {
	case a.halted != nil:
		return a.halted
	case !a.leading:
		return ErrNotLeading
	case a.down != nil:
		return fmt.Errorf("%w: the state anchor is recovering from a failed write: %v", ErrUnavailable, a.down)
	}
	return nil
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
// and answers once its changes, and every change before them, are durable
// in the log. An anchor that does not serve answers an error that wraps
// ErrUnavailable (ErrNotLeading, ErrFenced).
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
	if err := a.refusal(); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	x := a.fn(id)
	results := make([]result, len(ops))
	var changes []change
	var undo []change
	for i := range ops {
		results[i] = a.apply(x, &ops[i], &changes, &undo)
	}
	// The reply may be released only once everything it reflects is
	// durable: this request's changes, and those of every request applied
	// before it, which it may have read.
	var f *flight
	idle := false
	if len(changes) > 0 {
		if f, err = a.enqueue(id, x, changes, undo); err != nil {
			revert(x, undo)
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: anchor log: %v", ErrUnavailable, err)
		}
		// Nobody holds the log: this request appends its flight itself.
		idle = !a.appending
		a.appending = true
	} else {
		f = a.newest()
	}
	if f != nil {
		f.waiters++
	}
	a.mu.Unlock()
	if idle {
		a.commit(true)
	}
	if f != nil {
		<-f.done
		if f.err != nil {
			return nil, f.err
		}
	}
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
// log) and the entries they replaced in undo (for revert).
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
