package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Transport carries anchor requests to the anchor (on the bus, the
// coordinator; in tests, an Anchor in the same process).
type Transport interface {
	Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error)
}

// LocalTransport calls an Anchor directly.
type LocalTransport struct{ Anchor *Anchor }

// Exchange implements Transport.
func (t LocalTransport) Exchange(_ context.Context, req *AnchorRequest) (*AnchorReply, error) {
	return t.Anchor.Handle(req)
}

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
	Logger   *slog.Logger
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

	direct      string        // the subject prefix of direct gets, if Options.Conn
	DirectReads atomic.Uint64 // direct gets made, for benchmarks
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
	putsMu         sync.Mutex
	puts           map[string]*keyPuts
	AnchorRequests atomic.Uint64 // batches sent, for tests and benchmarks
	PutsCombined   atomic.Uint64 // puts whose value another put of the same key replaced
}

// writing is a write of this handle that is in the bucket and whose
// commit the anchor has not answered yet.
type writing struct {
	digest []byte
	done   chan struct{} // closed once the answer is in the lease
	// waits is closed when the anchor tells the write to wait for another
	// worker's lease: a read then does not wait for it.
	waits   chan struct{}
	waiting bool // waits is closed; for the writer only
}

type pending struct {
	op   op
	res  result
	err  error
	done chan struct{}
}

// batcher sends queued operations to the anchor in batches: whatever is
// queued when a batch leaves goes in the next one.
func (f *Function) batcher() {
	ctx := f.s.ctx
	batch := make([]*pending, 0, maxBatch)
	var t timeouts
	defer t.stop()
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case p := <-f.q:
			batch = append(batch, p)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case p := <-f.q:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		f.send(ctx, t.get(ctx), batch)
	}
}

// Every anchor request times out after anchorTimeout, give or take
// timeoutReuse.
const (
	anchorTimeout = 10 * time.Second
	timeoutReuse  = time.Second
)

// timeouts hands a batcher a context that ends anchorTimeout after it was
// made, and makes a new one every timeoutReuse: a timer per batch costs
// more than the batch's encoding.
type timeouts struct {
	ctx    context.Context
	cancel context.CancelFunc
	made   time.Time
}

func (t *timeouts) get(parent context.Context) context.Context {
	if now := time.Now(); t.ctx == nil || now.Sub(t.made) >= timeoutReuse {
		t.stop()
		t.ctx, t.cancel = context.WithTimeout(parent, anchorTimeout)
		t.made = now
	}
	return t.ctx
}

func (t *timeouts) stop() {
	if t.cancel != nil {
		t.cancel()
	}
}

// send sends batch to the anchor, cctx bounding the exchange, and hands
// each operation its result; ctx is the store's.
func (f *Function) send(ctx, cctx context.Context, batch []*pending) {
	finish := func(err error) {
		for _, p := range batch {
			p.err = err
			close(p.done)
		}
	}
	ops := make([]op, len(batch), len(batch)+1)
	for i, p := range batch {
		ops[i] = p.op
	}
	sent := time.Now()
	leaseAt := -1 // the lease request in ops, if any
	for i, p := range batch {
		if p.op.Kind == opLease {
			leaseAt = i // queued by renew
		}
	}
	if leaseAt < 0 && f.lease.want(sent) {
		ops = append(ops, op{Kind: opLease, Holder: f.holder})
		leaseAt = len(ops) - 1
	}
	leasing := leaseAt >= 0
	pt, err := appendOps(make([]byte, 0, 128*len(ops)), ops)
	if err != nil {
		f.lease.granted(leasing, sent, 0)
		finish(err)
		return
	}
	nonce, sealed := f.k.sealMessage(requestAAD(f.ns, f.name), pt)
	f.AnchorRequests.Add(1)
	rep, err := f.s.o.Anchor.Exchange(cctx, &AnchorRequest{Namespace: f.ns, Name: f.name, Nonce: nonce, Sealed: sealed})
	if err != nil {
		f.lease.granted(leasing, sent, 0)
		if ctx.Err() != nil {
			finish(ErrClosed)
			return
		}
		finish(fmt.Errorf("%w: anchor: %v", ErrUnavailable, err))
		return
	}
	pt, err = f.k.openMessage(replyAAD(f.ns, f.name, nonce), rep.Nonce, rep.Sealed)
	var results []result
	if err == nil {
		results, err = decodeResults(pt)
	}
	if err != nil || len(results) != len(ops) {
		f.lease.granted(leasing, sent, 0)
		finish(&IntegrityError{Function: f.id, Kind: KindAnchor, Detail: "the anchor's reply does not authenticate for this request"})
		return
	}
	if leasing {
		f.lease.granted(true, sent, time.Duration(results[leaseAt].LeaseMS)*time.Millisecond)
	}
	for i, p := range batch {
		p.res = results[i]
		close(p.done)
	}
}

