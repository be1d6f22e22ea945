package ledger

// The journal mode: the order of the log's entries lives in a replicated
// journal (package journal), and each coordinator's tile log is a function
// of it. See the package comment for the model; this file holds the
// options, opening (replaying the journal onto the local log), the
// standby's CatchUp, Lead, the migration of a log that predates the
// journal, and the local position hint. journaled_write.go holds the
// leader's group commit and the integration into the local log.

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/journal"
)

// JournalOptions put the log's order in the coordinators' ledger journal
// (the JetStream stream bus.StreamLedgerJournal), so that every
// coordinator's log is the same log: see the package comment.
type JournalOptions struct {
	// JS reaches the JetStream cluster that holds the journal.
	JS jetstream.JetStream
	// Replicas is the journal stream's replica count (3 on a 3-node
	// cluster): an append is acknowledged once a quorum of them stored it.
	Replicas int
	// Key seals the journal's records and authenticates the journal
	// position saved in the log directory: the coordinators' shared
	// master secret (at least 32 bytes).
	Key []byte
}

// Errors of the journal mode.
var (
	// ErrFenced: another coordinator appended to the journal, so this one
	// is no longer the leader. The Log refuses appends from then on and
	// Fenced is closed.
	ErrFenced = journal.ErrFenced
	// ErrStandby: the Log follows the journal (Options.Standby) and takes
	// appends only after Lead.
	ErrStandby = errors.New("ledger: standby: appends go to the leading coordinator")
	// ErrJournalMismatch: the local log and the journal hold different
	// histories, or the local log holds entries the journal does not. A
	// Log that continued would fork the log, so it stops.
	ErrJournalMismatch = errors.New("ledger: the local log and the journal disagree")
)

const (
	// journalLabel separates the ledger journal's keys from the other
	// journals sealed under the same master secret.
	journalLabel = "cloister/v1/journal/ledger"
	// hintLabel derives the key that authenticates the position hint.
	hintLabel = "cloister/v1/ledger/journal-position"
	// hintFile holds the position hint, in the log directory (not served:
	// Handler and the coordinator serve only the tlog-tiles paths).
	hintFile = ".journal-position"

	// journalFlushAge is tessera's batch age in the journal mode. The
	// batching is done before tessera (see integrateRound): each batch is
	// queued in one go, in the journal's order, and then flushed. The age
	// only needs to exceed the time it takes to queue a batch (about
	// 0.6 µs an entry, a few ms for 4096), so that the whole batch is in
	// the queue before tessera's timer can fire and tessera writes it as
	// one batch at the indices the journal gave it. A batch of
	// BatchMaxSize entries is written at once, without waiting for it.
	journalFlushAge = 10 * time.Millisecond
	// Records: kind (1 byte), index of the first entry (8), number of
	// entries (4), then each entry as a 16-bit length and its bytes (the
	// tlog-tiles bundle encoding; entries are at most MaxEntrySize).
	recordHeader = 1 + 8 + 4
	// recordAppended holds entries appended by a leader.
	recordAppended = 1
	// recordMigrated holds entries of a log that predates the journal,
	// written into the empty journal by its first leader (see migrate).
	recordMigrated = 2
)

// maxPending bounds the bytes of entries journaled but not yet integrated
// locally: beyond it the leader stops taking new records and a catch-up
// pauses until the integration catches up, so that a slow disk or a long
// journal cannot exhaust memory. A variable for tests.
var maxPending = 64 << 20

// errBackpressure stops a catch-up at a record until the integration has
// made room for it (maxPending); the journal reads the record again.
var errBackpressure = errors.New("ledger: waiting for the local log to integrate what was read")

