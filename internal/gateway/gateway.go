// Package gateway is Cloister's HTTP front door: the native JSON API under
// /v1/, API-key auth per namespace, routing of invocations to workers over
// NATS, health and Prometheus metrics.
//
// The gateway is untrusted. It must never need, and never see, the
// plaintext of a confidential request or response, or any key: it forwards
// sealed bodies as they are. It refuses a plaintext request to a function
// whose manifest requires confidentiality before the plaintext goes further.
// It never stores or logs an API key: only its SHA-256, and its id in logs.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Body limits.
const (
	MaxBundleBytes = 64 << 20
	// MaxInvokeBytes allows the largest input a manifest can permit once
	// sealed and carried as base64 in JSON (4/3 of its size), plus framing.
	MaxInvokeBytes = bundle.MaxInputBytes/3*4 + 128<<10
)

// Headers of a plaintext invocation's response.
const (
	HeaderReceipt = "Cloister-Receipt"
	HeaderVersion = "Cloister-Function-Version"
)

// Config configures a Gateway.
type Config struct {
	Conn    *nats.Conn
	Stores  *bus.Stores
	Logger  *slog.Logger
	Metrics *prometheus.Registry
	// Ready reports whether the roles behind the gateway are ready (nil = always).
	Ready func() error
	// Async enables async invocations, activations, sequences and triggers.
	Async *bus.AsyncStores
	// Quotas bound each namespace (zero fields: defaults, see Quotas).
	Quotas Quotas
	// DeployTimeout bounds a deploy, from upload to registration: reading
	// and checking the bundle, compiling it and initialising a reactor
	// (0: wire.DefaultDeployTimeout). A deploy that does not finish in
	// time leaves nothing behind.
	DeployTimeout time.Duration
	// ID and URL name this gateway in GET /v1/cluster (ID "": random).
	ID, URL string
}

// Gateway is an http.Handler.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	reg  *registry.Registry
	auth *authCache
	mux  *http.ServeMux
	// certs opens the workers' certificates that scheduling checks per request.
	certs certs.WorkerCache
	// deployKeys sign the bundles built for OpenWhisk clients.
	deployKeys deployKeys

	attMu   sync.Mutex
	att     *wire.Attestation
	attTime time.Time
	// attLast is the last document the coordinator gave, kept across
	// worker changes (not manifest changes) to serve while no coordinator
	// answers (coordinatorDoc).
	attLast     *wire.Attestation
	attLastTime time.Time
	pool        pool
	gws         gateways

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	refusals *prometheus.CounterVec

	quotas  Quotas
	rates   *rates
	uploads uploadBudget // bytes of deploy bodies held (readUpload)
}