// renew queues a lease request on its own when the lease is due for
// renewal, so that a worker whose reads all come from the lease keeps it.
func (f *Function) renew() {
	if !f.lease.want(time.Now()) {
		return
	}
	p := &pending{op: op{Kind: opLease, Holder: f.holder}, done: make(chan struct{})}
	select {
	case f.q <- p:
	default:
		f.lease.granted(true, time.Now(), 0) // the queue is full: try later
	}
}

// KindAnchor is an anchor reply that was forged, altered or replayed.
const KindAnchor = "anchor reply"

// call sends one operation through the batcher and waits for its result.
func (f *Function) call(ctx context.Context, o op) (result, error) {
	p, err := f.submit(ctx, o)
	if err != nil {
		return result{}, err
	}
	return f.await(ctx, p)
}

// submit queues an operation for the next batch.
func (f *Function) submit(ctx context.Context, o op) (*pending, error) {
	p := &pending{op: o, done: make(chan struct{})}
	select {
	case f.q <- p:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.s.ctx.Done():
		return nil, ErrClosed
	}
}

// await waits for a submitted operation's result.
func (f *Function) await(ctx context.Context, p *pending) (result, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	if p.err != nil {
		return result{}, p.err
	}
	switch p.res.Status {
	case stOK, stConflict, stRetry:
		return p.res, nil
	case stQuota:
		return p.res, fmt.Errorf("%w: %s", ErrQuota, p.res.Msg)
	default:
		return p.res, fmt.Errorf("state: the anchor refused an operation: %s", p.res.Msg)
	}
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

// Get returns the current value of key and whether it exists.
func (f *Function) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if f.k == nil { // unsealed: the value alone, as a sealed read takes it
		if err := f.checkKey(key); err != nil {
			return nil, false, err
		}
		e, err := f.newest(ctx, f.plainName(key))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, false, nil
		} else if err != nil {
			return nil, false, unavailable(err)
		}
		return e.Value(), true, nil
	}
	v, ok, _, err := f.get(ctx, key)
	return v, ok, err
}

// get also returns what is on top of key: the anchor's entry (zero if
// none) with Rev set to the newest revision in the bucket when that is the
// committed one, to 0 when the bucket holds nothing, and to notOnTop
// otherwise (another writer's revision is on top, or the bucket was read
// first).
func (f *Function) get(ctx context.Context, key []byte) ([]byte, bool, *entry, error) {
	if err := f.checkKey(key); err != nil {
		return nil, false, nil, err
	}
	if f.k == nil {
		e, err := f.s.o.KV.Get(ctx, f.plainName(key))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, false, nil, nil
		} else if err != nil {
			return nil, false, nil, unavailable(err)
		}
		return e.Value(), true, &entry{Rev: e.Revision()}, nil
	}
	mode := readTogether
	for attempt := 0; ; attempt++ {
		v, ok, e, err := f.getOnce(ctx, key, mode)
		switch {
		case errors.Is(err, errReread):
			mode = readAfter
			continue
		case errors.Is(err, errMovedOn):
			if attempt >= maxMovedOn {
				// Honest writers cannot push the committed revision out
				// of the history this many times in a row: it is gone.
				return nil, false, nil, f.integrity(KindMissing, "the committed value is gone from the store")
			}
			mode = readAfter
			if attempt >= 2 {
				mode = readBefore
			}
			continue
		}
		if err == nil && mode == readBefore && e != nil {
			e.Rev = notOnTop // the bucket was read first: nothing is known of its top
		}
		return v, ok, e, err
	}
}