// journaled is the journal mode's state of a Log.
type journaled struct {
	j       *journal.Journal
	add     tessera.AddFn
	lr      tessera.LogReader
	index   *hashIndex
	src     EntrySource // the local log's own files
	dir     string
	log     *slog.Logger
	hintKey []byte
	// batchMax and batchAge bound a batch written to the local log, as
	// Options.BatchMaxSize and BatchMaxAge do in the file-only mode.
	batchMax int
	batchAge time.Duration
	bg       context.Context // ends at Close

	// roleMu serialises what reads or writes the journal outside the
	// committer: Lead, CatchUp and the migration.
	roleMu sync.Mutex
	// noMigration (set by replay, during Open): a saved position shows
	// the journal held more than it does now (rolled back or replaced),
	// so the local log must not be written into it as a migration.
	noMigration bool

	hintMu    sync.Mutex
	savedSeq  uint64 // the journal sequence of the saved hint
	hintWarns int

	mu sync.Mutex
	// next is the index of the journal's next entry: how many entries
	// the records read or written so far hold.
	next uint64
	// local is the local tessera log's size. Entries below it were
	// integrated; pending holds entries [local, next), journaled and
	// indexed but not yet integrated.
	local        uint64
	pending      []*tessera.Entry
	pendingBytes int
	pendingSince time.Time
	// onlyMigrated: every record read so far is a migration record, so
	// the migration may continue (see migrate).
	onlyMigrated bool
	// marks are journal positions after a record, waiting until the
	// local log holds every entry before them to be saved as the hint.
	marks []mark
	// progress is closed (and replaced) when the integration advances or
	// stops, to wake a catch-up or commit waiting for room. refused is
	// the one that was current when apply last refused a record: the
	// catch-up waits on it, so that it cannot miss progress made after
	// the refusal.
	progress, refused chan struct{}
	// bundle caches the local entry bundle being compared with a replayed
	// record.
	bundle struct {
		index   uint64
		entries [][]byte
	}

	// The leader's state (journaled_write.go).
	leading  bool
	queue    []*slot
	inflight map[[sha256.Size]byte]*slot
	// own is the record whose append's outcome is unknown while the
	// committer reads the journal to learn it; apply notes whether it
	// saw it, or a record of another writer.
	own                   []byte
	ownSeen, foreignSeen  bool
	failed                error // why appends are refused (nil: they are not)
	broken                error // a fork was detected: integration stopped
	fenced                chan struct{}
	commitKick, integrate chan struct{}
	stopCommit            chan struct{}
	commitDone            chan struct{} // nil until Lead starts the committer
	commitCtx             context.Context
	cancelCommit          context.CancelFunc
	drain, quit           chan struct{}
	integrateDone         chan struct{}
}

// mark is a journal position after a record: the sequence and hash to
// Seek to, and the index of the entry the next record starts with.
type mark struct {
	seq      uint64
	hash     [32]byte
	next     uint64
	migrated bool // only migration records up to here
}

