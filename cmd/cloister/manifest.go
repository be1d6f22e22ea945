package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/strictjson"
)

func manifestShow(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _ []string) error {
		// Show only what the attestation verified: the manifest its evidence binds.
		c, a, err := attestedClient(ctx)
		if err != nil {
			return err
		}
		raw, hash, err := c.CurrentManifest(ctx)
		if err != nil {
			return err
		}
		if hash != a.ManifestHash || coordinator.ManifestHash(raw) != hash {
			return classify(fmt.Errorf("the gateway served a manifest other than the attested one"))
		}
		if *asJSON {
			return printJSON(map[string]any{"manifest_sha256": hash, "manifest": json.RawMessage(raw)})
		}
		var pretty any
		// The coordinator's manifest is JSON (its hash was checked above);
		// indenting what was just decoded cannot fail.
		_ = json.Unmarshal(raw, &pretty)
		b, _ := json.MarshalIndent(pretty, "", "  ") // see above
		fmt.Printf("manifest sha256 %s (bound in the coordinator's verified evidence)\n%s\n", hash, b)
		return nil
	}
}

func manifestSet(fs *pflag.FlagSet) runFunc {
	keyPath := fs.String("key", filepath.Join(".cloister", node.AdminKeyFile), "admin key file (Ed25519 seed) named in the current manifest's admin_keys")
	asJSON := fs.Bool("json", false, "print JSON")
	pin := fs.Bool("pin", true, "pin the new manifest hash in your policy file (CLOISTER_POLICY)")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: cloister manifest set FILE.json [--key ADMIN.key]")
		}
		b, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		var m coordinator.Manifest
		if err := strictjson.Unmarshal(b, &m); err != nil {
			return usageErr("%s: %v", pos[0], err)
		}
		seed, err := os.ReadFile(*keyPath)
		if err != nil || len(seed) != ed25519.SeedSize {
			return usageErr("--key %s: want a %d-byte Ed25519 seed (%v)", *keyPath, ed25519.SeedSize, err)
		}
		key := ed25519.NewKeyFromSeed(seed)
		c, a, err := attestedClient(ctx)
		if err != nil {
			return err
		}
		// The change follows the attested manifest: fill in the sequence.
		var cur coordinator.Manifest
		rawCur, _, err := c.CurrentManifest(ctx)
		if err != nil {
			return err
		}
		if coordinator.ManifestHash(rawCur) != a.ManifestHash || json.Unmarshal(rawCur, &cur) != nil {
			return classify(fmt.Errorf("the gateway served a manifest other than the attested one"))
		}
		m.Version, m.Previous = cur.Version+1, a.ManifestHash
		if err := m.Validate(); err != nil {
			return usageErr("%s: %v", pos[0], err)
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		ch, err := c.SetManifest(ctx, client.SignedManifest{Manifest: raw, Signatures: []client.ManifestSignature{client.ManifestSignature(coordinator.SignManifest(raw, key))}})
		if err != nil {
			return err
		}
		pinned := false
		if *pin {
			if err := pinManifest(ch.ManifestHash); err != nil {
				return fmt.Errorf("the change was accepted, but pinning it in your policy failed: %w", err)
			}
			pinned = true
		}
		if *asJSON {
			return printJSON(ch)
		}
		fmt.Printf("manifest version %d accepted, sha256 %s (signed by %s)\n", ch.Version, ch.ManifestHash, hex.EncodeToString(key.Public().(ed25519.PublicKey)))
		for _, w := range ch.Revoked {
			fmt.Printf("  revoked worker %s: the new manifest drops its reference values\n", w)
		}
		if pinned {
			fmt.Printf("pinned %s in your policy; other clients that pin the manifest must pin it too\n", ch.ManifestHash)
		} else {
			fmt.Printf("clients that pin the manifest must now pin %s (manifest_hash in their policy)\n", ch.ManifestHash)
		}
		return nil
	}
}

// pinManifest writes hash as manifest_hash into the client's policy file.
func pinManifest(hash string) error {
	e, err := loadEnv()
	if err != nil {
		return err
	}
	p, err := attest.LoadPolicy(e.Policy)
	if err != nil {
		return err
	}
	p.ManifestHash = hash
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp := e.Policy + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, e.Policy)
}

func manifestHistory(fs *pflag.FlagSet) runFunc {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, _ []string) error {
		c, _, err := attestedClient(ctx)
		if err != nil {
			return err
		}
		h, err := c.ManifestHistory(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(h)
		}
		for _, sm := range h {
			var m coordinator.Manifest
			_ = json.Unmarshal(sm.Manifest, &m) // the coordinator's own record; one that did not parse shows as v0
			signer := "genesis (configured at start)"
			if len(sm.Signatures) > 0 {
				signer = "signed by " + short(sm.Signatures[0].Key)
			}
			fmt.Printf("v%-3d %s  kinds %v  %s\n", m.Version, coordinator.ManifestHash(sm.Manifest), m.Workers.AllowTEE, signer)
		}
		return nil
	}
}
