package ledger_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

const origin = "cloister.test/ledger"

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func signer(t testing.TB, seed byte) (note.Signer, note.Verifier) {
	t.Helper()
	s, v, err := ledger.NewSigner(origin, key(seed))
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func openLog(t testing.TB, dir string, seed byte) *ledger.Log {
	t.Helper()
	s, _ := signer(t, seed)
	l, err := ledger.Open(context.Background(), ledger.Options{
		Dir:                dir,
		Signer:             s,
		Origin:             origin,
		BatchMaxSize:       128,
		BatchMaxAge:        5 * time.Millisecond,
		CheckpointInterval: ledger.MinCheckpointInterval,
		Logger:             quietLogger(),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func entry(prefix string, i int) []byte { return fmt.Appendf(nil, "%s-receipt-%05d", prefix, i) }

// appendN appends n entries and returns them by index.
func appendN(t testing.TB, l *ledger.Log, prefix string, n int) map[uint64][]byte {
	t.Helper()
	ctx := context.Background()
	futures := make([]ledger.Future, n)
	for i := range n {
		futures[i] = l.AppendAsync(ctx, entry(prefix, i))
	}
	got := make(map[uint64][]byte, n)
	for i, f := range futures {
		idx, err := f()
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if _, dup := got[idx]; dup {
			t.Fatalf("index %d assigned twice", idx)
		}
		got[idx] = entry(prefix, i)
	}
	return got
}

func await(t testing.TB, l *ledger.Log, size uint64) (*ledger.Checkpoint, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp, raw, err := l.AwaitPublished(ctx, size-1)
	if err != nil {
		t.Fatalf("AwaitPublished(%d): %v", size-1, err)
	}
	if cp.Size != size {
		t.Fatalf("checkpoint size: got %d, want %d", cp.Size, size)
	}
	return cp, raw
}

func closeLog(t testing.TB, l *ledger.Log) {
	t.Helper()
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestAppendProveAndAudit(t *testing.T) {
	ctx := context.Background()
	l := openLog(t, t.TempDir(), 1)
	defer closeLog(t, l)

	const n1, n2 = 300, 213 // crosses a bundle boundary, ends in partial bundles
	entries := appendN(t, l, "a", n1)
	cp1, raw1 := await(t, l, n1)
	if v := signerVerifier(t, 1); true {
		if _, err := ledger.VerifyCheckpoint(raw1, v, origin); err != nil {
			t.Fatalf("VerifyCheckpoint: %v", err)
		}
	}
	for idx, want := range entries {
		got, err := l.Entry(ctx, idx)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Entry(%d): got %q, %v; want %q", idx, got, err, want)
		}
		p, err := l.InclusionProof(ctx, idx, cp1.Size)
		if err != nil {
			t.Fatalf("InclusionProof(%d): %v", idx, err)
		}
		if err := ledger.VerifyInclusion(want, idx, p, cp1); err != nil {
			t.Fatalf("VerifyInclusion(%d): %v", idx, err)
		}
		if idx == 17 {
			if err := ledger.VerifyInclusion([]byte("forged"), idx, p, cp1); !errors.Is(err, ledger.ErrNotIncluded) {
				t.Fatalf("forged entry: got %v, want ErrNotIncluded", err)
			}
			if err := ledger.VerifyInclusion(want, idx+1, p, cp1); !errors.Is(err, ledger.ErrNotIncluded) {
				t.Fatalf("wrong index: got %v, want ErrNotIncluded", err)
			}
		}
	}
	if _, err := l.Entry(ctx, n1); !errors.Is(err, ledger.ErrNotPublished) {
		t.Fatalf("Entry beyond checkpoint: got %v, want ErrNotPublished", err)
	}

	for idx, e := range appendN(t, l, "b", n2) {
		entries[idx] = e
	}
	cp2, _ := await(t, l, n1+n2)
	p, err := l.ConsistencyProof(ctx, cp1.Size, cp2.Size)
	if err != nil {
		t.Fatalf("ConsistencyProof: %v", err)
	}
	if err := ledger.VerifyConsistency(cp1, cp2, p); err != nil {
		t.Fatalf("VerifyConsistency: %v", err)
	}
	if err := l.CheckConsistency(ctx, cp1, cp2); err != nil {
		t.Fatalf("CheckConsistency: %v", err)
	}
	// An old entry still proves against the newer tree.
	if _, err := l.VerifyEntry(ctx, entries[5], 5); err != nil {
		t.Fatalf("VerifyEntry: %v", err)
	}

	var lastDone, lastTotal uint64
	rep, err := l.Audit(ctx, 0, nil, func(done, total uint64) { lastDone, lastTotal = done, total })
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	if !rep.RootMatches || rep.Entries != n1+n2 || len(rep.Problems) != 0 {
		t.Fatalf("Audit: got root match %v, %d entries, problems %v; want true, %d, none", rep.RootMatches, rep.Entries, rep.Problems, n1+n2)
	}
	if lastDone != n1+n2 || lastTotal != n1+n2 {
		t.Fatalf("progress: got %d/%d, want %d/%d", lastDone, lastTotal, n1+n2, n1+n2)
	}
	for _, from := range []uint64{1, 255, 256, 300, n1 + n2} {
		rep, err := l.Audit(ctx, from, nil, nil)
		if err != nil || !rep.RootMatches || rep.Entries != n1+n2-from {
			t.Fatalf("Audit(from %d): got %v, root match %v, %d entries", from, err, rep.RootMatches, rep.Entries)
		}
	}
}

func signerVerifier(t testing.TB, seed byte) note.Verifier {
	_, v := signer(t, seed)
	return v
}

func TestServeOverHTTP(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLog(t, dir, 1)
	entries := appendN(t, l, "h", 40)
	await(t, l, 40)
	closeLog(t, l)

	srv := httptest.NewServer(http.StripPrefix("/ledger", ledger.Handler(dir)))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/ledger/")
	src, err := ledger.HTTPSource(u, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	r := ledger.NewReader(src, signerVerifier(t, 1), origin)
	for idx, e := range entries {
		if _, err := r.VerifyEntry(ctx, e, idx); err != nil {
			t.Fatalf("VerifyEntry(%d) over HTTP: %v", idx, err)
		}
	}
	if rep, err := r.Audit(ctx, 0, nil, nil); err != nil || rep.Entries != 40 {
		t.Fatalf("Audit over HTTP: %v, %d entries", err, rep.Entries)
	}
	for _, p := range []string{"/ledger/.state/treeState", "/ledger/tile/", "/ledger/tile/entries/", "/ledger/../x", "/ledger/tile/0/000.p/../../../.state/treeState"} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: got %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestReopenContinues(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLog(t, dir, 1)
	appendN(t, l, "r1", 10)
	cp1, _ := await(t, l, 10)
	if _, err := ledger.Open(ctx, ledger.Options{Dir: dir, Signer: mustSigner(t, 1)}); err == nil {
		t.Fatal("second Open of the same directory: got nil error")
	}
	closeLog(t, l)
	if _, err := l.Append(ctx, []byte("late")); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("Append after Close: got %v, want ErrClosed", err)
	}

	l = openLog(t, dir, 1)
	defer closeLog(t, l)
	idx, err := l.Append(ctx, []byte("after reopen"))
	if err != nil || idx != 10 {
		t.Fatalf("Append after reopen: got %d, %v; want 10", idx, err)
	}
	cp2, _ := await(t, l, 11)
	if err := l.CheckConsistency(ctx, cp1, cp2); err != nil {
		t.Fatalf("CheckConsistency across reopen: %v", err)
	}
	if _, err := l.Append(ctx, make([]byte, ledger.MaxEntrySize+1)); !errors.Is(err, ledger.ErrEntryTooLarge) {
		t.Fatalf("oversized entry: got %v, want ErrEntryTooLarge", err)
	}
}

func mustSigner(t testing.TB, seed byte) note.Signer {
	s, _ := signer(t, seed)
	return s
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	s, _ := signer(t, 1)
	_, other := signer(t, 2)
	for _, tc := range []struct {
		name string
		opts ledger.Options
	}{
		{"no dir", ledger.Options{Signer: s}},
		{"no signer", ledger.Options{Dir: t.TempDir()}},
		{"origin differs from signer name", ledger.Options{Dir: t.TempDir(), Signer: s, Origin: "other.example/log"}},
		{"verifier of another key", ledger.Options{Dir: t.TempDir(), Signer: s, Verifier: other}},
		{"checkpoint interval too short", ledger.Options{Dir: t.TempDir(), Signer: s, CheckpointInterval: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quietLogger()
			if l, err := ledger.Open(ctx, tc.opts); err == nil {
				l.Close(ctx)
				t.Fatal("got nil error")
			}
		})
	}
}

// TestNewSignerMatchesNoteKeys checks NewSigner against x/mod's own encoding
// of the same Ed25519 key: same key hash, same signature.
func TestNewSignerMatchesNoteKeys(t *testing.T) {
	k := key(9)
	s, v, err := ledger.NewSigner(origin, k)
	if err != nil {
		t.Fatal(err)
	}
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", origin, v.KeyHash(), base64.StdEncoding.EncodeToString(append([]byte{1}, k.Seed()...)))
	ref, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("note.NewSigner: %v", err)
	}
	if s.KeyHash() != ref.KeyHash() || s.Name() != ref.Name() {
		t.Fatalf("key: got %s/%08x, want %s/%08x", s.Name(), s.KeyHash(), ref.Name(), ref.KeyHash())
	}
	msg := &note.Note{Text: origin + "\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"}
	got, err := note.Sign(msg, s)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := note.Sign(msg, ref)
	if !bytes.Equal(got, want) {
		t.Fatalf("signed note:\ngot  %q\nwant %q", got, want)
	}
	if _, _, err := ledger.NewSigner(origin, k[:10]); err == nil {
		t.Fatal("short key: got nil error")
	}
}

// ---- adversarial tests ------------------------------------------------------

// tamperedLog builds a closed log of n entries in a fresh directory and
// returns the directory and the entries by index.
func tamperedLog(t *testing.T, n int) (string, map[uint64][]byte) {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, dir, 1)
	entries := appendN(t, l, "t", n)
	await(t, l, uint64(n))
	closeLog(t, l)
	return dir, entries
}

func bundlePath(dir string, index uint64, size uint64) string {
	return filepath.Join(dir, layout.EntriesPath(index, layout.PartialTileSize(0, index, size)))
}

func readBundle(t *testing.T, path string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil {
		t.Fatal(err)
	}
	return b.Entries
}

func writeBundle(t *testing.T, path string, entries [][]byte) {
	t.Helper()
	var buf []byte
	for _, e := range entries {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(e)))
		buf = append(buf, e...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func audit(t *testing.T, dir string, check ledger.CheckFunc) (*ledger.AuditReport, error) {
	t.Helper()
	r := ledger.NewReader(ledger.DirSource(dir), signerVerifier(t, 1), origin)
	return r.Audit(context.Background(), 0, check, nil)
}

// wantProblems checks that err and the report name class at exactly indices.
func wantProblems(t *testing.T, rep *ledger.AuditReport, err error, class error, indices ...uint64) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("got error %v, want %v", err, class)
	}
	if !errors.Is(err, ledger.ErrRootMismatch) && class != ledger.ErrCheckFailed {
		t.Fatalf("got error %v, want it to include ErrRootMismatch", err)
	}
	var got []uint64
	for _, p := range rep.Problems {
		if p.Class == class {
			for i := range p.Count {
				got = append(got, p.Index+i)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(indices) {
		t.Fatalf("%v at indices %v, want %v (problems: %v)", class, got, indices, rep.Problems)
	}
	if n := rep.Count(class); n != uint64(len(indices)) {
		t.Fatalf("Count(%v): got %d, want %d", class, n, len(indices))
	}
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestAuditDetectsTampering(t *testing.T) {
	const n = 300 // bundle 0 is full, bundle 1 holds 44 entries
	others := []error{ledger.ErrModifiedEntry, ledger.ErrDroppedEntry, ledger.ErrReorderedEntry, ledger.ErrCheckFailed}
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, dir string)
		class   error
		indices []uint64
	}{
		{
			name: "modified entry in a full bundle",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 0, n)
				es := readBundle(t, p)
				es[5] = bytes.Clone(es[5])
				es[5][len(es[5])-1] ^= 1 // same length: the bundle still parses
				writeBundle(t, p, es)
			},
			class: ledger.ErrModifiedEntry, indices: []uint64{5},
		},
		{
			name: "modified entry in the partial bundle",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 1, n)
				es := readBundle(t, p)
				es[4] = []byte(`{"metering":{"instructions":1}}`) // a forged bill
				writeBundle(t, p, es)
			},
			class: ledger.ErrModifiedEntry, indices: []uint64{260},
		},
		{
			name: "dropped entry",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 0, n)
				es := readBundle(t, p)
				writeBundle(t, p, append(es[:7:7], es[8:]...))
			},
			class: ledger.ErrDroppedEntry, indices: []uint64{7},
		},
		{
			name: "dropped entry at the end of the log",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 1, n)
				es := readBundle(t, p)
				writeBundle(t, p, es[:len(es)-1])
			},
			class: ledger.ErrDroppedEntry, indices: []uint64{n - 1},
		},
		{
			name: "reordered entries",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 0, n)
				es := readBundle(t, p)
				es[3], es[9] = es[9], es[3]
				writeBundle(t, p, es)
			},
			class: ledger.ErrReorderedEntry, indices: []uint64{3, 9},
		},
		{
			name: "entries swapped across bundles",
			tamper: func(t *testing.T, dir string) {
				p0, p1 := bundlePath(dir, 0, n), bundlePath(dir, 1, n)
				es0, es1 := readBundle(t, p0), readBundle(t, p1)
				es0[100], es1[10] = es1[10], es0[100]
				writeBundle(t, p0, es0)
				writeBundle(t, p1, es1)
			},
			class: ledger.ErrReorderedEntry, indices: []uint64{100, 266},
		},
		{
			name: "entry bundle deleted",
			tamper: func(t *testing.T, dir string) {
				if err := os.Remove(bundlePath(dir, 1, n)); err != nil {
					t.Fatal(err)
				}
			},
			class: ledger.ErrDroppedEntry, indices: seq(256, n),
		},
		{
			name: "entry bundle truncated",
			tamper: func(t *testing.T, dir string) {
				p := bundlePath(dir, 1, n)
				raw, _ := os.ReadFile(p)
				if err := os.WriteFile(p, raw[:len(raw)-1], 0o644); err != nil {
					t.Fatal(err)
				}
			},
			class: ledger.ErrModifiedEntry, indices: seq(256, n),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := tamperedLog(t, n)
			if rep, err := audit(t, dir, nil); err != nil || !rep.RootMatches {
				t.Fatalf("before tampering: %v", err)
			}
			tc.tamper(t, dir)
			rep, err := audit(t, dir, nil)
			wantProblems(t, rep, err, tc.class, tc.indices...)
			if !rep.Classified || rep.RootMatches {
				t.Fatalf("got classified %v, root match %v; want true, false", rep.Classified, rep.RootMatches)
			}
			for _, o := range others {
				if o != tc.class && errors.Is(err, o) {
					t.Errorf("also reported %v: %v", o, err)
				}
			}
		})
	}
}

