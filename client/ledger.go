package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ErrNotLogged means a receipt is not (yet) in the transparency log.
var ErrNotLogged = errors.New("cloister: receipt is not in the ledger yet")

// Checkpoint is a verified ledger checkpoint.
type Checkpoint = ledger.Checkpoint

// Ledger returns a reader of the transparency log that trusts only the
// attested coordinator's checkpoint key.
func (c *Client) Ledger(ctx context.Context) (*ledger.Reader, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	if a.LedgerOrigin == "" {
		return nil, errors.New("this deployment runs no ledger")
	}
	v, err := ledger.NewVerifier(a.LedgerOrigin, a.IdentityKey)
	if err != nil {
		return nil, err
	}
	root, err := url.Parse(c.gws[0] + ledgerPath)
	if err != nil {
		return nil, err
	}
	// Tile reads go through exchange: they carry the API key and fail over.
	src, err := ledger.HTTPSource(root, &http.Client{Transport: gatewayTransport{c: c, root: root.String()}})
	if err != nil {
		return nil, err
	}
	return ledger.NewReader(src, v, a.LedgerOrigin), nil
}

// VerifyInclusion finds a signed receipt in the transparency log and
// verifies its inclusion proof against a checkpoint signed by the attested
// coordinator. It returns ErrNotLogged while the receipt is not there yet.
func (c *Client) VerifyInclusion(ctx context.Context, s *SignedReceipt) (uint64, *Checkpoint, error) {
	entry, err := s.Entry()
	if err != nil {
		return 0, nil, err
	}
	var lk wire.LedgerLookup
	if err := c.do(ctx, http.MethodGet, "/v1/ledger/receipts/"+receipt.EntryHash(entry), nil, "", &lk); err != nil {
		var ce *Error
		if errors.As(err, &ce) && ce.Code == "not_found" {
			return 0, nil, ErrNotLogged
		}
		return 0, nil, err
	}
	r, err := c.Ledger(ctx)
	if err != nil {
		return 0, nil, err
	}
	cp, err := r.VerifyEntry(ctx, entry, lk.Index)
	if err != nil {
		if errors.Is(err, ledger.ErrNotPublished) {
			return lk.Index, nil, fmt.Errorf("%w: sequenced at %d, no checkpoint covers it yet", ErrNotLogged, lk.Index)
		}
		return 0, nil, fmt.Errorf("%w: inclusion: %w", ErrVerification, err)
	}
	return lk.Index, cp, nil
}
