package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/tessera"

	"github.com/cloister-faas/cloister/internal/journal"
)

// Retries of the journal and of the local log's writes.
const (
	retryMin      = 50 * time.Millisecond
	retryMax      = 2 * time.Second
	appendTimeout = 10 * time.Second
)

// slot is a new entry on its way into the journal. Every AppendBatch that
// holds the entry (the first, and retries that come while it is in
// flight) waits on it.
type slot struct {
	entry *tessera.Entry
	sum   [sha256.Size]byte
	done  chan struct{} // closed once index or err is set
	index uint64
	err   error
}

func (sl *slot) resolve(index uint64, err error) {
	sl.index, sl.err = index, err
	close(sl.done)
}

func (sl *slot) wait(ctx context.Context) (uint64, error) {
	select {
	case <-sl.done:
		return sl.index, sl.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// submit sets indices[i] for entries already logged and returns the slot
// each other entry waits on: an entry in flight is not queued twice.
func (s *journaled) submit(entries []*tessera.Entry, sums [][sha256.Size]byte, indices []uint64) ([]*slot, error) {
	waits := make([]*slot, len(entries))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return nil, s.failed
	}
	if !s.leading {
		return nil, ErrStandby
	}
	queued := false
	for i, e := range entries {
		// The index holds every journaled entry, integrated or not.
		if idx, ok := s.index.lookup(sums[i]); ok {
			indices[i] = idx
			continue
		}
		sl := s.inflight[sums[i]]
		if sl == nil {
			sl = &slot{entry: e, sum: sums[i], done: make(chan struct{})}
			s.inflight[sums[i]] = sl
			s.queue = append(s.queue, sl)
			queued = true
		}
		waits[i] = sl
	}
	if queued {
		kick(s.commitKick)
	}
	return waits, nil
}

// appendBatch is AppendBatch in the journal mode: it answers once the
// entries' records are stored in the journal, before the local log
// integrates them.
func (s *journaled) appendBatch(ctx context.Context, entries []*tessera.Entry, sums [][sha256.Size]byte) ([]uint64, error) {
	indices := make([]uint64, len(entries))
	waits, err := s.submit(entries, sums, indices)
	if err != nil {
		return nil, fmt.Errorf("appending to ledger: %w", err)
	}
	for i, sl := range waits {
		if sl == nil {
			continue
		}
		if indices[i], err = sl.wait(ctx); err != nil {
			return nil, fmt.Errorf("appending to ledger: %w", err)
		}
	}
	return indices, nil
}

// appendAsync is AppendAsync in the journal mode.
func (s *journaled) appendAsync(e *tessera.Entry, sum [sha256.Size]byte) Future {
	indices := make([]uint64, 1)
	waits, err := s.submit([]*tessera.Entry{e}, [][sha256.Size]byte{sum}, indices)
	switch {
	case err != nil:
		return func() (uint64, error) { return 0, fmt.Errorf("appending to ledger: %w", err) }
	case waits[0] == nil:
		return func() (uint64, error) { return indices[0], nil }
	}
	return func() (uint64, error) {
		idx, err := waits[0].wait(context.Background())
		if err != nil {
			return 0, fmt.Errorf("appending to ledger: %w", err)
		}
		return idx, nil
	}
}

// commitLoop is the leader's group commit: while one record is being
// stored, the entries of the AppendBatch calls that arrive queue up, and
// the next record takes them all (up to journal.MaxRecord). Under light
// load a record holds one call's entries and is written at once; under
// heavy load records grow, so the journal's round trips do not bound the
// throughput.
func (s *journaled) commitLoop() {
	defer close(s.commitDone)
	for {
		select {
		case <-s.stopCommit:
			return
		case <-s.commitKick:
		}
		for s.commitNext() {
		}
	}
}

// commitNext stores the next record of queued entries and answers their
// callers. It returns false when there is nothing to do or appends are
// refused.
func (s *journaled) commitNext() bool {
	if !s.awaitRoom() {
		return false
	}
	s.mu.Lock()
	if s.failed != nil || len(s.queue) == 0 {
		s.mu.Unlock()
		return false
	}
	first, size, n := s.next, recordHeader, 0
	for n < len(s.queue) && size+2+len(s.queue[n].entry.Data()) <= journal.MaxRecord {
		size += 2 + len(s.queue[n].entry.Data())
		n++
	}
	slots := s.queue[:n:n]
	if s.queue = s.queue[n:]; len(s.queue) == 0 {
		s.queue = nil
	}
	s.mu.Unlock()

	data := make([][]byte, n)
	entries := make([]*tessera.Entry, n)
	for k, sl := range slots {
		data[k], entries[k] = sl.entry.Data(), sl.entry
	}
	seq, hash, read, foreign, err := s.appendRecord(encodeRecord(recordAppended, first, data))
	if errors.Is(err, ErrFenced) {
		err = errFencedBy
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && !read {
		if s.next != first {
			// Nothing but this committer moves the journal while leading.
			err = s.breakLocked(fmt.Errorf("%w: stored a record at index %d, but the journal is at %d", ErrJournalMismatch, first, s.next))
		} else {
			s.applyLocked(first, entries)
			s.addMarkLocked(seq, hash)
		}
	}
	// Fail first, then answer: a caller that gets ErrFenced must find
	// Fenced closed (the waiters return without taking s.mu).
	switch {
	case foreign || err == errFencedBy:
		s.failLocked(errFencedBy)
	case err != nil:
		s.failLocked(err)
	}
	for k, sl := range slots {
		delete(s.inflight, sl.sum)
		if err != nil {
			sl.resolve(0, err)
		} else {
			sl.resolve(first+uint64(k), nil)
		}
	}
	return err == nil && !foreign
}

// errFencedBy is why a fenced Log refuses appends.
var errFencedBy = fmt.Errorf("%w (another coordinator leads the ledger)", ErrFenced)

// awaitRoom holds new records while the local log lags maxPending behind
// the journal. It returns false if the committer stops meanwhile.
func (s *journaled) awaitRoom() bool {
	for {
		s.mu.Lock()
		full, ch := s.pendingBytes >= maxPending && s.broken == nil, s.progress
		s.mu.Unlock()
		if !full {
			return true
		}
		select {
		case <-ch:
		case <-s.commitCtx.Done():
			return false
		}
	}
}

// appendRecord stores rec as the journal's next record, retrying while
// the journal is unreachable. When an append's outcome is unknown it
// reads the journal to learn it: read reports that apply has applied rec
// (found in the journal), foreign that a record of another writer
// followed. Otherwise it returns the position after rec. An error means
// rec is not stored, or appending is over (ErrFenced, ErrClosed, or what
// stops reading the journal).
func (s *journaled) appendRecord(rec []byte) (seq uint64, hash [32]byte, read, foreign bool, err error) {
	for delay := retryMin; ; delay = min(2*delay, retryMax) {
		ctx, cancel := context.WithTimeout(s.commitCtx, appendTimeout)
		_, err := s.j.Append(ctx, rec)
		cancel()
		if err == nil {
			seq, hash = s.j.Position()
			return seq, hash, false, false, nil
		}
		if errors.Is(err, journal.ErrFenced) {
			return 0, hash, false, false, err
		}
		s.log.Warn("appending to the ledger journal failed; reading it to learn the outcome", "err", err)
		own, foreign, err := s.learnOutcome(rec)
		switch {
		case err != nil:
			return 0, hash, false, false, err
		case own:
			return 0, hash, true, foreign, nil
		case foreign:
			return 0, hash, false, true, ErrFenced
		}
		if !s.sleep(delay) {
			return 0, hash, false, false, ErrClosed
		}
	}
}

// learnOutcome reads the journal after an append whose outcome is
// unknown (journal.ErrBehind until it has): own reports that rec is in
// it, foreign that another writer's record is.
func (s *journaled) learnOutcome(rec []byte) (own, foreign bool, err error) {
	s.mu.Lock()
	s.own, s.ownSeen, s.foreignSeen = rec, false, false
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.own = nil
		s.mu.Unlock()
	}()
	for delay := retryMin; ; delay = min(2*delay, retryMax) {
		ctx, cancel := context.WithTimeout(s.commitCtx, appendTimeout)
		_, err := s.catchUp(ctx)
		cancel()
		if err == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.ownSeen, s.foreignSeen, nil
		}
		if errors.Is(err, journal.ErrCorrupt) || errors.Is(err, journal.ErrRolledBack) || errors.Is(err, ErrJournalMismatch) || errors.Is(err, ErrClosed) {
			return false, false, err
		}
		s.log.Warn("reading the ledger journal", "err", err)
		if !s.sleep(delay) {
			return false, false, ErrClosed
		}
	}
}

