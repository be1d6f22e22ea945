// Package ledger is Cloister's transparency log of receipts: a tile-based
// Merkle log (https://c2sp.org/tlog-tiles) stored by
// github.com/transparency-dev/tessera's POSIX driver in a directory, with
// checkpoints in the https://c2sp.org/tlog-checkpoint format as signed notes
// (https://c2sp.org/signed-note) by the coordinator's Ed25519 key.
//
// The writer is Log (Open, Append). Everything else works from the log's
// public files alone, read from the directory or over HTTP (EntrySource),
// and trusts nothing but the coordinator's note verifier: Reader serves
// entries and RFC 6962 inclusion and consistency proofs, VerifyCheckpoint,
// VerifyInclusion and VerifyConsistency check them, CheckConsistency and
// UpdateTrusted catch forks and rollbacks against a stored checkpoint, and
// Audit replays the log, recomputes the Merkle root and names what was
// tampered with.
//
// Entries are opaque bytes to this package; Cloister stores canonical signed
// receipts (package receipt) and verifies them in the check function it
// passes to Audit.
//
// # One log for several coordinators
//
// By default (file-only) the Log's directory is the log: an append is
// acknowledged once tessera has written it there. With Options.Journal the
// log's order lives in a replicated journal instead (package journal, the
// JetStream stream bus.StreamLedgerJournal), so that the active
// coordinator and its standbys keep one log across a failover: no fork, a
// checkpoint from before the failover consistent with one after, no
// acknowledged append lost.
//
//   - The leader (Open, or Lead after Options.Standby) groups the entries
//     of concurrent appends into sealed journal records, each carrying the
//     index of its first entry, and acknowledges an append once its record
//     is stored in the stream (on a quorum of replicas), before its own
//     disk has it. Appends are fenced: a leader that was replaced gets
//     ErrFenced, refuses appends from then on and closes Fenced.
//   - Every coordinator's tile log is a function of the journal: entries
//     are written into the local tessera log strictly in journal order,
//     and tessera must give each the index its record says, or the Log
//     stops (ErrJournalMismatch) rather than fork. Identical entries in
//     identical order give identical trees, and checkpoints signed by the
//     shared key are byte-identical for the same size.
//   - A standby calls CatchUp to read the new records; Lead catches up to
//     the journal's end and then takes appends. Lookup finds an entry, and
//     AwaitPublished waits for it, as soon as its record is read or
//     written, before the local log holds it.
//   - After a restart the local log may hold anything from part of the
//     journal to all of it: Open replays the journal from a position saved
//     in the directory (authenticated; from the start if it does not
//     verify), compares the entries the local log holds with it and adds
//     the others. A local log with entries the journal lacks is refused,
//     unless the journal is empty: then the first leader writes its log
//     into the journal (a data directory from before the journal).
//
// The journal mode also dedupes AppendAsync and Append like AppendBatch.
package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

// MaxEntrySize is the largest entry the log accepts (tlog-tiles entry bundles
// use a 16-bit length prefix).
const MaxEntrySize = tessera.DefaultEntrySizeLimit

// Defaults for zero Options fields.
const (
	DefaultBatchMaxSize       = 4096
	DefaultBatchMaxAge        = 50 * time.Millisecond
	DefaultCheckpointInterval = time.Second
	// MinCheckpointInterval is the POSIX driver's lower bound.
	MinCheckpointInterval = 100 * time.Millisecond
)

