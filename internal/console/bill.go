package console

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/ledger/billing"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// BillReport is `cloister ledger audit`'s report: the whole log replayed
// against its verified checkpoint, every receipt verified, and the bill
// per function.
type BillReport struct {
	Checkpoint  *CheckpointView `json:"checkpoint"`
	From        uint64          `json:"from"`
	Entries     uint64          `json:"entries"`
	RootMatches bool            `json:"root_matches"`
	// Problems are the audit's findings, as text.
	Problems   []string            `json:"problems"`
	Counts     map[string]uint64   `json:"counts,omitempty"`
	Bill       []billing.Line      `json:"bill"`
	Duplicates uint64              `json:"duplicates"`
	DupEntries []billing.Duplicate `json:"duplicate_entries,omitempty"`
	// Series is the billed receipts over time: invocations, failures and
	// instructions per minute, hour or day, by each receipt's signed time.
	Series       billing.Series `json:"series"`
	Verification Verification   `json:"verification"`
}

// Bill audits the ledger as `cloister ledger audit` does. A report whose
// checkpoint did not verify is an error wrapping client.ErrVerification;
// one with problems has Verification.OK false.
func Bill(ctx context.Context, c *client.Client) (*BillReport, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	l, err := c.Ledger(ctx)
	if err != nil {
		return nil, err
	}
	auditor := billing.NewAuditor(receipt.NewVerifier(a.IdentityKey))
	timeline := billing.NewTimeline(auditor)
	rep, auditErr := l.Audit(ctx, 0, timeline.Check, nil)
	if rep == nil || rep.Checkpoint == nil {
		if errors.Is(auditErr, context.Canceled) || errors.Is(auditErr, context.DeadlineExceeded) {
			return nil, auditErr
		}
		return nil, fmt.Errorf("%w: ledger audit: %w", client.ErrVerification, auditErr)
	}
	ndups, dups := auditor.Duplicates()
	out := &BillReport{Checkpoint: checkpointView(rep.Checkpoint), From: rep.From, Entries: rep.Entries, RootMatches: rep.RootMatches,
		Problems: []string{}, Counts: rep.Counts, Bill: auditor.Bill(), Duplicates: ndups, DupEntries: dups,
		Series: timeline.Series()}
	if out.Bill == nil {
		out.Bill = []billing.Line{}
	}
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, fmt.Sprintf("%s at %d (+%d): %s", ledger.ClassName(p.Class), p.Index, p.Count, p.Detail))
	}
	out.Verification = Verification{OK: auditErr == nil && rep.RootMatches, Checks: []string{
		"checkpoint signed by the attested coordinator",
		"every entry replayed: the recomputed root is the checkpoint's",
		"every entry verified as a receipt signed by a certified worker; each receipt billed once",
	}}
	if auditErr != nil {
		out.Verification.Error = auditErr.Error()
	}
	return out, nil
}
