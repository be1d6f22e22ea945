package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
)

// indexFile is the entry-hash index, in the log directory (not served).
// Record i, at offset 32·i, is sha256 of entry i. It is derived data: Open
// checks it against the log and recomputes what is missing or wrong.
const indexFile = ".entry-sha256"

// hashIndex maps sha256(entry) to the entry's index, for looking a receipt
// up by its hash. It is a hint, like everything read from the directory:
// an inclusion proof verifies the answer.
//
// In memory it keeps the first 8 bytes of each hash (about 30 bytes per
// entry with the map's overhead) and confirms a hit against the file; the
// rare hash whose prefix is already taken goes to a small map of full hashes.
type hashIndex struct {
	mu       sync.RWMutex
	f        *os.File
	prefix   map[uint64]uint64
	overflow map[[sha256.Size]byte]uint64
}

// openIndex opens (or creates) the index of dir and brings it up to the
// first size entries of the log, reading entry bundles from src for
// records that are missing or do not match: a crash between sequencing and
// recording leaves such gaps, and a log written before the index existed
// has none.
func openIndex(ctx context.Context, dir string, src EntrySource, size uint64) (*hashIndex, int, error) {
	f, err := os.OpenFile(dir+"/"+indexFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("opening the entry index: %w", err)
	}
	x := &hashIndex{f: f, prefix: make(map[uint64]uint64, size), overflow: map[[sha256.Size]byte]uint64{}}
	fail := func(err error) (*hashIndex, int, error) {
		_ = f.Close() // the rebuild's error is the one to return
		return nil, 0, fmt.Errorf("rebuilding the entry index: %w", err)
	}
	// Records past the log (there should be none) and a torn last record go.
	if err := f.Truncate(min(fileSize(f)/sha256.Size, int64(size)) * sha256.Size); err != nil {
		return fail(err)
	}
	rebuilt := 0
	buf := make([]byte, layout.EntryBundleWidth*sha256.Size)
	for bi := uint64(0); bi*layout.EntryBundleWidth < size; bi++ {
		first := bi * layout.EntryBundleWidth
		n := min(uint64(layout.EntryBundleWidth), size-first)
		recs := buf[:n*sha256.Size]
		got, err := f.ReadAt(recs, int64(first*sha256.Size))
		if err != nil && !errors.Is(err, io.EOF) {
			return fail(err)
		}
		if got < len(recs) || hasZeroRecord(recs) {
			entries, err := readBundleEntries(ctx, src, bi, size)
			if err != nil {
				return fail(err)
			}
			for k := range n {
				s := sha256.Sum256(entries[k])
				copy(recs[k*sha256.Size:], s[:])
			}
			if _, err := f.WriteAt(recs, int64(first*sha256.Size)); err != nil {
				return fail(err)
			}
			rebuilt += int(n)
		}
		for k := range n {
			var s [sha256.Size]byte
			copy(s[:], recs[k*sha256.Size:])
			x.add(s, first+k)
		}
	}
	return x, rebuilt, nil
}

// readBundleEntries returns the entries of entry bundle bi of a log of
// size entries: the bundle's first min(256, size-256·bi).
func readBundleEntries(ctx context.Context, src EntrySource, bi, size uint64) ([][]byte, error) {
	n := min(uint64(layout.EntryBundleWidth), size-bi*layout.EntryBundleWidth)
	raw, err := src.ReadEntryBundle(ctx, bi, layout.PartialTileSize(0, bi, size))
	if err != nil {
		return nil, fmt.Errorf("entry bundle %d: %w", bi, err)
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil || uint64(len(b.Entries)) < n {
		return nil, fmt.Errorf("entry bundle %d does not parse or is short", bi)
	}
	return b.Entries[:n], nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

var zeroRecord [sha256.Size]byte

func hasZeroRecord(recs []byte) bool {
	for i := 0; i < len(recs); i += sha256.Size {
		if bytes.Equal(recs[i:i+sha256.Size], zeroRecord[:]) {
			return true
		}
	}
	return false
}

// add maps s to i in memory, keeping the lower index of a repeated entry.
func (x *hashIndex) add(s [sha256.Size]byte, i uint64) {
	p := binary.BigEndian.Uint64(s[:8])
	j, taken := x.prefix[p]
	switch {
	case !taken:
		x.prefix[p] = i
	case j == i:
	case x.recordIs(j, s):
		x.prefix[p] = min(i, j)
	default:
		if k, ok := x.overflow[s]; !ok || i < k {
			x.overflow[s] = i
		}
	}
}

// recordIs reports whether record i of the file is s.
func (x *hashIndex) recordIs(i uint64, s [sha256.Size]byte) bool {
	var r [sha256.Size]byte
	// ReadAt returns n < len(r) exactly when it fails: a failed read is
	// no match (a lookup then reports the entry as not found).
	n, _ := x.f.ReadAt(r[:], int64(i*sha256.Size))
	return n == sha256.Size && r == s
}

// record stores that entry indices[k] hashes to sums[k]: in the file
// first (one write per run of consecutive indices), so that a lookup that
// finds it in memory can confirm it.
func (x *hashIndex) record(indices []uint64, sums [][sha256.Size]byte) error {
	for start := 0; start < len(indices); {
		end := start + 1
		for end < len(indices) && indices[end] == indices[end-1]+1 {
			end++
		}
		run := make([]byte, 0, (end-start)*sha256.Size)
		for _, s := range sums[start:end] {
			run = append(run, s[:]...)
		}
		if _, err := x.f.WriteAt(run, int64(indices[start]*sha256.Size)); err != nil {
			return fmt.Errorf("recording entries %d to %d in the index: %w", indices[start], indices[end-1], err)
		}
		start = end
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for k, i := range indices {
		x.add(sums[k], i)
	}
	return nil
}

// lookup returns the lowest index of an entry that hashes to s.
func (x *hashIndex) lookup(s [sha256.Size]byte) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if i, ok := x.overflow[s]; ok {
		return i, true
	}
	i, ok := x.prefix[binary.BigEndian.Uint64(s[:8])]
	if !ok || !x.recordIs(i, s) {
		return 0, false
	}
	return i, true
}

func (x *hashIndex) close() error { return x.f.Close() }