// openJournaled opens the journal, replays it onto the local log of size
// entries and, unless opts.Standby, leads.
func openJournaled(ctx, bg context.Context, l *Log, opts Options, size uint64) (*journaled, error) {
	jo := opts.Journal
	if jo.JS == nil {
		return nil, errors.New("no JetStream for the journal")
	}
	hk, err := hkdf.Key(sha256.New, jo.Key, nil, hintLabel, 32)
	if err != nil {
		return nil, err
	}
	commitCtx, cancelCommit := context.WithCancel(bg)
	s := &journaled{
		add: l.add, lr: l.lr, index: l.index, src: DirSource(l.dir), dir: l.dir, log: l.log, hintKey: hk,
		batchMax: int(opts.BatchMaxSize), batchAge: opts.BatchMaxAge, bg: bg,
		local: size, onlyMigrated: true, progress: make(chan struct{}), refused: make(chan struct{}),
		inflight: map[[sha256.Size]byte]*slot{}, fenced: make(chan struct{}),
		commitKick: make(chan struct{}, 1), integrate: make(chan struct{}, 1), stopCommit: make(chan struct{}),
		commitCtx: commitCtx, cancelCommit: cancelCommit,
		drain: make(chan struct{}), quit: make(chan struct{}), integrateDone: make(chan struct{}),
	}
	s.j, err = journal.Open(ctx, journal.Config{JS: jo.JS, Stream: bus.StreamLedgerJournal, Subject: bus.SubjectLedgerJournal,
		Replicas: jo.Replicas, Key: jo.Key, Label: journalLabel, Apply: s.apply})
	if err != nil {
		cancelCommit()
		return nil, err
	}
	// The integration runs during the replay: a long journal is read
	// while it is integrated, within maxPending.
	go s.integrateLoop()
	fail := func(err error) (*journaled, error) {
		close(s.quit)
		<-s.integrateDone
		cancelCommit()
		return nil, err
	}
	if err := s.replay(ctx); err != nil {
		return fail(fmt.Errorf("replaying the journal: %w", err))
	}
	if _, err := s.mustMigrate(); err != nil {
		return fail(err)
	}
	s.saveHint()
	if !opts.Standby {
		if err := s.lead(ctx); err != nil {
			return fail(err)
		}
	}
	s.mu.Lock()
	s.log.Info("ledger journal open", "stream", bus.StreamLedgerJournal, "entries", s.next, "local", s.local, "standby", opts.Standby)
	s.mu.Unlock()
	return s, nil
}

// replay reads the journal onto the local log: from the saved position if
// there is a valid one the local log has reached, else from the start.
// Entries the local log already holds are compared with it, the others
// are indexed and integrated.
func (s *journaled) replay(ctx context.Context) error {
	h, ok := s.loadHint()
	if ok && h.next <= s.local {
		s.seek(h)
		n, err := s.catchUp(ctx)
		if err == nil || n > 0 || !(errors.Is(err, journal.ErrCorrupt) || errors.Is(err, journal.ErrRolledBack)) {
			return err
		}
		// Nothing follows the saved position in this journal: it was
		// cut back or replaced. Reading it from the start tells how it
		// relates to the local log; it must not be migrated into.
		s.log.Warn("the saved journal position is not in the journal; reading the journal from its start", "seq", h.seq, "err", err)
		s.seek(mark{migrated: true})
		s.noMigration = true
	} else if ok {
		// The local log lost entries it had integrated (restored from
		// an older copy): read them again from the start.
		s.log.Warn("the local log is behind its saved journal position; reading the journal from its start", "local", s.local, "position", h.next)
		s.noMigration = true
	}
	_, err := s.catchUp(ctx)
	return err
}

// seek positions the journal after m, before replay reads it. Nothing was
// applied since Open, so there is no other state to undo.
func (s *journaled) seek(m mark) {
	s.j.Seek(m.seq, m.hash)
	s.mu.Lock()
	s.next, s.onlyMigrated = m.next, m.migrated
	s.mu.Unlock()
	s.hintMu.Lock()
	s.savedSeq = m.seq
	s.hintMu.Unlock()
}

// catchUp reads the journal to its end, pausing while the integration
// makes room, and returns how many records it applied.
func (s *journaled) catchUp(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.j.CatchUp(ctx)
		total += n
		if err == nil {
			seq, hash := s.j.Position()
			s.mu.Lock()
			s.addMarkLocked(seq, hash)
			s.mu.Unlock()
			return total, nil
		}
		if !errors.Is(err, errBackpressure) {
			return total, err
		}
		if err := s.awaitProgress(ctx); err != nil {
			return total, err
		}
	}
}

// mustMigrate reports whether the local log holds entries the journal
// does not and may write them into it (see migrate); if it may not, the
// local log is not this journal's log.
func (s *journaled) mustMigrate() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.local <= s.next:
		return false, nil
	case s.onlyMigrated && !s.noMigration:
		return true, nil
	}
	return false, fmt.Errorf("%w: the local log holds %d entries, the journal only %d: the journal was rolled back or the local log is another log's", ErrJournalMismatch, s.local, s.next)
}

