// Package worker runs inside a TEE and executes function invocations. It
// admits itself to the coordinator with evidence that binds its keys, loads
// and verifies bundles from untrusted storage, obtains function keys sealed
// to it, opens confidential requests, runs each invocation in a fresh
// sandbox, seals the output to the client and signs a receipt.
//
// It must never send plaintext of a confidential input or output, or any
// key, over the bus, and never log them.
package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Config configures a Worker.
type Config struct {
	// ID names the worker in certificates and receipts.
	ID  string
	TEE tee.TEE
	// CoordinatorPolicy is what the worker expects of the coordinator's evidence.
	CoordinatorPolicy attest.Policy
	// Verifier verifies the coordinator's hardware evidence (nil: collateral
	// from the network, cached in memory).
	Verifier *attest.Verifier
	Engine   *sandbox.Engine
	Conn     *nats.Conn
	Stores   *bus.Stores
	// Concurrency bounds invocations in flight on this worker.
	Concurrency int
	// Slots shares the Concurrency slots and the guest-memory budget
	// across namespaces (Slots.Slots defaults to Concurrency).
	Slots SlotLimits
	// MaxLoaded bounds the function versions kept loaded (their pools and
	// keys); past it the least recently used is dropped (default
	// DefaultMaxLoaded).
	MaxLoaded int
	// LoadedIdle is how long a loaded version may go uncalled before it
	// is dropped (default DefaultLoadedIdle).
	LoadedIdle time.Duration
	// PoolIdle is how long a function's idle sandboxes are kept before its
	// pool shrinks to zero (0: the sandbox default; negative: never).
	PoolIdle time.Duration
	// Ledger sends every signed receipt to the coordinator's transparency log.
	Ledger bool
	// Async, if set, makes the worker take jobs from the async work queue.
	Async   *AsyncConfig
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// Worker is safe for concurrent use.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	signKey ed25519.PrivateKey
	kexKey  hpke.PrivateKey

	cert      atomic.Pointer[admission]
	reg       *registry.Registry
	fns       sync.Map // fnID → *loaded
	policies  sync.Map // namespace/name → the newest invoker policy version seen (int)
	loadGroup singleflight.Group
	ready     atomic.Bool
	revoked   atomic.Bool  // a manifest change dropped this worker
	inflight  atomic.Int64 // invocations running, for advertisements
	slots     *slots
	nLoaded   atomic.Int64 // entries in fns

	state *state.Store

	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	appends     chan *receipt.Signed
	ledger      ledgerMetrics
}

type admission struct {
	signed   certs.Signed
	cert     *certs.Worker
	coordKey ed25519.PublicKey
}

// New creates a worker with fresh ephemeral keys. Call Run to admit it and serve.
func New(cfg Config) (*Worker, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Slots.Slots <= 0 {
		cfg.Slots.Slots = cfg.Concurrency
	}
	cfg.Slots = cfg.Slots.withDefaults()
	if cfg.MaxLoaded <= 0 {
		cfg.MaxLoaded = DefaultMaxLoaded
	}
	if cfg.LoadedIdle <= 0 {
		cfg.LoadedIdle = DefaultLoadedIdle
	}
	cfg.Concurrency = cfg.Slots.Slots
	if cfg.ID == "" {
		b := make([]byte, 6)
		rand.Read(b)
		cfg.ID = "w-" + hex.EncodeToString(b)
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	kx, err := seal.NewKeyPair()
	if err != nil {
		return nil, err
	}
	st, err := state.NewStore(state.Options{KV: cfg.Stores.State, Conn: cfg.Conn,
		Anchor: state.BusTransport{Conn: cfg.Conn}, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, state: st, log: cfg.Logger.WithGroup("worker").With("worker", cfg.ID), now: cfg.Now,
		appends: make(chan *receipt.Signed, ledgerQueue), ledger: newLedgerMetrics(),
		signKey: sk, kexKey: kx, reg: registry.New(cfg.Stores.JS, cfg.Stores.Registry), slots: newSlots(cfg.Slots, cfg.Now),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloister_worker_invocations_total", Help: "Invocations run by this worker, by mode and status.",
		}, []string{"mode", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cloister_worker_invocation_seconds", Help: "Time from request arrival at the worker to reply.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"mode"}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(w.invocations, w.duration, poolCollector{w}, slotCollector{w.slots}, w.ledger.appended, w.ledger.failed,
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cloister_worker_compiles_total", Help: "Modules this worker compiled to native code.",
			}, func() float64 { return float64(cfg.Engine.Stats().Compiles) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cloister_worker_compile_cache_hits_total", Help: "Loads served by an already compiled module (same code hash and memory limit, any tenant or version).",
			}, func() float64 { return float64(cfg.Engine.Stats().CacheHits) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "cloister_worker_compiled_modules", Help: "Compiled modules this worker's engine holds in memory.",
			}, func() float64 { return float64(cfg.Engine.Stats().Cached) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cloister_worker_compiled_evictions_total", Help: "Compiled modules freed after no loaded version held them for the engine's idle time.",
			}, func() float64 { return float64(cfg.Engine.Stats().Evictions) }))
	}
	return w, nil
}

