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
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
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
	svc  *service
	auth *authCache
	mux  *http.ServeMux
	// certs opens the workers' certificates that scheduling checks per request.
	certs certs.WorkerCache
	// deployKeys sign the bundles built for OpenWhisk clients.
	deployKeys deployKeys
	// owActions and sequences serve the OpenWhisk action records
	// ("a.<ns>.<name>") and the sequence definitions that every OpenWhisk
	// invocation reads from memory while they follow their buckets
	// (docs/adr/0023-followed-buckets.md); nil without async stores.
	owActions, sequences *bus.Follower

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
		reg:  registry.New(cfg.Stores.JS, cfg.Stores.Registry),
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
	var queue activationQueue
	if cfg.Async != nil {
		queue = async.NewStore(cfg.Async, nil)
		if cfg.Async.OpenWhisk != nil {
			g.owActions = bus.NewFollower(cfg.Async.OpenWhisk)
		}
		g.sequences = bus.NewFollower(cfg.Async.Sequences)
	}
	g.svc = newService(g.reg, busInvoker{g}, queue)
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
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(apierr.New(apierr.Internal, "encoding the answer failed")) // a fixed value: cannot fail
	}
	b = append(b, '\n')
	// With its length, an answer of any size goes in one write, not in
	// chunks past net/http's 2 KiB buffer, and the client reads it into
	// one buffer.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	// The status is sent: a failed write means the client is gone, and
	// there is no one left to tell.
	_, _ = w.Write(b)
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

func versionString(v int) string {
	if v == 0 {
		return "latest"
	}
	return strconv.Itoa(v)
}

// maxDefinitionBytes bounds trigger, rule and sequence bodies.
const maxDefinitionBytes = 64 << 10

// readDefinition reads a small JSON body into v.
func readDefinition(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDefinitionBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "body over %d bytes", maxDefinitionBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return apierr.New(apierr.BadRequest, "body is not the expected JSON: %v", err)
	}
	return nil
}
