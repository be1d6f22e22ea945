package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/journal"
)

// Group commit.
//
// A request is applied to the in-memory index under a.mu, and its changes
// join the newest queued flight: one record of the log, holding the log
// records of every request applied while the flight before it was being
// appended, up to journal.MaxRecord. One goroutine at a time holds the log
// (a.appending) and appends the queued flights in order, without a.mu, so
// that an append's round trip (tens of microseconds to a JetStream
// cluster, more across machines) does not hold up the requests that come
// meanwhile, and they share the next append instead of waiting for one
// each. A request that finds the log idle appends its own flight itself,
// sparing the switches to another goroutine and back; what queued behind
// it is left to a new goroutine, which appends until the queue is empty
// (commit).
//
// The index runs ahead of the log, so a reply may be released only when
// everything it may reflect is durable: a request that made changes waits
// for its flight, one that made none (a read, a conflict, a lease) for the
// newest flight not yet durable. Flights are appended in order, so either
// covers every change applied before the request.
//
// When an append fails, no reply that depends on it may be released as a
// success: that flight and every queued one (applied on top of it) fail
// with ErrUnavailable, and their changes are reverted, newest first, which
// brings the index back to what the log held before the failed flight.
// Requests are refused while the holder of the log learns what became of
// the failed append (settle); if it reports that another coordinator
// wrote (journal.ErrFenced), the anchor stops for good (Fenced).

// anchorStore is where the anchor's records become durable: the file log
// (anchorLog) or the journal (journalStore). Only the holder of the log
// appends, and only one goroutine at a time catches up.
type anchorStore interface {
	// append stores pt as the next record. After an error the record may
	// still have been stored (a journal's lost acknowledgement): catchUp
	// tells.
	append(ctx context.Context, pt []byte) error
	// catchUp hands the records stored since the last read or append to
	// the anchor's applyRecord, in order.
	catchUp(ctx context.Context) error
	close() error
}

// journalStore is the anchor's log in a journal.
type journalStore struct{ j *journal.Journal }

func (s journalStore) append(ctx context.Context, pt []byte) error {
	_, err := s.j.Append(ctx, pt)
	return err
}

func (s journalStore) catchUp(ctx context.Context) error {
	_, err := s.j.CatchUp(ctx)
	return err
}

// close has nothing to release: the connection is the caller's.
func (journalStore) close() error { return nil }

// appendTimeout bounds one append to the anchor's journal. JetStream
// stores a record on a quorum within milliseconds; a publish that reached
// a stream leader just before it died gets no answer at all, and the
// anchor refuses requests from the failed append until settle has read
// the journal again (after the stream's election, 4–9 s), so waiting for
// nats.go's default (5 s) only delays that.
const appendTimeout = 2 * time.Second

// errOtherWriter: a leader that settles an append found a record it did
// not write in its journal.
var errOtherWriter = errors.New("state anchor: the journal holds a record this coordinator did not write")

// flight is one record on its way to the log.
type flight struct {
	// rec is the requests' log records, concatenated; undo what each
	// request's changes replaced, in the order they were applied.
	rec  []byte
	undo []undoRecord
	// waiters counts the requests whose reply waits for the flight.
	waiters int
	// done is closed once the flight is durable (err nil) or failed.
	done chan struct{}
	err  error
}

type undoRecord struct {
	x    *index
	prev []change
}

// revert undoes changes made to x, newest first: undo holds the entries
// they replaced (Anchor.apply).
func revert(x *index, undo []change) {
	for i := len(undo) - 1; i >= 0; i-- {
		x.apply(string(undo[i].Key), undo[i].Entry)
	}
}

// enqueue adds a request's changes to function id (index x) to the newest
// queued flight, or to a new one when that would exceed journal.MaxRecord
// or none is queued (the one in flight is closed to additions). undo is
// what the changes replaced. a.mu is held.
func (a *Anchor) enqueue(id string, x *index, changes, undo []change) (*flight, error) {
	u := undoRecord{x: x, prev: undo}
	if n := len(a.queue); n > 0 {
		f := a.queue[n-1]
		// appendLogRecord writes past len(f.rec) only: if the record does
		// not fit, f.rec is as it was.
		if rec, err := appendLogRecord(f.rec, id, changes); err == nil && len(rec) <= journal.MaxRecord {
			f.rec, f.undo = rec, append(f.undo, u)
			return f, nil
		}
	}
	rec, err := appendLogRecord(make([]byte, 0, 512), id, changes)
	if err != nil {
		return nil, err
	}
	if len(rec) > journal.MaxRecord {
		return nil, journal.ErrTooLarge
	}
	f := &flight{rec: rec, undo: []undoRecord{u}, done: make(chan struct{})}
	a.queue = append(a.queue, f)
	return f, nil
}