// How a read orders its question to the anchor and its read of the bucket.
type readMode int

const (
	// readTogether asks the anchor and reads the bucket at once: the
	// fastest, but a stored value older than the anchor's entry may then
	// be a write committed in between, so the read is done again (readAfter)
	// before anything is concluded.
	readTogether readMode = iota
	// readAfter reads the bucket after the anchor answered. Writers store
	// a value before they commit it, and each store names the revision it
	// follows, so what the bucket holds then is never older than what the
	// anchor committed, unless the host rolled it back.
	readAfter
	// readBefore reads the bucket first: for a read that lost the race
	// twice to writers of the same key (errMovedOn). The revision the
	// anchor names is then one it has just committed; an older stored
	// value proves nothing, and the read relies on the exact revision.
	readBefore
)

// maxMovedOn bounds the reads that find newer writes on top and the
// committed revision pushed out of the bucket's history before the read
// concludes that the host removed it.
const maxMovedOn = 8

var (
	// errMovedOn means the committed revision a read was told of was
	// superseded, and pushed out of the bucket's history, before the read
	// reached the bucket: the read asks the anchor again.
	errMovedOn = errors.New("state: the value moved on during the read")
	// errReread means a readTogether read found an older value than the
	// anchor's: it reads again after the anchor.
	errReread = errors.New("state: read again after the anchor")
)

func (f *Function) getOnce(ctx context.Context, key []byte, mode readMode) ([]byte, bool, *entry, error) {
	name, _, _ := f.lookupKey(key)
	if mode == readTogether {
		if e, ok := f.lease.lookup(key); ok {
			// Under the read lease the cached entry is current: the
			// bucket is read after it, as in readAfter.
			f.renew()
			latest, kerr := f.newest(ctx, name)
			var d []byte
			if kerr == nil {
				d = digest(latest.Value())
				e = f.afterOwnWrite(ctx, key, e, d)
			}
			v, found, top, err := f.check(ctx, key, name, e, latest, d, kerr, readAfter)
			if errors.Is(err, errMovedOn) {
				return nil, false, nil, errReread
			}
			return v, found, top, err
		}
	}
	gen, running := f.lease.generation()
	var latest jetstream.KeyValueEntry
	var kerr error
	p, err := f.submit(ctx, op{Kind: opGet, Key: key})
	if err != nil {
		return nil, false, nil, err
	}
	if mode != readAfter {
		latest, kerr = f.newest(ctx, name)
	}
	res, err := f.await(ctx, p)
	if err != nil {
		return nil, false, nil, err
	}
	if res.Status != stOK {
		return nil, false, nil, fmt.Errorf("state: the anchor refused a read: %s", res.Msg)
	}
	f.lease.store(key, res.Entry, gen, running)
	if mode == readAfter {
		latest, kerr = f.newest(ctx, name)
	}
	return f.check(ctx, key, name, res.Entry, latest, nil, kerr, mode)
}