// New returns a gateway.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	g := &Gateway{
		cfg:  cfg,
		log:  cfg.Logger.WithGroup("gateway"),
		reg:  registry.New(cfg.Stores.Registry),
		auth: newAuthCache(cfg.Stores.Auth),
		mux:  http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cloister_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cloister_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"route"}),
	}
	g.quotas = cfg.Quotas.withDefaults()
	g.rates = newRates(g.quotas)
	g.uploads = newUploads()
	g.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloister_refusals_total", Help: "Requests the gateway answered with an error, by stable error code (docs/api.md).",
	}, []string{"code"})
	cfg.Metrics.MustRegister(g.requests, g.latency, g.refusals)
	g.handle("GET /healthz", noAuth, g.healthz)
	g.handle("GET /readyz", noAuth, g.readyz)
	metrics := promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{})
	// The metrics name every namespace's loaded functions: platform keys
	// only (threat-model gap 17).
	g.handle("GET /metrics", ScopeInvoke, func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		if err := p.needPlatform("/metrics"); err != nil {
			return err
		}
		metrics.ServeHTTP(w, r)
		return nil
	})
	g.handle("GET /v1/attestation", noAuth, g.attestation)
	g.keyRoutes()
	g.handle("GET /v1/functions", ScopeInvoke, g.listFunctions)
	g.handle("POST /v1/functions/{name}", ScopeDeploy, g.deploy)
	g.handle("GET /v1/functions/{name}", ScopeInvoke, g.getFunction)
	g.handle("GET /v1/functions/{name}/key", ScopeInvoke, g.getFunction)
	g.handle("GET /v1/functions/{name}/next-version", ScopeInvoke, g.nextVersion)
	g.handle("DELETE /v1/functions/{name}", ScopeDeploy, g.deleteFunction)
	g.handle("POST /v1/functions/{name}/invoke", ScopeInvoke, g.invoke)
	g.handle("POST /v1/functions/{name}/sessions", ScopeInvoke, g.openSession)
	g.handle("GET /v1/functions/{name}/policy", ScopeInvoke, g.getPolicy)
	g.handle("PUT /v1/functions/{name}/policy", ScopeDeploy, g.setPolicy)
	g.asyncRoutes()
	g.owRoutes()
	// The ledger's files and index are the coordinator's, asked for over
	// the bus: without a ledger there, they answer unavailable. Entries
	// are scoped to the key's namespace (ledgerscope.go).
	g.handle("GET /v1/ledger/log/", ScopeInvoke, g.ledgerFile)
	g.handle("GET /v1/ledger/receipts/{hash}", ScopeInvoke, g.ledgerLookup)
	g.handle("GET /v1/cluster", ScopeInvoke, g.cluster)
	g.handleManifest()
	g.startScheduling()
	g.startAnnouncing()
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apierr.New(apierr.NotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

type handlerFunc func(w http.ResponseWriter, r *http.Request, p *Principal) error

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(c int) { s.code = c; s.ResponseWriter.WriteHeader(c) }

// handle registers h for pattern. A route with a scope needs an API key
// whose scope includes it (noAuth: no key); the key is checked, then the
// namespace's request rate, then the scope.
func (g *Gateway) handle(pattern string, need Scope, h handlerFunc) {
	g.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		var p *Principal
		var err error
		if need != noAuth {
			p, err = g.auth.authenticate(r)
			err = g.admit(p, err, need, start)
		}
		if err == nil {
			err = h(sw, r, p)
		}
		if err != nil {
			g.refused(pattern, err)
			writeError(sw, err)
		}
		g.requests.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
		g.latency.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
	})
}

