package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// pendingDir is where `invoke --async` keeps what it needs to open the
// result later: CLOISTER_ACTIVATIONS_DIR, or the user config dir.
func pendingDir() (string, error) {
	if d := os.Getenv("CLOISTER_ACTIVATIONS_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the config dir (set CLOISTER_ACTIVATIONS_DIR): %w", err)
	}
	return filepath.Join(d, "cloister", "activations"), nil
}

// savePending writes p (which holds the result key) readable by the user only.
// A duplicate submission keeps the first submission's file.
func savePending(p *client.Pending) error {
	dir, err := pendingDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, p.ActivationID+".json")
	if p.Duplicate {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	b, _ := json.MarshalIndent(p, "", "  ") // ids, names and keys: Marshal cannot fail
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving the activation key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close() // the write's error is the one to return
		return err
	}
	return f.Close()
}

func loadPending(id string) (*client.Pending, error) {
	dir, err := pendingDir()
	if err != nil {
		return nil, err
	}
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, usageErr("activation id must be 32 lower-case hex digits")
	}
	b, err := os.ReadFile(filepath.Join(dir, id+".json"))
	if err != nil {
		return nil, err
	}
	var p client.Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("reading the saved activation %s: %w", id, err)
	}
	return &p, nil
}

// invokeAsync queues NAME (a function, or else a sequence) and prints the
// activation id.
func invokeAsync(ctx context.Context, c *client.Client, name string, input []byte, o client.AsyncOptions, asJSON bool) error {
	p, err := c.InvokeAsync(ctx, name, input, o)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == "not_found" && o.Version == 0 && !o.Plaintext {
		if _, serr := c.GetSequence(ctx, name); serr == nil {
			p, err = c.InvokeSequenceAsync(ctx, name, input, o.IdempotencyKey)
		}
	}
	if err != nil {
		return classify(err)
	}
	if err := savePending(p); err != nil {
		return err
	}
	if asJSON {
		return printJSON(map[string]any{"activationId": p.ActivationID, "duplicate": p.Duplicate})
	}
	fmt.Println(p.ActivationID)
	if p.Duplicate {
		fmt.Fprintln(os.Stderr, "idempotency key seen before: this is the earlier activation; nothing new was queued")
	}
	fmt.Fprintf(os.Stderr, "queued; read it with `cloister activations result %s`\n", p.ActivationID)
	return nil
}

func cmdActivations(sub string, fs *pflag.FlagSet) runFunc {
	const use = "usage: cloister activations list [--limit N] [--name F] [--json] | get ID [--json] | result ID [--wait D] [--json] | logs ID | dead [--limit N] [--since T] [--json]"
	asJSON := fs.Bool("json", false, "print JSON")
	limit := fs.Int("limit", 30, "how many activations to list (1-200)")
	name := fs.String("name", "", "list only this function's or sequence's activations")
	waitFor := fs.Duration("wait", 0, "wait up to this long for the activation to finish")
	since := fs.String("since", "", "dead: only dead letters at or after this RFC 3339 time or this long ago (a Go duration, such as 24h)")
	return func(ctx context.Context, pos []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		switch sub {
		case "list":
			list, err := c.Activations(ctx, *limit, *name)
			if err != nil {
				return err
			}
			return printList(list, *asJSON, "ACTIVATION\tNAME\tVERSION\tSTATUS\tSTART\tDURATION\tATTEMPTS\tTRIGGER", func(a *client.Activation) string {
				start := "-"
				if a.Start > 0 {
					start = time.UnixMilli(a.Start).UTC().Format(time.RFC3339)
				}
				return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%dms\t%d\t%s", a.ActivationID, a.Name, a.Version, a.Status, start, a.Duration, a.Attempts, a.Trigger)
			})
		case "dead":
			var from time.Time
			if *since != "" {
				if d, err := time.ParseDuration(*since); err == nil && d > 0 {
					from = time.Now().Add(-d)
				} else if from, err = time.Parse(time.RFC3339, *since); err != nil {
					return usageErr("--since %q: want an RFC 3339 time or a positive duration", *since)
				}
			}
			list, err := c.DeadLetters(ctx, *limit, from)
			if err != nil {
				return err
			}
			return printList(list, *asJSON, "TIME\tACTIVATION\tNAME\tCODE\tATTEMPTS\tREASON", func(d client.DeadLetter) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s", d.Time.UTC().Format(time.RFC3339), orDash(d.Activation), orDash(d.Name), d.Code, d.Attempts, d.Reason)
			})
		case "get", "result", "logs":
		default:
			return usageErr(use)
		}
		if len(pos) != 1 {
			return usageErr(use)
		}
		id := pos[0]
		switch sub {
		case "get":
			a, err := c.Activation(ctx, id)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(a)
			}
			fmt.Printf("activation %s: %s %s v%d (%s)\n  status:   %s\n  attempts: %d on worker %s\n  duration: %dms\n",
				a.ActivationID, a.Kind, a.Name, a.Version, a.Mode, a.Status, a.Attempts, a.Worker, a.Duration)
			if a.Response.Error != nil {
				fmt.Printf("  error:    %s: %s\n", a.Response.Error.Code, a.Response.Error.Message)
			}
			fmt.Println("(unverified record; `cloister activations result` verifies the receipt and opens the result)")
			return nil
		case "logs":
			// Without the saved key (not found: queued by another client), the
			// platform's lines still show; the function's stay sealed.
			p, err := loadPending(id)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(os.Stderr, "cloister: the saved key of %s is unusable (%v); the function's logs stay sealed\n", id, err)
			}
			lines, fl, err := c.ActivationLogs(ctx, id, p)
			if err != nil {
				return classify(err)
			}
			for _, l := range lines {
				fmt.Println(l)
			}
			if len(fl) > 0 {
				fmt.Println("--- function logs (opened with this client's key) ---")
				os.Stdout.Write(fl) // a failed write to stdout has no one left to tell
			} else if a, err := c.Activation(ctx, id); err == nil && len(a.SealedLogs) > 0 {
				fmt.Fprintln(os.Stderr, "the function's logs are sealed to the client that queued the invocation; its key is not here")
			}
			return nil
		}
		p, err := loadPending(id)
		if errors.Is(err, os.ErrNotExist) {
			a, aerr := c.Activation(ctx, id)
			if aerr != nil {
				return aerr
			}
			if a.Mode != "plain" {
				return fmt.Errorf("the result of %s is sealed to the client that queued it; its key is not in %s", id, mustPendingDir())
			}
			p = &client.Pending{ActivationID: id, Kind: a.Kind, Namespace: a.Namespace, Name: a.Name, Mode: a.Mode}
		} else if err != nil {
			return err
		}
		var res *client.Result
		if *waitFor > 0 {
			wctx, cancel := context.WithTimeout(ctx, *waitFor)
			res, err = c.WaitActivation(wctx, p, 200*time.Millisecond)
			cancel()
		} else {
			res, err = c.ActivationResult(ctx, p)
		}
		if err != nil {
			return classify(err)
		}
		if *asJSON {
			return printJSON(map[string]any{"activationId": id, "output": string(res.Output), "receipt": res.Receipt, "verified": true})
		}
		os.Stdout.Write(res.Output) // a failed write to stdout has no one left to tell
		endLine(os.Stderr, res.Output)
		fmt.Fprintln(os.Stderr, summary(res))
		return nil
	}
}

