package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
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
	asyncLimits := asyncFlags(fs)
	rate := fs.Float64("namespace-rate", gateway.DefaultRate, "requests per second one namespace may make through the gateway (burst: twice as many)")
	maxConns := fs.Int("max-conns", 0, "HTTP connections the gateway keeps open at once (default 4096; negative: no cap)")
	maxConnsPerClient := fs.Int("max-conns-per-client", 0, "HTTP connections from one client address (IPv4, or IPv6 /64) (default 256; negative: no cap, as behind a proxy)")
	return func(ctx context.Context, _ []string) error {
		slots, err := slotLimits(0)
		if err != nil {
			return err
		}
		async, err := asyncLimits()
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
		log := newLogger(lvl)
		fmt.Fprint(os.Stderr, node.Banner())
		n, err := node.Start(ctx, node.Options{Dir: *dataDir, Addr: *addr, NATSListen: *natsListen, Logger: log, PoolIdle: *poolIdle, Slots: slots, AsyncLimits: async,
			Quotas: gateway.Quotas{Rate: *rate}, Edge: gateway.EdgeConfig{MaxConns: *maxConns, MaxConnsPerClient: *maxConnsPerClient}})
		if err != nil {
			return err
		}
		_, keyErr := os.Stat(defaultKeyPath())
		fmt.Fprint(os.Stderr, upBanner(n.URL, n.EnvPath, keyErr == nil))
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

// upBanner is what `up` prints once it serves: lines a user can copy. The
// first command is `keys new` only while there is no owner key.
func upBanner(url, envPath string, haveKey bool) string {
	next := "./cloister fn deploy hello examples/hello-go && ./cloister invoke hello --data '{\"name\":\"Ada\"}'"
	if !haveKey {
		next = "./cloister keys new && " + next
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\ncloister is up (TEE: sim, NOT SECURE)\n")
	fmt.Fprintf(&b, "  gateway:  %s   (another address: up --addr HOST:PORT)\n", url)
	fmt.Fprintf(&b, "  metrics:  %s/metrics   (with a platform API key, as the one in client.env)\n", url)
	fmt.Fprintf(&b, "  client:   %s   (read by the CLI run from this directory; elsewhere: export CLOISTER_ENV=%s)\n", envPath, envPath)
	fmt.Fprintf(&b, "  next, in another terminal here:\n    go build -o cloister ./cmd/cloister && %s\n\n", next)
	return b.String()
}