// afterOwnWrite returns the entry to check the newest revision of key,
// whose envelope's digest is d, against, in a read under the lease: e, the
// cached entry, unless the revision is not e's but a write of this handle
// that the anchor has committed since e was looked up, or is committing now
// (then it waits for the answer, unless the anchor holds the write back for
// another worker's lease). It then returns the write's entry, so that
// the read returns the envelope it already holds instead of reading the
// committed revision from the bucket again. That write committed during
// the read, so its value is as linearizable an answer as e's; and the
// envelope is still checked against the entry (digest, authentication,
// version) as any other.
func (f *Function) afterOwnWrite(ctx context.Context, key []byte, e *entry, d []byte) *entry {
	if e != nil && bytes.Equal(d, e.Digest) {
		return e
	}
	if ne, ok := f.lease.lookup(key); ok && ne != nil && bytes.Equal(ne.Digest, d) {
		return ne
	}
	wv, ok := f.writing.Load(string(key))
	if !ok || !bytes.Equal(d, wv.(*writing).digest) {
		return e
	}
	select {
	case <-wv.(*writing).done:
	case <-wv.(*writing).waits:
		return e // the commit waits for another worker's lease: read the committed revision
	case <-ctx.Done():
		return e
	}
	if ne, ok := f.lease.lookup(key); ok && ne != nil && bytes.Equal(ne.Digest, d) {
		return ne
	}
	return e
}

// check verifies what the bucket returned (latest, kerr) against the
// entry e, and returns the value, whether it exists, and what is on top. d
// is the digest of latest's value, if the caller computed it already.
func (f *Function) check(ctx context.Context, key []byte, name string, e *entry, latest jetstream.KeyValueEntry, d []byte, kerr error, mode readMode) ([]byte, bool, *entry, error) {
	if kerr != nil && !errors.Is(kerr, jetstream.ErrKeyNotFound) {
		return nil, false, nil, unavailable(kerr)
	}
	var env []byte
	if kerr == nil {
		env = latest.Value()
		if d == nil {
			d = digest(env)
		}
	}
	onTop := kerr == nil && e != nil && bytes.Equal(d, e.Digest)
	v, ok, err := f.verify(ctx, key, name, e, env, onTop, mode)
	if err != nil {
		return nil, false, nil, err
	}
	top := &entry{}
	if e != nil {
		*top = *e
	}
	switch {
	case kerr != nil && e == nil:
		top.Rev = 0 // nothing stored: a write creates the key
	case onTop:
		if top.Rev = latest.Revision(); top.Rev == 0 {
			top.Rev = e.Rev // read without its revision: the committed one's
		}
		f.remember(key, top.Rev, e.Version)
	default:
		top.Rev = notOnTop
	}
	return v, ok, top, nil
}

// verify checks what the bucket returned for key against the anchor's
// entry e, and returns the committed value. onTop reports whether env is
// the envelope e names (its digest is e's).
func (f *Function) verify(ctx context.Context, key []byte, name string, e *entry, env []byte, onTop bool, mode readMode) ([]byte, bool, error) {
	if onTop {
		if e.Deleted {
			return nil, false, nil
		}
		v, flags, val, err := f.k.open(f.ns, f.name, key, env)
		if err != nil || v != e.Version || flags != 0 {
			return nil, false, f.integrity(KindSwap, "the committed value does not authenticate for this key")
		}
		return val, true, nil
	}
	newer := false
	if env != nil {
		// Not the committed envelope: classify it.
		v, flags, _, err := f.k.open(f.ns, f.name, key, env)
		if err != nil {
			return nil, false, f.integrity(KindSwap, "the stored value does not authenticate for this key and function")
		}
		var cur uint64
		if e != nil {
			cur = e.Version
		}
		switch {
		case v < cur && mode == readTogether:
			return nil, false, errReread
		case v < cur && mode == readBefore:
			// Read before the anchor answered: maybe committed since.
		case v < cur && e.Deleted && flags == 0:
			return nil, false, f.integrity(KindReplay, "a deleted key was brought back")
		case v < cur:
			return nil, false, f.integrity(KindRollback, fmt.Sprintf("version %d was returned, the current version is %d", v, cur))
		}
		// v >= cur: a write not committed yet (or never: its writer
		// crashed), or one committed after the anchor answered. The value
		// the anchor named is an older revision.
		newer = true
	}
	if e == nil || e.Deleted {
		return nil, false, nil
	}
	got, err := f.s.o.KV.GetRevision(ctx, name, e.Rev)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if newer {
			return nil, false, errMovedOn
		}
		return nil, false, f.integrity(KindMissing, "the committed value is gone from the store")
	} else if err != nil {
		return nil, false, unavailable(err)
	}
	env = got.Value()
	if !bytes.Equal(digest(env), e.Digest) {
		if v, _, _, err := f.k.open(f.ns, f.name, key, env); err == nil && v < e.Version {
			return nil, false, f.integrity(KindRollback, fmt.Sprintf("version %d was returned, the current version is %d", v, e.Version))
		}
		return nil, false, f.integrity(KindSwap, "the committed revision holds another value")
	}
	v, flags, val, err := f.k.open(f.ns, f.name, key, env)
	if err != nil || v != e.Version || flags != 0 {
		return nil, false, f.integrity(KindSwap, "the committed value does not authenticate for this key")
	}
	return val, true, nil
}

