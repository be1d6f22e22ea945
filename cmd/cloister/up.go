package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/worker"
)

func cmdUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dataDir := fs.String("data", ".cloister", "data directory (NATS store, keys, client.env)")
	addr := fs.String("addr", "127.0.0.1:8080", "gateway listen address")
	teeKind := fs.String("tee", "sim", "TEE backend (this build: sim)")
	natsListen := fs.String("nats-listen", "", "also let other processes reach the embedded NATS at HOST:PORT")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErr("--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if tee.Kind(*teeKind) != tee.KindSim {
		return usageErr("--tee %s: this build has only the sim backend (sev-snp and tdx are not built yet)", *teeKind)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	fmt.Fprint(os.Stderr, simBanner())

	backend, err := sim.Open(filepath.Join(dir, "sim"))
	if err != nil {
		return fmt.Errorf("opening sim TEE: %w", err)
	}
	ns, err := bus.StartServer(bus.ServerOptions{Dir: filepath.Join(dir, "nats"), Listen: *natsListen})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	conn := func(name string) (*natsConn, error) {
		nc, err := ns.Connect("cloister-" + name)
		if err != nil {
			return nil, fmt.Errorf("connecting %s to NATS: %w", name, err)
		}
		st, err := bus.OpenStores(ctx, nc, 1, log)
		if err != nil {
			nc.Close()
			return nil, err
		}
		return &natsConn{nc, st}, nil
	}
	coordConn, err := conn("coordinator")
	if err != nil {
		return err
	}
	defer coordConn.nc.Close()
	workerConn, err := conn("worker")
	if err != nil {
		return err
	}
	defer workerConn.nc.Close()
	gwConn, err := conn("gateway")
	if err != nil {
		return err
	}
	defer gwConn.nc.Close()

	measurement := hex.EncodeToString(backend.Measurement())
	policy := attest.Policy{
		AllowTEE:     []tee.Kind{tee.KindSim},
		SimRoots:     []string{hex.EncodeToString(backend.RootPublicKey())},
		Measurements: []string{measurement},
	}
	coord, err := coordinator.New(coordinator.Config{
		Dir: filepath.Join(dir, "coordinator"), TEE: backend, Stores: coordConn.st, Logger: log,
		Manifest: coordinator.Manifest{Version: 1, Workers: policy, CertTTL: "1h"},
	})
	if err != nil {
		return err
	}
	clientPolicy := policy
	clientPolicy.ManifestHash = coord.ManifestHash()
	policyPath := filepath.Join(dir, "policy.json")
	if err := writeJSONFile(policyPath, clientPolicy); err != nil {
		return err
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	engine, err := sandbox.New(ctx, sandbox.Config{CacheDir: filepath.Join(dir, "wazero-cache"), Logger: log})
	if err != nil {
		return err
	}
	defer engine.Close(context.Background())
	wk, err := worker.New(worker.Config{
		TEE: backend, CoordinatorPolicy: policy, Engine: engine, Conn: workerConn.nc, Stores: workerConn.st,
		Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	gw := gateway.New(gateway.Config{Conn: gwConn.nc, Stores: gwConn.st, Logger: log, Metrics: metrics,
		Ready: func() error {
			if !wk.Ready() {
				return errors.New("worker not admitted yet")
			}
			return nil
		}})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	url := "http://" + ln.Addr().String()
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return coord.Serve(gctx, coordConn.nc) })
	g.Go(func() error { return wk.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error {
		for !wk.Ready() {
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(20 * time.Millisecond):
			}
		}
		envPath, err := writeClientEnv(gctx, dir, url, policyPath, gwConn.st)
		if err != nil {
			return err
		}
		log.Info("cloister is up", "url", url, "tee", backend.Kind(), "data", dir)
		fmt.Fprintf(os.Stderr, "\ncloister is up at %s (TEE: sim, NOT SECURE)\n  client settings: source %s\n  try: cloister keys new && cloister fn deploy hello examples/hello-go/hello-go.wasm && cloister invoke hello --data '{\"name\":\"Ada\"}'\n\n", url, envPath)
		return nil
	})
	err = g.Wait()
	log.Info("cloister stopped")
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

type natsConn struct {
	nc *nats.Conn
	st *bus.Stores
}

func simBanner() string {
	line := strings.Repeat("!", 78)
	return fmt.Sprintf("%s\n!! WARNING: %s\n%s\n", line, sim.Warning, line)
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeClientEnv writes DIR/client.env. The admin key is kept across
// restarts; the server stores only its hash, so a lost client.env means a
// new key is issued.
func writeClientEnv(ctx context.Context, dir, url, policyPath string, st *bus.Stores) (string, error) {
	path := filepath.Join(dir, "client.env")
	token := ""
	if old, err := readEnvFile(path); err == nil {
		if t := old["CLOISTER_TOKEN"]; t != "" && gateway.TokenValid(ctx, st.Auth, t) {
			token = t
		}
	}
	if token == "" {
		t, err := gateway.IssueToken(ctx, st.Auth, gateway.Principal{Namespace: "default", Admin: true, Name: "admin (cloister up)"})
		if err != nil {
			return "", err
		}
		token = t
	}
	body := fmt.Sprintf("# written by cloister up; source it or point CLOISTER_ENV here\nCLOISTER_URL=%s\nCLOISTER_TOKEN=%s\nCLOISTER_POLICY=%s\n", url, token, policyPath)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}