// ID returns the worker id.
func (w *Worker) ID() string { return w.cfg.ID }

// Ready reports whether the worker is admitted and serving.
func (w *Worker) Ready() bool { return w.ready.Load() }

// Run admits the worker, serves invocations and renews the certificate
// before it expires, until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	defer w.state.Close()
	if err := w.admitWithRetry(ctx); err != nil {
		return err
	}
	stopAppenders := make(chan struct{})
	appendersDone := w.runAppenders(ctx, stopAppenders)
	defer func() {
		// Log what was signed before stopping, within a bound.
		close(stopAppenders)
		select {
		case <-appendersDone:
		case <-time.After(10 * time.Second):
			w.log.Warn("stopping with receipts not yet logged", "queued", len(w.appends))
		}
	}()
	sub, err := bus.ServeCalls(ctx, w.cfg.Conn, bus.SubjectInvoke, bus.WorkerQueue, w.serveLimit(), w.log, w.handleInvoke)
	if err != nil {
		return err
	}
	// Deploy-time inspections (inspect.go): the coordinator runs no guest code.
	inspections, err := bus.Serve(ctx, w.cfg.Conn, bus.SubjectWorkerInspect, bus.WorkerQueue, maxInspections, w.log, w.handleInspect)
	if err != nil {
		return err
	}
	defer inspections.Drain() // stopping: fails only on a closed connection, which dropped it
	// Deploy events are unauthenticated hints (the worker verifies what it
	// loads); at most a few pre-warms run at once, extra events are dropped.
	prewarm := make(chan struct{}, 4)
	events, err := w.cfg.Conn.Subscribe(bus.SubjectDeployed, func(m *nats.Msg) {
		var d wire.Deployed
		if json.Unmarshal(m.Data, &d) != nil {
			return
		}
		select {
		case prewarm <- struct{}{}:
		default:
			return
		}
		go func() {
			defer func() { <-prewarm }()
			// Load, verify, compile and pre-warm before the first request.
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if _, err := w.function(lctx, d.Namespace, d.Name, d.Version); err != nil {
				w.log.Warn("pre-warming failed", "namespace", d.Namespace, "name", d.Name, "version", d.Version, "err", err)
			}
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribing to deploy events: %w", err)
	}
	defer events.Unsubscribe() // as for inspections
	deleted, err := w.cfg.Conn.Subscribe(bus.SubjectDeleted, func(m *nats.Msg) {
		var d wire.Deleted
		if json.Unmarshal(m.Data, &d) == nil {
			w.evictFunction(d.Namespace, d.Name)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to delete events: %w", err)
	}
	defer deleted.Unsubscribe() // as for inspections
	sweepDone := make(chan struct{})
	sctx, stopSweep := context.WithCancel(ctx)
	go func() { defer close(sweepDone); w.sweepLoaded(sctx) }()
	defer func() { stopSweep(); <-sweepDone }()
	if w.cfg.Async != nil {
		actx, stopAsync := context.WithCancel(ctx)
		asyncDone := make(chan struct{})
		go func() {
			defer close(asyncDone)
			// Its set-up fails while JetStream does not answer (a node
			// restarting): without this, the worker would take no
			// queued job again until it restarts.
			bus.Supervise(actx, w.log, "the async queue", w.runAsync)
		}()
		defer func() { stopAsync(); <-asyncDone }()
	}
	w.ready.Store(true)
	stopScheduling, err := w.runScheduling(ctx)
	if err != nil {
		return err
	}
	w.log.Info("worker serving", "tee", w.cfg.TEE.Kind(), "limits", w.cfg.Slots.String())
	defer func() {
		w.ready.Store(false)
		stopScheduling()
		_ = sub.Drain() // as for inspections
	}()
	for {
		a := w.cert.Load()
		life := a.cert.NotAfter.Sub(a.cert.NotBefore)
		renewAt := a.cert.NotBefore.Add(life * 2 / 3)
		t := time.NewTimer(max(renewAt.Sub(w.now()), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			if err := w.admit(ctx); err != nil {
				w.log.Warn("renewing certificate failed; retrying", "err", err)
			}
		}
	}
}

// quietWait is how long a worker waits for its coordinator before it says
// so at info level: on every start, the roles of one process come up
// together and the first attempts find no coordinator yet.
const quietWait = 5 * time.Second

func (w *Worker) admitWithRetry(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	start := time.Now()
	for {
		err := w.admit(ctx)
		if err == nil {
			return nil
		}
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == apierr.Forbidden {
			return fmt.Errorf("coordinator refused admission: %w", err)
		}
		lvl := slog.LevelDebug
		if time.Since(start) > quietWait {
			lvl = slog.LevelInfo
		}
		w.log.Log(ctx, lvl, "waiting for coordinator", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// admit verifies the coordinator's evidence, then sends its own.
func (w *Worker) admit(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var doc wire.Attestation
	if err := bus.Call(cctx, w.cfg.Conn, bus.SubjectAttestation, struct{}{}, &doc); err != nil {
		return fmt.Errorf("fetching coordinator attestation: %w", err)
	}
	v := w.cfg.Verifier
	if v == nil {
		v = &attest.Verifier{Now: w.now}
	}
	claims, err := v.Verify(doc.Evidence, w.cfg.CoordinatorPolicy)
	if err != nil {
		return apierr.New(apierr.Forbidden, "coordinator evidence: %v", err)
	}
	mh, err := hex.DecodeString(doc.ManifestHash)
	if err != nil || seal.SHA256Hex(doc.Manifest) != doc.ManifestHash {
		return apierr.New(apierr.Forbidden, "coordinator manifest hash mismatch")
	}
	if err := attest.Validate(claims, w.cfg.CoordinatorPolicy, tee.BindReportData(wire.LabelCoordinator, doc.IdentityKey, mh), w.now()); err != nil {
		return apierr.New(apierr.Forbidden, "coordinator evidence: %v", err)
	}
	kex := seal.PublicKeyBytes(w.kexKey)
	pub := w.signKey.Public().(ed25519.PublicKey)
	ev, err := w.cfg.TEE.Evidence(tee.BindReportData(wire.LabelWorker, pub, kex, doc.IdentityKey))
	if err != nil {
		return fmt.Errorf("getting evidence: %w", err)
	}
	var resp wire.AdmitResponse
	req := wire.AdmitRequest{WorkerID: w.cfg.ID, Evidence: ev, SigningKey: pub, KeyExchange: kex}
	if err := bus.Call(cctx, w.cfg.Conn, bus.SubjectAdmit, req, &resp); err != nil {
		return err
	}
	c, err := certs.OpenWorker(resp.Certificate, doc.IdentityKey)
	if err != nil {
		return fmt.Errorf("checking certificate: %w", err)
	}
	if c.WorkerID != w.cfg.ID || !bytes.Equal(c.SigningKey, pub) || c.CheckKeyExchange(kex) != nil {
		return fmt.Errorf("checking certificate: it does not certify this worker's id and keys")
	}
	w.cert.Store(&admission{signed: resp.Certificate, cert: c, coordKey: doc.IdentityKey})
	w.log.Info("admitted", "not_after", c.NotAfter)
	return nil
}
