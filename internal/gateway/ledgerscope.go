package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
)

// What a key may read of the ledger (threat-model gap 19,
// docs/adr/0008-api-keys.md):
//
//   - the checkpoint and the hash tiles, any key: they hold hashes and
//     sizes only, and every client needs them for inclusion and
//     consistency proofs;
//   - an entry bundle, a platform key, or a key of the namespace of every
//     receipt in it: entries name namespaces, functions, versions, status,
//     metering, workers and times;
//   - the index of a receipt (GET /v1/ledger/receipts/{sha256}), a
//     platform key, or a key of the receipt's namespace.
//
// These checks are the gateway's, which is untrusted like the host: they
// keep other tenants out, not the operator, who can read the coordinator's
// files and the ledger journal.

// entriesPrefix starts the path of an entry bundle (tlog-tiles).
const entriesPrefix = "tile/entries/"

// entriesVisible refuses an entry bundle (path, read as raw) to a key that
// is not a platform key, unless every receipt in it is of its namespace.
func entriesVisible(p *Principal, path string, raw []byte) error {
	if p.Platform || !strings.HasPrefix(path, entriesPrefix) {
		return nil
	}
	var eb api.EntryBundle
	if err := eb.UnmarshalText(raw); err != nil {
		return apierr.New(apierr.Forbidden, "entry bundle %s does not parse, so it cannot be shown to a key of one namespace; a platform key reads it", path)
	}
	for _, e := range eb.Entries {
		if ns, ok := entryNamespace(e); !ok || ns != p.Namespace {
			return apierr.New(apierr.Forbidden, "entry bundle %s holds receipts of other namespaces; reading it needs a platform key (a key of namespace %q reads the checkpoint, the hash tiles and its own receipts' indices)", path, p.Namespace)
		}
	}
	return nil
}

// entryVisible refuses the index of the receipt entry whose sha256 is sum,
// logged at idx, to a key that is not a platform key unless the entry is
// of its namespace. It reads the entry from the coordinator, so the entry
// must be covered by the latest checkpoint: until then it is not_found,
// which clients read as "not logged yet".
func (g *Gateway) entryVisible(ctx context.Context, p *Principal, sum []byte, idx uint64) error {
	if p.Platform {
		return nil
	}
	notYet := apierr.New(apierr.NotFound, "the receipt is not in a checkpoint yet")
	cp, err := bus.CallBytes(ctx, g.cfg.Conn, bus.SubjectLedgerRead, []byte("checkpoint"))
	if apierr.CodeOf(err) == apierr.NotFound {
		return notYet
	}
	if err != nil {
		return err
	}
	size, ok := checkpointSize(cp)
	if !ok {
		return apierr.New(apierr.Internal, "malformed ledger checkpoint")
	}
	if idx >= size {
		return notYet
	}
	bi := idx / layout.EntryBundleWidth
	raw, err := bus.CallBytes(ctx, g.cfg.Conn, bus.SubjectLedgerRead, []byte(layout.EntriesPath(bi, layout.PartialTileSize(0, bi, size))))
	if apierr.CodeOf(err) == apierr.NotFound {
		// The log grew past the partial bundle since the checkpoint was read.
		raw, err = bus.CallBytes(ctx, g.cfg.Conn, bus.SubjectLedgerRead, []byte(layout.EntriesPath(bi, 0)))
	}
	if apierr.CodeOf(err) == apierr.NotFound {
		return notYet
	}
	if err != nil {
		return err
	}
	var eb api.EntryBundle
	off := idx % layout.EntryBundleWidth
	if err := eb.UnmarshalText(raw); err != nil || off >= uint64(len(eb.Entries)) {
		return apierr.New(apierr.NotFound, "the ledger does not hold the receipt at %d", idx)
	}
	e := eb.Entries[off]
	if h := sha256.Sum256(e); !bytes.Equal(h[:], sum) {
		return apierr.New(apierr.NotFound, "the ledger holds another receipt at %d", idx)
	}
	if ns, ok := entryNamespace(e); !ok || ns != p.Namespace {
		return apierr.New(apierr.Forbidden, "the receipt is not of namespace %q; looking it up needs a key of its namespace or a platform key", p.Namespace)
	}
	return nil
}

// entryNamespace reads the namespace of a ledger entry (a signed receipt,
// receipt.Signed.Entry). It does not verify anything: the answer only
// decides what the gateway shows.
func entryNamespace(entry []byte) (string, bool) {
	var s struct {
		Receipt []byte `json:"receipt"`
	}
	var r struct {
		Namespace string `json:"namespace"`
	}
	if json.Unmarshal(entry, &s) != nil || json.Unmarshal(s.Receipt, &r) != nil || r.Namespace == "" {
		return "", false
	}
	return r.Namespace, true
}

// checkpointSize reads the tree size of a checkpoint (c2sp.org/tlog-checkpoint:
// origin, then size, then root hash, one a line). It does not verify the
// signature: clients do.
func checkpointSize(cp []byte) (uint64, bool) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseUint(lines[1], 10, 64)
	return n, err == nil
}
