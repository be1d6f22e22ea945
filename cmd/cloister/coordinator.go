package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/hw"
)

// cmdCoordinator runs the coordinator as its own process against an
// external NATS: attestation and key broker, manifest, worker admission,
// the ledger and the state anchor. It keeps its state in --data, which no
// other role reads, and writes there what clients need: policy.json, the
// manifest admin key and client.env with an admin API key.
func cmdCoordinator(fs *pflag.FlagSet) runFunc {
	teeKind := fs.String("tee", hw.Auto, "TEE backend: auto (detect SEV-SNP or TDX; never sim), sim, sev-snp or tdx")
	rf := addRoleFlags(fs, "JetStream replicas of the buckets (3 on a cluster)")
	dataDir := fs.String("data", ".cloister", "data directory (sealed state, manifests, ledger, admin key, policy.json, client.env)")
	manifestPath := fs.String("manifest", "", "genesis deployment manifest (JSON); required with hardware; default with sim: workers on this binary's sim root and measurement")
	policyPath := fs.String("policy", "", "reference values of this coordinator's own evidence (client policy JSON, without manifest_hash); required with hardware, derived with sim")
	gatewayURL := fs.String("gateway-url", "", "the gateway's URL, written to client.env as CLOISTER_URL (default: left out)")
	bundlePath := fs.String("collateral-bundle", "", "offline collateral bundle (JSON) to verify workers' evidence with; with it the coordinator never fetches collateral")
	recoveryPath := fs.String("recovery-key", "", "the owner's recovery public key (FILE.pub of 'cloister keys recovery'): the active coordinator keeps the secrets sealed to it, for when no coordinator survives")
	return func(ctx context.Context, _ []string) error {
		log, urls, err := rf.parse()
		if err != nil {
			return err
		}
		replicas := rf.replicas
		dir, err := filepath.Abs(*dataDir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating data dir: %w", err)
		}
		var recoveryKey []byte
		if *recoveryPath != "" {
			if recoveryKey, err = loadRecoveryPublicKey(*recoveryPath); err != nil {
				return usageErr("--recovery-key: %v", err)
			}
		}
		var genesis *coordinator.Manifest
		if *manifestPath != "" {
			b, err := os.ReadFile(*manifestPath)
			if err != nil {
				return usageErr("--manifest: %v", err)
			}
			genesis = new(coordinator.Manifest)
			if err := strictjson.Unmarshal(b, genesis); err != nil {
				return usageErr("--manifest %s: %v", *manifestPath, err)
			}
		}

		var backend tee.TEE
		var policy attest.Policy
		if *teeKind == string(tee.KindSim) {
			// sim only when asked for by name, and never silently.
			if *policyPath != "" {
				return usageErr("--policy is for hardware; with --tee sim the policy is derived from the sim root and this binary")
			}
			if backend, policy, err = node.OpenSim(filepath.Join(dir, "sim")); err != nil {
				return err
			}
			fmt.Fprint(os.Stderr, node.Banner())
		} else {
			if backend, err = hw.Open(*teeKind, filepath.Join(dir, "sim")); err != nil {
				return fmt.Errorf("opening the TEE: %w", err)
			}
			if backend.Kind() == tee.KindSim {
				return errors.New("opening the TEE: got sim without asking for it")
			}
			if *policyPath == "" || genesis == nil {
				return usageErr("--tee %s: a hardware coordinator needs --policy (reference values of its own evidence) and --manifest (the genesis manifest)", backend.Kind())
			}
			if policy, err = attest.LoadPolicy(*policyPath); err != nil {
				return usageErr("--policy: %v", err)
			}
			policy.ManifestHash = ""
			if !slices.Contains(policy.AllowTEE, backend.Kind()) {
				return usageErr("--policy %s does not allow %s, the kind this coordinator runs on", *policyPath, backend.Kind())
			}
		}
		co := collateral.Options{Dir: filepath.Join(dir, "collateral")}
		if *bundlePath != "" {
			b, err := collateral.LoadBundle(*bundlePath)
			if err != nil {
				return usageErr("--collateral-bundle: %v", err)
			}
			co.Bundle, co.Offline = b, true
		}

		nc, err := bus.Dial(urls, "cloister-coordinator", rf.sec.dialOptions(natsconf.Coordinator)...)
		if err != nil {
			return err
		}
		defer closeConn(nc)
		st, err := bus.OpenStores(ctx, nc, *replicas, log)
		if err != nil {
			return err
		}
		role, err := node.NewCoordinator(ctx, node.CoordinatorOptions{Dir: dir, TEE: backend, Policy: policy, Genesis: genesis,
			Stores: st, Conn: nc, Verifier: &attest.Verifier{Collateral: collateral.New(co)}, Logger: log, RecoveryKey: recoveryKey})
		if err != nil {
			return err
		}
		ce, err := node.WriteClientEnv(ctx, dir, *gatewayURL, role.PolicyPath, "cloister coordinator", st)
		if err != nil {
			_ = role.Close(context.Background()) // the write's error is the one to return
			return err
		}
		log.Info("coordinator starting", "tee", backend.Kind(), "nats", nc.ConnectedUrlRedacted(), "data", dir,
			"manifest_sha256", role.Coord.ManifestHash(), "policy", role.PolicyPath, "client_env", ce.EnvPath)
		if backend.Kind() == tee.KindSim {
			fmt.Fprintf(os.Stderr, "\ncloister coordinator (TEE: sim, NOT SECURE)\n  client policy: %s\n  client settings: %s\n\n", role.PolicyPath, ce.EnvPath)
		}
		err = role.Serve(ctx, nc)
		// The subscriptions are drained: close the ledger, so that a
		// checkpoint covers every acknowledged entry.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := role.Close(cctx); cerr != nil && err == nil {
			err = cerr
		}
		log.Info("coordinator stopped")
		return err
	}
}

// natsURLs checks a comma-separated list of NATS URLs and returns it as
// nats.Connect takes it: with several, the connection fails over.
func natsURLs(s string) (string, error) {
	var out []string
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			return "", usageErr("--nats %q: an empty URL in the list", s)
		}
		out = append(out, u)
	}
	return strings.Join(out, ","), nil
}

// closeConn drains nc and waits (up to 10 s) until it is closed, so that
// nothing in flight is lost.
func closeConn(nc *nats.Conn) {
	_ = nc.Drain() // fails only on a closed connection, which the wait below passes
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
}