// Options configure Open.
type Options struct {
	// Dir holds the log: the public files (checkpoint, tile/) and the
	// driver's private state (.state/). It is created if missing.
	Dir string
	// Signer signs checkpoints: the coordinator's key, see NewSigner.
	Signer note.Signer
	// Verifier checks checkpoints when the Log reads its own files. It may
	// be nil when Signer was made by NewSigner.
	Verifier note.Verifier
	// Origin is the checkpoint origin line, e.g. "cloister.local/ledger".
	// Tessera uses the signer's name as the origin, so it must equal
	// Signer.Name(); empty means Signer.Name().
	Origin string
	// BatchMaxSize and BatchMaxAge bound a sequencing batch: a batch is
	// written when it holds BatchMaxSize entries or its first entry is
	// BatchMaxAge old. Larger batches cost fewer fsyncs per entry; the age
	// bounds the latency of Append under light load.
	BatchMaxSize uint
	BatchMaxAge  time.Duration
	// CheckpointInterval is how often a new checkpoint is signed and
	// published (at least MinCheckpointInterval). Entries become provable
	// once a checkpoint covers them.
	CheckpointInterval time.Duration
	// Logger receives lifecycle events; nil means slog.Default().
	Logger *slog.Logger

	// Journal, if set, puts the log's order in the coordinators' replicated
	// journal (see the package comment). Appends are then acknowledged
	// once journaled; BatchMaxSize and BatchMaxAge still bound a batch
	// written into the local log, which now delays only integration (and
	// so proofs), not the acknowledgement.
	Journal *JournalOptions
	// Standby opens a journaled Log as a follower: it takes no appends
	// (ErrStandby) until Lead, and CatchUp reads what the leader appends.
	// Without it Open leads at once. Ignored without Journal.
	Standby bool
}

// Log appends entries to a tessera POSIX log and reads it back. It embeds a
// Reader over its own directory. It is safe for concurrent use. At most one
// Log may be open on a directory in a process (Open refuses a second one);
// tessera's POSIX driver coordinates several processes with file locks.
type Log struct {
	*Reader

	dir      string
	log      *slog.Logger
	add      tessera.AddFn
	lr       tessera.LogReader
	index    *hashIndex
	shutdown func(context.Context) error
	cancel   context.CancelFunc
	poll     time.Duration
	jr       *journaled // nil: file-only

	mu     sync.RWMutex
	closed bool
}

var (
	openMu   sync.Mutex
	openDirs = map[string]bool{}
)

