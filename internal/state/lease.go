package state

import (
	"sync"
	"time"
)

// lease is a handle's read lease and the entries it caches under it.
//
// While a holder's lease runs, the anchor commits no other holder's write
// to the function (a writer is told to retry once the lease has run out,
// and no lease is renewed meanwhile). So the entries the handle learned
// while its lease ran, from the anchor's answers and its own commits, stay
// current until the lease ends, and a read can use them instead of asking
// the anchor. The handle takes a lease to end at three quarters of its
// length, counted from when it sent the request, so that the anchor's
// lease always outlasts it unless the two clocks' rates differ by more
// than a quarter.
type lease struct {
	mu       sync.Mutex
	until    time.Time
	length   time.Duration
	asking   bool
	gen      uint64 // changes when a lease ends: entries of an older one are not kept
	entries  map[string]*entry
	disabled bool
}

// want reports whether a batch sent now should ask for (or renew) the
// lease, and marks the request as in flight.
func (l *lease) want(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disabled || l.asking || (l.length > 0 && l.until.Sub(now) > l.length/2) {
		return false
	}
	l.asking = true
	return true
}

// granted records the anchor's answer to a lease request sent at sent:
// length 0 means none.
func (l *lease) granted(asked bool, sent time.Time, length time.Duration) {
	if !asked {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.asking = false
	l.lapse(now)
	if length <= 0 {
		return
	}
	l.length = length
	if until := sent.Add(length * 3 / 4); until.After(now) && until.After(l.until) {
		l.until = until
	}
}

// lapse ends the lease when it has run out: its entries go, and the
// generation changes. l.mu is held.
func (l *lease) lapse(now time.Time) {
	if !l.until.IsZero() && !now.Before(l.until) {
		l.until, l.entries = time.Time{}, nil
		l.gen++
	}
}

// generation returns the current lease generation and whether the lease
// runs now, to pass to store with what the anchor answers next.
func (l *lease) generation() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lapse(time.Now())
	return l.gen, !l.until.IsZero()
}

// lookup returns the cached entry of key (nil: the key has none) while the
// lease runs.
func (l *lease) lookup(key []byte) (*entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lapse(time.Now())
	if l.until.IsZero() {
		return nil, false
	}
	e, ok := l.entries[string(key)]
	return e, ok
}

// maxCached bounds the entries a lease keeps.
const maxCached = DefaultMaxKeys

// store caches e (nil: the key has none) as the entry of key, learned
// from an answer to a request made when generation() returned gen and
// running. It is kept only if the lease ran then and has run since
// without a break (the same generation), so that the answer was current
// when the anchor gave it and has stayed so, and if no newer entry is
// cached.
func (l *lease) store(key []byte, e *entry, gen uint64, running bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lapse(time.Now())
	if !running || gen != l.gen || l.until.IsZero() {
		return
	}
	if l.entries == nil {
		l.entries = map[string]*entry{}
	}
	if old, ok := l.entries[string(key)]; ok && old != nil && (e == nil || old.Version > e.Version) {
		return
	}
	if len(l.entries) >= maxCached {
		clear(l.entries)
	}
	l.entries[string(key)] = e
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