// nextVersion returns a version above floor and above every version this
// handle made before. Versions follow the clock where they can, so that
// writers on different workers rarely collide.
func (f *Function) nextVersion(floor uint64) uint64 {
	for {
		last := f.lastVersion.Load()
		v := max(uint64(time.Now().UnixNano()), last+1, floor+1)
		if f.lastVersion.CompareAndSwap(last, v) {
			return v
		}
	}
}

// maxAttempts bounds the retries of a write that keeps losing to others.
const maxAttempts = 32

// hint is what a handle last saw of a key: the bucket revision and the
// version of its newest value. A stale hint costs a retry, never safety:
// the bucket refuses a store that does not follow the named revision, and
// the anchor refuses a commit that is not newer than the current one.
type hint struct{ rev, version uint64 }

// notOnTop marks a read whose committed revision is not the newest.
const notOnTop = ^uint64(0)

// maxHints bounds the keys whose names and hints a handle keeps.
const maxHints = 2 * DefaultMaxKeys

// keyInfo is what a handle keeps of a key: its name in the bucket (an HMAC,
// computed once) and its hint, if any.
type keyInfo struct {
	name   string
	h      hint
	hinted bool
}

// lookupKey returns key's name in the bucket and its hint, if any.
func (f *Function) lookupKey(key []byte) (string, hint, bool) {
	f.knownMu.Lock()
	if ki, ok := f.known[string(key)]; ok {
		name, h, hinted := ki.name, ki.h, ki.hinted
		f.knownMu.Unlock()
		return name, h, hinted
	}
	f.knownMu.Unlock()
	name := f.k.storeKey(f.ns, f.name, key)
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	if ki, ok := f.known[string(key)]; ok {
		return ki.name, ki.h, ki.hinted
	}
	f.keepLocked(key, &keyInfo{name: name})
	return name, hint{}, false
}

// keepLocked adds ki as key's. f.knownMu is held.
func (f *Function) keepLocked(key []byte, ki *keyInfo) {
	if f.known == nil || len(f.known) >= maxHints {
		f.known = map[string]*keyInfo{}
	}
	f.known[string(key)] = ki
}

// remember records what the handle saw of key, unless it already knows of
// a newer version: a read that learned of an older commit and finishes
// after a newer one must not send the next write after a superseded
// revision (a wasted round trip to the bucket and the anchor).
func (f *Function) remember(key []byte, rev, version uint64) {
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	ki, ok := f.known[string(key)]
	if !ok {
		ki = &keyInfo{name: f.k.storeKey(f.ns, f.name, key)}
		f.keepLocked(key, ki)
	}
	if ki.hinted && ki.h.version > version {
		return
	}
	ki.h, ki.hinted = hint{rev, version}, true
}

