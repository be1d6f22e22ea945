package ledger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// EntrySource reads the public files of a log in the tlog-tiles layout
// (https://c2sp.org/tlog-tiles): the checkpoint, hash tiles and entry
// bundles. Its contract is tessera's client fetchers':
//   - a missing resource MUST give an error that wraps os.ErrNotExist;
//   - asked for a partial tile or bundle (p > 0) that does not exist, it
//     MUST fall back to the full one (the log may have grown past it).
//
// Nothing read through it is trusted: the Reader verifies it against the
// signed checkpoint.
type EntrySource interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
}

// DirSource reads a log directory written by Open (or a copy of one).
func DirSource(dir string) EntrySource { return client.FileFetcher{Root: dir} }

// HTTPSource reads a log served over HTTP, for example by Handler, from the
// root URL under which "checkpoint" and "tile/" live. c may be nil.
func HTTPSource(root *url.URL, c *http.Client) (EntrySource, error) {
	u := *root
	f, err := client.NewHTTPFetcher(&u, c)
	if err != nil {
		return nil, fmt.Errorf("ledger http source: %w", err)
	}
	return f, nil
}

// Reader reads and verifies a log through an EntrySource, with the
// coordinator's note verifier. It needs no other trust: every checkpoint is
// verified and every entry and proof can be checked against one. It is safe
// for concurrent use.
type Reader struct {
	src      EntrySource
	verifier note.Verifier
	origin   string
}

// NewReader returns a Reader for the log with origin, whose checkpoints v verifies.
func NewReader(src EntrySource, v note.Verifier, origin string) *Reader {
	return &Reader{src: src, verifier: v, origin: origin}
}

// Origin is the checkpoint origin line the Reader accepts.
func (r *Reader) Origin() string { return r.origin }

// Checkpoint returns the latest checkpoint as published: the raw signed note,
// not verified. Use VerifiedCheckpoint or VerifyCheckpoint before trusting it.
func (r *Reader) Checkpoint(ctx context.Context) ([]byte, error) {
	raw, err := r.src.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint: %w", err)
	}
	return raw, nil
}

// VerifiedCheckpoint returns the latest checkpoint, verified, and its raw note.
func (r *Reader) VerifiedCheckpoint(ctx context.Context) (*Checkpoint, []byte, error) {
	raw, err := r.Checkpoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	cp, err := VerifyCheckpoint(raw, r.verifier, r.origin)
	if err != nil {
		return nil, raw, err
	}
	return cp, raw, nil
}

// Entry returns the bytes of the entry at index, which the latest verified
// checkpoint must cover (else ErrNotPublished). The bytes come from an
// untrusted source: check them with InclusionProof and VerifyInclusion, or
// use VerifyEntry.
func (r *Reader) Entry(ctx context.Context, index uint64) ([]byte, error) {
	cp, _, err := r.VerifiedCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return r.entryAt(ctx, index, cp.Size)
}

func (r *Reader) entryAt(ctx context.Context, index, size uint64) ([]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: index %d, checkpoint size %d", ErrNotPublished, index, size)
	}
	bi := index / layout.EntryBundleWidth
	raw, err := r.src.ReadEntryBundle(ctx, bi, layout.PartialTileSize(0, bi, size))
	if err != nil {
		return nil, fmt.Errorf("reading entry bundle %d: %w", bi, err)
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil {
		return nil, fmt.Errorf("parsing entry bundle %d: %w", bi, err)
	}
	off := index % layout.EntryBundleWidth
	if off >= uint64(len(b.Entries)) {
		return nil, fmt.Errorf("%w: entry %d missing from bundle %d (%d entries)", ErrDroppedEntry, index, bi, len(b.Entries))
	}
	return b.Entries[off], nil
}