// admit lets an authenticated key (p, or the error that authenticating
// gave) through to a route that needs scope need: within its namespace's
// request rate, and with a scope that includes need.
func (g *Gateway) admit(p *Principal, err error, need Scope, now time.Time) error {
	if err != nil {
		return err
	}
	if err := g.rates.allow(p.Namespace, now); err != nil {
		return err
	}
	return p.need(need)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is sent: a failed write means the client is gone, and
	// there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// refused logs an internal failure and counts every refusal by its code.
func (g *Gateway) refused(route string, err error) {
	code := apierr.CodeOf(err)
	if code == apierr.Internal {
		g.log.Error("request failed", "route", route, "err", err)
	}
	g.refusals.WithLabelValues(string(code)).Inc()
}

func writeError(w http.ResponseWriter, err error) {
	ae := apierr.From(err)
	writeJSON(w, ae.Code.Status(), ae)
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if !g.cfg.Conn.IsConnected() {
		return apierr.New(apierr.Unavailable, "not connected to NATS")
	}
	if g.cfg.Ready != nil {
		if err := g.cfg.Ready(); err != nil {
			return apierr.Wrap(apierr.Unavailable, err)
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (g *Gateway) attestation(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	doc, err := g.coordinatorDoc(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}

func functionName(r *http.Request) (string, error) {
	n := r.PathValue("name")
	if !bundle.ValidName(n) {
		return "", apierr.New(apierr.BadRequest, "invalid function name %q: use lower-case letters, digits, '-' and '_'", n)
	}
	return n, nil
}

// MaxVersion is the largest function version a request may name: a
// version number is a positive 31-bit integer (as in a signed sequence
// definition), so anything above cannot exist.
const MaxVersion = 1<<31 - 1

// queryVersion reads ?version=: absent, empty or "latest" is 0 (the
// latest); otherwise decimal digits naming 1 to MaxVersion (no sign).
func queryVersion(r *http.Request) (int, error) {
	s := r.URL.Query().Get("version")
	if s == "" || s == "latest" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 31)
	if err != nil || v < 1 {
		return 0, apierr.New(apierr.BadRequest, "version must be an integer from 1 to %d, or \"latest\"", MaxVersion)
	}
	return int(v), nil
}

// sealedVersion reconciles the version of a sealed body with the query's
// (0: none). A body's version is 0 or absent (the query's, or the latest)
// or 1 to MaxVersion; when both name one, they must agree.
func sealedVersion(query, sealed int) (int, error) {
	switch {
	case sealed < 0 || sealed > MaxVersion:
		return 0, apierr.New(apierr.BadRequest, "sealed version %d out of range: 1 to %d, or 0 for the latest", sealed, MaxVersion)
	case sealed == 0:
		return query, nil
	case query != 0 && query != sealed:
		return 0, apierr.New(apierr.BadRequest, "query version %d differs from sealed version %d", query, sealed)
	}
	return sealed, nil
}

func info(rec *registry.Record, latest int) wire.FunctionInfo {
	f := rec.Function
	return wire.FunctionInfo{
		Namespace: f.Namespace, Name: f.Name, Version: f.Version, Latest: latest, CodeHash: f.CodeHash,
		BundleHash: f.BundleHash, Confidential: f.Confidential, Created: rec.Created, Manifest: rec.Manifest,
		Certificate: rec.Certificate, Policy: rec.Policy,
	}
}

func (g *Gateway) lookup(ctx context.Context, ns, name string, version int) (*registry.Record, error) {
	rec, err := g.reg.Get(ctx, ns, name, version)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, apierr.New(apierr.NotFound, "function %q (version %s) not found in namespace %q", name, versionString(version), ns)
	}
	if err != nil {
		return nil, storeError("registry", err)
	}
	return rec, nil
}

// storeError maps a failure to reach an untrusted store (a timeout, a lost
// NATS connection) to unavailable, which callers may retry; errors that
// already have a code keep it.
func storeError(what string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return err
	}
	return apierr.Wrap(apierr.Unavailable, fmt.Errorf("%s unavailable: %w", what, err))
}

func versionString(v int) string {
	if v == 0 {
		return "latest"
	}
	return strconv.Itoa(v)
}

func (g *Gateway) listFunctions(w http.ResponseWriter, r *http.Request, p *Principal) error {
	recs, err := g.reg.List(r.Context(), p.Namespace)
	if err != nil {
		return storeError("registry", err)
	}
	out := make([]wire.FunctionInfo, 0, len(recs))
	for _, rec := range recs {
		i := info(rec, rec.Function.Version)
		i.Manifest = nil
		out = append(out, i)
	}
	writeJSON(w, http.StatusOK, map[string]any{"functions": out})
	return nil
}

func (g *Gateway) getFunction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	rec, err := g.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	latest, err := g.reg.Latest(r.Context(), p.Namespace, name)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		// The version asked for was found; answer without the latest.
		g.log.Warn("reading the latest version", "namespace", p.Namespace, "function", name, "err", err)
	}
	writeJSON(w, http.StatusOK, info(rec, latest))
	return nil
}

// nextVersion tells a deployer which version number its bundle must carry.
// Numbers are never reused, even after a delete.
func (g *Gateway) nextVersion(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := g.reg.NextVersion(r.Context(), p.Namespace, name)
	if err != nil {
		return storeError("registry", err)
	}
	writeJSON(w, http.StatusOK, map[string]int{"version": v})
	return nil
}

func (g *Gateway) deleteFunction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if err := g.deleteVersions(r.Context(), p.Namespace, name); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return apierr.New(apierr.NotFound, "function %q not found", name)
		}
		return storeError("registry", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
	return nil
}

// deleteVersions marks a function deleted and tells the workers, which
// then free what they hold of it (pools, compiled code). The event is a
// hint: workers also find deletions when they check the registry.
func (g *Gateway) deleteVersions(ctx context.Context, ns, name string) error {
	if err := g.reg.Delete(ctx, ns, name); err != nil {
		return err
	}
	if b, err := json.Marshal(wire.Deleted{Namespace: ns, Name: name}); err == nil {
		// Best effort: it only frees workers' pools early. Requests no
		// longer reach them (lookups fail), and idle pools are evicted.
		_ = g.cfg.Conn.Publish(bus.SubjectDeleted, b)
	}
	return nil
}

func (g *Gateway) deploy(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	// The body goes to the object store as it arrives: the gateway holds
	// a chunk of it at a time, not the bundle.
	fi, err := g.register(r.Context(), p.Namespace, name, http.MaxBytesReader(w, r.Body, MaxBundleBytes), r.ContentLength)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, fi)
	return nil
}

