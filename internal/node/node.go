// Package node builds Cloister's roles. Start assembles every role in one
// process on embedded defaults: an embedded NATS server with JetStream on
// disk, the coordinator, one worker and the gateway. `cloister up`, the
// end-to-end tests and the benchmarks all start Cloister through it. The
// parts it is built from (roles.go: NewCoordinator, NewGateway, Listen,
// WriteClientEnv) also run one role per process, as `cloister coordinator`
// and `cloister gateway` do against an external NATS.
//
// Roles share nothing but the bus: each has its own NATS connection and its
// own view of the stores, as they would in separate processes. Only the sim
// TEE is available, and node says so loudly.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// Options configure a node.
type Options struct {
	// Dir is the data directory.
	Dir string
	// Addr is the gateway's listen address ("127.0.0.1:0" for a free port).
	Addr string
	// NATSListen optionally exposes the embedded NATS to other processes.
	NATSListen string
	Logger     *slog.Logger
	// PoolIdle is how long a reactor's idle sandboxes are kept before its
	// pool shrinks to zero (0: the sandbox default, 5m).
	PoolIdle time.Duration
	// NoAccounting turns instruction metering and the receipt ledger off:
	// receipts are still signed and returned, but carry no instruction
	// count and are not logged. It exists so that benchmarks can measure
	// what accounting costs in the same run; never use it in production.
	NoAccounting bool
	// Wrap, if set, wraps the gateway's handler (tests use it to observe traffic).
	Wrap func(http.Handler) http.Handler
	// Edge bounds the HTTP edge: open connections, in total and per client
	// address, and the timeouts that close slow and idle ones (zero fields:
	// defaults; docs/operations.md, "The HTTP edge").
	Edge gateway.EdgeConfig
	// DeployTimeout bounds a deploy (0: wire.DefaultDeployTimeout).
	DeployTimeout time.Duration
	// Quotas bound each namespace at the gateway (zero fields: defaults).
	Quotas gateway.Quotas
	// MaxLoaded bounds the function versions each worker keeps loaded
	// (0: the worker default).
	MaxLoaded int
	// Slots bounds each worker's invocation slots and guest-memory budget,
	// shared fairly across namespaces (zero fields: worker defaults).
	Slots worker.SlotLimits
	// Workers is the number of workers (default 1), each with its own NATS
	// connection, keys and sandbox engine, all taking from the same
	// invocation subject and async work queue.
	Workers int
	// Async, if set, edits worker i's async queue settings (tests use it
	// for short ack waits and to observe attempts).
	Async func(i int, c *worker.AsyncConfig)
	// AsyncLimits bound the async queue (per-namespace depth, stream size)
	// and the activation records' TTL; zero fields take the defaults.
	AsyncLimits bus.AsyncLimits
	// Manifest, if set, edits the genesis deployment manifest (tests add
	// reference values for more TEE kinds).
	Manifest func(*coordinator.Manifest)
	// Verifier verifies hardware evidence (tests give one with offline collateral).
	Verifier *attest.Verifier
	// TEE, if set, replaces sim as the backend of the coordinator and the
	// worker; Policy must then hold its reference values (the client's
	// policy for the coordinator, and the genesis manifest's for workers).
	TEE    tee.TEE
	Policy *attest.Policy
}

// Node is a running single-process Cloister.
type Node struct {
	URL        string
	Token      string
	PolicyPath string
	EnvPath    string
	// WskpropsPath is DATA/wskprops: the OpenWhisk client settings
	// (APIHOST, AUTH, NAMESPACE) in .wskprops format.
	WskpropsPath string
	Policy       attest.Policy

	nats    *bus.Server
	conns   []*nats.Conn
	engines []*sandbox.Engine
	srv     *http.Server
	g       *errgroup.Group
	stop    context.CancelFunc
	coord   *Coordinator

	workers []*workerHandle
	// For AddWorker: the roles' context, the evidence verifier and logger,
	// and whether workers run without accounting.
	rctx         context.Context
	verifier     *attest.Verifier
	log          *slog.Logger
	noAccounting bool
}

// workerHandle is one running worker.
type workerHandle struct {
	w    *worker.Worker
	conn *nats.Conn
	stop context.CancelFunc
	done chan struct{}
}