// Open opens the log in opts.Dir, creating it (with a signed checkpoint of
// the empty tree) if needed. ctx bounds the opening only: the log's
// background work (batching, integration, checkpoint publication, garbage
// collection of partial tiles) runs until Close.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("opening ledger: no directory")
	}
	if opts.Signer == nil {
		return nil, errors.New("opening ledger: no checkpoint signer")
	}
	if opts.Origin == "" {
		opts.Origin = opts.Signer.Name()
	}
	if opts.Origin != opts.Signer.Name() {
		return nil, fmt.Errorf("opening ledger: origin %q differs from the signer name %q (tessera signs checkpoints with the signer name as origin)", opts.Origin, opts.Signer.Name())
	}
	if opts.Verifier == nil {
		v, err := verifierFor(opts.Signer)
		if err != nil {
			return nil, fmt.Errorf("opening ledger: %w", err)
		}
		opts.Verifier = v
	}
	if opts.Verifier.Name() != opts.Signer.Name() || opts.Verifier.KeyHash() != opts.Signer.KeyHash() {
		return nil, errors.New("opening ledger: verifier does not match the signer")
	}
	if opts.BatchMaxSize == 0 {
		opts.BatchMaxSize = DefaultBatchMaxSize
	}
	if opts.BatchMaxAge <= 0 {
		opts.BatchMaxAge = DefaultBatchMaxAge
	}
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.CheckpointInterval < MinCheckpointInterval {
		return nil, fmt.Errorf("opening ledger: checkpoint interval %v is below %v", opts.CheckpointInterval, MinCheckpointInterval)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("opening ledger: %w", err)
	}

	openMu.Lock()
	defer openMu.Unlock()
	if openDirs[dir] {
		return nil, fmt.Errorf("opening ledger: %s is already open in this process", dir)
	}

	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		return nil, fmt.Errorf("opening ledger storage: %w", err)
	}
	republish := max(tessera.DefaultCheckpointRepublishInterval, opts.CheckpointInterval)
	batchAge := opts.BatchMaxAge
	if opts.Journal != nil {
		// The journal mode batches before tessera (journaled.integrateRound).
		batchAge = journalFlushAge
	}
	ao := tessera.NewAppendOptions().
		WithCheckpointSigner(opts.Signer).
		WithBatching(opts.BatchMaxSize, batchAge).
		WithCheckpointInterval(opts.CheckpointInterval).
		WithCheckpointRepublishInterval(republish).
		// Every entry that resolved must be published by Close: with the
		// default (60 s) a wedged disk would hold Close for a minute.
		WithShutdownTimeout(max(10*time.Second, 5*opts.CheckpointInterval))

	// Background work outlives ctx (which bounds the open) and ends at Close.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	app, shutdown, lr, err := tessera.NewAppender(bg, driver, ao)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening ledger appender: %w", err)
	}
	size, err := lr.IntegratedSize(ctx)
	if err != nil {
		_ = shutdown(ctx) // the open's error is the one to return
		cancel()
		return nil, fmt.Errorf("opening ledger: reading its size: %w", err)
	}
	index, rebuilt, err := openIndex(ctx, dir, DirSource(dir), size)
	if err != nil {
		_ = shutdown(ctx) // the open's error is the one to return
		cancel()
		return nil, fmt.Errorf("opening ledger: %w", err)
	}
	openDirs[dir] = true
	l := &Log{
		Reader:   NewReader(DirSource(dir), opts.Verifier, opts.Origin),
		dir:      dir,
		log:      opts.Logger.WithGroup("ledger"),
		add:      app.Add,
		lr:       lr,
		index:    index,
		shutdown: shutdown,
		cancel:   cancel,
		poll:     min(opts.CheckpointInterval/4, 50*time.Millisecond),
	}
	if opts.Journal != nil {
		if l.jr, err = openJournaled(ctx, bg, l, opts, size); err != nil {
			// The open's error is the one to return.
			_ = shutdown(ctx)
			cancel()
			_ = index.close() // as above
			delete(openDirs, dir)
			return nil, fmt.Errorf("opening ledger: %w", err)
		}
	}
	l.log.Info("ledger open", "dir", dir, "origin", opts.Origin, "size", size, "index_rebuilt", rebuilt,
		"batch_max_size", opts.BatchMaxSize, "batch_max_age", opts.BatchMaxAge, "checkpoint_interval", opts.CheckpointInterval)
	return l, nil
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// Future resolves to the index of an appended entry once it is durably
// sequenced, or to an error. It may be called many times and from many
// goroutines; it blocks until the batch holding the entry is written.
type Future func() (uint64, error)

// AppendAsync queues entry for the next batch and returns at once. The
// entry is appended only if the future resolves to an index; once it has,
// Lookup finds the entry by its hash.
func (l *Log) AppendAsync(ctx context.Context, entry []byte) Future {
	e, sum, err := prepare(entry)
	if err == nil && l.jr != nil {
		return l.jr.appendAsync(e, sum)
	}
	var f tessera.IndexFuture
	if err == nil {
		f, err = l.queue(ctx, e)
	}
	if err != nil {
		return func() (uint64, error) { return 0, err }
	}
	return sync.OnceValues(func() (uint64, error) {
		idx, err := f()
		if err != nil {
			return 0, fmt.Errorf("appending to ledger: %w", err)
		}
		l.record([]uint64{idx.Index}, [][sha256.Size]byte{sum})
		return idx.Index, nil
	})
}

// prepare checks entry's size and hashes it. Tessera's identity hash is
// sha256 of the entry: the index's key.
func prepare(entry []byte) (*tessera.Entry, [sha256.Size]byte, error) {
	if len(entry) > MaxEntrySize {
		return nil, [sha256.Size]byte{}, fmt.Errorf("%w: %d bytes, limit %d", ErrEntryTooLarge, len(entry), MaxEntrySize)
	}
	e := tessera.NewEntry(entry)
	return e, [sha256.Size]byte(e.Identity()), nil
}