// register stores a bundle read from src (size is its declared length, or
// -1 when unknown) under a name of its own, and asks the coordinator to
// register it. What a failed registration stored is removed again.
func (g *Gateway) register(ctx context.Context, ns, name string, src io.Reader, size int64) (wire.FunctionInfo, error) {
	if err := g.checkDeployQuota(ctx, ns, name, max(size, 0)); err != nil {
		return wire.FunctionInfo{}, err
	}
	obj, err := g.storeBundle(ctx, ns, name, src, size)
	if err != nil {
		return wire.FunctionInfo{}, err
	}
	// The coordinator registers nothing once the deploy timeout has passed
	// (counted from when it receives the request). Wait for its answer a
	// margin longer, and whatever the HTTP client does: only then is the
	// outcome known, and the bundle may be removed.
	timeout := g.deployTimeout()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+deployMargin)
	defer cancel()
	var fi wire.FunctionInfo
	err = bus.Call(cctx, g.cfg.Conn, bus.SubjectRegister, wire.RegisterRequest{Namespace: ns, Name: name, Object: obj, TimeoutMS: timeout.Milliseconds()}, &fi)
	if err != nil {
		// No answer, or one lost on the way back, for a bundle this deploy
		// stored: the registry says what happened.
		code := apierr.CodeOf(err)
		if code == apierr.Timeout || code == apierr.Unavailable {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rec, gerr := g.reg.Get(rctx, ns, name, 0); gerr == nil && rec.Object == obj {
				// Get just found this version: Latest can only fail with
				// the store, and then the reply goes without it.
				latest, _ := g.reg.Latest(rctx, ns, name)
				return info(rec, latest), nil
			}
		}
		g.removeBundle(ctx, obj)
		if code == apierr.Timeout {
			return wire.FunctionInfo{}, apierr.New(apierr.Timeout, "the deploy did not finish within the deploy timeout of %s; nothing was registered (%s)", timeout, apierr.From(err).Message)
		}
		return wire.FunctionInfo{}, err
	}
	fi.Latest = fi.Version
	return fi, nil
}

// storeBundle streams a bundle into the object store under a fresh name
// (<ns>/<name>/u-<random>; the coordinator checks the content against what
// the owner signed, so the name needs no meaning). Past MaxBundleBytes,
// empty, or over the namespace's code quota once its size is known, it is
// refused and nothing stays stored.
func (g *Gateway) storeBundle(ctx context.Context, ns, name string, src io.Reader, size int64) (string, error) {
	var id [12]byte
	rand.Read(id[:])
	obj := ns + "/" + name + "/u-" + hex.EncodeToString(id[:])
	info, err := g.cfg.Stores.Bundles.Put(ctx, jetstream.ObjectMeta{Name: obj}, src)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return "", apierr.New(apierr.PayloadTooLarge, "bundle over %d bytes", MaxBundleBytes)
	case err != nil && ctx.Err() != nil:
		return "", apierr.New(apierr.BadRequest, "the upload stopped before the bundle was complete")
	case err != nil:
		return "", apierr.New(apierr.Unavailable, "storing bundle: %v", err)
	}
	remove := func() { g.removeBundle(ctx, obj) }
	if info.Size == 0 {
		remove()
		return "", apierr.New(apierr.InvalidBundle, "empty body: send a bundle made by `cloister fn deploy`")
	}
	if size < 0 {
		if err := g.checkDeployQuota(ctx, ns, name, int64(info.Size)); err != nil {
			remove()
			return "", err
		}
	}
	return obj, nil
}

// removeBundle deletes a stored bundle that no function version refers to.
// Nothing else removes it, so a failure is logged for the operator.
func (g *Gateway) removeBundle(ctx context.Context, obj string) {
	if err := g.cfg.Stores.Bundles.Delete(context.WithoutCancel(ctx), obj); err != nil {
		g.log.Warn("removing an unregistered bundle; it stays in the object store", "object", obj, "err", err)
	}
}

// deployMargin is how much longer than the deploy timeout the gateway
// waits for the coordinator's answer.
const deployMargin = 15 * time.Second

func (g *Gateway) deployTimeout() time.Duration {
	if g.cfg.DeployTimeout > 0 {
		return g.cfg.DeployTimeout
	}
	return wire.DefaultDeployTimeout
}