// InclusionProof returns the RFC 6962 inclusion proof of the entry at index
// in the tree of treeSize, built from the log's tiles.
func (r *Reader) InclusionProof(ctx context.Context, index, treeSize uint64) ([][]byte, error) {
	if index >= treeSize {
		return nil, fmt.Errorf("%w: index %d, tree size %d", ErrNotPublished, index, treeSize)
	}
	pb, err := client.NewProofBuilder(ctx, treeSize, r.src.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("building inclusion proof: %w", err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("building inclusion proof for %d in %d: %w", index, treeSize, err)
	}
	return p, nil
}

// ConsistencyProof returns the RFC 6962 consistency proof from the tree of
// size smaller to the tree of size larger, built from the log's tiles.
func (r *Reader) ConsistencyProof(ctx context.Context, smaller, larger uint64) ([][]byte, error) {
	if smaller > larger {
		return nil, fmt.Errorf("consistency proof: size %d > %d", smaller, larger)
	}
	pb, err := client.NewProofBuilder(ctx, larger, r.src.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("building consistency proof: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, smaller, larger)
	if err != nil {
		return nil, fmt.Errorf("building consistency proof %d→%d: %w", smaller, larger, err)
	}
	return p, nil
}

// VerifyEntry proves that entry is in the log at index: it verifies the
// latest checkpoint, fetches an inclusion proof and checks it. It returns
// the checkpoint the entry was proven against. An index the checkpoint does
// not cover yet gives ErrNotPublished; a wrong entry gives ErrNotIncluded.
func (r *Reader) VerifyEntry(ctx context.Context, entry []byte, index uint64) (*Checkpoint, error) {
	cp, _, err := r.VerifiedCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	p, err := r.InclusionProof(ctx, index, cp.Size)
	if err != nil {
		return cp, err
	}
	if err := VerifyInclusion(entry, index, p, cp); err != nil {
		return cp, err
	}
	return cp, nil
}

// CheckConsistency proves that latest extends stored, both verified
// checkpoints, with a consistency proof from the log's tiles. A smaller
// latest gives ErrRolledBackCheckpoint; the same size with another root, or
// a larger tree that does not contain stored, gives ErrForkedCheckpoint.
// When the proof cannot be fetched, the error wraps the read error and no
// class: the log failed to prove anything either way.
func (r *Reader) CheckConsistency(ctx context.Context, stored, latest *Checkpoint) error {
	if stored == nil || latest == nil {
		return fmt.Errorf("%w: missing checkpoint", ErrBadCheckpoint)
	}
	var p [][]byte
	if stored.Size > 0 && latest.Size > stored.Size {
		var err error
		if p, err = r.ConsistencyProof(ctx, stored.Size, latest.Size); err != nil {
			return err
		}
	}
	return VerifyConsistency(stored, latest, p)
}

// Update is the outcome of UpdateTrusted.
type Update struct {
	// Stored is the checkpoint that was trusted before (nil on first use).
	Stored    *Checkpoint
	StoredRaw []byte
	// Latest is the log's latest checkpoint (nil if it did not verify).
	Latest    *Checkpoint
	LatestRaw []byte
}

// UpdateTrusted is the client-side check of `ledger verify`: it loads the
// checkpoint trusted so far from path (none on first use), fetches and
// verifies the latest one, proves that it extends the stored one, and only
// then stores it at path (atomically, synced). On ErrForkedCheckpoint or
// ErrRolledBackCheckpoint the stored file is left alone and Update holds
// both signed notes: they are the evidence.
func (r *Reader) UpdateTrusted(ctx context.Context, path string) (Update, error) {
	var u Update
	stored, storedRaw, err := LoadCheckpoint(path, r.verifier, r.origin)
	if err != nil {
		return u, err
	}
	u.Stored, u.StoredRaw = stored, storedRaw
	latest, latestRaw, err := r.VerifiedCheckpoint(ctx)
	u.LatestRaw = latestRaw
	if err != nil {
		return u, err
	}
	u.Latest = latest
	if stored != nil {
		if err := r.CheckConsistency(ctx, stored, latest); err != nil {
			return u, err
		}
		if latest.Size == stored.Size {
			return u, nil
		}
	}
	if err := SaveCheckpoint(path, latestRaw); err != nil {
		return u, err
	}
	return u, nil
}

// LoadCheckpoint reads and verifies a checkpoint stored by SaveCheckpoint.
// A missing file is not an error: it returns nil, nil, nil.
func LoadCheckpoint(path string, v note.Verifier, origin string) (*Checkpoint, []byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading stored checkpoint: %w", err)
	}
	cp, err := VerifyCheckpoint(raw, v, origin)
	if err != nil {
		return nil, raw, fmt.Errorf("stored checkpoint %s: %w", path, err)
	}
	return cp, raw, nil
}

// SaveCheckpoint stores a raw checkpoint at path: written to a temporary
// file, synced, renamed over path, and the directory synced.
func SaveCheckpoint(path string, raw []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	f, err := os.CreateTemp(dir, ".checkpoint-*")
	if err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	// On a failure below, the temporary file is removed unread: its close
	// error adds nothing to the one returned.
	if _, err := f.Write(raw); err != nil {
		_ = f.Close() // see above
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close() // as above
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	defer d.Close() // a directory opened to sync it: closing loses nothing
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	return nil
}
