package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/node"
)

var (
	concurrency = flag.Int("conc", 8, "concurrent clients in each BenchmarkInvoke sub-benchmark")
	verbose     = flag.Bool("node.log", false, "log the node at Info level (default: warnings only)")
)

// clientPolicy is the client policy the node wrote (its PolicyPath), as
// a CLI user's client loads it.
func clientPolicy(n *node.Node) client.Policy {
	p, err := client.LoadPolicy(n.PolicyPath)
	if err != nil {
		panic(err) // the node wrote and validated it when it started
	}
	return p
}

// echoWasm is the trivial function: it copies stdin to stdout.
const echoWasm = "../internal/sandbox/testdata/echo.wasm"

// fnName is the name the echo function is deployed under.
const fnName = "echo"

// reactorFnName is the name the reactor echo (reactorEchoWasm) is deployed
// under, for BenchmarkInvoke/reactor-session.
const reactorFnName = "echo-reactor"

// input is the request body of every mode: 64 bytes of JSON.
var input = []byte(`{"id":1,"user":"ada@example.com","op":"echo","data":"012345678"}`)

// env is the shared fixture: one node, one deployed function, one native
// server, and one HTTP client whose transport every mode uses.
type env struct {
	dir    string
	node   *node.Node
	native *httptest.Server
	hc     *http.Client
	c      *client.Client
	sess   *client.Session // with the echo command
	rsess  *client.Session // with the reactor echo
	owner  ed25519.PrivateKey
}

var (
	setupOnce sync.Once
	shared    *env
	setupErr  error
)

// TestMain closes the shared nodes, if a test or benchmark started them,
// and removes their data directories.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	// Let the ledger log what the runs left queued before the nodes stop:
	// a graceful stop gives up after 10 s and logs errors.
	var closers []func() error
	if shared != nil {
		_, _ = waitLedger(context.Background(), shared.hc, shared.node.URL, shared.node.Token, 2*time.Second, time.Minute)
		closers = append(closers, shared.close)
	}
	if unaccounted != nil {
		closers = append(closers, unaccounted.close)
	}
	if cold != nil {
		_, _ = waitLedger(context.Background(), cold.hc, cold.node.URL, cold.node.Token, 2*time.Second, time.Minute)
		closers = append(closers, cold.close)
	}
	if ycsbShared != nil {
		closers = append(closers, func() error { ycsbShared.close(); return nil })
	}
	for _, close := range closers {
		if err := close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing bench node:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// fixture returns the shared env, starting it on first use.
func fixture(tb testing.TB) *env {
	tb.Helper()
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared, setupErr = start(ctx, *concurrency, node.Options{})
	})
	if setupErr != nil {
		tb.Fatalf("starting bench fixture: %v", setupErr)
	}
	return shared
}

// transport returns the HTTP transport every mode shares: keep-alives on,
// enough idle connections per host for conc clients.
func transport(conc int) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 4 * conc
	tr.MaxIdleConnsPerHost = 2 * conc
	tr.DisableKeepAlives = false
	return tr
}

func start(ctx context.Context, conc int, opts node.Options) (e *env, err error) {
	e = &env{}
	if _, e.owner, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = e.close()
			e = nil
		}
	}()
	if e.dir, e.node, err = startNode(ctx, opts); err != nil {
		return nil, err
	}
	e.native = httptest.NewServer(http.HandlerFunc(nativeEcho))
	e.hc = &http.Client{Transport: transport(conc), Timeout: time.Minute}
	if e.c, err = client.New(e.node.URL, e.node.Token, clientPolicy(e.node), client.WithHTTPClient(e.hc), client.WithCallerKey(e.owner)); err != nil {
		return nil, err
	}
	if err := e.deploy(ctx, conc, fnName, echoWasm, bundle.ABICommand); err != nil {
		return nil, err
	}
	if err := e.deploy(ctx, conc, reactorFnName, reactorEchoWasm, bundle.ABIReactor); err != nil {
		return nil, err
	}
	if e.sess, err = e.c.OpenSession(ctx, fnName, 0); err != nil {
		return nil, fmt.Errorf("opening session: %w", err)
	}
	if e.rsess, err = e.c.OpenSession(ctx, reactorFnName, 0); err != nil {
		return nil, fmt.Errorf("opening reactor session: %w", err)
	}
	return e, nil
}

// startNode starts a node with opts in a fresh temporary data directory
// (opts.Dir, Addr and Logger are set here).
func startNode(ctx context.Context, opts node.Options) (dir string, n *node.Node, err error) {
	if dir, err = os.MkdirTemp("", "cloister-bench-*"); err != nil {
		return "", nil, err
	}
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	opts.Dir, opts.Addr, opts.Logger = dir, "127.0.0.1:0", log
	// The benchmarks measure the platform, not a namespace's request-rate
	// quota (1,000 a second by default), which one client here passes.
	if opts.Quotas.Rate == 0 {
		opts.Quotas.Rate = 1e6
	}
	if n, err = node.Start(ctx, opts); err != nil {
		return dir, nil, fmt.Errorf("starting node: %w", err)
	}
	return dir, n, nil
}

// deploy signs and uploads a function with confidential: optional, so that
// the plaintext mode may call it, and a concurrency limit above the number
// of clients, so that no request is refused for it.
func (e *env) deploy(ctx context.Context, conc int, name, file, abi string) error {
	wasm, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	m := bundle.DefaultManifest(name)
	m.Namespace = "default" // the node's admin key's namespace
	m.ABI = abi
	m.Confidential = bundle.ConfidentialOptional
	// Plaintext mode, and the anonymous sealed modes, need anyone.
	m.Invokers = &certs.Invokers{Kind: certs.InvokersAny}
	m.Limits.Concurrency = min(max(m.Limits.Concurrency, 2*conc), bundle.MaxConcurrency)
	if m.Version, err = e.c.NextVersion(ctx, name); err != nil {
		return fmt.Errorf("getting next version of %s: %w", name, err)
	}
	b, err := bundle.Build(m, wasm, e.owner)
	if err != nil {
		return fmt.Errorf("building bundle of %s: %w", name, err)
	}
	if _, err := e.c.Deploy(ctx, name, b); err != nil {
		return fmt.Errorf("deploying %s: %w", name, err)
	}
	return nil
}

func (e *env) close() error {
	if e.native != nil {
		e.native.Close()
	}
	return closeNode(e.hc, e.node, e.dir)
}

// closeNode drops idle connections, closes the node and removes its data.
func closeNode(hc *http.Client, n *node.Node, dir string) error {
	if hc != nil {
		hc.CloseIdleConnections()
	}
	var err error
	if n != nil {
		err = n.Close()
	}
	if dir != "" {
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// nativeEcho is the ceiling: it does the function's work (echo the body)
// in a plain net/http handler.
func nativeEcho(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b)
}