// route forwards an invocation to a worker and waits for its reply.
func (g *Gateway) route(ctx context.Context, rec *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	var m bundle.Manifest
	// The coordinator validated the manifest at deploy; a zero limit only
	// leaves the margin.
	_ = json.Unmarshal(rec.Manifest, &m)
	timeout := time.Duration(m.Limits.TimeoutMS)*time.Millisecond + 30*time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rep wire.InvokeReply
	for attempt := 0; ; attempt++ {
		subject, err := g.pick(ctx, rec)
		if err != nil {
			return nil, err
		}
		err = g.callWorker(ctx, subject, req, &rep)
		// A worker that stopped since its last advertisement (gone, or
		// stopping): forget it and pick again. Nothing ran, so nothing is
		// repeated.
		if code := apierr.CodeOf(err); (code == apierr.NoWorker || code == apierr.Unavailable) && subject != bus.SubjectInvoke && attempt < 2 {
			g.pool.forget(strings.TrimPrefix(subject, bus.SubjectInvokeWorker))
			continue
		}
		// A full worker refuses before it opens the request (the nonce is
		// not spent): another may have room.
		if apierr.CodeOf(err) == apierr.Overloaded && attempt < 2 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &rep, nil
	}
}

// probeInterval is how often the gateway checks, during a synchronous
// call, that the worker running it is still on the bus.
const probeInterval = time.Second

// errWorkerLost ends a call whose worker left the bus.
var errWorkerLost = errors.New("worker lost")

// callWorker sends req to subject and waits for the reply. When subject is
// one worker's own, it checks every probeInterval that the worker is still
// subscribed (an empty request answered with "no responders" means it is
// not): a worker killed mid-call then ends the call with worker_lost
// within about a second instead of at the call's timeout.
func (g *Gateway) callWorker(ctx context.Context, subject string, req, rep any) error {
	if subject == bus.SubjectInvoke {
		return bus.Call(ctx, g.cfg.Conn, subject, req, rep)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
			}
			pctx, stop := context.WithTimeout(cctx, probeInterval)
			_, err := g.cfg.Conn.RequestWithContext(pctx, subject, nil)
			stop()
			if errors.Is(err, nats.ErrNoResponders) {
				cancel(errWorkerLost)
				return
			}
		}
	}()
	err := bus.Call(cctx, g.cfg.Conn, subject, req, rep)
	if err != nil && errors.Is(context.Cause(cctx), errWorkerLost) {
		return apierr.New(apierr.WorkerLost, "worker %s stopped before it answered; the call may have run: retry only if running it twice is safe",
			strings.TrimPrefix(subject, bus.SubjectInvokeWorker))
	}
	return err
}

func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxInvokeBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "request body over %d bytes", MaxInvokeBytes)
	}
	if isAsync, err := queryAsync(r); err != nil {
		return err
	} else if isAsync {
		return g.invokeAsync(w, r, p, name, v, body)
	}
	// A Content-Type that does not parse is not the sealed one.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == wire.SealedContentType {
		return g.sealed(w, r, p, name, v, body, wire.ModeHPKE, wire.ModeSession)
	}
	rec, err := g.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	if rec.Function.Confidential != bundle.ConfidentialOptional {
		return apierr.New(apierr.ConfidentialRequired,
			"function %q requires confidential requests; use `cloister invoke` or the client SDK, which seal the request to the attested worker", name)
	}
	rep, err := g.route(r.Context(), rec, &wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: body})
	if err != nil {
		return err
	}
	if rep.Receipt != nil {
		rb, _ := json.Marshal(rep.Receipt) // a decoded receipt re-encodes
		w.Header().Set(HeaderReceipt, base64.StdEncoding.EncodeToString(rb))
	}
	w.Header().Set(HeaderVersion, strconv.Itoa(rep.Version))
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Version: rep.Version, Receipt: rep.Receipt})
		return nil
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = io.Copy(w, bytes.NewReader(rep.Output)) // the status is sent; the client is gone
	return nil
}

func (g *Gateway) openSession(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "session request over 64 KiB")
	}
	return g.sealed(w, r, p, name, v, body, wire.ModeSessionOpen)
}

