package main

import (
	"context"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/ledger/billing"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// attestedLedger returns an attested client and a reader of its ledger.
func attestedLedger(ctx context.Context) (*client.Client, *client.Attestation, *client.Ledger, error) {
	c, a, err := attestedClient(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := c.Ledger(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, a, r, nil
}

// trustedCheckpointPath is where `ledger verify` keeps the last checkpoint it
// verified, per coordinator identity.
func trustedCheckpointPath(a *client.Attestation) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	d := filepath.Join(dir, "cloister")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	return filepath.Join(d, "checkpoint-"+hex.EncodeToString(a.IdentityKey[:8])+".note"), nil
}

func ledgerVerify(fs *pflag.FlagSet) runFunc {
	return func(ctx context.Context, _ []string) error {
		_, a, r, err := attestedLedger(ctx)
		if err != nil {
			return err
		}
		path, err := trustedCheckpointPath(a)
		if err != nil {
			return err
		}
		up, err := r.UpdateTrusted(ctx, path)
		if err != nil {
			return &codedError{code: exitVerify, err: fmt.Errorf("ledger verify: %w", err)}
		}
		if up.Stored == nil {
			fmt.Printf("ledger checkpoint verified (first use): size %d, root %x\n  stored as trusted in %s\n", up.Latest.Size, up.Latest.Hash, path)
			return nil
		}
		fmt.Printf("ledger consistent: size %d → %d; the latest checkpoint extends the one stored before\n", up.Stored.Size, up.Latest.Size)
		return nil
	}
}

func ledgerAudit(fs *pflag.FlagSet) runFunc {
	from := fs.Uint64("from", 0, "first log index to replay")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	asCSV := fs.Bool("csv", false, "print the bill as CSV")
	byCaller := fs.Bool("by-caller", false, "one bill line per caller key (the receipts' caller_sha256; blank: anonymous and plaintext calls)")
	return func(ctx context.Context, _ []string) error {
		_, a, r, err := attestedLedger(ctx)
		if err != nil {
			return err
		}
		auditor := billing.NewAuditor(receipt.NewVerifier(a.IdentityKey))
		if *byCaller {
			auditor.PerCaller()
		}
		var progress ledger.ProgressFunc
		if isTerminal(os.Stderr) {
			progress = func(done, total uint64) { fmt.Fprintf(os.Stderr, "\r  audited %d of %d entries", done, total) }
		}
		rep, auditErr := r.Audit(ctx, *from, auditor.Check, progress)
		if progress != nil {
			fmt.Fprintln(os.Stderr)
		}
		if rep == nil || rep.Checkpoint == nil {
			return &codedError{code: exitVerify, err: fmt.Errorf("ledger audit: %w", auditErr)}
		}
		lines := auditor.Bill()
		ndups, dups := auditor.Duplicates()
		switch {
		case *asJSON:
			out := map[string]any{"checkpoint_size": rep.Checkpoint.Size, "from": rep.From, "entries": rep.Entries,
				"root_matches": rep.RootMatches, "problems": rep.Problems, "counts": rep.Counts, "bill": lines,
				"duplicates": ndups, "duplicate_entries": dups, "ok": auditErr == nil}
			if err := printJSON(out); err != nil {
				return err
			}
		case *asCSV:
			w := csv.NewWriter(os.Stdout)
			head := []string{"namespace", "function", "invocations", "failed", "instructions", "wall_ns", "cpu_ns", "input_bytes", "output_bytes", "peak_memory_pages", "duplicates"}
			if *byCaller {
				head = slices.Insert(head, 2, "caller_sha256")
			}
			w.Write(head) // csv.Writer keeps the first error for w.Error below
			for _, u := range lines {
				row := []string{u.Namespace, u.Function, strconv.FormatUint(u.Invocations, 10), strconv.FormatUint(u.Failed, 10),
					strconv.FormatUint(u.Instructions, 10),
					strconv.FormatInt(u.WallNanos, 10), strconv.FormatInt(u.CPUNanos, 10), strconv.FormatInt(u.InputBytes, 10),
					strconv.FormatInt(u.OutputBytes, 10), strconv.FormatUint(uint64(u.PeakPages), 10),
					strconv.FormatUint(u.Duplicates, 10)}
				if *byCaller {
					row = slices.Insert(row, 2, u.Caller)
				}
				w.Write(row) // as for head
			}
			w.Flush()
			if err := w.Error(); err != nil {
				return err
			}
		default:
			fmt.Printf("audited entries %d..%d of a log of size %d (checkpoint signed by the attested coordinator); root matches: %v\n",
				rep.From, rep.From+rep.Entries, rep.Checkpoint.Size, rep.RootMatches)
			// The tabwriter buffers rows with cells: Flush is the write that can fail.
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			caller, callerCol := func(billing.Line) string { return "" }, ""
			if *byCaller {
				callerCol = "CALLER\t"
				caller = func(u billing.Line) string {
					if u.Caller == "" {
						return "anonymous\t"
					}
					return short(u.Caller) + "\t"
				}
			}
			// Buffered, as the rows below.
			fmt.Fprintln(tw, "NAMESPACE\tFUNCTION\t"+callerCol+"INVOCATIONS\tFAILED\tINSTRUCTIONS\tWALL ms\tCPU ms\tIN bytes\tOUT bytes\tPEAK pages")
			for _, u := range lines {
				// Buffered, as the header.
				fmt.Fprintf(tw, "%s\t%s\t%s%d\t%d\t%d\t%.3f\t%.3f\t%d\t%d\t%d\n", u.Namespace, u.Function, caller(u), u.Invocations, u.Failed, u.Instructions,
					float64(u.WallNanos)/1e6, float64(u.CPUNanos)/1e6, u.InputBytes, u.OutputBytes, u.PeakPages)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Printf("duplicates: %d (entries that repeat a receipt logged before; each receipt is billed once)\n", ndups)
			for _, d := range dups {
				fmt.Printf("DUPLICATE at %d repeats the receipt at %d\n", d.Index, d.First)
			}
			for _, p := range rep.Problems {
				fmt.Printf("PROBLEM %s at %d (+%d): %s\n", ledger.ClassName(p.Class), p.Index, p.Count, p.Detail)
			}
		}
		if auditErr != nil {
			return &codedError{code: exitVerify, err: fmt.Errorf("ledger audit found problems: %w", auditErr)}
		}
		return nil
	}
}

// verifyInclusion prints where a receipt is in the log; it is part of
// `receipt verify`.
func verifyInclusion(ctx context.Context, c *client.Client, s *client.SignedReceipt, require bool) error {
	idx, cp, err := c.VerifyInclusion(ctx, s)
	switch {
	case err == nil:
		fmt.Printf("  ledger:     included at index %d in checkpoint of size %d (root %x), signed by the attested coordinator\n", idx, cp.Size, cp.Hash)
		return nil
	case errors.Is(err, client.ErrNotLogged) && !require:
		fmt.Printf("  ledger:     not in a checkpoint yet (%s); run again shortly, or pass --require-inclusion to fail\n", errorText(err))
		return nil
	default:
		return &codedError{code: exitVerify, err: err}
	}
}
