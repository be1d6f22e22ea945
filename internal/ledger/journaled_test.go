package ledger_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/ledger"
)

var journalKey = bytes.Repeat([]byte{7}, 32)

// newJS starts an embedded NATS server for the test: the coordinators'
// JetStream cluster.
func newJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(bustest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func journaledOptions(t testing.TB, dir string, js jetstream.JetStream, standby bool) ledger.Options {
	return ledger.Options{
		Dir:                dir,
		Signer:             mustSigner(t, 1),
		BatchMaxSize:       128,
		BatchMaxAge:        5 * time.Millisecond,
		CheckpointInterval: ledger.MinCheckpointInterval,
		Logger:             quietLogger(),
		Journal:            &ledger.JournalOptions{JS: js, Replicas: 1, Key: journalKey},
		Standby:            standby,
	}
}

// openJournaled opens the log in dir on the journal of js, as the leader
// or a standby. The test closes it unless it did.
func openJournaled(t testing.TB, dir string, js jetstream.JetStream, standby bool) *ledger.Log {
	t.Helper()
	return mustOpen(t, journaledOptions(t, dir, js, standby))
}

// mustOpen opens a log that the test closes unless it did.
func mustOpen(t testing.TB, opts ledger.Options) *ledger.Log {
	t.Helper()
	l, err := ledger.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// mustBeConsistent checks with l's proof that newer extends older.
func mustBeConsistent(t *testing.T, l *ledger.Log, older, newer *ledger.Checkpoint) {
	t.Helper()
	p, err := l.ConsistencyProof(context.Background(), older.Size, newer.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.VerifyConsistency(older, newer, p); err != nil {
		t.Fatalf("checkpoint of size %d and of size %d: %v", older.Size, newer.Size, err)
	}
}

// appendBatches appends n entries named prefix in batches of batch, from
// several goroutines as workers do, and returns them by index.
func appendBatches(t testing.TB, l *ledger.Log, prefix string, n, batch int) map[uint64][]byte {
	t.Helper()
	got := make(map[uint64][]byte, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for first := 0; first < n; first += batch {
		wg.Go(func() {
			var es [][]byte
			for i := first; i < min(first+batch, n); i++ {
				es = append(es, entry(prefix, i))
			}
			indices, err := l.AppendBatch(context.Background(), es)
			if err != nil {
				t.Errorf("AppendBatch: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for k, idx := range indices {
				if _, dup := got[idx]; dup {
					t.Errorf("index %d assigned twice", idx)
				}
				got[idx] = es[k]
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return got
}

func catchUp(t testing.TB, l *ledger.Log) {
	t.Helper()
	if err := l.CatchUp(context.Background()); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
}

// TestJournalStandbyFollows: a leader and a standby with their own
// directories on one journal write the same log: at the same size their
// checkpoints are byte-identical (same tree, same key, deterministic
// Ed25519), and the standby proves the leader's entries.
func TestJournalStandbyFollows(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	leader := openJournaled(t, t.TempDir(), js, false)
	standby := openJournaled(t, t.TempDir(), js, true)

	const n = 700 // several records and bundles
	entries := appendBatches(t, leader, "f", n, 50)
	appendN(t, leader, "async", 10) // AppendAsync goes through the journal too
	if _, err := standby.AppendBatch(ctx, [][]byte{[]byte("x")}); !errors.Is(err, ledger.ErrStandby) {
		t.Fatalf("standby AppendBatch: got %v, want ErrStandby", err)
	}
	catchUp(t, standby)
	for idx, e := range entries {
		if got, ok := standby.Lookup(sha256.Sum256(e)); !ok || got != idx {
			t.Fatalf("standby Lookup(entry %d) = %d, %v", idx, got, ok)
		}
	}
	_, rawL := await(t, leader, n+10)
	cp, rawS := await(t, standby, n+10)
	if !bytes.Equal(rawL, rawS) {
		t.Fatalf("checkpoints differ at size %d:\nleader  %q\nstandby %q", n+10, rawL, rawS)
	}
	for _, idx := range []uint64{0, 255, 256, n - 1} {
		if _, err := standby.VerifyEntry(ctx, entries[idx], idx); err != nil {
			t.Fatalf("standby VerifyEntry(%d): %v", idx, err)
		}
	}
	if rep, err := standby.Audit(ctx, 0, nil, nil); err != nil || rep.Entries != cp.Size {
		t.Fatalf("standby audit: %v, %d entries", err, rep.Entries)
	}
}

// TestJournalAcknowledgedBeforeIntegrated: an append is answered once
// journaled. Until the local log holds it, Lookup and the dedupe already
// find it, and another coordinator can prove it.
func TestJournalAcknowledgedBeforeIntegrated(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	opts := journaledOptions(t, t.TempDir(), js, false)
	opts.BatchMaxSize, opts.BatchMaxAge = 1<<16, time.Hour // the leader's log integrates only at Close
	leader := mustOpen(t, opts)
	es := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	indices, err := leader.AppendBatch(ctx, es)
	if err != nil || fmt.Sprint(indices) != "[0 1 2]" {
		t.Fatalf("AppendBatch = %v, %v", indices, err)
	}
	if size, err := leader.IntegratedSize(ctx); err != nil || size != 0 {
		t.Fatalf("integrated size %d, %v: want 0 (batch age of an hour)", size, err)
	}
	if idx, ok := leader.Lookup(sha256.Sum256(es[1])); !ok || idx != 1 {
		t.Fatalf("Lookup before integration = %d, %v", idx, ok)
	}
	if again, err := leader.AppendBatch(ctx, [][]byte{es[2], []byte("four")}); err != nil || fmt.Sprint(again) != "[2 3]" {
		t.Fatalf("retried batch = %v, %v; want [2 3]", again, err)
	}
	standby := openJournaled(t, t.TempDir(), js, true)
	catchUp(t, standby)
	await(t, standby, 4)
	if _, err := standby.VerifyEntry(ctx, es[1], 1); err != nil {
		t.Fatalf("standby VerifyEntry: %v", err)
	}
	// Close integrates what was journaled.
	closeLog(t, leader)
	reopened := openLog(t, opts.Dir, 1) // file-only: the local log alone
	defer closeLog(t, reopened)
	if size, err := reopened.IntegratedSize(ctx); err != nil || size != 4 {
		t.Fatalf("size after Close = %d, %v; want 4", size, err)
	}
}

// TestJournalTakeover: a standby takes over. A checkpoint of the old
// leader and one of the new are consistent, and the old leader, which
// did not notice, is fenced at its next append.
func TestJournalTakeover(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	a := openJournaled(t, t.TempDir(), js, false)
	b := openJournaled(t, t.TempDir(), js, true)
	appendBatches(t, a, "a", 300, 40)
	cpA, _ := await(t, a, 300)
	catchUp(t, b)

	// A is abandoned, not closed: it still believes it leads.
	if err := b.Lead(ctx); err != nil {
		t.Fatalf("Lead: %v", err)
	}
	if err := b.Lead(ctx); err != nil {
		t.Fatalf("second Lead: %v", err)
	}
	appendBatches(t, b, "b", 200, 40)
	cpB, _ := await(t, b, 500)
	mustBeConsistent(t, b, cpA, cpB) // the old leader's checkpoint and the new one's

	select {
	case <-a.Fenced():
		t.Fatal("fenced before appending")
	default:
	}
	if _, err := a.AppendBatch(ctx, [][]byte{[]byte("late")}); !errors.Is(err, ledger.ErrFenced) {
		t.Fatalf("old leader's append: got %v, want ErrFenced", err)
	}
	select {
	case <-a.Fenced():
	default:
		t.Fatal("Fenced not closed after a fenced append")
	}
	if _, err := a.AppendBatch(ctx, [][]byte{[]byte("later")}); !errors.Is(err, ledger.ErrFenced) {
		t.Fatalf("append after being fenced: got %v, want ErrFenced", err)
	}
	if err := a.Lead(ctx); !errors.Is(err, ledger.ErrFenced) {
		t.Fatalf("Lead after being fenced: got %v, want ErrFenced", err)
	}
	// The rejected entry is not in the log.
	if _, ok := b.Lookup(sha256.Sum256([]byte("late"))); ok {
		t.Fatal("the fenced append is in the log")
	}
	// A third coordinator sees the one log.
	c := openJournaled(t, t.TempDir(), js, true)
	if _, raw := await(t, c, 500); !bytes.Equal(raw, mustCheckpoint(t, b)) {
		t.Fatal("third coordinator's checkpoint differs")
	}
}

func mustCheckpoint(t *testing.T, l *ledger.Log) []byte {
	t.Helper()
	raw, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestJournalDuplicatesAcrossLeaderChange: a worker whose batch was
// logged but whose answer was lost retries it at the new leader, and gets
// the same indices; entries in flight at one leader are not logged twice.
func TestJournalDuplicatesAcrossLeaderChange(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	a := openJournaled(t, t.TempDir(), js, false)
	b := openJournaled(t, t.TempDir(), js, true)

	// Concurrent calls with overlapping entries, as retries in flight.
	batch := make([][]byte, 20)
	for i := range batch {
		batch[i] = entry("w", i)
	}
	results := make([][]uint64, 8)
	var wg sync.WaitGroup
	for g := range results {
		wg.Go(func() {
			var err error
			if results[g], err = a.AppendBatch(ctx, append(batch[g:], batch[:g]...)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := map[string]uint64{}
	for g, r := range results {
		for k, idx := range r {
			e := string(batch[(g+k)%len(batch)])
			if prev, ok := want[e]; ok && prev != idx {
				t.Fatalf("%s logged at %d and %d", e, prev, idx)
			}
			want[e] = idx
		}
	}

	if err := b.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	retried := append([][]byte{entry("new", 0)}, batch...)
	retried = append(retried, batch[3]) // twice in one batch
	indices, err := b.AppendBatch(ctx, retried)
	if err != nil {
		t.Fatal(err)
	}
	if indices[0] != 20 {
		t.Fatalf("new entry at %d, want 20", indices[0])
	}
	for k, e := range retried[1:] {
		if indices[k+1] != want[string(e)] {
			t.Fatalf("retried %s at %d, first logged at %d", e, indices[k+1], want[string(e)])
		}
	}
	cp, _ := await(t, b, 21)
	if rep, err := b.Audit(ctx, 0, nil, nil); err != nil || rep.Entries != cp.Size {
		t.Fatalf("audit: %v, %d entries", err, rep.Entries)
	}
}

// copyDir copies a closed log directory, as a snapshot of its disk.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

const hintFile = ".journal-position"

// TestJournalRestart: after a crash the local log may hold any part of
// the journal, and the saved position may be missing, damaged, or not
// match the local log. Open compares what the local log holds with the
// journal and integrates the rest.
func TestJournalRestart(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	dir := t.TempDir()
	a := openJournaled(t, dir, js, false)
	first := appendBatches(t, a, "r1", 300, 300)
	closeLog(t, a)
	snapshot := copyDir(t, dir) // 300 entries, position saved after them
	earlyHint, err := os.ReadFile(filepath.Join(dir, hintFile))
	if err != nil {
		t.Fatalf("no saved position after Close: %v", err)
	}

	a = openJournaled(t, dir, js, false)
	second := appendBatches(t, a, "r2", 200, 200) // one record: entries 300 to 499
	_, want := await(t, a, 500)
	closeLog(t, a)
	lateHint, err := os.ReadFile(filepath.Join(dir, hintFile))
	if err != nil {
		t.Fatal(err)
	}

	// partial builds a local log that holds the first 300 entries and the
	// first k of the second record: a crash in the middle of integrating
	// it. tamper alters one of them.
	partial := func(t *testing.T, k int, tamper bool) string {
		d := copyDir(t, snapshot)
		// File-only, it writes the local log directly. Queued well
		// within the batch age, the entries are one batch, in order.
		l, err := ledger.Open(ctx, ledger.Options{Dir: d, Signer: mustSigner(t, 1), BatchMaxSize: 1024,
			BatchMaxAge: 100 * time.Millisecond, CheckpointInterval: ledger.MinCheckpointInterval, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		futures := make([]ledger.Future, k)
		for i := range k {
			e := second[uint64(300+i)]
			if tamper && i == k/2 {
				e = []byte("not the journal's")
			}
			futures[i] = l.AppendAsync(ctx, e)
		}
		for i, f := range futures {
			if idx, err := f(); err != nil || idx != uint64(300+i) {
				t.Fatalf("building the local log: entry %d at %d, %v", 300+i, idx, err)
			}
		}
		closeLog(t, l)
		return d
	}
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"integrated to the saved position", func(t *testing.T) string { return copyDir(t, snapshot) }},
		{"crashed inside a record", func(t *testing.T) string { return partial(t, 57, false) }},
		{"everything integrated, position not saved", func(t *testing.T) string { return partial(t, 200, false) }},
		{"no saved position", func(t *testing.T) string {
			d := partial(t, 100, false)
			os.Remove(filepath.Join(d, hintFile))
			return d
		}},
		{"damaged position", func(t *testing.T) string {
			d := partial(t, 100, false)
			h := bytes.Clone(earlyHint)
			h[45] ^= 1 // the index of the next entry
			os.WriteFile(filepath.Join(d, hintFile), h, 0o600)
			return d
		}},
		{"position ahead of the local log", func(t *testing.T) string {
			d := partial(t, 100, false)
			os.WriteFile(filepath.Join(d, hintFile), lateHint, 0o600)
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openJournaled(t, tc.dir(t), js, true)
			if _, raw := await(t, l, 500); !bytes.Equal(raw, want) {
				t.Fatalf("checkpoint after the restart:\n%q\nwant\n%q", raw, want)
			}
			for idx, e := range first {
				if got, ok := l.Lookup(sha256.Sum256(e)); !ok || got != idx {
					t.Fatalf("Lookup(entry %d) = %d, %v", idx, got, ok)
				}
			}
			// It can lead; a retried entry keeps its index (and the
			// journal stays as the next case expects it).
			if err := l.Lead(ctx); err != nil {
				t.Fatal(err)
			}
			if idx, err := l.Append(ctx, second[456]); err != nil || idx != 456 {
				t.Fatalf("retried append after the restart = %d, %v; want 456", idx, err)
			}
		})
	}
	l := openJournaled(t, dir, js, false)
	if idx, err := l.Append(ctx, []byte("after the restarts")); err != nil || idx != 500 {
		t.Fatalf("append after the restarts = %d, %v; want 500", idx, err)
	}

	t.Run("local log differs", func(t *testing.T) {
		_, err := ledger.Open(ctx, journaledOptions(t, partial(t, 100, true), js, true))
		if !errors.Is(err, ledger.ErrJournalMismatch) {
			t.Fatalf("Open of a log that differs from the journal: %v, want ErrJournalMismatch", err)
		}
	})
}

// TestJournalMigration: a data directory from before the journal is
// written into the empty journal by its first leader, once; its
// checkpoints stay valid. A local log the journal does not hold is
// refused once the journal holds another history or was rolled back.
func TestJournalMigration(t *testing.T) {
	ctx := context.Background()
	js := newJS(t)
	dir := t.TempDir()
	old := openLog(t, dir, 1)
	entries := appendN(t, old, "old", 300)
	cpOld, rawOld := await(t, old, 300)
	closeLog(t, old)
	otherDir := t.TempDir()
	other := openLog(t, otherDir, 1)
	appendN(t, other, "other", 10)
	closeLog(t, other)

	// A standby does not write: it waits for Lead.
	standbyFirst := openJournaled(t, copyDir(t, dir), js, true)
	catchUp(t, standbyFirst)

	leader := openJournaled(t, dir, js, false)
	follower := openJournaled(t, t.TempDir(), js, true)
	catchUp(t, follower)
	if _, raw := await(t, follower, 300); !bytes.Equal(raw, rawOld) {
		t.Fatalf("a new coordinator's checkpoint of the migrated log:\n%q\nwant\n%q", raw, rawOld)
	}
	for idx, e := range entries {
		if got, ok := follower.Lookup(sha256.Sum256(e)); !ok || got != idx {
			t.Fatalf("follower Lookup(entry %d) = %d, %v", idx, got, ok)
		}
	}
	if again, err := leader.AppendBatch(ctx, [][]byte{entries[7], []byte("new")}); err != nil || fmt.Sprint(again) != "[7 300]" {
		t.Fatalf("append after migration = %v, %v; want [7 300]", again, err)
	}
	cpNew, _ := await(t, leader, 301)
	mustBeConsistent(t, leader, cpOld, cpNew) // before the migration and after
	// The standby that held the same old log follows without writing it again.
	catchUp(t, standbyFirst)
	await(t, standbyFirst, 301)

	// Another pre-journal log is not this journal's.
	if _, err := ledger.Open(ctx, journaledOptions(t, copyDir(t, otherDir), js, false)); !errors.Is(err, ledger.ErrJournalMismatch) {
		t.Fatalf("Open of another log: %v, want ErrJournalMismatch", err)
	}
	closeLog(t, leader)
	closeLog(t, follower)

	// The journal is replaced by an empty one: the saved position shows
	// it held more, so the local log is not written into it again.
	if err := js.DeleteStream(ctx, bus.StreamLedgerJournal); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Open(ctx, journaledOptions(t, dir, js, false)); !errors.Is(err, ledger.ErrJournalMismatch) {
		t.Fatalf("Open on a rolled-back journal: %v, want ErrJournalMismatch", err)
	}
}

// lossyJS is a JetStream whose next publishes fail: lost acknowledgements
// (stored, but the publisher hears an error) or failures (not stored).
type lossyJS struct {
	jetstream.JetStream
	mu               sync.Mutex
	loseAcks, losses int
}

var errLost = errors.New("test: connection lost")

func (l *lossyJS) Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	l.mu.Lock()
	loseAck, lose := l.loseAcks > 0, l.losses > 0 && l.loseAcks == 0
	if loseAck {
		l.loseAcks--
	} else if lose {
		l.losses--
	}
	l.mu.Unlock()
	if lose {
		return nil, errLost
	}
	ack, err := l.JetStream.Publish(ctx, subject, data, opts...)
	if loseAck {
		return nil, errLost
	}
	return ack, err
}

// TestJournalUnknownOutcome: when an append's outcome is unknown, the
// leader reads the journal to learn it: a record that was stored is
// answered, not stored twice; one that was not is appended again.
func TestJournalUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	js := &lossyJS{JetStream: newJS(t)}
	l := openJournaled(t, t.TempDir(), js, false)
	want := 0
	for _, tc := range []struct {
		name               string
		loseAcks, failures int
	}{
		{"acknowledgement lost", 1, 0},
		{"publish failed", 0, 2},
		{"both", 1, 1},
	} {
		js.mu.Lock()
		js.loseAcks, js.losses = tc.loseAcks, tc.failures
		js.mu.Unlock()
		es := [][]byte{entry(tc.name, 0), entry(tc.name, 1)}
		indices, err := l.AppendBatch(ctx, es)
		if err != nil || fmt.Sprint(indices) != fmt.Sprint([]int{want, want + 1}) {
			t.Fatalf("%s: AppendBatch = %v, %v; want [%d %d]", tc.name, indices, err, want, want+1)
		}
		want += 2
	}
	// The journal holds each record once: a standby has the same log.
	standby := openJournaled(t, t.TempDir(), js.JetStream, true)
	_, raw := await(t, standby, uint64(want))
	if _, rawL := await(t, l, uint64(want)); !bytes.Equal(raw, rawL) {
		t.Fatal("checkpoints differ")
	}
}

// TestJournalBackpressure: with little room for entries journaled but not
// integrated, the leader holds records back and a standby reads the
// journal in steps, until the local logs catch up; nothing is lost.
func TestJournalBackpressure(t *testing.T) {
	defer ledger.SetMaxPending(4 << 10)()
	js := newJS(t)
	open := func(standby bool) *ledger.Log {
		opts := journaledOptions(t, t.TempDir(), js, standby)
		opts.BatchMaxSize = 32
		return mustOpen(t, opts)
	}
	leader := open(false)
	const n = 1500
	appendBatches(t, leader, "bp", n, 100)
	standby := open(true)
	catchUp(t, standby)
	_, raw := await(t, standby, n)
	if _, rawL := await(t, leader, n); !bytes.Equal(raw, rawL) {
		t.Fatal("checkpoints differ")
	}
}