// forget drops key's hint.
func (f *Function) forget(key []byte) {
	f.knownMu.Lock()
	defer f.knownMu.Unlock()
	if ki, ok := f.known[string(key)]; ok {
		ki.hinted = false
	}
}

// commit seals value (or a tombstone), stores it as the key's next
// revision, and commits it at the anchor.
//
// The bucket's revisions of a key form a chain with increasing versions:
// each store names the revision it follows (compare-and-set on the
// bucket), which is the committed one, and takes a higher version. So at
// most one writer at a time has an uncommitted revision on top of a key.
//
// For opCAS, top is what the caller read (its Version the version to
// replace, its Rev the revision on top, or notOnTop); the commit happens
// only if nothing was stored since, and commit reports false otherwise.
// For the other kinds top is nil and commit retries until its version is
// the newest.
func (f *Function) commit(ctx context.Context, kind string, key, value []byte, tomb bool, top *entry) (result, bool, error) {
	defer f.lockKey(key)()
	name, h, hinted := f.lookupKey(key) // after the lock: this handle's last write of key is over
	var after, floor, expect uint64     // the revision to follow and its version
	known := false
	if top != nil {
		expect, floor = top.Version, top.Version
		if top.Rev != notOnTop {
			after, known = top.Rev, true
		}
	} else if hinted {
		after, floor, known = h.rev, h.version, true
	}
	var flags byte
	if tomb {
		flags, value = flagTombstone, nil
	}
	for range maxAttempts {
		if !known {
			var cur uint64
			var err error
			if after, cur, floor, err = f.resolve(ctx, key, name, floor); err != nil {
				return result{}, false, err
			}
			if kind == opCAS && cur != expect {
				return result{}, false, nil
			}
			known = true
		}
		v := f.nextVersion(floor)
		env := f.k.seal(f.ns, f.name, key, v, flags, value)
		var rev uint64
		var err error
		if after == 0 {
			rev, err = f.s.o.KV.Create(ctx, name, env)
		} else {
			rev, err = f.s.o.KV.Update(ctx, name, env, after)
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			// Someone stored after the revision we followed.
			if kind == opCAS {
				return result{}, false, nil
			}
			known = false
			continue
		}
		if err != nil {
			return result{}, false, unavailable(err)
		}
		co := op{Kind: kind, Key: key, Version: v, Expect: expect, Rev: rev, Digest: digest(env), Size: len(value),
			Tomb: tomb && kind == opCAS, Holder: f.holder}
		gen, running := f.lease.generation()
		w := &writing{digest: co.Digest, done: make(chan struct{}), waits: make(chan struct{})}
		f.writing.Store(string(key), w)
		res, err := f.call(ctx, co)
		for err == nil && res.Status == stRetry {
			// Another worker's read lease runs: wait for it to end.
			if !w.waiting {
				w.waiting = true
				close(w.waits)
			}
			if err = sleep(ctx, min(time.Duration(res.RetryMS)*time.Millisecond, 5*time.Second)); err == nil {
				gen, running = f.lease.generation()
				res, err = f.call(ctx, co)
			}
		}
		if err != nil {
			f.wrote(key, w)
			return res, false, err
		}
		if res.Status == stOK {
			f.remember(key, rev, v)
			ne := &entry{Version: v, Rev: rev, Digest: co.Digest, Size: co.Size, Deleted: tomb}
			if tomb && (res.Entry == nil || res.Entry.Deleted) {
				ne = res.Entry // nothing was deleted: the anchor kept what it had
			}
			f.lease.store(key, ne, gen, running)
			f.wrote(key, w)
			return res, true, nil
		}
		f.lease.store(key, res.Entry, gen, running)
		f.wrote(key, w)
		// Lost at the anchor (rare: the chain makes conflicts unlikely).
		// Put the committed envelope back on top of ours, so that the
		// chain's newest revision is the committed one again.
		f.forget(key)
		if err := f.withdraw(ctx, key, name, rev, res.Entry); err != nil {
			return result{}, false, err
		}
		if kind == opCAS {
			return res, false, nil
		}
		if res.Entry != nil {
			floor = max(floor, res.Entry.Version)
		}
		known = false
	}
	return result{}, false, fmt.Errorf("%w: the write kept conflicting with others", ErrUnavailable)
}

