package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// handleLedgerAppend logs a batch of receipts (wire.LedgerAppendRequest in
// its binary encoding). The batch must be signed by a worker whose
// certificate chains to this coordinator, so a host cannot log a forged or
// altered receipt (see receipt.VerifyBatch). It answers once every entry is
// durably sequenced. A receipt already in the log (a worker's retry after a
// lost answer) gets its first index instead of being logged twice.
func (c *Coordinator) handleLedgerAppend(ctx context.Context, b []byte) ([]byte, error) {
	var req wire.LedgerAppendRequest
	if err := req.UnmarshalBinary(b); err != nil {
		return nil, apierr.Wrap(apierr.BadRequest, err)
	}
	entries := req.Receipts
	if _, err := c.receipts.VerifyBatch(req.WorkerCert, entries, req.Signature, c.now()); err != nil {
		return nil, apierr.New(apierr.Forbidden, "refusing to log a batch that does not verify: %v", err)
	}
	indices, err := c.ledger.AppendBatch(ctx, entries)
	if errors.Is(err, ledger.ErrFenced) || errors.Is(err, ledger.ErrStandby) {
		// Another coordinator leads now: the worker sends the batch again
		// there and gets the same indices.
		return nil, apierr.New(apierr.Unavailable, "this coordinator no longer leads the ledger; send the batch again")
	}
	if err != nil {
		// What was sequenced is indexed: the worker's retry gets the same
		// indices.
		return nil, fmt.Errorf("appending to the ledger: %w", err)
	}
	return (&wire.LedgerAppendResponse{Indices: indices}).MarshalBinary()
}

// handleLedgerLookup answers the log index of the entry whose sha256 is the
// 32-byte request, as 8 bytes big-endian. The answer is a hint: clients
// verify an inclusion proof for it.
func (c *Coordinator) handleLedgerLookup(_ context.Context, b []byte) ([]byte, error) {
	if len(b) != sha256.Size {
		return nil, apierr.New(apierr.BadRequest, "a ledger lookup is a 32-byte sha256, not %d bytes", len(b))
	}
	idx, ok := c.ledger.Lookup([sha256.Size]byte(b))
	if !ok {
		return nil, apierr.New(apierr.NotFound, "receipt %x is not in the ledger yet", b)
	}
	return binary.BigEndian.AppendUint64(nil, idx), nil
}

// ledgerPath matches the public files of the ledger in the tlog-tiles
// layout (https://c2sp.org/tlog-tiles), without a leading slash: the
// checkpoint, hash tiles of levels 0 to 63 and entry bundles, full or
// partial (.p/<W>). A tile index has at most 7 groups of three digits
// (2^64/256 has 17 digits). Nothing else in the directory (the driver's
// .state, the entry-hash index, temporary files) matches, and no match can
// hold "..", a leading "/" or a backslash.
var ledgerPath = regexp.MustCompile(`^(?:checkpoint|tile/(?:[0-9]|[1-5][0-9]|6[0-3]|entries)/(?:x[0-9]{3}/){0,6}[0-9]{3}(?:\.p/[0-9]{1,3})?)$`)

// MaxLedgerPath bounds the length of a SubjectLedgerRead request.
const MaxLedgerPath = 64

// ValidLedgerPath reports whether p names a public file of the ledger, as
// SubjectLedgerRead accepts it.
func ValidLedgerPath(p string) bool { return len(p) <= MaxLedgerPath && ledgerPath.MatchString(p) }

// readLedgerFile reads the public ledger file p under dir, at most limit
// bytes. Files are replaced by rename, never rewritten in place, so a read
// sees one whole version.
func readLedgerFile(dir, p string, limit int64) ([]byte, error) {
	if !ValidLedgerPath(p) {
		return nil, apierr.New(apierr.BadRequest, "%.64q is not a public file of the ledger", p)
	}
	// OpenInRoot also refuses a symbolic link that leads out of dir.
	f, err := os.OpenInRoot(dir, filepath.FromSlash(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, apierr.New(apierr.NotFound, "%s is not in the ledger", p)
	}
	if err != nil {
		return nil, fmt.Errorf("opening ledger file %s: %w", p, err)
	}
	defer f.Close() // read only: closing cannot lose anything
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading ledger file %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, apierr.New(apierr.NotFound, "%s is not in the ledger", p)
	}
	if fi.Size() > limit {
		return nil, apierr.New(apierr.Internal, "ledger file %s has %d bytes, more than the bus carries (%d)", p, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading ledger file %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, apierr.New(apierr.Internal, "ledger file %s is larger than the bus carries (%d)", p, limit)
	}
	return b, nil
}