// TestAuditTilesRewritten: an attacker who rewrites the hash tiles to match a
// modified entry still cannot match the signed root. The audit names the
// mismatch and says it cannot tell which entry changed.
func TestAuditTilesRewritten(t *testing.T) {
	const n = 40
	dir, _ := tamperedLog(t, n)
	p := bundlePath(dir, 0, n)
	es := readBundle(t, p)
	es[5] = []byte("forged receipt")
	writeBundle(t, p, es)
	tp := filepath.Join(dir, layout.TilePath(0, 0, n))
	tile, err := os.ReadFile(tp)
	if err != nil {
		t.Fatal(err)
	}
	copy(tile[5*32:], rfc6962.DefaultHasher.HashLeaf(es[5]))
	if err := os.WriteFile(tp, tile, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := audit(t, dir, nil)
	if !errors.Is(err, ledger.ErrRootMismatch) || rep.Classified || rep.Note == "" {
		t.Fatalf("got %v (classified %v, note %q); want ErrRootMismatch, unclassified, a note", err, rep.Classified, rep.Note)
	}
	// The client holding the genuine receipt still sees it is not included.
	r := ledger.NewReader(ledger.DirSource(dir), signerVerifier(t, 1), origin)
	if _, err := r.VerifyEntry(context.Background(), es[5], 5); !errors.Is(err, ledger.ErrNotIncluded) {
		t.Fatalf("VerifyEntry of the forged entry: got %v, want ErrNotIncluded", err)
	}
}

func TestAuditCheckFailures(t *testing.T) {
	dir, entries := tamperedLog(t, 50)
	errForged := errors.New("receipt signed by a non-admitted key")
	rep, err := audit(t, dir, func(index uint64, e []byte) error {
		if !bytes.Equal(e, entries[index]) {
			return fmt.Errorf("entry %d: unexpected bytes", index)
		}
		if index == 7 || index == 42 {
			return errForged
		}
		return nil
	})
	wantProblems(t, rep, err, ledger.ErrCheckFailed, 7, 42)
	if !errors.Is(err, errForged) || errors.Is(err, ledger.ErrRootMismatch) || !rep.RootMatches {
		t.Fatalf("got %v (root match %v); want the check's error, no root mismatch", err, rep.RootMatches)
	}
}

func TestAuditBadCheckpoint(t *testing.T) {
	dir, _ := tamperedLog(t, 10)
	cpPath := filepath.Join(dir, layout.CheckpointPath)
	raw, _ := os.ReadFile(cpPath)
	bad := badSignature(raw)
	if err := os.WriteFile(cpPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := audit(t, dir, nil); !errors.Is(err, ledger.ErrBadSignature) {
		t.Fatalf("Audit with a bad checkpoint signature: got %v, want ErrBadSignature", err)
	}
}

// badSignature flips one bit of the signature in a signed note.
func badSignature(raw []byte) []byte {
	i := bytes.LastIndex(raw, []byte(" "))
	sig, _ := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(raw[i+1:])))
	sig[len(sig)-1] ^= 1
	return append(bytes.Clone(raw[:i+1]), base64.StdEncoding.EncodeToString(sig)+"\n"...)
}