// sleep waits d, or returns false if the committer is stopped first.
func (s *journaled) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.commitCtx.Done():
		return false
	}
}

// failLocked refuses appends from now on, with err, and fails the queued
// entries.
func (s *journaled) failLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = err
	if errors.Is(err, ErrFenced) {
		s.log.Error("ledger fenced: another coordinator appends to the journal; refusing appends", "err", err)
		close(s.fenced)
	}
	for _, sl := range s.queue {
		delete(s.inflight, sl.sum)
		sl.resolve(0, err)
	}
	s.queue = nil
}

// integrateLoop writes the journaled entries into the local log, in the
// journal's order, in batches of up to batchMax entries or batchAge old
// (the file-only mode's batching, now done before tessera: see
// integrateRound).
func (s *journaled) integrateLoop() {
	defer close(s.integrateDone)
	draining := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	delay := retryMin
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		s.mu.Lock()
		n, since, broken := len(s.pending), s.pendingSince, s.broken
		s.mu.Unlock()
		if broken != nil || (n == 0 && draining) {
			return
		}
		var wait time.Duration
		switch {
		case n == 0:
			wait = time.Hour // until kicked
		case n < s.batchMax && !draining:
			wait = s.batchAge - time.Since(since)
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-s.integrate:
			case <-timer.C:
			case <-s.drain:
				draining = true
			case <-s.quit:
				return
			}
			timer.Stop()
			continue
		}
		if err := s.integrateRound(); err != nil {
			if errors.Is(err, ErrJournalMismatch) {
				s.mu.Lock()
				_ = s.breakLocked(err) // it logs err and fails the waiters; it returns err
				s.mu.Unlock()
				return
			}
			s.log.Warn("writing journaled entries to the local log; retrying", "err", err)
			select {
			case <-time.After(delay):
			case <-s.quit:
				return
			}
			delay = min(2*delay, retryMax)
			continue
		}
		delay = retryMin
	}
}

