package gateway

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ledgerFile serves one public file of the ledger in the tlog-tiles layout
// (the checkpoint, a hash tile or an entry bundle), which it asks the
// coordinator for over bus.SubjectLedgerRead: a gateway shares no disk with
// the coordinator. Nothing here is trusted by clients, who verify it against
// a checkpoint signed by the coordinator. A path the coordinator refuses is
// answered as not found, as a missing file is (tlog-tiles clients fall back
// from a partial tile to the full one on a 404). The checkpoint and hash
// tiles go to any key; an entry bundle only to a platform key or to a key
// of the namespace of every receipt in it (entriesVisible).
func (g *Gateway) ledgerFile(w http.ResponseWriter, r *http.Request, pr *Principal) error {
	p := strings.TrimPrefix(r.URL.Path, "/v1/ledger/log/")
	// No cache keeps the answer to a file that does not exist (yet).
	notFound := func() error {
		w.Header().Set("Cache-Control", "no-store")
		return apierr.New(apierr.NotFound, "%.64q is not in the ledger", p)
	}
	if len(p) > maxLedgerPath || strings.Contains(p, "..") {
		return notFound()
	}
	b, err := bus.CallBytes(r.Context(), g.cfg.Conn, bus.SubjectLedgerRead, []byte(p))
	var ae *apierr.Error
	if errors.As(err, &ae) && (ae.Code == apierr.BadRequest || ae.Code == apierr.NotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	if err := entriesVisible(pr, p, b); err != nil {
		return err
	}
	switch {
	case p == "checkpoint":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
	case !strings.Contains(p, ".p/"):
		// Full tiles and bundles never change.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b) // the status is sent; the client is gone
	}
	return nil
}

// maxLedgerPath bounds the path of a ledger file the gateway asks the
// coordinator for; the coordinator checks the path itself.
const maxLedgerPath = 64

// ledgerLookup finds the log index of a receipt by the hash of its entry,
// from the coordinator's index. The answer is a hint; clients verify an
// inclusion proof for it against a checkpoint signed by the coordinator.
// A key that is not a platform key finds only its namespace's receipts, and
// only once a checkpoint covers them (entryVisible).
func (g *Gateway) ledgerLookup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	h := r.PathValue("hash")
	sum, err := hex.DecodeString(h)
	if len(h) != 64 || err != nil || strings.ToLower(h) != h {
		return apierr.New(apierr.BadRequest, "receipt hash must be 64 lower-case hex digits (sha256 of the receipt entry)")
	}
	b, err := bus.CallBytes(r.Context(), g.cfg.Conn, bus.SubjectLedgerLookup, sum)
	if err != nil {
		return err
	}
	if len(b) != 8 {
		return apierr.New(apierr.Internal, "malformed ledger index")
	}
	idx := binary.BigEndian.Uint64(b)
	if err := g.entryVisible(r.Context(), p, sum, idx); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.LedgerLookup{EntryHash: h, Index: idx})
	return nil
}
