package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/seal"
)

// cmdKeysRecovery runs `cloister keys recovery --out FILE`: the owner's
// recovery key pair, FILE (private, 0600; keep it offline) and FILE.pub
// (for `cloister coordinator --recovery-key`).
func cmdKeysRecovery(fs *pflag.FlagSet) runFunc {
	out := fs.String("out", "", "where to write the private key (and FILE.pub the public key)")
	return func(ctx context.Context, _ []string) error {
		if *out == "" {
			return usageErr("keys recovery: --out is required")
		}
		for _, p := range []string{*out, *out + ".pub"} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s exists: a recovery key is not replaced (the coordinators seal the secrets to the one they have)", p)
			}
		}
		k, err := seal.NewKeyPair()
		if err != nil {
			return err
		}
		priv, err := k.Bytes()
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, []byte(hex.EncodeToString(priv)+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing the recovery key: %w", err)
		}
		pub := hex.EncodeToString(seal.PublicKeyBytes(k))
		if err := os.WriteFile(*out+".pub", []byte(pub+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing the recovery public key: %w", err)
		}
		fmt.Printf("recovery key written to %s (keep it offline), public key to %s.pub\npublic key: %s\n", *out, *out, pub)
		return nil
	}
}

// loadRecoveryPublicKey reads FILE.pub of `keys recovery`.
func loadRecoveryPublicKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return coordinator.ParseRecoveryPublicKey(string(b))
}

// cmdCoordinatorRecover runs `cloister coordinator recover`: with the
// owner's private recovery key, it answers the recovery requests of
// coordinators that found no peer with the secrets, once their evidence
// meets the coordinators' reference values (--policy). Run it on the
// owner's machine: the secrets are in the clear only in this process.
func cmdCoordinatorRecover(fs *pflag.FlagSet) runFunc {
	rf := addRoleFlags(fs, "unused")
	keyPath := fs.String("recovery-key", "", "the private recovery key written by 'cloister keys recovery'")
	policyPath := fs.String("policy", "", "the coordinators' reference values (client policy JSON; its manifest_sha256 is ignored)")
	bundlePath := fs.String("collateral-bundle", "", "offline collateral bundle to verify hardware evidence with")
	wait := fs.Duration("wait", 0, "wait this long for a request if none is pending")
	return func(ctx context.Context, _ []string) error {
		if *keyPath == "" || *policyPath == "" {
			return usageErr("coordinator recover: --recovery-key and --policy are required")
		}
		_, urls, err := rf.parse()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(*keyPath)
		if err != nil {
			return usageErr("--recovery-key: %v", err)
		}
		priv, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			return usageErr("--recovery-key %s: not a recovery key", *keyPath)
		}
		defer clear(priv)
		policy, err := attest.LoadPolicy(*policyPath)
		if err != nil {
			return usageErr("--policy: %v", err)
		}
		policy.ManifestHash = ""
		co := collateral.Options{}
		if *bundlePath != "" {
			bundle, err := collateral.LoadBundle(*bundlePath)
			if err != nil {
				return usageErr("--collateral-bundle: %v", err)
			}
			co.Bundle, co.Offline = bundle, true
		}
		nc, err := bus.Dial(urls, "cloister-recover", rf.sec.dialOptions(natsconf.Coordinator)...)
		if err != nil {
			return err
		}
		defer closeConn(nc)
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		kv, err := js.KeyValue(ctx, bus.BucketCoord)
		if err != nil {
			return fmt.Errorf("opening bucket %s: %w", bus.BucketCoord, err)
		}
		verifier := &attest.Verifier{Collateral: collateral.New(co)}
		deadline := time.Now().Add(*wait)
		for {
			done, err := coordinator.Recover(ctx, kv, priv, policy, verifier, time.Now())
			if err != nil {
				return err
			}
			for _, d := range done {
				if d.Err != nil {
					fmt.Printf("request %s: refused: %v\n", d.Request, d.Err)
				} else {
					fmt.Printf("request %s: answered (the secrets are sealed to the coordinator that asked)\n", d.Request)
				}
			}
			if len(done) > 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no coordinator asked for recovery (one without secrets asks after 10 s without a peer)")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}
