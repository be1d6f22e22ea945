package billing_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"

	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/ledger/billing"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// The adversarial tests of the ledger (issue 4): real logs of genuine
// signed receipts, one class of attack injected into each fresh log, and
// the audit and verify steps of the CLI run on it exactly as `cloister
// ledger audit` and `cloister ledger verify` run them.

const origin = "cloister.test/ledger"

// logSize puts 256 entries in bundle 0 and 44 in the partial bundle 1.
const logSize = 300

func checkpointSigner(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	s, v, err := ledger.NewSigner(origin, coordKey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func openLog(t testing.TB, dir string) *ledger.Log {
	t.Helper()
	s, _ := checkpointSigner(t)
	l, err := ledger.Open(context.Background(), ledger.Options{
		Dir:                dir,
		Signer:             s,
		BatchMaxSize:       128,
		BatchMaxAge:        5 * time.Millisecond,
		CheckpointInterval: ledger.MinCheckpointInterval,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("opening the ledger: %v", err)
	}
	return l
}

// appendAll appends entries, in order, and waits for a checkpoint that
// covers them. The coordinator logs a batch in order, so entry i gets
// index base+i; appendAll fails the test otherwise.
func appendAll(t testing.TB, l *ledger.Log, entries [][]byte) []byte {
	t.Helper()
	ctx := context.Background()
	base, err := l.IntegratedSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	futures := make([]ledger.Future, len(entries))
	for i, e := range entries {
		futures[i] = l.AppendAsync(ctx, e)
	}
	for i, f := range futures {
		idx, err := f()
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if idx != base+uint64(i) {
			t.Fatalf("entry %d logged at index %d, want %d", i, idx, base+uint64(i))
		}
	}
	size := base + uint64(len(entries))
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cp, raw, err := l.AwaitPublished(wctx, size-1)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != size {
		t.Fatalf("checkpoint of size %d, want %d", cp.Size, size)
	}
	return raw
}

// buildLog logs entries in a fresh directory, as the coordinator does,
// and closes the log.
func buildLog(t testing.TB, entries [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, dir)
	appendAll(t, l, entries)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func verifier(t testing.TB) note.Verifier {
	_, v := checkpointSigner(t)
	return v
}

func reader(t testing.TB, dir string) *ledger.Reader {
	_, v := checkpointSigner(t)
	return ledger.NewReader(ledger.DirSource(dir), v, origin)
}

// auditLog runs the audit of `cloister ledger audit`.
func auditLog(t testing.TB, dir string) (*ledger.AuditReport, *billing.Auditor, error) {
	t.Helper()
	a := newAuditor()
	rep, err := reader(t, dir).Audit(context.Background(), 0, a.Check, nil)
	if rep == nil || rep.Checkpoint == nil {
		t.Fatalf("audit did not run: %v", err)
	}
	return rep, a, err
}

// Entry bundles on disk, in tessera's layout (tlog-tiles).

func bundlePath(dir string, bundle, size uint64) string {
	return filepath.Join(dir, layout.EntriesPath(bundle, layout.PartialTileSize(0, bundle, size)))
}

func readEntries(t testing.TB, dir string, bundle uint64) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(bundlePath(dir, bundle, logSize))
	if err != nil {
		t.Fatal(err)
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil {
		t.Fatal(err)
	}
	return b.Entries
}

func writeEntries(t testing.TB, dir string, bundle uint64, entries [][]byte) {
	t.Helper()
	var buf []byte
	for _, e := range entries {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(e)))
		buf = append(buf, e...)
	}
	if err := os.WriteFile(bundlePath(dir, bundle, logSize), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// editEntries rewrites the bundles of a log of logSize entries: edit gets
// all the entries by index and returns what the host leaves on disk.
func editEntries(t testing.TB, dir string, edit func(es [][]byte) [][]byte) {
	t.Helper()
	es := append(readEntries(t, dir, 0), readEntries(t, dir, 1)...)
	es = edit(es)
	w := layout.EntryBundleWidth
	writeEntries(t, dir, 0, es[:min(w, len(es))])
	writeEntries(t, dir, 1, es[min(w, len(es)):])
}

// alterMetering returns entry with the metering of its receipt changed and
// the worker's signature and certificate kept.
func alterMetering(t testing.TB, entry []byte) []byte {
	t.Helper()
	var s receipt.Signed
	if err := json.Unmarshal(entry, &s); err != nil {
		t.Fatal(err)
	}
	var r receipt.Receipt
	if err := json.Unmarshal(s.Receipt, &r); err != nil {
		t.Fatal(err)
	}
	r.Metering.InputBytes = i64(*r.Metering.InputBytes * 1000)
	r.Metering.OutputBytes = i64(*r.Metering.OutputBytes * 1000)
	body, err := receipt.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	s.Receipt = body
	out, err := s.Entry()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// forged is a receipt of acme/forged signed by a worker key whose
// certificate the attested coordinator never signed.
func forged(t testing.TB) []byte {
	r := makeReceipt(0)
	r.Function, r.InvocationID = "forged", "inv-forged"
	return sign(t, r, rogueWorkerKey, workerCert(t, rogueCoordKey, pub(rogueWorkerKey)))
}

// indicesOf lists the indices the report names for class.
func indicesOf(rep *ledger.AuditReport, class error) []uint64 {
	var got []uint64
	for _, p := range rep.Problems {
		if p.Class == class {
			for i := range p.Count {
				got = append(got, p.Index+i)
			}
		}
	}
	return got
}

// finding checks that the audit reports class at exactly indices (for
// ErrCheckFailed, each with an error that is cause).
func finding(rep *ledger.AuditReport, err error, class error, cause error, indices ...uint64) error {
	if !errors.Is(err, class) {
		return fmt.Errorf("audit: got %v, want %v", err, class)
	}
	if got := indicesOf(rep, class); !slices.Equal(got, indices) {
		return fmt.Errorf("%s at indices %v, want %v (problems: %v)", ledger.ClassName(class), got, indices, rep.Problems)
	}
	if cause != nil {
		for _, p := range rep.Problems {
			if p.Class == class && !errors.Is(p.Err, cause) {
				return fmt.Errorf("%s at %d: got %v, want %v", ledger.ClassName(class), p.Index, p.Err, cause)
			}
		}
	}
	return nil
}

// tampered checks what an audit of a log changed on disk must say: the
// root does not match, the class at exactly indices, and no other class
// but those in also.
func tampered(rep *ledger.AuditReport, err error, class error, indices []uint64, also ...error) error {
	if rep.RootMatches || !errors.Is(err, ledger.ErrRootMismatch) {
		return fmt.Errorf("root matches %v (%v); want root_mismatch", rep.RootMatches, err)
	}
	if !rep.Classified {
		return fmt.Errorf("audit could not classify: %s", rep.Note)
	}
	if e := finding(rep, err, class, nil, indices...); e != nil {
		return e
	}
	for _, c := range []error{ledger.ErrModifiedEntry, ledger.ErrDroppedEntry, ledger.ErrReorderedEntry, ledger.ErrCheckFailed} {
		if c != class && !slices.Contains(also, c) && errors.Is(err, c) {
			return fmt.Errorf("also reported %s: %v", ledger.ClassName(c), err)
		}
	}
	return nil
}

func billEqual(got, want []billing.Line) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("bill:\ngot  %+v\nwant %+v", got, want)
	}
	return nil
}

// verifyAgainst runs `cloister ledger verify` twice: first against the
// log in trustedDir (first use stores its checkpoint), then against the
// log in servedDir. It returns the outcome of the second run.
func verifyAgainst(t testing.TB, trustedDir, servedDir string) (string, ledger.Update, error) {
	t.Helper()
	store := filepath.Join(t.TempDir(), "trusted.note")
	if _, err := reader(t, trustedDir).UpdateTrusted(context.Background(), store); err != nil {
		t.Fatalf("ledger verify on first use: %v", err)
	}
	u, err := reader(t, servedDir).UpdateTrusted(context.Background(), store)
	return store, u, err
}

// attack is one way to inject a class; run returns nil when the class is
// detected with the right class and index.
type attack struct {
	name string
	run  func(t *testing.T) error
}

func TestDetectionRate(t *testing.T) {
	es := genuine(t, logSize)
	all := upTo(logSize)

	classes := []struct {
		name    string
		attacks []attack
	}{
		{"modified entry", []attack{
			{"bytes of an entry changed on disk", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte {
					es[5] = bytes.Clone(es[5])
					es[5][len(es[5])-1] ^= 1 // same length: the bundle still parses
					return es
				})
				rep, a, err := auditLog(t, dir)
				return errors.Join(
					tampered(rep, err, ledger.ErrModifiedEntry, []uint64{5}, ledger.ErrCheckFailed),
					finding(rep, err, ledger.ErrCheckFailed, billing.ErrNotReceipt, 5),
					billEqual(a.Bill(), expectedBill(without(all, 5))))
			}},
			{"an entry replaced by another genuine receipt", func(t *testing.T) error {
				dir := buildLog(t, es)
				other := genuine(t, logSize+1)[logSize] // signed, never logged
				editEntries(t, dir, func(es [][]byte) [][]byte { es[270] = other; return es })
				rep, _, err := auditLog(t, dir)
				return tampered(rep, err, ledger.ErrModifiedEntry, []uint64{270})
			}},
		}},
		{"dropped entry", []attack{
			{"an entry removed from a full bundle", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte { return slices.Delete(es, 7, 8) })
				rep, _, err := auditLog(t, dir)
				return tampered(rep, err, ledger.ErrDroppedEntry, []uint64{7})
			}},
			{"the last entry removed", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte { return es[:logSize-1] })
				rep, a, err := auditLog(t, dir)
				return errors.Join(
					tampered(rep, err, ledger.ErrDroppedEntry, []uint64{logSize - 1}),
					billEqual(a.Bill(), expectedBill(without(all, logSize-1))))
			}},
		}},
		{"reordered entry", []attack{
			{"two entries swapped in a bundle", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte { es[3], es[9] = es[9], es[3]; return es })
				rep, a, err := auditLog(t, dir)
				// Every receipt still verifies, and the bill is the same:
				// only the root tells.
				return errors.Join(
					tampered(rep, err, ledger.ErrReorderedEntry, []uint64{3, 9}),
					billEqual(a.Bill(), expectedBill(all)))
			}},
			{"an entry moved across bundles", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte { es[100], es[266] = es[266], es[100]; return es })
				rep, _, err := auditLog(t, dir)
				return tampered(rep, err, ledger.ErrReorderedEntry, []uint64{100, 266})
			}},
		}},
		{"forged receipt (non-admitted key)", []attack{
			{"worker certificate not signed by the coordinator, logged", func(t *testing.T) error {
				// The coordinator was fooled into logging it: the log and its
				// checkpoint are consistent, only the receipt is not.
				dir := buildLog(t, slices.Insert(slices.Clone(es), 42, forged(t)))
				rep, a, err := auditLog(t, dir)
				if !rep.RootMatches {
					return fmt.Errorf("root does not match (%v); the log itself is consistent", err)
				}
				return errors.Join(
					finding(rep, err, ledger.ErrCheckFailed, receipt.ErrChain, 42),
					billEqual(a.Bill(), expectedBill(all)))
			}},
			{"receipt signed by a key its genuine certificate does not name, logged", func(t *testing.T) error {
				r := makeReceipt(0)
				r.Function, r.InvocationID = "forged", "inv-forged"
				f := sign(t, r, rogueWorkerKey, workerCert(t, coordKey, pub(workerKey)))
				dir := buildLog(t, append(slices.Clone(es), f))
				rep, a, err := auditLog(t, dir)
				return errors.Join(
					finding(rep, err, ledger.ErrCheckFailed, receipt.ErrSignature, logSize),
					billEqual(a.Bill(), expectedBill(all)))
			}},
		}},
		{"altered metering", []attack{
			{"bytes in and out changed on disk, signature kept", func(t *testing.T) error {
				dir := buildLog(t, es)
				editEntries(t, dir, func(es [][]byte) [][]byte { es[60] = alterMetering(t, es[60]); return es })
				rep, a, err := auditLog(t, dir)
				return errors.Join(
					tampered(rep, err, ledger.ErrModifiedEntry, []uint64{60}, ledger.ErrCheckFailed),
					finding(rep, err, ledger.ErrCheckFailed, receipt.ErrSignature, 60),
					billEqual(a.Bill(), expectedBill(without(all, 60))))
			}},
			{"bytes in and out changed before logging, signature kept", func(t *testing.T) error {
				altered := slices.Clone(es)
				altered[260] = alterMetering(t, es[260])
				rep, a, err := auditLog(t, buildLog(t, altered))
				if !rep.RootMatches {
					return fmt.Errorf("root does not match (%v); the log itself is consistent", err)
				}
				return errors.Join(
					finding(rep, err, ledger.ErrCheckFailed, receipt.ErrSignature, 260),
					billEqual(a.Bill(), expectedBill(without(all, 260))))
			}},
		}},
		{"forked checkpoint", []attack{
			{"two trees of the same size signed by the coordinator", func(t *testing.T) error {
				honest := buildLog(t, es)
				fork := slices.Clone(es)
				fork[10] = genuine(t, logSize+1)[logSize]
				forkDir := buildLog(t, fork)
				store, u, err := verifyAgainst(t, honest, forkDir)
				if !errors.Is(err, ledger.ErrForkedCheckpoint) {
					return fmt.Errorf("ledger verify: got %v, want %v", err, ledger.ErrForkedCheckpoint)
				}
				if u.Stored == nil || u.Latest == nil || u.Stored.Size != logSize || u.Latest.Size != logSize || bytes.Equal(u.Stored.Hash, u.Latest.Hash) {
					return fmt.Errorf("evidence: got stored %+v, latest %+v; want two roots of size %d", u.Stored, u.Latest, logSize)
				}
				if kept, _, _ := ledger.LoadCheckpoint(store, verifier(t), origin); kept == nil || !bytes.Equal(kept.Hash, u.Stored.Hash) {
					return errors.New("the trusted checkpoint was replaced by the fork")
				}
				return nil
			}},
			{"a larger tree that does not extend the trusted one", func(t *testing.T) error {
				honest := buildLog(t, es)
				fork := append(slices.Clone(es), genuine(t, logSize+20)[logSize:]...)
				fork[10] = fork[logSize]
				forkDir := buildLog(t, fork)
				_, u, err := verifyAgainst(t, honest, forkDir)
				if !errors.Is(err, ledger.ErrForkedCheckpoint) {
					return fmt.Errorf("ledger verify: got %v, want %v", err, ledger.ErrForkedCheckpoint)
				}
				if u.Stored.Size != logSize || u.Latest.Size != logSize+20 {
					return fmt.Errorf("evidence: sizes %d → %d, want %d → %d", u.Stored.Size, u.Latest.Size, logSize, logSize+20)
				}
				return nil
			}},
		}},
		{"rolled-back checkpoint", []attack{
			{"an older checkpoint served again", func(t *testing.T) error {
				dir := t.TempDir()
				l := openLog(t, dir)
				raw100 := appendAll(t, l, es[:100])
				appendAll(t, l, es[100:])
				if err := l.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				store := filepath.Join(t.TempDir(), "trusted.note")
				r := reader(t, dir)
				if _, err := r.UpdateTrusted(context.Background(), store); err != nil {
					t.Fatalf("ledger verify on first use: %v", err)
				}
				// The host puts back the checkpoint of size 100, validly signed.
				if err := os.WriteFile(filepath.Join(dir, layout.CheckpointPath), raw100, 0o644); err != nil {
					t.Fatal(err)
				}
				u, err := r.UpdateTrusted(context.Background(), store)
				if !errors.Is(err, ledger.ErrRolledBackCheckpoint) {
					return fmt.Errorf("ledger verify: got %v, want %v", err, ledger.ErrRolledBackCheckpoint)
				}
				if u.Stored.Size != logSize || u.Latest.Size != 100 {
					return fmt.Errorf("evidence: sizes %d → %d, want %d → 100", u.Stored.Size, u.Latest.Size, logSize)
				}
				if kept, _, _ := ledger.LoadCheckpoint(store, verifier(t), origin); kept == nil || kept.Size != logSize {
					return errors.New("the trusted checkpoint was rolled back")
				}
				return nil
			}},
		}},
	}

	// No false positive: a clean log audits clean and verifies, and a
	// duplicate is billed once without being called tampering.
	t.Run("clean log", func(t *testing.T) {
		dir := buildLog(t, es)
		rep, a, err := auditLog(t, dir)
		if err != nil || !rep.RootMatches || rep.Entries != logSize || len(rep.Problems) != 0 {
			t.Fatalf("audit: got %v (root matches %v, %d entries, problems %v); want clean, %d entries", err, rep.RootMatches, rep.Entries, rep.Problems, logSize)
		}
		if err := billEqual(a.Bill(), expectedBill(all)); err != nil {
			t.Fatal(err)
		}
		if n, _ := a.Duplicates(); n != 0 {
			t.Fatalf("got %d duplicates, want 0", n)
		}
		if _, _, err := verifyAgainst(t, dir, dir); err != nil {
			t.Fatalf("ledger verify: %v", err)
		}
	})
	t.Run("duplicate entries", func(t *testing.T) {
		// A worker's batch retried after a coordinator restart logs
		// receipts again.
		dir := buildLog(t, append(slices.Clone(es), es[5], es[260], es[5]))
		rep, a, err := auditLog(t, dir)
		if err != nil || !rep.RootMatches {
			t.Fatalf("audit: got %v (root matches %v); want clean", err, rep.RootMatches)
		}
		want := expectedBill(all)
		for i := range want {
			if want[i].Namespace == "globex" && want[i].Function == "hello" { // receipts 5 and 260
				want[i].Duplicates = 3
			}
		}
		if err := billEqual(a.Bill(), want); err != nil {
			t.Fatal(err)
		}
		n, dups := a.Duplicates()
		wantDups := []billing.Duplicate{{Index: logSize, First: 5}, {Index: logSize + 1, First: 260}, {Index: logSize + 2, First: 5}}
		if n != 3 || !reflect.DeepEqual(dups, wantDups) {
			t.Fatalf("duplicates: got %d %+v, want 3 %+v", n, dups, wantDups)
		}
	})

	detected := 0
	for _, c := range classes {
		ok := true
		for _, at := range c.attacks {
			ok = t.Run(c.name+"/"+at.name, func(t *testing.T) {
				if err := at.run(t); err != nil {
					t.Errorf("not detected as it should be: %v", err)
				}
			}) && ok
		}
		if ok {
			detected++
		}
		t.Logf("%-36s detected: %v", c.name, ok)
	}
	pct := 100 * detected / len(classes)
	t.Logf("detected %d of %d classes (%d%%)", detected, len(classes), pct)
	if detected < len(classes) {
		t.Fatalf("detection rate %d%% is below 100%%", pct)
	}
}