// newest is the newest flight not yet durable, nil if none. a.mu is held.
func (a *Anchor) newest() *flight {
	if n := len(a.queue); n > 0 {
		return a.queue[n-1]
	}
	return a.inflight
}

// startLeading makes the anchor serve. started is now; recovered says
// whether leases granted before now may still run.
func (a *Anchor) startLeading(recovered bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.halted != nil {
		return a.halted
	}
	a.leading, a.started, a.recovered = true, a.now(), recovered
	return nil
}

// commit appends the queued flights in order. Its caller holds the log
// (a.appending), which commit gives up once the queue is empty. With one
// set (a request that found the log idle, whose flight is first in the
// queue), it appends that flight only and leaves the rest, and the
// recovery from a failed append, to a new goroutine: the request's reply
// waits for its own flight only.
func (a *Anchor) commit(one bool) {
	a.mu.Lock()
	for len(a.queue) > 0 {
		f := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		a.inflight = f
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
		err := a.store.append(ctx, f.rec)
		cancel()
		a.mu.Lock()
		a.inflight = nil
		if err != nil {
			if fenced := a.abort(f, err); fenced {
				break
			}
			// The queue is empty, and requests are refused until settle
			// has brought the index back to what the log holds.
			a.mu.Unlock()
			if one {
				go func() { a.settle(); a.commit(false) }()
				return
			}
			a.settle()
			a.mu.Lock()
			continue
		}
		close(f.done)
		if one && len(a.queue) > 0 {
			a.mu.Unlock()
			go a.commit(false)
			return
		}
	}
	a.appending = false
	a.idle.Broadcast()
	a.mu.Unlock()
}

// abort fails flight f, whose append returned err, and every queued
// flight: they were applied on top of it. Their changes are reverted,
// newest first, so that the index holds what the log held before f. Then
// requests are refused: for good if another coordinator wrote (it returns
// true), or until settle. a.mu is held.
func (a *Anchor) abort(f *flight, err error) (fenced bool) {
	flights := append([]*flight{f}, a.queue...)
	a.queue = nil
	for i := len(flights) - 1; i >= 0; i-- {
		u := flights[i].undo
		for j := len(u) - 1; j >= 0; j-- {
			revert(u[j].x, u[j].prev)
		}
	}
	// Refuse requests before the failed ones learn of it: a client that
	// sees the failure finds the anchor down, or fenced.
	if fenced = errors.Is(err, journal.ErrFenced); fenced {
		a.fence(err)
	} else {
		a.down, a.unsettled = err, f.rec
	}
	failed := fmt.Errorf("%w: anchor log: %v", ErrUnavailable, err)
	requests := 0
	for _, g := range flights {
		g.err = failed
		requests += g.waiters
		close(g.done)
	}
	a.log.Error("state anchor log append failed; its requests and the ones queued after it fail", "requests", requests, "err", err)
	return fenced
}

// settle learns what became of the failed append and brings the index to
// what the log holds, before the anchor serves again. abort reverted every
// change not known to be durable, but the append may have been stored all
// the same (its acknowledgement lost): catching the journal up hands that
// record to applyRecord, which applies it (and only it: a.unsettled). A
// publish that NATS stores only after this catch-up read the stream's end
// cannot fork the journal: the next append, expecting the old end, is
// refused as fenced, and the anchor stops. settle retries until the
// catch-up succeeds, the anchor stops for good, or it closes (then it
// stays down).
func (a *Anchor) settle() {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := a.store.catchUp(context.Background())
		a.mu.Lock()
		if err == nil {
			a.down, a.unsettled = nil, nil
			a.mu.Unlock()
			a.log.Info("state anchor serves again after a failed log append")
			return
		}
		if errors.Is(err, errOtherWriter) || errors.Is(err, journal.ErrRolledBack) || errors.Is(err, journal.ErrCorrupt) {
			a.fence(err)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		a.log.Warn("state anchor: reading the journal after a failed append", "err", err)
		select {
		case <-time.After(wait):
		case <-a.stop:
			return
		}
	}
}

// fence stops the anchor for good and tells the owner (Fenced). Only the
// holder of the log calls it, at most once: then nothing is queued, and
// nothing will be. a.mu is held.
func (a *Anchor) fence(cause error) {
	a.halted = ErrFenced
	close(a.fenced)
	a.log.Error("state anchor fenced off its journal: it serves no more", "err", cause)
}
