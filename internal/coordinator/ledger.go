package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/cloister-faas/cloister/internal/apierr"
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
		return nil, apierr.New(apierr.BadRequest, "%v", err)
	}
	entries := req.Receipts
	if _, err := c.receipts.VerifyBatch(req.WorkerCert, entries, req.Signature, c.now()); err != nil {
		return nil, apierr.New(apierr.Forbidden, "refusing to log a batch that does not verify: %v", err)
	}
	indices, err := c.ledger.AppendBatch(ctx, entries)
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
