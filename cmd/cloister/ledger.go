package main

import (
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
)

func cmdLedger(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: cloister ledger verify | audit [--from N] [--json|--csv]")
	}
	switch args[0] {
	case "verify":
		return ledgerVerify(ctx, args[1:])
	case "audit":
		return ledgerAudit(ctx, args[1:])
	default:
		return usageErr("unknown ledger command %q (verify, audit)", args[0])
	}
}

// attestedLedger returns an attested client and a reader of its ledger.
func attestedLedger(ctx context.Context) (*client.Client, *client.Attestation, *ledger.Reader, error) {
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

func ledgerVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ledger verify", flag.ContinueOnError)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
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

// billLine is one line of the bill.
type billLine struct {
	Namespace    string `json:"namespace"`
	Function     string `json:"function"`
	Invocations  uint64 `json:"invocations"`
	Failed       uint64 `json:"failed"`
	Instructions uint64 `json:"instructions"`
	WallNanos    int64  `json:"wall_ns"`
	CPUNanos     int64  `json:"cpu_ns"`
	InputBytes   int64  `json:"input_bytes"`
	OutputBytes  int64  `json:"output_bytes"`
	PeakPages    uint32 `json:"peak_memory_pages"`
}

func ledgerAudit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ledger audit", flag.ContinueOnError)
	from := fs.Uint64("from", 0, "first log index to replay")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	asCSV := fs.Bool("csv", false, "print the bill as CSV")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	_, a, r, err := attestedLedger(ctx)
	if err != nil {
		return err
	}
	v := receipt.NewVerifier(a.IdentityKey)
	var mu sync.Mutex
	bill := map[string]*billLine{}
	check := func(_ uint64, entry []byte) error {
		var s receipt.Signed
		if err := json.Unmarshal(entry, &s); err != nil {
			return fmt.Errorf("not a signed receipt: %w", err)
		}
		vr, err := v.Verify(&s, receipt.Expect{})
		if err != nil {
			return err
		}
		rc := vr.Receipt
		mu.Lock()
		defer mu.Unlock()
		k := rc.Namespace + "/" + rc.Function
		u := bill[k]
		if u == nil {
			u = &billLine{Namespace: rc.Namespace, Function: rc.Function}
			bill[k] = u
		}
		u.Invocations++
		if rc.Status != "ok" {
			u.Failed++
		}
		m := rc.Metering
		if m.Instructions != nil {
			u.Instructions += *m.Instructions
		}
		if m.WallNanos != nil {
			u.WallNanos += *m.WallNanos
		}
		if m.CPUNanos != nil {
			u.CPUNanos += *m.CPUNanos
		}
		if m.InputBytes != nil {
			u.InputBytes += *m.InputBytes
		}
		if m.OutputBytes != nil {
			u.OutputBytes += *m.OutputBytes
		}
		if m.PeakMemoryPages != nil {
			u.PeakPages = max(u.PeakPages, *m.PeakMemoryPages)
		}
		return nil
	}
	var progress ledger.ProgressFunc
	if isTerminal(os.Stderr) {
		progress = func(done, total uint64) { fmt.Fprintf(os.Stderr, "\r  audited %d of %d entries", done, total) }
	}
	rep, auditErr := r.Audit(ctx, *from, check, progress)
	if progress != nil {
		fmt.Fprintln(os.Stderr)
	}
	if rep == nil || rep.Checkpoint == nil {
		return &codedError{code: exitVerify, err: fmt.Errorf("ledger audit: %w", auditErr)}
	}
	lines := make([]*billLine, 0, len(bill))
	for _, u := range bill {
		lines = append(lines, u)
	}
	sort.Slice(lines, func(i, j int) bool {
		return lines[i].Namespace+"/"+lines[i].Function < lines[j].Namespace+"/"+lines[j].Function
	})
	switch {
	case *asJSON:
		out := map[string]any{"checkpoint_size": rep.Checkpoint.Size, "from": rep.From, "entries": rep.Entries,
			"root_matches": rep.RootMatches, "problems": rep.Problems, "counts": rep.Counts, "bill": lines, "ok": auditErr == nil}
		if err := printJSON(out); err != nil {
			return err
		}
	case *asCSV:
		w := csv.NewWriter(os.Stdout)
		w.Write([]string{"namespace", "function", "invocations", "failed", "instructions", "wall_ns", "cpu_ns", "input_bytes", "output_bytes", "peak_memory_pages"})
		for _, u := range lines {
			w.Write([]string{u.Namespace, u.Function, strconv.FormatUint(u.Invocations, 10), strconv.FormatUint(u.Failed, 10),
				strconv.FormatUint(u.Instructions, 10),
				strconv.FormatInt(u.WallNanos, 10), strconv.FormatInt(u.CPUNanos, 10), strconv.FormatInt(u.InputBytes, 10),
				strconv.FormatInt(u.OutputBytes, 10), strconv.FormatUint(uint64(u.PeakPages), 10)})
		}
		w.Flush()
		if err := w.Error(); err != nil {
			return err
		}
	default:
		fmt.Printf("audited entries %d..%d of a log of size %d (checkpoint signed by the attested coordinator); root matches: %v\n",
			rep.From, rep.From+rep.Entries, rep.Checkpoint.Size, rep.RootMatches)
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tFUNCTION\tINVOCATIONS\tFAILED\tINSTRUCTIONS\tWALL ms\tCPU ms\tIN bytes\tOUT bytes\tPEAK pages")
		for _, u := range lines {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.3f\t%.3f\t%d\t%d\t%d\n", u.Namespace, u.Function, u.Invocations, u.Failed, u.Instructions,
				float64(u.WallNanos)/1e6, float64(u.CPUNanos)/1e6, u.InputBytes, u.OutputBytes, u.PeakPages)
		}
		tw.Flush()
		for _, p := range rep.Problems {
			fmt.Printf("PROBLEM %s at %d (+%d): %s\n", ledger.ClassName(p.Class), p.Index, p.Count, p.Detail)
		}
	}
	if auditErr != nil {
		return &codedError{code: exitVerify, err: fmt.Errorf("ledger audit found problems: %w", auditErr)}
	}
	return nil
}

// verifyInclusion prints where a receipt is in the log; it is part of
// `receipt verify`.
func verifyInclusion(ctx context.Context, c *client.Client, s *receipt.Signed, require bool) error {
	idx, cp, err := c.VerifyInclusion(ctx, s)
	switch {
	case err == nil:
		fmt.Printf("  ledger:     included at index %d in checkpoint of size %d (root %x), signed by the attested coordinator\n", idx, cp.Size, cp.Hash)
		return nil
	case errors.Is(err, client.ErrNotLogged) && !require:
		fmt.Printf("  ledger:     not in a checkpoint yet (%v); run again shortly, or pass --require-inclusion to fail\n", err)
		return nil
	default:
		return &codedError{code: exitVerify, err: err}
	}
}
