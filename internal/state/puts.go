package state

import (
	"bytes"
	"context"
	"errors"
)

// Puts of one key through one handle are combined. A handle writes a key
// one write at a time (store after the committed revision, then commit:
// see commit), so under a hot key the puts would queue and each would pay
// a store and a commit in turn. Instead, the puts of a key that arrive
// while one is being written form a group, and the group writes once, the
// value of its last put, when that write ends. Every put of the group
// returns that write's outcome.
//
// This is linearizable: each put of the group but the last is ordered just
// before the group's write takes effect at the anchor. All of them were
// called before the write started and return after it ended, so that point
// lies within each call, and no read can come between them (their values
// are never stored, so none can be read). Compare-and-set and delete are
// not combined: their outcomes depend on the value they replace.

// putGroup is the puts of a key waiting for the write in progress.
type putGroup struct {
	value []byte // the last put's (a copy: a waiting caller may give up)
	n     int    // puts in the group; the nth wrote its value
	done  chan struct{}
	err   error
}

// keyPuts is a key that this handle is writing, and the group after it.
type keyPuts struct{ next *putGroup }

// put writes value to key, in a group with the other puts of key that
// arrive during the write before it.
func (f *Function) put(ctx context.Context, key, value []byte) error {
	k := string(key)
	f.putsMu.Lock()
	kp, busy := f.puts[k]
	if !busy {
		if f.puts == nil {
			f.puts = map[string]*keyPuts{}
		}
		f.puts[k] = &keyPuts{}
		f.putsMu.Unlock()
		_, _, err := f.commit(ctx, opPut, key, value, false, nil)
		f.putDone(k)
		return err
	}
	g := kp.next
	if g == nil {
		g = &putGroup{done: make(chan struct{})}
		kp.next = g
	}
	g.value = bytes.Clone(value)
	g.n++
	mine := g.n
	f.putsMu.Unlock()
	select {
	case <-g.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if mine == g.n || g.err == nil {
		if mine != g.n {
			f.s.o.Metrics.PutCombined()
		}
		return g.err
	}
	// The write of another put's value failed: it may have failed for that
	// value only (a quota), so this put is written on its own.
	if errors.Is(g.err, ErrClosed) {
		return g.err
	}
	_, _, err := f.commit(ctx, opPut, key, value, false, nil)
	return err
}

// putDone ends the write of key in progress and starts the group waiting
// behind it, if any.
func (f *Function) putDone(k string) {
	f.putsMu.Lock()
	kp := f.puts[k]
	g := kp.next
	if g == nil {
		delete(f.puts, k)
		f.putsMu.Unlock()
		return
	}
	kp.next = nil // later puts form the next group
	f.putsMu.Unlock()
	// The group's write belongs to none of its callers, each of which may
	// give up waiting; it is bounded as an anchor request is.
	go func() {
		ctx, cancel := context.WithTimeout(f.s.ctx, anchorTimeout)
		_, _, g.err = f.commit(ctx, opPut, []byte(k), g.value, false, nil)
		cancel()
		if g.err != nil && f.s.ctx.Err() != nil {
			g.err = ErrClosed
		}
		close(g.done)
		f.putDone(k)
	}()
}