// keyWriter is the lock of a key's writes, and how many hold or wait for it.
type keyWriter struct {
	sync.Mutex
	refs int
}

// lockKey waits until no other write of key by this handle runs, and
// returns the function that ends this one.
func (f *Function) lockKey(key []byte) (unlock func()) {
	f.writersMu.Lock()
	w, ok := f.writers[string(key)]
	if !ok {
		if f.writers == nil {
			f.writers = map[string]*keyWriter{}
		}
		w = &keyWriter{}
		f.writers[string(key)] = w
	}
	w.refs++
	f.writersMu.Unlock()
	w.Lock()
	return func() {
		w.Unlock()
		f.writersMu.Lock()
		if w.refs--; w.refs == 0 {
			delete(f.writers, string(key))
		}
		f.writersMu.Unlock()
	}
}

// wrote ends w, the record of a write of key, once the anchor's answer is
// in the lease.
func (f *Function) wrote(key []byte, w *writing) {
	f.writing.CompareAndDelete(string(key), w)
	close(w.done)
}

// withdraw stores the committed envelope e again, after our uncommitted
// revision rev.
func (f *Function) withdraw(ctx context.Context, key []byte, name string, rev uint64, e *entry) error {
	if e == nil {
		return nil // nothing committed: ours reads as an uncommitted create
	}
	got, err := f.s.o.KV.GetRevision(ctx, name, e.Rev)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return f.integrity(KindMissing, "the committed value is gone from the store")
	} else if err != nil {
		return unavailable(err)
	}
	if !bytes.Equal(digest(got.Value()), e.Digest) {
		return f.integrity(KindSwap, "the committed revision holds another value")
	}
	if _, err := f.s.o.KV.Update(ctx, name, got.Value(), rev); err != nil &&
		!errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return unavailable(err)
	}
	return nil
}

