// Package console is Cloister's web console: a small HTTP server that runs
// on the user's own machine (`cloister console`), serves a single-page front
// end embedded in the binary, and answers the page's JSON API by calling the
// platform through the Go client (package client).
//
// All verification happens here, in the local process: attestation,
// certificates, sealing (RFC 9180 HPKE), receipts and ledger proofs. The
// browser talks only to this server, and this server never serves anything
// it did not embed, so neither the gateway nor the network serves code to
// the browser or sees plaintext.
//
// The server must never answer an API request without the session token
// (compared in constant time), never accept a state-changing request from
// another origin, and never let data that came from the platform be read by
// the page as HTML: every answer is JSON, and the page inserts text only.
package console

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloister-faas/cloister/client"
)

//go:embed web
var webFS embed.FS

// TokenHeader is the request header that carries the session token.
const TokenHeader = "X-Cloister-Console-Token"

// ContentSecurityPolicy is sent with every answer: the page loads only what
// this server embedded, runs no inline script and is never framed.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Config configures a Server.
type Config struct {
	// Client is the platform client: it holds the API key, the pinned
	// attestation policy and the caller key, and does all verification.
	Client *client.Client
	// Policy is the attestation policy Client pins, shown on the overview.
	Policy client.Policy
	// Gateways are the gateway base URLs, for the health checks (/readyz).
	Gateways []string
	// OwnerKey signs deployed bundles; nil: deploying is refused.
	OwnerKey ed25519.PrivateKey
	// Token is the session token every API request must carry.
	Token string
	// AllowedHosts, when not empty, are the only Host headers accepted
	// (host:port): it guards a loopback console against DNS rebinding.
	AllowedHosts []string
	// PendingDir, when set, is where asynchronous invocations' keys are
	// kept (as `cloister invoke --async` keeps them), so that the console
	// and the CLI open each other's results. Empty: kept in memory only.
	PendingDir string
	// CheckpointDir, when set, is where the last verified ledger checkpoint
	// is kept per coordinator (as `cloister ledger verify` keeps it), so
	// that each new one is proved to extend it.
	CheckpointDir string
	// MetricsURLs are Prometheus endpoints the metrics page scrapes besides
	// each gateway's /metrics (`cloister worker` processes', say), with no
	// credential.
	MetricsURLs []string
	// ScrapeInterval is how often the metrics page's scraper reads them
	// (default DefaultScrapeInterval).
	ScrapeInterval time.Duration
	// HTTP does the health checks and the scrapes of MetricsURLs (default:
	// a client with a 5 s timeout).
	HTTP *http.Client
	// Logger receives request failures; never a secret or a payload.
	Logger *slog.Logger
}

// Server is the console's HTTP handler. It is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	assets fs.FS
	mux    *http.ServeMux // the assets
	api    *http.ServeMux // the JSON API, under /api/

	metrics *metricsScraper // started by the first GET /api/metrics; see Close

	mu      sync.Mutex
	pending map[string]*client.Pending // async invocations' keys, by activation ID
}

// New returns a console server for cfg. It refuses an empty token.
func New(cfg Config) (*Server, error) {
	if len(cfg.Token) < 16 {
		return nil, fmt.Errorf("console: the token must be at least 16 characters")
	}
	if cfg.Client == nil {
		return nil, fmt.Errorf("console: no client")
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: defaultHealthTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	assets, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, fmt.Errorf("opening embedded assets: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, assets: assets, mux: http.NewServeMux(), api: http.NewServeMux(), pending: map[string]*client.Pending{}}
	s.metrics = newMetricsScraper(cfg)
	s.routes()
	return s, nil
}

// NewToken returns a random session token: 32 bytes from crypto/rand, hex.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading randomness: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// LoopbackHosts are the Host headers a browser sends to a console
// listening on addr (a loopback host:port): 127.0.0.1, [::1] and localhost
// at its port. It returns nil for an address that is not loopback.
func LoopbackHosts(addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil
	}
	return []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port), net.JoinHostPort("localhost", port)}
}

// ServeHTTP applies the console's guards, in order: the security headers
// on every answer, the Host check, the cross-origin check on state-changing
// requests (403), and the token on every API request (401).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if len(s.cfg.AllowedHosts) > 0 && !slices.Contains(s.cfg.AllowedHosts, r.Host) {
		writeError(w, http.StatusForbidden, kindForbidden, "this console answers only on "+strings.Join(s.cfg.AllowedHosts, ", "))
		return
	}
	if err := crossOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, kindForbidden, err.Error())
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	if !s.tokenOK(r) {
		writeError(w, http.StatusUnauthorized, kindUnauthorized, "missing or wrong console token: open the URL `cloister console` printed")
		return
	}
	s.api.ServeHTTP(w, r)
}

// crossOrigin refuses a state-changing request that a browser sent from
// another origin: its Sec-Fetch-Site is not same-origin, or its Origin is
// not the console's own. Requests without either (curl) pass: they carry
// the token, which another origin cannot read. (net/http's
// CrossOriginProtection, which this follows, lets "none" pass too; a
// navigation cannot send a token header, so refusing it costs nothing.)
func crossOrigin(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("cross-origin request refused (Sec-Fetch-Site: %s)", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	if origin != "http://"+r.Host && origin != "https://"+r.Host {
		return fmt.Errorf("cross-origin request refused (Origin %s is not this console's)", origin)
	}
	return nil
}

// tokenOK reports whether r carries the session token, compared in
// constant time.
func (s *Server) tokenOK(r *http.Request) bool {
	got := r.Header.Get(TokenHeader)
	if got == "" {
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = b
		}
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) == 1
}

// Error kinds: what the page shows. "verification" is a verification
// failure: the platform's answer was not what was attested, and nothing of
// it is shown as fact.
const (
	kindBadRequest   = "bad_request"
	kindUnauthorized = "unauthorized"
	kindForbidden    = "forbidden"
	kindNotFound     = "not_found"
	kindVerification = "verification"
	kindFunction     = "function_failed"
	kindPlatform     = "platform"
	kindInternal     = "internal"
)

// apiError is the JSON body of a failed API request.
type apiError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// Code is the platform's error code, if it answered one.
	Code string `json:"code,omitempty"`
}

func writeError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{"error": apiError{Kind: kind, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true) // JSON never read as HTML, but cheap to be sure
	_ = enc.Encode(v)       // the client went away: nothing to tell
}