// queue hands e to tessera's next batch.
func (l *Log) queue(ctx context.Context, e *tessera.Entry) (tessera.IndexFuture, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	return l.add(ctx, e), nil
}

// AppendBatch appends entries that are not in the log yet and returns
// every entry's index once all are durably sequenced (see Append): an
// entry already logged (a retried batch) keeps its first index. It is
// AppendAsync and Lookup for many entries, with one index write per run
// of consecutive indices. On error, entries may have been appended.
//
// With a journal, "durably sequenced" means stored in the journal, and an
// entry already logged includes one that another coordinator journaled,
// or that a concurrent call is appending.
func (l *Log) AppendBatch(ctx context.Context, entries [][]byte) ([]uint64, error) {
	prepared := make([]*tessera.Entry, len(entries))
	sums := make([][sha256.Size]byte, len(entries))
	for i, entry := range entries {
		var err error
		if prepared[i], sums[i], err = prepare(entry); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	if l.jr != nil {
		return l.jr.appendBatch(ctx, prepared, sums)
	}
	indices := make([]uint64, len(entries))
	futures := make([]tessera.IndexFuture, len(entries))
	same := map[[sha256.Size]byte]int{} // first position of each entry in the batch
	for i, e := range prepared {
		if idx, ok := l.index.lookup(sums[i]); ok {
			indices[i] = idx
			continue
		}
		if _, ok := same[sums[i]]; ok {
			continue
		}
		same[sums[i]] = i
		var err error
		if futures[i], err = l.queue(ctx, e); err != nil {
			return nil, err
		}
	}
	var newIdx []uint64
	var newSums [][sha256.Size]byte
	for i, f := range futures {
		if f == nil {
			continue
		}
		idx, err := f()
		if err != nil {
			// What was sequenced is indexed: a retry gets the same indices.
			l.record(newIdx, newSums)
			return nil, fmt.Errorf("appending to ledger: %w", err)
		}
		indices[i] = idx.Index
		newIdx, newSums = append(newIdx, idx.Index), append(newSums, sums[i])
	}
	for i := range entries {
		if first, ok := same[sums[i]]; ok && first != i {
			indices[i] = indices[first]
		}
	}
	l.record(newIdx, newSums)
	return indices, nil
}

// record indexes sequenced entries. A failure costs only lookups, until the
// next Open rebuilds the records from the log.
func (l *Log) record(indices []uint64, sums [][sha256.Size]byte) {
	if err := l.index.record(indices, sums); err != nil {
		l.log.Warn("indexing ledger entries", "err", err)
	}
}

// Lookup returns the index of the first logged entry whose sha256 is sum,
// among those whose append future resolved (in this process or before the
// last Open) and, with a journal, those in the records read from it. Like
// the log's files it is a hint to check with an inclusion proof.
func (l *Log) Lookup(sum [sha256.Size]byte) (uint64, bool) { return l.index.lookup(sum) }

// Append adds entry to the log and returns its index once it is durably
// sequenced: with the POSIX driver, the entry bundle, the Merkle tiles and
// the tree state that include it have been written and fsynced, so the
// entry survives kill -9 (and power loss, on a filesystem that honours
// fsync). It is integrated into the tree but provable only after the next
// checkpoint (AwaitPublished). If ctx ends first, Append returns ctx.Err()
// and the entry may or may not be in the log.
func (l *Log) Append(ctx context.Context, entry []byte) (uint64, error) {
	f := l.AppendAsync(ctx, entry)
	if ctx.Done() == nil {
		return f()
	}
	type result struct {
		idx uint64
		err error
	}
	ch := make(chan result, 1)
	go func() {
		idx, err := f()
		ch <- result{idx, err}
	}()
	select {
	case r := <-ch:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// IntegratedSize is the number of entries durably sequenced and integrated
// into the tree, published or not. It is internal state: clients must use
// a verified checkpoint instead.
func (l *Log) IntegratedSize(ctx context.Context) (uint64, error) {
	return l.lr.IntegratedSize(ctx)
}

// AwaitPublished waits until a verified checkpoint covers index and returns
// it with its raw note.
func (l *Log) AwaitPublished(ctx context.Context, index uint64) (*Checkpoint, []byte, error) {
	t := time.NewTicker(l.poll)
	defer t.Stop()
	for {
		cp, raw, err := l.VerifiedCheckpoint(ctx)
		if err != nil {
			return nil, nil, err
		}
		if cp.Size > index {
			return cp, raw, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("awaiting checkpoint for index %d (at %d): %w", index, cp.Size, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops accepting entries, waits (bounded by ctx and a timeout) until
// a checkpoint covers every entry whose future resolved to an index, and
// stops the background work. Entries already acknowledged are durable
// whether or not Close completes. With a journal it first integrates what
// was journaled (bounded by ctx: the next Open integrates the rest).
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	var err error
	if l.jr != nil {
		err = l.jr.close(ctx)
	}
	err = errors.Join(err, l.shutdown(ctx))
	l.cancel()
	err = errors.Join(err, l.index.close())
	openMu.Lock()
	delete(openDirs, l.dir)
	openMu.Unlock()
	if err != nil {
		return fmt.Errorf("closing ledger: %w", err)
	}
	l.log.Info("ledger closed", "dir", l.dir)
	return nil
}

// Lead makes a journaled Log the leader: it catches up to the journal's
// end (writing a log that predates the journal into an empty journal
// first) and then takes appends. ctx bounds the catching up. It returns
// nil at once if the Log leads already, or has no journal. After an
// error (ErrJournalMismatch, the journal unreachable) the Log is still a
// standby and Lead may be called again.
func (l *Log) Lead(ctx context.Context) error {
	if l.jr == nil {
		return nil
	}
	return l.jr.lead(ctx)
}

// CatchUp reads the journal records appended since the last call, indexes
// their entries (Lookup finds them when it returns) and queues them for
// the local log, which integrates them in the background. A standby calls
// it periodically; on a leader and without a journal it does nothing.
// ErrJournalMismatch means the Log stopped for good.
func (l *Log) CatchUp(ctx context.Context) error {
	if l.jr == nil {
		return nil
	}
	return l.jr.catchUpStandby(ctx)
}

// Fenced is closed once an append found that another coordinator has
// appended to the journal: this one no longer leads, and its appends fail
// with ErrFenced from then on. It is nil (never ready) without a journal.
func (l *Log) Fenced() <-chan struct{} {
	if l.jr == nil {
		return nil
	}
	return l.jr.fenced
}

// publicPath matches the tlog-tiles resources: the checkpoint, hash tiles and
// entry bundles (full or partial). Everything else in the directory (the
// driver's .state, temporary files) is not served.
var publicPath = regexp.MustCompile(`^/(checkpoint|tile/([0-9]|[1-5][0-9]|6[0-3]|entries)/(x[0-9]{3}/)*[0-9]{3}(\.p/[0-9]{1,3})?)$`)

// Handler serves a log directory read-only in the tlog-tiles layout, for
// HTTPSource clients: GET /checkpoint, /tile/<L>/<N>[.p/<W>] and
// /tile/entries/<N>[.p/<W>]. Mount it under a prefix with http.StripPrefix.
func Handler(dir string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		m := publicPath.FindStringSubmatch(r.URL.Path)
		if m == nil {
			http.NotFound(w, r)
			return
		}
		switch {
		case m[1] == layout.CheckpointPath:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
		case m[4] == "":
			// Full tiles and bundles never change.
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		default:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}