// resolve finds the revision a write of key must follow: the committed
// one. While the newest revision is another writer's uncommitted one, it
// waits for that writer to commit or withdraw it, so that writers do not
// stack uncommitted revisions and push the committed one out of the
// bucket's history; one left behind by a writer that crashed is followed
// after abandonAfter.
func (f *Function) resolve(ctx context.Context, key []byte, name string, floor uint64) (after, cur, newFloor uint64, err error) {
	wait := time.Millisecond
	deadline := time.Now().Add(abandonAfter)
	for {
		res, err := f.call(ctx, op{Kind: opGet, Key: key})
		if err != nil {
			return 0, 0, 0, err
		}
		e := res.Entry
		cur = 0
		if e != nil {
			cur = e.Version
			floor = max(floor, e.Version)
		}
		latest, err := f.s.o.KV.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, cur, floor, nil
		} else if err != nil {
			return 0, 0, 0, unavailable(err)
		}
		env := latest.Value()
		if e != nil && bytes.Equal(digest(env), e.Digest) {
			return latest.Revision(), cur, floor, nil
		}
		lv, _, _, oerr := f.k.open(f.ns, f.name, key, env)
		if oerr != nil {
			return 0, 0, 0, f.integrity(KindSwap, "the stored value does not authenticate for this key and function")
		}
		if lv < cur {
			return 0, 0, 0, f.integrity(KindRollback, fmt.Sprintf("version %d was returned, the current version is %d", lv, cur))
		}
		floor = max(floor, lv)
		if time.Now().After(deadline) {
			return latest.Revision(), cur, floor, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, 0, 0, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// abandonAfter is how long an uncommitted revision on top of a key is
// waited for before a writer takes it for a crashed writer's and follows it.
const abandonAfter = 2 * time.Second

// Put sets key to value.
func (f *Function) Put(ctx context.Context, key, value []byte) error {
	if err := f.checkKey(key); err != nil {
		return err
	}
	if err := f.checkValue(value); err != nil {
		return err
	}
	if f.k == nil {
		_, err := f.s.o.KV.Put(ctx, f.plainName(key), value)
		if err != nil {
			return unavailable(err)
		}
		return nil
	}
	return f.put(ctx, key, value)
}

// Delete removes key and reports whether it existed.
func (f *Function) Delete(ctx context.Context, key []byte) (bool, error) {
	if err := f.checkKey(key); err != nil {
		return false, err
	}
	if f.k == nil {
		_, ok, _, err := f.get(ctx, key)
		if err != nil || !ok {
			return false, err
		}
		if err := f.s.o.KV.Delete(ctx, f.plainName(key)); err != nil {
			return false, unavailable(err)
		}
		return true, nil
	}
	res, _, err := f.commit(ctx, opDel, key, nil, true, nil)
	if err != nil {
		return false, err
	}
	return res.Entry != nil && !res.Entry.Deleted, nil
}

// CompareAndSwap sets key to newValue (or deletes it, when newPresent is
// false) if its current value is oldValue (or if it is absent, when
// oldPresent is false), and reports whether it did.
func (f *Function) CompareAndSwap(ctx context.Context, key, oldValue []byte, oldPresent bool, newValue []byte, newPresent bool) (bool, error) {
	if err := f.checkKey(key); err != nil {
		return false, err
	}
	if newPresent {
		if err := f.checkValue(newValue); err != nil {
			return false, err
		}
	}
	cur, present, e, err := f.get(ctx, key)
	if err != nil {
		return false, err
	}
	if present != oldPresent || (present && !bytes.Equal(cur, oldValue)) {
		return false, nil
	}
	if !present && !newPresent {
		return true, nil
	}
	if f.k == nil {
		return f.casPlain(ctx, key, present, e, newValue, newPresent)
	}
	_, ok, err := f.commit(ctx, opCAS, key, newValue, !newPresent, e)
	return ok, err
}

func (f *Function) casPlain(ctx context.Context, key []byte, present bool, e *entry, newValue []byte, newPresent bool) (bool, error) {
	name := f.plainName(key)
	var err error
	switch {
	case !newPresent:
		err = f.s.o.KV.Delete(ctx, name, jetstream.LastRevision(e.Rev))
	case present:
		_, err = f.s.o.KV.Update(ctx, name, newValue, e.Rev)
	default:
		_, err = f.s.o.KV.Create(ctx, name, newValue)
	}
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		return false, nil
	default:
		return false, unavailable(err)
	}
}

// List returns up to limit live keys that start with prefix and sort after
// start, in byte order, and whether there are more.
func (f *Function) List(ctx context.Context, prefix, start []byte, limit int) ([][]byte, bool, error) {
	if len(prefix) > MaxKeyBytes || len(start) > MaxKeyBytes {
		return nil, false, fmt.Errorf("%w: prefix or start over %d bytes", ErrInvalidKey, MaxKeyBytes)
	}
	if limit <= 0 || limit > maxList {
		limit = maxList
	}
	if f.k != nil {
		res, err := f.call(ctx, op{Kind: opList, Prefix: prefix, Start: start, Limit: limit})
		if err != nil {
			return nil, false, err
		}
		return res.Keys, res.More, nil
	}
	base := "u." + f.ns + "." + f.name + "."
	lister, err := f.s.o.KV.ListKeysFiltered(ctx, base+">")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, false, nil
		}
		return nil, false, unavailable(err)
	}
	var keys [][]byte
	for name := range lister.Keys() {
		k, err := hex.DecodeString(strings.TrimPrefix(name, base))
		if err != nil || !bytes.HasPrefix(k, prefix) || bytes.Compare(k, start) <= 0 {
			continue
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, bytes.Compare)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	return keys, more, nil
}
