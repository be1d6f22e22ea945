package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/hw"
	"github.com/cloister-faas/cloister/internal/worker"
)

var workerIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// cmdWorker runs one worker as its own process, joined to a coordinator's
// NATS (for example `cloister up --nats-listen 127.0.0.1:4222`).
func cmdWorker(fs *pflag.FlagSet) runFunc {
	teeKind := fs.String("tee", hw.Auto, "TEE backend: auto (detect SEV-SNP or TDX; never sim), sim, sev-snp or tdx")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL")
	policyPath := fs.String("policy", "", "coordinator policy file (default: CLOISTER_POLICY or .cloister/policy.json)")
	dataDir := fs.String("data", ".cloister", "data directory (sim root key, collateral cache)")
	id := fs.String("id", "", "worker id (default: random)")
	concurrency := fs.Int("concurrency", 64, "invocations in flight")
	bundlePath := fs.String("collateral-bundle", "", "offline collateral bundle (JSON); with it the worker never fetches collateral")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the buckets it opens (3 on a cluster: the same as the coordinator's, or opening them scales them down)")
	sec := addNATSSecFlags(fs)
	slotLimits := slotFlags(fs)
	return func(ctx context.Context, _ []string) error {
		slots, err := slotLimits(*concurrency)
		if err != nil {
			return err
		}
		if *replicas < 1 || *replicas > 5 {
			return usageErr("--replicas %d: want 1 to 5", *replicas)
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return usageErr("--log-level: %v", err)
		}
		if *id != "" && !workerIDRE.MatchString(*id) {
			return usageErr("--id %q: letters, digits, _ and - only", *id)
		}
		if *policyPath == "" {
			*policyPath = os.Getenv("CLOISTER_POLICY")
			if *policyPath == "" {
				*policyPath = filepath.Join(*dataDir, "policy.json")
			}
		}
		pol, err := attest.LoadPolicy(*policyPath)
		if err != nil {
			return usageErr("--policy: %v", err)
		}
		log := newLogger(lvl)
		backend, err := hw.Open(*teeKind, filepath.Join(*dataDir, "sim"))
		if err != nil {
			return fmt.Errorf("opening the TEE: %w", err)
		}
		if backend.Kind() == tee.KindSim {
			fmt.Fprint(os.Stderr, node.Banner())
		}
		co := collateral.Options{Dir: filepath.Join(*dataDir, "collateral")}
		if *bundlePath != "" {
			b, err := collateral.LoadBundle(*bundlePath)
			if err != nil {
				return usageErr("--collateral-bundle: %v", err)
			}
			co.Bundle, co.Offline = b, true
		}
		nc, err := bus.Dial(*natsURL, "cloister-worker", sec.dialOptions(natsconf.Worker)...)
		if err != nil {
			return err
		}
		defer nc.Close()
		st, err := bus.OpenStores(ctx, nc, *replicas, log)
		if err != nil {
			return err
		}
		eng, err := sandbox.New(ctx, sandbox.Config{Logger: log})
		if err != nil {
			return err
		}
		defer eng.Close(context.Background()) // the engine holds only memory, given back as the process exits
		// The async queue's jobs: every worker process consumes them, as the
		// workers of `cloister up` do. The gateways set the queue's limits
		// (their flags); a worker binds to the streams as they are.
		as, err := bus.BindAsync(ctx, st.JS, *replicas)
		if err != nil {
			return err
		}
		wk, err := worker.New(worker.Config{ID: *id, TEE: backend, CoordinatorPolicy: pol,
			Verifier: &attest.Verifier{Collateral: collateral.New(co)}, Engine: eng, Conn: nc, Stores: st,
			Concurrency: *concurrency, Slots: slots, Ledger: true, Logger: log, Async: &worker.AsyncConfig{Stores: as}})
		if err != nil {
			return err
		}
		log.Info("worker starting", "id", wk.ID(), "tee", backend.Kind(), "nats", nc.ConnectedUrlRedacted())
		err = wk.Run(ctx)
		_ = nc.Drain() // fails only on a closed connection; the run's error is the one to return
		return err
	}
}