// integrateRound adds the oldest pending entries to tessera and checks
// that tessera gives each the index the journal gave it.
//
// Tessera keeps the order of Add calls within a batch, and writes its
// batches one at a time, but a batch taken by its age timer could in
// principle be written after a later one. So the round is added in one go
// and waited for before the next: as long as adding it takes less than
// journalFlushAge, tessera's timer (set at the first Add, never early)
// cannot fire before the last Add, so the round is one batch, written at
// the next index. Adding stops early at half the age to keep it so; the
// index check catches what a stalled process could still do.
func (s *journaled) integrateRound() error {
	s.mu.Lock()
	round := s.pending[:min(len(s.pending), s.batchMax)]
	base := s.local
	s.mu.Unlock()

	futures := make([]tessera.IndexFuture, 0, len(round))
	start := time.Now()
	for _, e := range round {
		if len(futures) > 0 && time.Since(start) >= journalFlushAge/2 {
			break
		}
		futures = append(futures, s.add(s.bg, e))
	}
	if took := time.Since(start); took >= journalFlushAge {
		s.log.Warn("queuing entries for the local log took longer than its batch age; they may be written as two batches", "took", took, "entries", len(futures))
	}
	n := uint64(len(futures))
	var werr error
	for k, f := range futures {
		idx, err := f()
		if err != nil {
			werr = err
			continue
		}
		if idx.Index != base+uint64(k) || idx.IsDup {
			return fmt.Errorf("%w: the local log wrote the journal's entry %d at index %d", ErrJournalMismatch, base+uint64(k), idx.Index)
		}
	}
	if werr != nil {
		// A failed write leaves the tree as it was, unless only its
		// report failed: the tree's size tells.
		size, err := s.lr.IntegratedSize(s.bg)
		switch {
		case err != nil || size == base:
			return errors.Join(werr, err)
		case size != base+n:
			return fmt.Errorf("%w: the local log holds %d entries after a failed write of entries %d to %d", ErrJournalMismatch, size, base, base+n-1)
		}
	}

	written := 0
	for _, e := range round[:n] {
		written += len(e.Data())
	}
	s.mu.Lock()
	// Drop the references, so that integrated entries can be collected.
	clear(s.pending[:n])
	if s.pending = s.pending[n:]; len(s.pending) == 0 {
		s.pending = nil
	}
	s.pendingBytes -= written
	s.local += n
	s.wakeLocked()
	s.mu.Unlock()
	s.saveHint()
	return nil
}

// close stops the journal mode: appends are refused, the record being
// stored is finished, and what was journaled is integrated, all within
// ctx. What is left is in the journal, and the next Open integrates it.
func (s *journaled) close(ctx context.Context) error {
	s.mu.Lock()
	s.failLocked(ErrClosed)
	commitDone := s.commitDone
	s.mu.Unlock()
	close(s.stopCommit)
	var err error
	if commitDone != nil {
		select {
		case <-commitDone:
		case <-ctx.Done():
			err = fmt.Errorf("storing the last journal record: %w", ctx.Err())
			s.cancelCommit()
			<-commitDone
		}
	}
	s.cancelCommit()
	close(s.drain)
	select {
	case <-s.integrateDone:
	case <-ctx.Done():
		close(s.quit)
		err = errors.Join(err, fmt.Errorf("integrating journaled entries: %w", ctx.Err()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		err = errors.Join(err, s.broken)
	}
	return err
}
