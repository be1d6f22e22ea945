package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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