// lead catches up to the journal's end, migrates the local log if it
// predates the journal, and starts taking appends.
func (s *journaled) lead(ctx context.Context) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	leading, failed := s.role()
	if failed != nil {
		return failed
	}
	if leading {
		return nil
	}
	if _, err := s.catchUp(ctx); err != nil {
		return fmt.Errorf("ledger: catching up with the journal before leading: %w", err)
	}
	migrate, err := s.mustMigrate()
	if err != nil {
		return err
	}
	if migrate {
		if err := s.migrate(ctx); err != nil {
			return err
		}
	}
	s.saveHint()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	s.leading = true
	s.commitDone = make(chan struct{})
	go s.commitLoop()
	s.log.Info("ledger leading", "entries", s.next)
	return nil
}

// role reports whether the Log leads, and why it refuses appends.
func (s *journaled) role() (leading bool, failed error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leading, s.failed
}

// catchUpStandby is CatchUp: a standby reads the records appended since,
// indexes their entries and queues them for integration.
func (s *journaled) catchUpStandby(ctx context.Context) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	leading, failed := s.role()
	if leading || errors.Is(failed, ErrClosed) {
		// A leader's journal position is its own appends'.
		return failed
	}
	if _, err := s.catchUp(ctx); err != nil {
		return fmt.Errorf("ledger: catching up with the journal: %w", err)
	}
	s.saveHint()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// apply is the journal's Apply: it checks that a record continues the
