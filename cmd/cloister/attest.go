package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
)

func cmdAttest(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _ []string) error {
		_, a, err := attestedClient(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(map[string]any{
				"verified": true, "tee": a.TEE, "tcb": a.TCB, "measurement": a.Measurement,
				"identity_key": hex.EncodeToString(a.IdentityKey), "manifest_sha256": a.ManifestHash,
				"warning": a.Warning, "verified_at": a.VerifiedAt, "workers": a.Workers,
			})
		}
		fmt.Printf("coordinator attestation verified against your policy\n  tee:          %s (tcb %s)\n  measurement:  %s\n  identity key: %s\n  manifest:     %s\n",
			a.TEE, a.TCB, a.Measurement, hex.EncodeToString(a.IdentityKey), a.ManifestHash)
		fmt.Printf("  workers:      %d admitted\n", len(a.Workers))
		for _, w := range a.Workers {
			fmt.Printf("    %s  %s (tcb %s)  measurement %s  certificate valid until %s\n",
				w.WorkerID, w.TEE, w.TCB, short(w.Measurement), w.NotAfter.Format(time.RFC3339))
		}
		if a.Warning != "" {
			fmt.Printf("WARNING: %s\n", a.Warning)
		}
		return nil
	}
}

func cmdReceipt(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print the verified receipt as JSON")
	require := fs.Bool("require-inclusion", false, "fail (exit 3) unless the receipt is in a signed checkpoint")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister receipt verify FILE")
		}
		b, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		if isChain(b) {
			return verifyChainFile(ctx, pos[0], b, *asJSON, *require)
		}
		var s client.SignedReceipt
		if err := json.Unmarshal(b, &s); err != nil {
			return &codedError{code: exitVerify, err: fmt.Errorf("%s is not a signed receipt: %w", pos[0], err)}
		}
		c, _, err := attestedClient(ctx)
		if err != nil {
			return err
		}
		// The receipt names its worker and TEE as the worker's certificate
		// does: VerifyReceipt checks that they match.
		r, err := c.VerifyReceipt(ctx, &s)
		if err != nil {
			return &codedError{code: exitVerify, err: err}
		}
		if *asJSON {
			if *require {
				if _, _, err := c.VerifyInclusion(ctx, &s); err != nil {
					return &codedError{code: exitVerify, err: err}
				}
			}
			return printJSON(r)
		}
		fmt.Printf("receipt verified: signed by worker %s [%s], certified by the attested coordinator\n  invocation: %s\n  function:   %s/%s v%d (code %s)\n  status:     %s\n  time:       %s\n",
			r.WorkerID, r.TEE.Kind, r.InvocationID, r.Namespace, r.Function, r.FunctionVersion, r.CodeHash, r.Status, r.Time)
		return verifyInclusion(ctx, c, &s, *require)
	}
}

func cmdToken(fs *pflag.FlagSet) runFunc {
	name := fs.String("name", "", "a label for the key")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister token create NAMESPACE [--name N]")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		tok, err := c.CreateToken(ctx, pos[0], *name)
		if err != nil {
			return err
		}
		fmt.Println(tok)
		return nil
	}
}