func TestVerifyCheckpoint(t *testing.T) {
	dir, _ := tamperedLog(t, 3)
	raw, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	if err != nil {
		t.Fatal(err)
	}
	v := signerVerifier(t, 1)
	cp, err := ledger.VerifyCheckpoint(raw, v, origin)
	if err != nil || cp.Size != 3 || cp.Origin != origin {
		t.Fatalf("genuine: got %+v, %v", cp, err)
	}
	impostor := mustSigner(t, 2) // same name, another key
	forged, err := note.Sign(&note.Note{Text: string(raw[:bytes.Index(raw, []byte("\n\n"))+1])}, impostor)
	if err != nil {
		t.Fatal(err)
	}
	otherOrigin, _, _ := ledger.NewSigner("other.example/log", key(1))
	body := "other.example/log\n3\n" + base64.StdEncoding.EncodeToString(cp.Hash) + "\n"
	wrongOrigin, _ := note.Sign(&note.Note{Text: body}, otherOrigin)
	otherV, _ := ledger.NewVerifier("other.example/log", key(1).Public().(ed25519.PublicKey))
	for _, tc := range []struct {
		name string
		raw  []byte
		v    note.Verifier
		want error
	}{
		{"flipped signature bit", badSignature(raw), v, ledger.ErrBadSignature},
		{"signed by another key", forged, v, ledger.ErrBadSignature},
		{"signature stripped", raw[:bytes.Index(raw, []byte("\n\n"))+1], v, ledger.ErrBadSignature},
		{"body altered", bytes.Replace(raw, []byte("\n3\n"), []byte("\n4\n"), 1), v, ledger.ErrBadSignature},
		{"no verifier", raw, nil, ledger.ErrBadSignature},
		{"another origin", wrongOrigin, otherV, ledger.ErrBadCheckpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ledger.VerifyCheckpoint(tc.raw, tc.v, origin); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestForkedCheckpoint(t *testing.T) {
	ctx := context.Background()
	dirA, _ := tamperedLog(t, 20)
	// A second history signed by the same coordinator key.
	dirB := t.TempDir()
	lb := openLog(t, dirB, 1)
	appendN(t, lb, "fork", 20)
	await(t, lb, 20)

	v := signerVerifier(t, 1)
	ra := ledger.NewReader(ledger.DirSource(dirA), v, origin)
	rb := ledger.NewReader(ledger.DirSource(dirB), v, origin)
	cpA, _, err := ra.VerifiedCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cpB, _, err := rb.VerifiedCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rb.CheckConsistency(ctx, cpA, cpB); !errors.Is(err, ledger.ErrForkedCheckpoint) {
		t.Fatalf("same size, other root: got %v, want ErrForkedCheckpoint", err)
	}

	// The client trusted A; the host now serves B, grown past A's size.
	store := filepath.Join(t.TempDir(), "trusted-checkpoint")
	if _, err := ra.UpdateTrusted(ctx, store); err != nil {
		t.Fatalf("first UpdateTrusted: %v", err)
	}
	appendN(t, lb, "fork2", 15)
	await(t, lb, 35)
	closeLog(t, lb)
	u, err := rb.UpdateTrusted(ctx, store)
	if !errors.Is(err, ledger.ErrForkedCheckpoint) {
		t.Fatalf("larger fork: got %v, want ErrForkedCheckpoint", err)
	}
	if u.Stored == nil || u.Latest == nil || u.Stored.Size != 20 || u.Latest.Size != 35 {
		t.Fatalf("evidence: got %+v", u)
	}
	if kept, _, _ := ledger.LoadCheckpoint(store, v, origin); kept == nil || kept.Size != 20 {
		t.Fatalf("stored checkpoint after a fork: got %+v, want size 20 kept", kept)
	}
	// And the honest log still updates.
	if _, err := ra.UpdateTrusted(ctx, store); err != nil {
		t.Fatalf("UpdateTrusted on the honest log: %v", err)
	}
}

func TestRolledBackCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLog(t, dir, 1)
	appendN(t, l, "x", 10)
	cp10, raw10 := await(t, l, 10)
	appendN(t, l, "y", 10)
	cp20, _ := await(t, l, 20)
	closeLog(t, l)

	if err := ledger.VerifyConsistency(cp20, cp10, nil); !errors.Is(err, ledger.ErrRolledBackCheckpoint) {
		t.Fatalf("VerifyConsistency: got %v, want ErrRolledBackCheckpoint", err)
	}
	r := ledger.NewReader(ledger.DirSource(dir), signerVerifier(t, 1), origin)
	store := filepath.Join(t.TempDir(), "trusted-checkpoint")
	u, err := r.UpdateTrusted(ctx, store)
	if err != nil || u.Stored != nil || u.Latest.Size != 20 {
		t.Fatalf("first UpdateTrusted: got %+v, %v", u, err)
	}
	// The host puts back the older (validly signed) checkpoint.
	if err := os.WriteFile(filepath.Join(dir, layout.CheckpointPath), raw10, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateTrusted(ctx, store); !errors.Is(err, ledger.ErrRolledBackCheckpoint) {
		t.Fatalf("rolled back: got %v, want ErrRolledBackCheckpoint", err)
	}
	if err := r.CheckConsistency(ctx, cp20, cp10); !errors.Is(err, ledger.ErrRolledBackCheckpoint) {
		t.Fatalf("CheckConsistency: got %v, want ErrRolledBackCheckpoint", err)
	}
}

// TestAuditFrom: an audit from an index reads only the entries after it, and
// still catches a change among them.
func TestAuditFrom(t *testing.T) {
	const n = 600
	dir, _ := tamperedLog(t, n)
	p := bundlePath(dir, 2, n)
	es := readBundle(t, p)
	es[1], es[2] = es[2], es[1] // indices 513 and 514
	writeBundle(t, p, es)
	r := ledger.NewReader(ledger.DirSource(dir), signerVerifier(t, 1), origin)
	var mu sync.Mutex
	var checked []uint64
	rep, err := r.Audit(context.Background(), 500, func(i uint64, _ []byte) error {
		if i < 500 {
			t.Errorf("checked index %d, below from", i)
		}
		mu.Lock() // the check runs concurrently
		defer mu.Unlock()
		checked = append(checked, i)
		return nil
	}, nil)
	wantProblems(t, rep, err, ledger.ErrReorderedEntry, 513, 514)
	slices.Sort(checked)
	if rep.Entries != n-500 || fmt.Sprint(checked) != fmt.Sprint(seq(500, n)) {
		t.Fatalf("got %d entries, checked %v; want %d, [500, %d)", rep.Entries, checked, n-500, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Audit(ctx, 0, nil, nil); !errors.Is(err, context.Canceled) || ledger.ClassName(err) != "" {
		t.Fatalf("cancelled audit: got %v, want context.Canceled and no class", err)
	}
}

func TestStoredCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir, _ := tamperedLog(t, 5)
	v := signerVerifier(t, 1)
	r := ledger.NewReader(ledger.DirSource(dir), v, origin)
	store := filepath.Join(t.TempDir(), "sub", "trusted")
	if cp, raw, err := ledger.LoadCheckpoint(store, v, origin); cp != nil || raw != nil || err != nil {
		t.Fatalf("LoadCheckpoint of a missing file: got %v, %q, %v", cp, raw, err)
	}
	for range 2 { // the second update sees the same checkpoint
		u, err := r.UpdateTrusted(ctx, store)
		if err != nil || u.Latest.Size != 5 {
			t.Fatalf("UpdateTrusted: got %+v, %v", u, err)
		}
	}
	raw, _ := os.ReadFile(store)
	if err := os.WriteFile(store, badSignature(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateTrusted(ctx, store); !errors.Is(err, ledger.ErrBadSignature) {
		t.Fatalf("tampered stored checkpoint: got %v, want ErrBadSignature", err)
	}
}
