package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
)

func cmdInvoke(fs *pflag.FlagSet) runFunc {
	data := fs.String("data", "", "input: a literal (JSON or text) or @file (@- for stdin)")
	version := fs.Int("version", 0, "function version (default latest)")
	plaintext := fs.Bool("plaintext", false, "send unsealed (only for confidential: optional functions; the gateway sees the data)")
	asJSON := fs.Bool("json", false, "print output, receipt and verification as JSON")
	receiptOut := fs.String("receipt-out", "", "write the signed receipt (a sequence: its receipt chain) to this file")
	isAsync := fs.Bool("async", false, "queue the invocation and print its activation id at once")
	idemKey := fs.String("idempotency-key", "", "with --async: queue at most once per key in the namespace")
	withLogs := fs.Bool("logs", false, "also print what the function wrote on stderr (sealed to you like the output), also when it fails")
	keyPath := fs.String("key", "", "the caller key that signs the request (default: CLOISTER_KEY, else the owner key if there is one)")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister invoke NAME [--data JSON|@file] [--version V] [--key F] [--json]")
		}
		input, err := readData(*data)
		if err != nil {
			return err
		}
		c, err := newClientAs(*keyPath)
		if err != nil {
			return err
		}
		if *withLogs && (*plaintext || *isAsync) {
			return usageErr("--logs goes with a sealed synchronous invocation (queued ones keep their logs: `cloister activations logs ID`)")
		}
		if *isAsync {
			return invokeAsync(ctx, c, pos[0], input, client.AsyncOptions{Version: *version, Plaintext: *plaintext, IdempotencyKey: *idemKey}, *asJSON)
		}
		res, err := c.Invoke(ctx, pos[0], input, client.InvokeOptions{Version: *version, Plaintext: *plaintext, Logs: *withLogs})
		var ce *client.Error
		isSequence := false
		if errors.As(err, &ce) && ce.Code == "not_found" && *version == 0 && !*plaintext {
			if _, serr := c.GetSequence(ctx, pos[0]); serr == nil {
				isSequence = true
				res, err = c.InvokeSequence(ctx, pos[0], input)
			}
		}
		if err != nil {
			if errors.As(err, &ce) {
				printLogs(ce.Logs)
				if functionFailed(err) && !*withLogs && !*plaintext && !isSequence {
					err = fmt.Errorf("%w\n(add --logs to see what the function wrote on stderr)", err)
				}
			}
			return classify(err)
		}
		if *receiptOut != "" {
			var v any = res.SignedReceipt
			if res.Chain != nil {
				v = res.Chain
			}
			b, _ := json.MarshalIndent(v, "", "  ") // receipts decoded from JSON re-encode
			if err := os.WriteFile(*receiptOut, b, 0o644); err != nil {
				return fmt.Errorf("writing receipt: %w", err)
			}
		}
		if *asJSON {
			out := map[string]any{
				"version":  res.Version,
				"mode":     res.Mode,
				"receipt":  res.Receipt,
				"verified": true,
				"tee":      res.Worker.TEE,
			}
			if utf8.Valid(res.Output) {
				out["output"] = string(res.Output)
			} else {
				out["output_base64"] = res.Output
			}
			if res.Attestation.Warning != "" {
				out["warning"] = res.Attestation.Warning
			}
			if *withLogs {
				out["logs"] = string(res.Logs)
			}
			return printJSON(out)
		}
		os.Stdout.Write(res.Output) // a failed write to stdout has no one left to tell
		endLine(os.Stderr, res.Output)
		printLogs(res.Logs)
		fmt.Fprintln(os.Stderr, summary(res))
		return nil
	}
}

// printLogs prints a function's stderr on stderr, set apart.
func printLogs(logs []byte) {
	if len(logs) == 0 {
		return
	}
	fmt.Fprintln(os.Stderr, "--- function stderr (sealed to you, verified) ---")
	os.Stderr.Write(logs) // nowhere to report a failed write to stderr
	if logs[len(logs)-1] != '\n' {
		fmt.Fprintln(os.Stderr)
	}
	fmt.Fprintln(os.Stderr, "---")
}

// summary is the one-line verification summary.
func summary(r *client.Result) string {
	var b strings.Builder
	gen := ""
	if g := r.Receipt.ResetGeneration; g != nil {
		gen = fmt.Sprintf(", reset %d", *g)
	}
	fmt.Fprintf(&b, "verified: %s v%d (code %s, snapshot %s%s) ran on worker %s [%s, measurement %s]; receipt %s signed and chained to the attested coordinator; %s request",
		r.Receipt.Function, r.Receipt.FunctionVersion, short(r.Receipt.CodeHash), short(r.Receipt.SnapshotHash), gen, r.Worker.WorkerID, r.Worker.TEE,
		short(r.Worker.Measurement), short(r.Receipt.InvocationID), r.Mode)
	if len(r.Chain) > 0 {
		fmt.Fprintf(&b, "; sequence %s: all %d step receipts verified and chained", r.Receipt.Sequence, len(r.Chain))
		if r.SequenceSigner != nil {
			fmt.Fprintf(&b, ", definition signed by owner %s", short(hex.EncodeToString(r.SequenceSigner)))
		} else {
			b.WriteString(", definition UNSIGNED (the gateway's word; pin owner keys with CLOISTER_OWNERS to refuse it)")
		}
	}
	if r.Attestation.Warning != "" {
		fmt.Fprintf(&b, "\nWARNING: %s", r.Attestation.Warning)
	}
	return b.String()
}

func readData(s string) ([]byte, error) {
	switch {
	case s == "@-":
		return io.ReadAll(os.Stdin)
	case strings.HasPrefix(s, "@"):
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, fmt.Errorf("reading --data file: %w", err)
		}
		return b, nil
	default:
		return []byte(s), nil
	}
}
