package state

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

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
