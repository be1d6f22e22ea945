package ledger_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloister-faas/cloister/internal/ledger"
)

// wantIndexed checks that Lookup finds every entry of want at its index.
func wantIndexed(t *testing.T, l *ledger.Log, want map[uint64][]byte) {
	t.Helper()
	for i, e := range want {
		got, ok := l.Lookup(sha256.Sum256(e))
		if !ok || got != i {
			t.Fatalf("Lookup(%q): got %d %v, want %d", e, got, ok, i)
		}
	}
}

func TestLookupByHash(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1)
	want := appendN(t, l, "a", 300) // more than one entry bundle
	wantIndexed(t, l, want)
	if _, ok := l.Lookup(sha256.Sum256([]byte("never logged"))); ok {
		t.Fatal("Lookup found an entry that was never logged")
	}
	// A repeated entry is found at its first index.
	dup, err := l.Append(context.Background(), want[7])
	if err != nil || dup != 300 {
		t.Fatalf("appending a duplicate: %d %v", dup, err)
	}
	if got, _ := l.Lookup(sha256.Sum256(want[7])); got != 7 {
		t.Fatalf("duplicate: Lookup gave %d, want 7", got)
	}
	closeLog(t, l)

	index := filepath.Join(dir, ".entry-sha256")
	damage := map[string]func(){
		"reopened": func() {},
		"index deleted (a log from before the index)": func() {
			if err := os.Remove(index); err != nil {
				t.Fatal(err)
			}
		},
		"records missing (crash before recording)": func() {
			if err := os.Truncate(index, 100*sha256.Size+5); err != nil {
				t.Fatal(err)
			}
		},
		"a hole of zeros (a later record written first)": func() {
			f, err := os.OpenFile(index, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(make([]byte, sha256.Size), 260*sha256.Size); err != nil {
				t.Fatal(err)
			}
			f.Close()
		},
	}
	for name, do := range damage {
		t.Run(name, func(t *testing.T) {
			do()
			l := openLog(t, dir, 1)
			defer closeLog(t, l)
			wantIndexed(t, l, want)
			next := appendN(t, l, name, 3)
			wantIndexed(t, l, next)
			for i, e := range next {
				want[i] = e
			}
		})
	}
}

func TestAppendBatch(t *testing.T) {
	l := openLog(t, t.TempDir(), 1)
	defer closeLog(t, l)
	ctx := context.Background()
	a, b, c := entry("x", 1), entry("x", 2), entry("x", 3)
	got, err := l.AppendBatch(ctx, [][]byte{a, b, a})
	if err != nil || len(got) != 3 || got[0] != 0 || got[1] != 1 || got[2] != 0 {
		t.Fatalf("first batch: %v %v, want [0 1 0]", got, err)
	}
	// A retried batch keeps its indices; only what is new is logged.
	got, err = l.AppendBatch(ctx, [][]byte{b, c, a})
	if err != nil || got[0] != 1 || got[1] != 2 || got[2] != 0 {
		t.Fatalf("retried batch: %v %v, want [1 2 0]", got, err)
	}
	if size, _ := l.IntegratedSize(ctx); size != 3 {
		t.Fatalf("log size %d, want 3", size)
	}
	wantIndexed(t, l, map[uint64][]byte{0: a, 1: b, 2: c})
	// A batch with an entry too large logs nothing.
	if _, err := l.AppendBatch(ctx, [][]byte{entry("x", 4), make([]byte, ledger.MaxEntrySize+1)}); !errors.Is(err, ledger.ErrEntryTooLarge) {
		t.Fatalf("oversized entry: %v", err)
	}
	if size, _ := l.IntegratedSize(ctx); size != 3 {
		t.Fatalf("log size %d after a refused batch, want 3", size)
	}
}