func mustPendingDir() string {
	d, _ := pendingDir() // called after loadPending, which returned pendingDir's error
	return d
}

// verifyChainFile verifies a sequence's receipt chain saved by
// `invoke --receipt-out` (a JSON array, step 1 first).
func verifyChainFile(ctx context.Context, path string, b []byte, asJSON, require bool) error {
	var chain []*receipt.Signed
	if err := json.Unmarshal(b, &chain); err != nil {
		return &codedError{code: exitVerify, err: fmt.Errorf("%s is not a receipt chain: %w", path, err)}
	}
	c, a, err := attestedClient(ctx)
	if err != nil {
		return err
	}
	vs, err := receipt.NewVerifier(a.IdentityKey).VerifyChain(chain, receipt.Expect{}, receipt.Expect{})
	if err != nil {
		return &codedError{code: exitVerify, err: fmt.Errorf("%w: %w", client.ErrVerification, err)}
	}
	if asJSON {
		out := make([]*receipt.Receipt, len(vs))
		for i, v := range vs {
			out[i] = v.Receipt
		}
		if require {
			for _, s := range chain {
				if _, _, err := c.VerifyInclusion(ctx, publicReceipt(s)); err != nil {
					return &codedError{code: exitVerify, err: err}
				}
			}
		}
		return printJSON(out)
	}
	fmt.Printf("receipt chain verified: %d steps of sequence %q, each signed by a worker certified by the attested coordinator and naming the step before\n", len(vs), vs[0].Receipt.Sequence)
	for i, v := range vs {
		r := v.Receipt
		fmt.Printf("  step %d: %s/%s v%d (code %s) on %s [%s]: %s\n", i+1, r.Namespace, r.Function, r.FunctionVersion, short(r.CodeHash), v.Worker.WorkerID, v.Worker.TEE, r.Status)
	}
	for _, s := range chain {
		if err := verifyInclusion(ctx, c, publicReceipt(s), require); err != nil {
			return err
		}
	}
	return nil
}

// publicReceipt is a receipt of a chain as the client takes it.
func publicReceipt(s *receipt.Signed) *client.SignedReceipt {
	return &client.SignedReceipt{Receipt: s.Receipt, Signature: s.Signature, WorkerCert: client.Certificate(s.WorkerCert)}
}

// isChain reports whether a receipt file holds a chain (a JSON array).
func isChain(b []byte) bool { return bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
