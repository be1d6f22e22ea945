package state

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

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
	Logger *slog.Logger
}

// Anchor is the trusted record of which version of every key of every
// function is current. It runs in the coordinator's TEE. It keeps each
// function's index in memory and appends every change to a sealed,
// hash-chained log in Dir, which it replays when it opens. It is safe for
// concurrent use.
type Anchor struct {
	master []byte
	limits Limits
	log    *slog.Logger
	keys   sync.Map // "ns/name" → *keys

	mu    sync.Mutex
	fns   map[string]*index
	store *anchorLog
}

// index is one function's current entries, tombstones included.
type index struct {
	entries map[string]*entry
	live    int
	bytes   int64
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
	a := &Anchor{master: cfg.Master, limits: cfg.Limits.withDefaults(), log: cfg.Logger.WithGroup("state"), fns: map[string]*index{}}
	st, err := openAnchorLog(cfg.Dir, cfg.Master, func(fn string, changes []change) {
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
		x = &index{entries: map[string]*entry{}}
		a.fns[id] = x
	}
	return x
}

func (a *Anchor) keysFor(ns, name string) (*keys, error) {
	id := ns + "/" + name
	if k, ok := a.keys.Load(id); ok {
		return k.(*keys), nil
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
	a.keys.Store(id, k)
	return k, nil
}

// ErrBadRequest means an anchor request is malformed or does not
// authenticate under the function's state key.
var ErrBadRequest = errors.New("state anchor: request refused")

// Handle answers one request: it applies the batch's operations in order
// and makes its changes durable in the log before it answers.
func (a *Anchor) Handle(req *AnchorRequest) (*AnchorReply, error) {
	if !bundle.ValidName(req.Namespace) || !bundle.ValidName(req.Name) {
		return nil, fmt.Errorf("%w: invalid function name", ErrBadRequest)
	}
	k, err := a.keysFor(req.Namespace, req.Name)
	if err != nil {
		return nil, err
	}
	var ops []op
	if err := k.openMessage(requestAAD(req.Namespace, req.Name), req.Nonce, req.Sealed, &ops); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if len(ops) == 0 || len(ops) > maxBatch {
		return nil, fmt.Errorf("%w: batch of %d operations", ErrBadRequest, len(ops))
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
	nonce, sealed, err := k.sealMessage(replyAAD(req.Namespace, req.Name, req.Nonce), results)
	if err != nil {
		return nil, err
	}
	return &AnchorReply{Nonce: nonce, Sealed: sealed}, nil
}

// apply runs one operation on x. Changes are recorded in changes (for the
// log) and the entries they replaced in undo.
func (a *Anchor) apply(x *index, o *op, changes, undo *[]change) result {
	if o.Kind != opList && (len(o.Key) == 0 || len(o.Key) > MaxKeyBytes) {
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
	case opPut, opCAS, opDel:
	default:
		return result{Status: stInvalid, Msg: "unknown operation"}
	}
	if len(o.Digest) != sha256.Size || o.Size < 0 || o.Version == 0 {
		return result{Status: stInvalid, Msg: "malformed commit"}
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