// sealed forwards a sealed request. The gateway reads only its routing
// fields; the ciphertext goes to the worker untouched.
func (g *Gateway) sealed(w http.ResponseWriter, r *http.Request, p *Principal, name string, v int, body []byte, modes ...string) error {
	var sr wire.SealedRequest
	if err := json.Unmarshal(body, &sr); err != nil {
		return apierr.New(apierr.BadRequest, "malformed sealed request: %v", err)
	}
	ok := false
	for _, m := range modes {
		ok = ok || sr.Mode == m
	}
	if !ok {
		return apierr.New(apierr.BadRequest, "mode %q is not accepted here (want one of %v)", sr.Mode, modes)
	}
	v, err := sealedVersion(v, sr.Version)
	if err != nil {
		return err
	}
	logs := false
	if s := r.URL.Query().Get("logs"); s != "" {
		var err error
		if logs, err = strconv.ParseBool(s); err != nil {
			return apierr.New(apierr.BadRequest, "logs must be true or false")
		}
	}
	rec, err := g.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	rep, err := g.route(r.Context(), rec, &wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: sr.Mode, Sealed: sr, Logs: logs})
	if err != nil {
		return err
	}
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Version: rep.Version, Receipt: rep.Receipt, Logs: rep.Logs})
		return nil
	}
	writeJSON(w, http.StatusOK, wire.SealedResponse{Version: rep.Version, Ciphertext: rep.Ciphertext, Ticket: rep.Ticket,
		TicketExpires: rep.TicketExpires, Receipt: rep.Receipt, Logs: rep.Logs})
	return nil
}

// ledgerFile serves one public file of the ledger in the tlog-tiles layout
// (the checkpoint, a hash tile or an entry bundle), which it asks the
// coordinator for over bus.SubjectLedgerRead: a gateway shares no disk with
// the coordinator. Nothing here is trusted by clients, who verify it against
// a checkpoint signed by the coordinator. A path the coordinator refuses is
// answered as not found, as a missing file is (tlog-tiles clients fall back
// from a partial tile to the full one on a 404). The checkpoint and hash
// tiles go to any key; an entry bundle only to a platform key or to a key
// of the namespace of every receipt in it (entriesVisible).
func (g *Gateway) ledgerFile(w http.ResponseWriter, r *http.Request, pr *Principal) error {
	p := strings.TrimPrefix(r.URL.Path, "/v1/ledger/log/")
	// No cache keeps the answer to a file that does not exist (yet).
	notFound := func() error {
		w.Header().Set("Cache-Control", "no-store")
		return apierr.New(apierr.NotFound, "%.64q is not in the ledger", p)
	}
	if len(p) > maxLedgerPath || strings.Contains(p, "..") {
		return notFound()
	}
	b, err := bus.CallBytes(r.Context(), g.cfg.Conn, bus.SubjectLedgerRead, []byte(p))
	var ae *apierr.Error
	if errors.As(err, &ae) && (ae.Code == apierr.BadRequest || ae.Code == apierr.NotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	if err := entriesVisible(pr, p, b); err != nil {
		return err
	}
	switch {
	case p == "checkpoint":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
	case !strings.Contains(p, ".p/"):
		// Full tiles and bundles never change.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b) // the status is sent; the client is gone
	}
	return nil
}

// maxLedgerPath bounds the path of a ledger file the gateway asks the
// coordinator for; the coordinator checks the path itself.
const maxLedgerPath = 64

// ledgerLookup finds the log index of a receipt by the hash of its entry,
// from the coordinator's index. The answer is a hint; clients verify an
// inclusion proof for it against a checkpoint signed by the coordinator.
// A key that is not a platform key finds only its namespace's receipts, and
// only once a checkpoint covers them (entryVisible).
func (g *Gateway) ledgerLookup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	h := r.PathValue("hash")
	sum, err := hex.DecodeString(h)
	if len(h) != 64 || err != nil || strings.ToLower(h) != h {
		return apierr.New(apierr.BadRequest, "receipt hash must be 64 lower-case hex digits (sha256 of the receipt entry)")
	}
	b, err := bus.CallBytes(r.Context(), g.cfg.Conn, bus.SubjectLedgerLookup, sum)
	if err != nil {
		return err
	}
	if len(b) != 8 {
		return apierr.New(apierr.Internal, "malformed ledger index")
	}
	idx := binary.BigEndian.Uint64(b)
	if err := g.entryVisible(r.Context(), p, sum, idx); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.LedgerLookup{EntryHash: h, Index: idx})
	return nil
}
