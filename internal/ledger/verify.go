package ledger

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Errors. The detection classes of an audit or a consistency check each have
// their own sentinel; test for them with errors.Is.
var (
	// ErrBadSignature: a checkpoint is not signed by the coordinator's key.
	ErrBadSignature = errors.New("ledger: checkpoint signature does not verify")
	// ErrBadCheckpoint: a checkpoint is not a well-formed tlog-checkpoint for this log's origin.
	ErrBadCheckpoint = errors.New("ledger: malformed checkpoint")
	// ErrForkedCheckpoint: a checkpoint does not extend an earlier one (same
	// size with a different root, or a larger tree that cannot be proven to
	// contain the earlier one): the log shows different histories.
	ErrForkedCheckpoint = errors.New("ledger: forked checkpoint")
	// ErrRolledBackCheckpoint: a checkpoint is smaller than one already seen.
	ErrRolledBackCheckpoint = errors.New("ledger: rolled-back checkpoint")
	// ErrNotIncluded: an inclusion proof does not bind the entry at its index
	// to the checkpoint.
	ErrNotIncluded = errors.New("ledger: entry not included in checkpoint")

	// ErrRootMismatch: the entries in the log do not hash to the root of the
	// signed checkpoint. An audit always reports it when the log's contents
	// were changed; it adds a finer class when it can tell which.
	ErrRootMismatch = errors.New("ledger: entries do not match the signed checkpoint root")
	// ErrModifiedEntry: an entry's bytes differ from the ones the checkpoint commits to.
	ErrModifiedEntry = errors.New("ledger: modified entry")
	// ErrDroppedEntry: an entry the checkpoint commits to is missing.
	ErrDroppedEntry = errors.New("ledger: dropped entry")
	// ErrReorderedEntry: an entry the checkpoint commits to is at another position.
	ErrReorderedEntry = errors.New("ledger: reordered entry")
	// ErrCheckFailed: the caller's per-entry check (for receipts: the
	// signature chain) refused an entry. The check's own error is wrapped too.
	ErrCheckFailed = errors.New("ledger: entry check failed")

	// ErrNotPublished: the index is not yet covered by a published checkpoint.
	// Retry after the next checkpoint (Options.CheckpointInterval).
	ErrNotPublished = errors.New("ledger: index not yet covered by a published checkpoint")
	// ErrEntryTooLarge: an entry is larger than MaxEntrySize.
	ErrEntryTooLarge = errors.New("ledger: entry too large")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("ledger: log closed")
)

// Checkpoint is a verified log checkpoint (https://c2sp.org/tlog-checkpoint):
// origin, tree size and RFC 6962 root hash.
type Checkpoint = log.Checkpoint

// LeafHash returns the RFC 6962 leaf hash of an entry: SHA-256(0x00 ‖ entry).
func LeafHash(entry []byte) []byte { return rfc6962.DefaultHasher.HashLeaf(entry) }

// VerifyCheckpoint opens a signed checkpoint note (https://c2sp.org/signed-note)
// with v and parses its body as a checkpoint for origin. A note that does not
// open with v (no signature by v, an invalid one, a malformed note) gives
// ErrBadSignature; a malformed body or another origin gives ErrBadCheckpoint. Extension lines and extra signatures (for
// example a witness's) are allowed and ignored.
func VerifyCheckpoint(raw []byte, v note.Verifier, origin string) (*Checkpoint, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: no verifier", ErrBadSignature)
	}
	// Every failure to open the note (no signature by v, an invalid one, or
	// no signature block at all) means the coordinator did not sign it.
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	var cp Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if cp.Origin != origin {
		return nil, fmt.Errorf("%w: origin %q, want %q", ErrBadCheckpoint, cp.Origin, origin)
	}
	if cp.Size == 0 && !bytes.Equal(cp.Hash, rfc6962.DefaultHasher.EmptyRoot()) {
		return nil, fmt.Errorf("%w: empty tree with a non-empty root", ErrBadCheckpoint)
	}
	return &cp, nil
}

// VerifyInclusion checks that proof binds entry, at index, to the root of cp
// (RFC 6962 §2.1.1, leaf hash of the entry bytes). A failure gives ErrNotIncluded.
func VerifyInclusion(entry []byte, index uint64, proofHashes [][]byte, cp *Checkpoint) error {
	if cp == nil {
		return fmt.Errorf("%w: no checkpoint", ErrNotIncluded)
	}
	if index >= cp.Size {
		return fmt.Errorf("%w: index %d is beyond tree size %d", ErrNotIncluded, index, cp.Size)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, LeafHash(entry), proofHashes, cp.Hash); err != nil {
		return fmt.Errorf("%w: index %d in tree %d: %v", ErrNotIncluded, index, cp.Size, err)
	}
	return nil
}

// VerifyConsistency checks that newer extends older (RFC 6962 §2.1.2) with
// proof. Both checkpoints must already be verified. A smaller newer tree
// gives ErrRolledBackCheckpoint; an equal size with a different root, or a
// proof that fails, gives ErrForkedCheckpoint.
func VerifyConsistency(older, newer *Checkpoint, proofHashes [][]byte) error {
	if older == nil || newer == nil {
		return fmt.Errorf("%w: missing checkpoint", ErrBadCheckpoint)
	}
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: origins %q and %q differ", ErrBadCheckpoint, older.Origin, newer.Origin)
	}
	switch {
	case newer.Size < older.Size:
		return fmt.Errorf("%w: size %d after size %d", ErrRolledBackCheckpoint, newer.Size, older.Size)
	case newer.Size == older.Size:
		if !bytes.Equal(newer.Hash, older.Hash) {
			return fmt.Errorf("%w: two roots for size %d (%x and %x)", ErrForkedCheckpoint, newer.Size, older.Hash, newer.Hash)
		}
		return nil
	case older.Size == 0:
		return nil // VerifyCheckpoint checked the empty root
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, proofHashes, older.Hash, newer.Hash); err != nil {
		return fmt.Errorf("%w: size %d does not extend size %d: %v", ErrForkedCheckpoint, newer.Size, older.Size, err)
	}
	return nil
}