// journal where the last one ended, compares the entries the local log
// already holds with it, and indexes and queues the others for
// integration. Unless it finds a fork (which stops the Log for good), it
// changes nothing when it returns an error, so that the journal can read
// the record again.
func (s *journaled) apply(seq uint64, rec []byte) error {
	kind, first, data, err := decodeRecord(rec)
	if err != nil {
		return fmt.Errorf("ledger journal record %d: %w", seq, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	if errors.Is(s.failed, ErrClosed) {
		return ErrClosed // the integration has stopped
	}
	if s.pendingBytes > 0 && s.pendingBytes+len(rec) > maxPending {
		s.refused = s.progress
		return errBackpressure
	}
	if first != s.next {
		return fmt.Errorf("%w: journal record %d starts at index %d, but the records before it hold %d entries", ErrJournalMismatch, seq, first, s.next)
	}
	for k, e := range data {
		i := first + uint64(k)
		if i >= s.local {
			break
		}
		got, err := s.localEntryLocked(i)
		if err != nil {
			return fmt.Errorf("reading entry %d of the local log: %w", i, err)
		}
		if !bytes.Equal(got, e) {
			return s.breakLocked(fmt.Errorf("%w: entry %d of the local log is not the journal's (record %d)", ErrJournalMismatch, i, seq))
		}
	}
	if first+uint64(len(data)) >= s.local {
		s.bundle.entries = nil // the replay of local entries is over
	}
	if s.own != nil {
		if bytes.Equal(rec, s.own) {
			s.ownSeen = true
		} else {
			s.foreignSeen = true
		}
	}
	s.onlyMigrated = s.onlyMigrated && kind == recordMigrated
	entries := make([]*tessera.Entry, len(data))
	for k, e := range data {
		entries[k] = tessera.NewEntry(e)
	}
	s.applyLocked(first, entries)
	return nil
}

// applyLocked adds the entries of a record that starts at index first:
// those the local log does not hold yet are indexed (so that Lookup and
// the dedupe find them at once) and queued for integration.
func (s *journaled) applyLocked(first uint64, entries []*tessera.Entry) {
	var indices []uint64
	var sums [][sha256.Size]byte
	for k, e := range entries {
		i := first + uint64(k)
		if i < s.local {
			continue
		}
		if len(s.pending) == 0 {
			s.pendingSince = time.Now()
		}
		s.pending = append(s.pending, e)
		s.pendingBytes += len(e.Data())
		indices = append(indices, i)
		sums = append(sums, [sha256.Size]byte(e.Identity()))
	}
	s.next = first + uint64(len(entries))
	if err := s.index.record(indices, sums); err != nil {
		s.log.Warn("indexing ledger entries", "err", err)
	}
	if len(indices) > 0 {
		kick(s.integrate)
	}
}

// localEntryLocked returns entry i of the local log, reading its bundle.
func (s *journaled) localEntryLocked(i uint64) ([]byte, error) {
	bi := i / layout.EntryBundleWidth
	if s.bundle.entries == nil || s.bundle.index != bi {
		es, err := readBundleEntries(s.bg, s.src, bi, s.local)
		if err != nil {
			return nil, err
		}
		s.bundle.index, s.bundle.entries = bi, es
	}
	return s.bundle.entries[i%layout.EntryBundleWidth], nil
}

// addMarkLocked notes the position after the record seq, whose hash is
// hash, for saveHint.
func (s *journaled) addMarkLocked(seq uint64, hash [32]byte) {
	if seq == 0 || (len(s.marks) > 0 && s.marks[len(s.marks)-1].seq >= seq) {
		return
	}
	s.marks = append(s.marks, mark{seq: seq, hash: hash, next: s.next, migrated: s.onlyMigrated})
}

// breakLocked stops the Log for good: it would fork the log.
func (s *journaled) breakLocked(err error) error {
	if s.broken == nil {
		s.broken = err
		s.log.Error("ledger stopped: the local log would fork from the journal; rebuild it from the journal", "err", err)
		s.failLocked(err)
		s.wakeLocked()
	}
	return s.broken
}

// wakeLocked wakes whoever waits for the integration (awaitProgress).
func (s *journaled) wakeLocked() {
	close(s.progress)
	s.progress = make(chan struct{})
}

// awaitProgress waits until the integration has advanced since apply
// refused a record, or stops, or ctx ends.
func (s *journaled) awaitProgress(ctx context.Context) error {
	s.mu.Lock()
	ch, broken := s.refused, s.broken
	s.mu.Unlock()
	if broken != nil {
		return broken
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// migrate writes the local entries the journal does not hold into it, in
// migration records: a data directory whose log predates the journal
// becomes the journal's start. It runs only while every record in the
// journal is a migration record whose entries are the local log's (apply
// compared them), so an interrupted migration resumes where it stopped.
func (s *journaled) migrate(ctx context.Context) error {
	s.mu.Lock()
	local, first := s.local, s.next
	s.mu.Unlock()
	s.log.Info("writing the log into the journal, which does not hold it yet", "entries", local, "from", first)
	var data [][]byte
	size := recordHeader
	flush := func() error {
		if len(data) == 0 {
			return nil
		}
		if _, err := s.j.Append(ctx, encodeRecord(recordMigrated, first, data)); err != nil {
			return fmt.Errorf("ledger: writing the log into the journal at entry %d: %w", first, err)
		}
		seq, hash := s.j.Position()
		s.mu.Lock()
		s.next = first + uint64(len(data))
		s.addMarkLocked(seq, hash)
		s.mu.Unlock()
		first += uint64(len(data))
		data, size = nil, recordHeader
		return nil
	}
	for bi := first / layout.EntryBundleWidth; bi*layout.EntryBundleWidth < local; bi++ {
		es, err := readBundleEntries(ctx, s.src, bi, local)
		if err != nil {
			return fmt.Errorf("ledger: reading the log to write it into the journal: %w", err)
		}
		for k := first + uint64(len(data)) - bi*layout.EntryBundleWidth; k < uint64(len(es)); k++ {
			if size+2+len(es[k]) > journal.MaxRecord {
				if err := flush(); err != nil {
					return err
				}
			}
			data = append(data, es[k])
			size += 2 + len(es[k])
		}
	}
	return flush()
}

// encodeRecord encodes a journal record of kind holding data, whose first
// entry has index first.
func encodeRecord(kind byte, first uint64, data [][]byte) []byte {
	n := recordHeader
	for _, e := range data {
		n += 2 + len(e)
	}
	b := make([]byte, 0, n)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	for _, e := range data {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b
}

// decodeRecord parses a record. The entries alias rec.
func decodeRecord(rec []byte) (kind byte, first uint64, data [][]byte, err error) {
	if len(rec) < recordHeader || (rec[0] != recordAppended && rec[0] != recordMigrated) {
		return 0, 0, nil, errors.New("not a ledger record")
	}
	kind, first = rec[0], binary.BigEndian.Uint64(rec[1:])
	n := binary.BigEndian.Uint32(rec[9:])
	if n == 0 || int(n) > (len(rec)-recordHeader)/2 {
		return 0, 0, nil, fmt.Errorf("bad entry count %d", n)
	}
	data = make([][]byte, 0, n)
	for b := rec[recordHeader:]; len(data) < int(n); {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return 0, 0, nil, errors.New("truncated entry")
		}
		l := 2 + int(binary.BigEndian.Uint16(b))
		data = append(data, b[2:l:l])
		b = b[l:]
		if len(data) == int(n) && len(b) != 0 {
			return 0, 0, nil, errors.New("trailing bytes")
		}
	}
	return kind, first, data, nil
}

// The position hint, in hintFile: seq (8 bytes), hash (32), next (8),
// flags (1: bit 0 is mark.migrated), then HMAC-SHA256 of those under a key
// derived from the journal key. The MAC keeps a host from making the Log
// believe a wrong index for the journal's next entry (the journal's seal
// checks only seq and hash); an older genuine hint only makes the replay
// read more.
const hintSize = 8 + 32 + 8 + 1 + sha256.Size

func (s *journaled) hintMAC(b []byte) []byte {
	m := hmac.New(sha256.New, s.hintKey)
	m.Write(b)
	return m.Sum(nil)
}

// loadHint reads the saved position; ok is false if there is none or it
// does not authenticate.
func (s *journaled) loadHint() (m mark, ok bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, hintFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return mark{}, false
	case err != nil:
		s.log.Warn("ignoring the saved journal position", "err", err)
		return mark{}, false
	case len(b) != hintSize || !hmac.Equal(b[49:], s.hintMAC(b[:49])):
		s.log.Warn("ignoring the saved journal position: it does not authenticate")
		return mark{}, false
	}
	m.seq = binary.BigEndian.Uint64(b)
	copy(m.hash[:], b[8:40])
	m.next = binary.BigEndian.Uint64(b[40:])
	m.migrated = b[48]&1 != 0
	return m, true
}

// saveHint saves the latest position whose entries are all in the local
// log. It is a hint: a crash before it is written only makes the next
// replay start earlier.
func (s *journaled) saveHint() {
	s.mu.Lock()
	var m mark
	k := 0
	for k < len(s.marks) && s.marks[k].next <= s.local {
		m = s.marks[k]
		k++
	}
	s.marks = s.marks[k:]
	s.mu.Unlock()
	s.hintMu.Lock()
	defer s.hintMu.Unlock()
	if m.seq <= s.savedSeq {
		return
	}
	b := binary.BigEndian.AppendUint64(nil, m.seq)
	b = append(b, m.hash[:]...)
	b = binary.BigEndian.AppendUint64(b, m.next)
	var flags byte
	if m.migrated {
		flags = 1
	}
	b = append(b, flags)
	b = append(b, s.hintMAC(b)...)
	p := filepath.Join(s.dir, hintFile)
	err := os.WriteFile(p+".tmp", b, 0o600)
	if err == nil {
		err = os.Rename(p+".tmp", p)
	}
	if err != nil {
		if s.hintWarns++; s.hintWarns <= 3 {
			s.log.Warn("saving the journal position", "err", err)
		}
		return
	}
	s.savedSeq = m.seq
}

// kick wakes the goroutine that waits on ch without blocking.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
