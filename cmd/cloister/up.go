package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/tee"
)

func cmdUp(fs *pflag.FlagSet) runFunc {
	dataDir := fs.String("data", ".cloister", "data directory (NATS store, keys, client.env)")
	addr := fs.String("addr", "127.0.0.1:8080", "gateway listen address")
	teeKind := fs.String("tee", "sim", "TEE backend of the roles in this process (up runs only sim; run hardware workers with 'cloister worker --tee auto')")
	natsListen := fs.String("nats-listen", "", "also let other processes reach the embedded NATS at HOST:PORT")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	poolIdle := fs.Duration("pool-idle", 5*time.Minute, "how long a reactor's idle sandboxes are kept before its pool shrinks to zero (negative: never)")
	slotLimits := slotFlags(fs)
	rate := fs.Float64("namespace-rate", gateway.DefaultRate, "requests per second one namespace may make through the gateway (burst: twice as many)")
	maxConns := fs.Int("max-conns", 0, "HTTP connections the gateway keeps open at once (default 4096; negative: no cap)")
	maxConnsPerClient := fs.Int("max-conns-per-client", 0, "HTTP connections from one client address (IPv4, or IPv6 /64) (default 256; negative: no cap, as behind a proxy)")
	return func(ctx context.Context, _ []string) error {
		slots, err := slotLimits(0)
		if err != nil {
			return err
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return usageErr("--log-level: %v", err)
		}
		if tee.Kind(*teeKind) != tee.KindSim {
			return usageErr("--tee %s: `cloister up` runs the sim backend only; in an SEV-SNP or TDX VM run `cloister worker --tee auto` against a coordinator's NATS (see docs/operations.md)", *teeKind)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
		fmt.Fprint(os.Stderr, node.Banner())
		n, err := node.Start(ctx, node.Options{Dir: *dataDir, Addr: *addr, NATSListen: *natsListen, Logger: log, PoolIdle: *poolIdle, Slots: slots,
			Quotas: gateway.Quotas{Rate: *rate}, Edge: gateway.EdgeConfig{MaxConns: *maxConns, MaxConnsPerClient: *maxConnsPerClient}})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "\ncloister is up at %s (TEE: sim, NOT SECURE)\n  client settings: source %s\n  try: cloister keys new && cloister fn deploy hello examples/hello-go/hello-go.wasm && cloister invoke hello --data '{\"name\":\"Ada\"}'\n\n", n.URL, n.EnvPath)
		done := make(chan error, 1)
		go func() { done <- n.Wait() }()
		select {
		case <-ctx.Done():
			log.Info("shutting down")
		case err = <-done:
			log.Error("a role stopped", "err", err)
		}
		if cerr := n.Close(); cerr != nil && err == nil {
			err = cerr
		}
		log.Info("cloister stopped")
		return err
	}
}