// StopWorker stops a worker (by id) and waits for it.
func (n *Node) StopWorker(id string) {
	for _, h := range n.workers {
		if h.w.ID() == id && h.stop != nil {
			h.stop()
			<-h.done
		}
	}
}

// Banner is the warning printed whenever the sim backend serves.
func Banner() string {
	line := strings.Repeat("!", 78)
	return fmt.Sprintf("%s\n!! WARNING: %s\n%s\n", line, sim.Warning, line)
}

// Start starts every role and returns once the worker is admitted and the
// gateway is serving, with DIR/client.env written.
func Start(ctx context.Context, o Options) (_ *Node, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	var backend tee.TEE
	var policy attest.Policy
	if o.TEE != nil {
		if o.Policy == nil {
			return nil, errors.New("node: Options.TEE needs Options.Policy")
		}
		backend, policy = o.TEE, *o.Policy
	} else if backend, policy, err = OpenSim(filepath.Join(dir, "sim")); err != nil {
		return nil, err
	}
	n := &Node{}
	defer func() {
		if err != nil {
			_ = n.Close() // the start's error is the one to return
		}
	}()
	if n.nats, err = bus.StartServer(bus.ServerOptions{Dir: filepath.Join(dir, "nats"), Listen: o.NATSListen}); err != nil {
		return nil, err
	}
	connect := func(name string) (*nats.Conn, *bus.Stores, error) {
		nc, err := n.nats.Connect("cloister-" + name)
		if err != nil {
			return nil, nil, fmt.Errorf("connecting %s to NATS: %w", name, err)
		}
		n.conns = append(n.conns, nc)
		st, err := bus.OpenStores(ctx, nc, 1, log)
		return nc, st, err
	}
	coordNC, coordSt, err := connect("coordinator")
	if err != nil {
		return nil, err
	}
	gwNC, gwSt, err := connect("gateway")
	if err != nil {
		return nil, err
	}

	coord, err := NewCoordinator(ctx, CoordinatorOptions{Dir: dir, TEE: backend, Policy: policy, Manifest: o.Manifest,
		Stores: coordSt, Conn: coordNC, Verifier: o.Verifier, Logger: log})
	if err != nil {
		return nil, err
	}
	n.coord = coord
	n.Policy, n.PolicyPath = coord.Policy, coord.PolicyPath

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nWorkers := max(o.Workers, 1)
	wks := make([]*worker.Worker, nWorkers)
	for i := range nWorkers {
		name := "worker"
		if i > 0 {
			name = fmt.Sprintf("worker-%d", i)
		}
		workerNC, workerSt, err := connect(name)
		if err != nil {
			return nil, err
		}
		workerAsync, err := bus.BindAsync(ctx, workerSt.JS, 1)
		if err != nil {
			return nil, err
		}
		ac := &worker.AsyncConfig{Stores: workerAsync}
		if o.Async != nil {
			o.Async(i, ac)
		}
		// No on-disk compilation cache: the disk is untrusted, and native code
		// read back from it would run inside the TEE unauthenticated.
		workerEngine, err := sandbox.New(ctx, sandbox.Config{Logger: log, Unmetered: o.NoAccounting})
		if err != nil {
			return nil, err
		}
		n.engines = append(n.engines, workerEngine)
		reg := prometheus.Registerer(metrics)
		if i > 0 {
			reg = nil // one worker's metrics per process registry
		}
		wk, err := worker.New(worker.Config{
			TEE: backend, CoordinatorPolicy: policy, Verifier: o.Verifier, Engine: workerEngine, Conn: workerNC, Stores: workerSt,
			Logger: log, Metrics: reg, PoolIdle: o.PoolIdle, Ledger: !o.NoAccounting, Async: ac, Slots: o.Slots, MaxLoaded: o.MaxLoaded,
		})
		if err != nil {
			return nil, err
		}
		wks[i] = wk
		n.workers = append(n.workers, &workerHandle{w: wk, conn: workerNC, done: make(chan struct{})})
	}
	ready := func() error {
		for _, wk := range wks {
			if wk.Ready() {
				return nil
			}
		}
		return errors.New("worker not admitted yet")
	}
	// Triggers run beside the gateway, on a connection of their own.
	trigNC, trigSt, err := connect("triggers")
	if err != nil {
		return nil, err
	}
	gw, err := NewGateway(ctx, GatewayOptions{Conn: gwNC, Stores: gwSt, TriggerConn: trigNC, TriggerStores: trigSt,
		Logger: log, Metrics: metrics, Ready: ready, AsyncLimits: o.AsyncLimits, Quotas: o.Quotas, DeployTimeout: o.DeployTimeout})
	if err != nil {
		return nil, err
	}
	var handler http.Handler = gw.Handler
	triggers := gw.Triggers
	if o.Wrap != nil {
		handler = o.Wrap(handler)
	}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	edge, srv, url, err := Listen(addr, handler, o.Edge, metrics, log)
	if err != nil {
		return nil, err
	}
	n.URL, n.srv = url, srv
	gw.Handler.SetURL(url)

	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	n.stop = stop
	n.g, rctx = errgroup.WithContext(rctx)
	// Workers stop first (Close cancels them before the others), so that
	// the receipts they signed reach the coordinator's ledger.
	n.rctx, n.verifier, n.log, n.noAccounting = rctx, o.Verifier, log, o.NoAccounting
	n.g.Go(func() error { return coord.Serve(rctx, coordNC) })
	for _, h := range n.workers {
		wctx, stopWorker := context.WithCancel(rctx)
		h.stop = stopWorker
		n.g.Go(func() error { defer close(h.done); return h.w.Run(wctx) })
	}
	n.g.Go(func() error { return triggers.Run(rctx) })
	n.g.Go(func() error {
		if err := n.srv.Serve(edge); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	deadline := time.After(30 * time.Second)
	for ready() != nil {
		select {
		case <-rctx.Done():
			return nil, fmt.Errorf("starting: %w", n.g.Wait())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, errors.New("worker was not admitted within 30s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	ce, err := WriteClientEnv(ctx, dir, n.URL, n.PolicyPath, "cloister up", gwSt)
	if err != nil {
		return nil, err
	}
	n.EnvPath, n.Token, n.WskpropsPath = ce.EnvPath, ce.Token, ce.WskpropsPath
	log.Info("cloister is up", "url", n.URL, "tee", backend.Kind(), "data", dir)
	return n, nil
}

// Wait blocks until a role fails or the node is closed.
func (n *Node) Wait() error { return n.g.Wait() }

// Close stops every role gracefully: the gateway drains its requests, then
// the bus connections drain, then NATS flushes JetStream to disk.
func (n *Node) Close() error {
	var err error
	if n.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = n.srv.Shutdown(sctx)
		cancel()
		if err != nil {
			// Cut what is still busy after the grace, such as a client
			// that trickles its body. (Shutdown's error is kept.)
			_ = n.srv.Close()
		}
	}
	for _, h := range n.workers {
		if h.stop != nil {
			h.stop()
			<-h.done
		}
	}
	if n.stop != nil {
		n.stop()
		if werr := n.g.Wait(); werr != nil && err == nil {
			err = werr
		}
	}
	if n.coord != nil {
		if cerr := n.coord.Close(context.Background()); cerr != nil && err == nil {
			err = cerr
		}
	}
	// Drain returns at once and finishes in the background: wait for each
	// connection to close before NATS shuts down, so nothing in flight is lost.
	for _, c := range n.conns {
		_ = c.Drain() // fails only on a closed connection, which the wait below passes
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range n.conns {
		for !c.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		c.Close()
	}
	for _, e := range n.engines {
		// The engines hold only memory, which the process gives back as
		// it exits; their errors change nothing about the shutdown.
		_ = e.Close(context.Background())
	}
	if n.nats != nil {
		n.nats.Shutdown()
	}
	return err
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeClientEnv writes DIR/client.env. The platform admin key is kept
// across restarts while it is valid; the server stores only its hash, so a
// lost client.env, or a key revoked or expired, means a new key is issued.
func writeClientEnv(ctx context.Context, dir, url, policyPath, by string, st *bus.Stores) (path, token string, err error) {
	path = filepath.Join(dir, "client.env")
	if old, err := ReadEnvFile(path); err == nil {
		if t := old["CLOISTER_TOKEN"]; t != "" && gateway.TokenValid(ctx, st.Auth, t) {
			token = t
		}
	}
	if token == "" {
		if token, err = gateway.IssueToken(ctx, st.Auth, gateway.Principal{Namespace: "default", Scope: gateway.ScopeAdmin, Platform: true, Name: "platform admin (" + by + ")"}); err != nil {
			return "", "", err
		}
	}
	var vals [][2]string
	if url != "" {
		vals = append(vals, [2]string{"CLOISTER_URL", url})
	}
	vals = append(vals, [2]string{"CLOISTER_TOKEN", token},
		[2]string{"CLOISTER_POLICY", policyPath}, [2]string{"CLOISTER_NAMESPACE", "default"})
	body := formatEnv("written by "+by+"; source it or point CLOISTER_ENV here", vals...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		return "", "", err
	}
	return path, token, os.Rename(tmp, path)
}

// AdminKeyFile is the file in the data directory holding the manifest
// admin key (an Ed25519 seed) whose public half is in the genesis manifest.
const AdminKeyFile = "manifest-admin.key"

func loadOrCreateAdminKey(path string) (ed25519.PrivateKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("manifest admin key %s: want %d bytes", path, ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(b), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading manifest admin key: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, k.Seed(), 0o600); err != nil {
		return nil, fmt.Errorf("writing manifest admin key: %w", err)
	}
	return k, nil
}

// AddWorker starts one more worker in this process, on its own NATS
// connection, with the given TEE, and returns once it is admitted. It stops
// with the node, or earlier with StopWorker. Tests use it to build mixed
// pools of TEE kinds.
func (n *Node) AddWorker(ctx context.Context, id string, t tee.TEE) (*worker.Worker, error) {
	nc, err := n.nats.Connect("cloister-worker-" + id)
	if err != nil {
		return nil, err
	}
	n.conns = append(n.conns, nc)
	st, err := bus.OpenStores(ctx, nc, 1, n.log)
	if err != nil {
		return nil, err
	}
	eng, err := sandbox.New(ctx, sandbox.Config{Logger: n.log, Unmetered: n.noAccounting})
	if err != nil {
		return nil, err
	}
	n.engines = append(n.engines, eng)
	coordPolicy := n.Policy
	coordPolicy.ManifestHash = ""
	wk, err := worker.New(worker.Config{ID: id, TEE: t, CoordinatorPolicy: coordPolicy, Verifier: n.verifier, Engine: eng,
		Conn: nc, Stores: st, Logger: n.log, Ledger: !n.noAccounting})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(n.rctx)
	h := &workerHandle{w: wk, conn: nc, stop: cancel, done: make(chan struct{})}
	n.workers = append(n.workers, h)
	errc := make(chan error, 1)
	go func() { defer close(h.done); errc <- wk.Run(wctx) }()
	deadline := time.After(30 * time.Second)
	for !wk.Ready() {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("worker %s stopped: %w", id, err)
		case <-deadline:
			return nil, fmt.Errorf("worker %s was not admitted within 30s", id)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return wk, nil
}

// Coordinator returns the coordinator (tests change its manifest through it).
func (n *Node) Coordinator() *coordinator.Coordinator { return n.coord.Coord }

// Bus returns the embedded NATS server (tests observe the bus through it).
func (n *Node) Bus() *bus.Server { return n.nats }

// KillWorker stops worker i abruptly, as a crash would: its NATS connection
// closes at once, so nothing it holds is acknowledged or recorded, and its
// run is cancelled. It does not wait for the worker's goroutines (Close does).
func (n *Node) KillWorker(i int) {
	h := n.workers[i]
	h.conn.Close()
	h.stop()
}

// WorkerID returns worker i's id.
func (n *Node) WorkerID(i int) string { return n.workers[i].w.ID() }

// writeWskprops writes DATA/wskprops for OpenWhisk's wsk and npm client:
// APIHOST=, AUTH= (uuid:key) and NAMESPACE= (omitted when "_").
func writeWskprops(dir, url, token, ns string) (string, error) {
	path := filepath.Join(dir, "wskprops")
	body := fmt.Sprintf("APIHOST=%s\nAUTH=%s\n", url, gateway.OpenWhiskAuth(token))
	if ns != "_" {
		body += "NAMESPACE=" + ns + "\n"
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("writing wskprops: %w", err)
	}
	return path, os.Rename(tmp, path)
}
