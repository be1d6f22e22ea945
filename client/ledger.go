package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ErrNotLogged means a receipt is not (yet) in the transparency log.
var ErrNotLogged = errors.New("cloister: receipt is not in the ledger yet")

// Checkpoint is a verified ledger checkpoint (C2SP tlog-checkpoint): the
// log's origin, its size and its RFC 6962 root hash.
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   []byte
}

// Ledger reads the transparency log of receipts and verifies what it reads
// against checkpoints signed by the attested coordinator: it trusts no
// other key, and nothing the gateway serves. It is safe for concurrent use.
type Ledger struct {
	r *ledger.Reader
}

// Ledger returns a reader of the transparency log that trusts only the
// attested coordinator's checkpoint key.
func (c *Client) Ledger(ctx context.Context) (*Ledger, error) {
	r, err := c.ledgerReader(ctx)
	if err != nil {
		return nil, err
	}
	return &Ledger{r: r}, nil
}

func (c *Client) ledgerReader(ctx context.Context) (*ledger.Reader, error) {
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

// VerifiedCheckpoint returns the log's latest checkpoint, verified, and
// its signed note.
func (l *Ledger) VerifiedCheckpoint(ctx context.Context) (*Checkpoint, []byte, error) {
	cp, raw, err := l.r.VerifiedCheckpoint(ctx)
	return checkpointFrom(cp), raw, err
}

// LedgerUpdate is the outcome of Ledger.UpdateTrusted.
type LedgerUpdate struct {
	// Stored is the checkpoint that was trusted before (nil on first use),
	// StoredRaw its signed note.
	Stored    *Checkpoint
	StoredRaw []byte
	// Latest is the log's latest checkpoint (nil if it did not verify),
	// LatestRaw its signed note.
	Latest    *Checkpoint
	LatestRaw []byte
}

// UpdateTrusted is the check of `cloister ledger verify`: it loads the
// checkpoint trusted so far from path (none on first use), fetches and
// verifies the latest one, proves that it extends the stored one (a
// consistency proof), and only then stores it at path. When the log forked
// or rolled back, the stored file is left alone and the LedgerUpdate holds
// both signed notes: they are the evidence.
func (l *Ledger) UpdateTrusted(ctx context.Context, path string) (LedgerUpdate, error) {
	u, err := l.r.UpdateTrusted(ctx, path)
	return LedgerUpdate{Stored: checkpointFrom(u.Stored), StoredRaw: u.StoredRaw, Latest: checkpointFrom(u.Latest), LatestRaw: u.LatestRaw}, err
}

// AuditReport is the outcome of Ledger.Audit.
type AuditReport struct {
	// Checkpoint is the verified checkpoint audited against, CheckpointRaw
	// its signed note.
	Checkpoint    *Checkpoint
	CheckpointRaw []byte
	// From is the first index replayed; Entries how many entries were read
	// and passed to the check.
	From, Entries uint64
	// Root is the root recomputed from the log (nil if entries were
	// missing); RootMatches tells whether it is the checkpoint's.
	Root        []byte
	RootMatches bool
	// Problems are the findings, by index, at most 1000.
	Problems []AuditProblem
	// Counts counts the findings per class name ("root_mismatch",
	// "modified_entry", "dropped_entry", "reordered_entry",
	// "check_failed"): the entries concerned, 1 for root_mismatch.
	Counts map[string]uint64
	// Classified is false when the root did not match and the audit could
	// not tell which entries changed; Note says why.
	Classified bool
	Note       string
	Elapsed    time.Duration
}

// AuditProblem is one finding of an audit.
type AuditProblem struct {
	// Class is the detection class, an error whose text names it; Counts
	// names it too.
	Class error
	// Index is the first log index concerned, Count how many (≥ 1).
	Index, Count uint64
	// Detail says what was seen.
	Detail string
	// Err is the underlying error; for a failed check, the check's.
	Err error
}

func (p AuditProblem) Error() string { return ledger.Problem(p).Error() }

// Unwrap returns the class and the underlying error, so that errors.Is
// matches both (for a failed check, the check's own error).
func (p AuditProblem) Unwrap() []error { return ledger.Problem(p).Unwrap() }

// Audit replays the log from index from against its latest verified
// checkpoint: it reads every entry, recomputes the root, classifies what
// differs (modified, dropped, reordered entries) and passes every entry
// to check, which may be nil. check is called from several goroutines at
// once and in no particular order, so it must be safe for concurrent use;
// entry is valid only during the call. progress, if not nil, receives
// done and total entries, in order. The error is nil for a clean audit;
// the report is nil only when the checkpoint could not be verified.
func (l *Ledger) Audit(ctx context.Context, from uint64, check func(index uint64, entry []byte) error, progress func(done, total uint64)) (*AuditReport, error) {
	rep, err := l.r.Audit(ctx, from, check, progress)
	return auditReportFrom(rep), err
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
	r, err := c.ledgerReader(ctx)
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
	return lk.Index, checkpointFrom(cp), nil
}

// checkpointFrom is a verified checkpoint's public form; nil stays nil.
func checkpointFrom(cp *ledger.Checkpoint) *Checkpoint {
	if cp == nil {
		return nil
	}
	p := Checkpoint(*cp)
	return &p
}

// auditReportFrom is an audit report's public form; nil stays nil.
func auditReportFrom(r *ledger.AuditReport) *AuditReport {
	if r == nil {
		return nil
	}
	out := &AuditReport{Checkpoint: checkpointFrom(r.Checkpoint), CheckpointRaw: r.CheckpointRaw, From: r.From, Entries: r.Entries,
		Root: r.Root, RootMatches: r.RootMatches, Counts: r.Counts, Classified: r.Classified, Note: r.Note, Elapsed: r.Elapsed}
	if r.Problems != nil {
		out.Problems = make([]AuditProblem, len(r.Problems))
		for i, p := range r.Problems {
			out.Problems[i] = AuditProblem(p)
		}
	}
	return out
}
