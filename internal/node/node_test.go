package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// recorder keeps every request and response body the gateway handled.
type recorder struct {
	mu   sync.Mutex
	data bytes.Buffer
}

func (r *recorder) add(b []byte) {
	r.mu.Lock()
	r.data.Write(b)
	r.data.WriteByte('\n')
	r.mu.Unlock()
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.data.Bytes())
}

type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) { w.buf.Write(b); return w.ResponseWriter.Write(b) }

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.add([]byte(req.URL.String()))
		r.add(body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, req)
		for k, v := range tw.Header() {
			r.add([]byte(k + ": " + strings.Join(v, ",")))
		}
		r.add(tw.buf.Bytes())
	})
}

type env struct {
	t     *testing.T
	n     *node.Node
	c     *client.Client
	owner ed25519.PrivateKey
	http  *recorder
	bus   *recorder
	dir   string
	ns    string // the namespace of c's API key ("" is "default")
}

// namespace is the namespace the env's client acts in, which deploy signs
// bundles for.
func (e *env) namespace() string {
	if e.ns == "" {
		return "default"
	}
	return e.ns
}

func start(t *testing.T, edit ...func(*node.Options)) *env {
	t.Helper()
	e := &env{t: t, http: &recorder{}, bus: &recorder{}, dir: t.TempDir()}
	o := node.Options{Dir: e.dir, Addr: "127.0.0.1:0", Wrap: e.http.wrap, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if os.Getenv("CLOISTER_TEST_LOG") != "" { // show the roles' logs while debugging a test
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range edit {
		f(&o)
	}
	n, err := node.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e.n = n
	// Watch everything that crosses the bus.
	nc, err := n.Bus().Connect("observer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(">", func(m *nats.Msg) { e.bus.add([]byte(m.Subject)); e.bus.add(m.Data) }); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	// The owner deploys and, by the default invoker policy, is the one
	// caller of its functions.
	_, e.owner, _ = ed25519.GenerateKey(rand.Reader)
	if e.c, err = client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCallerKey(e.owner)); err != nil {
		t.Fatal(err)
	}
	return e
}

// tenant creates namespace ns with an API key and returns an env that acts
// as it: its own client, the same node and owner key.
func (e *env) tenant(ns string) *env {
	e.t.Helper()
	tok, err := e.c.CreateToken(context.Background(), ns, ns+"-key")
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := client.New(e.n.URL, tok, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner))
	if err != nil {
		e.t.Fatal(err)
	}
	return &env{t: e.t, n: e.n, c: c, owner: e.owner, http: e.http, bus: e.bus, dir: e.dir, ns: ns}
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "sandbox", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) deploy(name string, module []byte, edit func(*bundle.Manifest)) *client.FunctionInfo {
	e.t.Helper()
	fi, err := e.c.Deploy(context.Background(), name, e.build(name, module, edit))
	if err != nil {
		e.t.Fatalf("deploy %s: %v", name, err)
	}
	return fi
}

// leaks reports whether marker appears in data raw or base64-encoded at any
// alignment (JSON carries []byte as base64).
func leaks(data, marker []byte) bool {
	if bytes.Contains(data, marker) {
		return true
	}
	for pad := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, pad), marker...))
		if bytes.Contains(data, []byte(enc[4:len(enc)-4])) {
			return true
		}
	}
	return false
}

func randomMarker() []byte {
	b := make([]byte, 12)
	rand.Read(b)
	return []byte("SECRET-" + hex.EncodeToString(b))
}

// TestPlaintextNeverReachesGatewayOrBus shows that confidential inputs and
// outputs cross the gateway and NATS only as ciphertext, and that the
// observers would have seen a plaintext invocation (the control).
func TestPlaintextNeverReachesGatewayOrBus(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("open-echo", fixture(t, "echo.wasm"), openToAll)

	secret := randomMarker()
	res, err := e.c.Invoke(ctx, "echo", secret, client.InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Output, secret) {
		t.Fatalf("hpke echo: got %q, want %q", res.Output, secret)
	}
	s, err := e.c.OpenSession(ctx, "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		res, err := s.Invoke(ctx, secret)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Output, secret) || res.Mode != wire.ModeSession {
			t.Fatalf("session echo: got %q (%s)", res.Output, res.Mode)
		}
	}
	control := randomMarker()
	if res, err := e.c.Invoke(ctx, "open-echo", control, client.InvokeOptions{Plaintext: true}); err != nil || !bytes.Equal(res.Output, control) {
		t.Fatalf("plaintext control: %v %+v", err, res)
	}
	time.Sleep(100 * time.Millisecond) // let the observer drain
	httpSeen, busSeen := e.http.bytes(), e.bus.bytes()
	if !leaks(httpSeen, control) || !leaks(busSeen, control) {
		t.Fatalf("control: the observers did not see a plaintext invocation (http %v, bus %v); the test cannot detect leaks", leaks(httpSeen, control), leaks(busSeen, control))
	}
	if leaks(httpSeen, secret) {
		t.Errorf("the gateway handled the confidential plaintext")
	}
	if leaks(busSeen, secret) {
		t.Errorf("NATS carried the confidential plaintext")
	}
	filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil && leaks(b, secret) {
				t.Errorf("confidential plaintext found on disk in %s", p)
			}
		}
		return nil
	})
}

// sealer builds raw sealed requests for negative tests.
type sealer struct {
	t  *testing.T
	e  *env
	fc *certs.Function
}

func (e *env) sealer(name string, version int) *sealer {
	e.t.Helper()
	a, err := e.c.Attest(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.n.URL+"/v1/functions/"+name+"/key", nil)
	if version != 0 {
		req.URL.RawQuery = "version=" + string(rune('0'+version))
	}
	req.Header.Set("Authorization", "Bearer "+e.n.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var fi wire.FunctionInfo
	json.NewDecoder(resp.Body).Decode(&fi)
	fc, err := certs.OpenFunction(fi.Certificate, a.IdentityKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return &sealer{t: e.t, e: e, fc: fc}
}

func (s *sealer) seal(input []byte, when time.Time, infoVersion int, infoName string) wire.SealedRequest {
	s.t.Helper()
	cc, err := seal.SealRequest(s.fc.HPKEKey, seal.Info(s.fc.Namespace, infoName, infoVersion, s.fc.CodeHash), seal.NewPayload(input, when), s.e.owner, false)
	if err != nil {
		s.t.Fatal(err)
	}
	return wire.SealedRequest{Mode: wire.ModeHPKE, Version: s.fc.Version, Enc: cc.Enc, Ciphertext: cc.Ciphertext}
}

func (e *env) post(path, ctype, token string, body []byte) (int, wire.ErrorBody) {
	e.t.Helper()
	return e.send(http.MethodPost, path, ctype, token, body)
}

func (e *env) send(method, path, ctype, token string, body []byte) (int, wire.ErrorBody) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.n.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb wire.ErrorBody
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// TestBadInput sends every kind of bad request and checks the stable code,
// then checks the node still serves.
func TestBadInput(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.Limits.MaxInputBytes = 1024 })
	e.deploy("echo", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.Limits.MaxInputBytes = 1024 })
	s := e.sealer("echo", 2)
	now := time.Now()

	good := s.seal([]byte("hi"), now, 2, "echo")
	flipped := good
	flipped.Ciphertext = bytes.Clone(good.Ciphertext)
	flipped.Ciphertext[3] ^= 1
	replayed := s.seal([]byte("once"), now, 2, "echo")
	if st, eb := e.post("/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(replayed)); st != 200 {
		t.Fatalf("first send of the replayed request: %d %+v", st, eb)
	}
	wrongVersion := s.seal([]byte("hi"), now, 1, "echo")
	wrongFunction := s.seal([]byte("hi"), now, 2, "other")
	stale := s.seal([]byte("hi"), now.Add(-time.Hour), 2, "echo")
	tooBigInput := s.seal(bytes.Repeat([]byte("x"), 2048), now, 2, "echo")
	badTicket := wire.SealedRequest{Mode: wire.ModeSession, Version: 2, Ticket: []byte("forged ticket of some length......"), Ciphertext: []byte("x")}
	negative := good
	negative.Version = -1
	overflow := good
	overflow.Version = gateway.MaxVersion + 1
	negativeOpen := wire.SealedRequest{Mode: wire.ModeSessionOpen, Version: -1, Enc: good.Enc, Ciphertext: good.Ciphertext}

	goodBundle, _ := bundle.Build(func() bundle.Manifest {
		m := bundle.DefaultManifest("b")
		m.Version, m.Namespace = 1, "default"
		return m
	}(), fixture(t, "echo.wasm"), e.owner)
	badSig := flipSignature(t, goodBundle)
	badModule := bytes.Clone(goodBundle)
	badModule[len(badModule)-1] ^= 0xff
	wrongVer, _ := bundle.Build(func() bundle.Manifest {
		m := bundle.DefaultManifest("b")
		m.Version, m.Namespace = 7, "default"
		return m
	}(), fixture(t, "echo.wasm"), e.owner)

	cases := []struct {
		name, path, ctype, token string
		body                     []byte
		status                   int
		code                     string
	}{
		{"flipped ciphertext byte", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(flipped), 400, "decrypt_failed"},
		{"replayed sealed request", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(replayed), 409, "replay"},
		{"sealed to another version", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(wrongVersion), 400, "decrypt_failed"},
		{"sealed to another function", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(wrongFunction), 400, "decrypt_failed"},
		{"stale timestamp", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(stale), 400, "stale_request"},
		{"input over the function's limit", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(tooBigInput), 413, "payload_too_large"},
		{"oversized body", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, bytes.Repeat([]byte("x"), gateway.MaxInvokeBytes+1), 413, "payload_too_large"},
		{"malformed sealed JSON", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, []byte("{nope"), 400, "bad_request"},
		{"forged session ticket", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(badTicket), 401, "session_invalid"},
		{"plaintext to a confidential function", "/v1/functions/echo/invoke", "text/plain", e.n.Token, []byte("hi"), 403, "confidential_required"},
		{"missing API key", "/v1/functions/echo/invoke", wire.SealedContentType, "", mustJSON(good), 401, "unauthorized"},
		{"wrong API key", "/v1/functions/echo/invoke", wire.SealedContentType, "clk_wrong", mustJSON(good), 401, "unauthorized"},
		{"unknown function", "/v1/functions/nope/invoke", wire.SealedContentType, e.n.Token, mustJSON(good), 404, "not_found"},
		{"bundle with a bad signature", "/v1/functions/b", client.BundleContentType, e.n.Token, badSig, 422, "bundle_signature"},
		{"bundle whose module hash is wrong", "/v1/functions/b", client.BundleContentType, e.n.Token, badModule, 400, "invalid_bundle"},
		{"not a bundle", "/v1/functions/b", client.BundleContentType, e.n.Token, []byte("\x00asm\x01\x00\x00\x00"), 400, "invalid_bundle"},
		{"bundle with a version out of sequence", "/v1/functions/b", client.BundleContentType, e.n.Token, wrongVer, 409, "version_conflict"},
		{"invalid function name", "/v1/functions/Bad%20Name/invoke", wire.SealedContentType, e.n.Token, mustJSON(good), 400, "bad_request"},
		// Impossible versions are malformed requests, not unknown versions.
		{"sealed version -1", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(negative), 400, "bad_request"},
		{"sealed version over the maximum", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(overflow), 400, "bad_request"},
		{"sealed version beyond int64", "/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token,
			bytes.Replace(mustJSON(good), []byte(`"version":2`), []byte(`"version":99999999999999999999`), 1), 400, "bad_request"},
		{"sealed version -1, async", "/v1/functions/echo/invoke?async=true", wire.SealedContentType, e.n.Token, mustJSON(negative), 400, "bad_request"},
		{"sealed version -1, session", "/v1/functions/echo/sessions", wire.SealedContentType, e.n.Token, mustJSON(negativeOpen), 400, "bad_request"},
		{"query version -1", "/v1/functions/echo/invoke?version=-1", "text/plain", e.n.Token, []byte("hi"), 400, "bad_request"},
		{"query version +2", "/v1/functions/echo/invoke?version=+2", "text/plain", e.n.Token, []byte("hi"), 400, "bad_request"},
		{"query version over the maximum", "/v1/functions/echo/invoke?version=2147483648", "text/plain", e.n.Token, []byte("hi"), 400, "bad_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, eb := e.post(c.path, c.ctype, c.token, c.body)
			if st != c.status || string(eb.Code) != c.code || eb.Message == "" {
				t.Errorf("got %d %q (%q), want %d %q with a message", st, eb.Code, eb.Message, c.status, c.code)
			}
		})
	}
	// Still serving, and the good request was never consumed.
	if st, eb := e.post("/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(good)); st != 200 {
		t.Errorf("good request after the bad ones: %d %+v", st, eb)
	}
	if res, err := e.c.Invoke(ctx, "echo", []byte("still here"), client.InvokeOptions{}); err != nil || string(res.Output) != "still here" {
		t.Errorf("invoke after bad input: %v", err)
	}
}

// TestSwappedBundleIsRefused plays a host that replaces a stored bundle
// while the node is down: the restarted worker checks the bundle against the
// coordinator's certificate and refuses it.
func TestSwappedBundleIsRefused(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("swap", fixture(t, "echo.wasm"), nil)
	e.n.Close()

	srv, err := bus.StartServer(bus.ServerOptions{Dir: filepath.Join(e.dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("evil-host")
	if err != nil {
		t.Fatal(err)
	}
	var latest struct{ Record struct{ Object string } }
	kvEntry, err := getRegistry(ctx, nc, "latest.default.swap")
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(kvEntry, &latest)
	m := bundle.DefaultManifest("swap")
	m.Version = 1
	evil, _ := bundle.Build(m, fixture(t, "counter.wasm"), e.owner)
	if err := putObject(ctx, nc, latest.Record.Object, evil); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()

	n, err := node.Start(ctx, node.Options{Dir: e.dir, Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c, _ := client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCallerKey(e.owner))
	_, err = c.Invoke(ctx, "swap", []byte("x"), client.InvokeOptions{})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "bundle_integrity" {
		t.Fatalf("invoke of a swapped bundle: got %v, want bundle_integrity", err)
	}
}

// TestPolicyWithoutSimRefusesSimEvidence: a client whose policy does not
// allow sim must refuse the node's sim evidence.
func TestPolicyWithoutSimRefusesSimEvidence(t *testing.T) {
	e := start(t)
	p := e.n.Policy
	p.AllowTEE = []tee.Kind{tee.KindSEVSNP}
	p.SEVSNP = &attest.SNPPolicy{Measurements: []string{strings.Repeat("ab", 48)}}
	c, err := client.New(e.n.URL, e.n.Token, clientPolicy(p), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Attest(context.Background())
	if !errors.Is(err, client.ErrVerification) || !errors.Is(err, attest.ErrSimNotAllowed) {
		t.Fatalf("got %v, want a verification error refusing sim", err)
	}
	p = e.n.Policy
	p.Measurements = []string{strings.Repeat("00", 32)}
	c, _ = client.New(e.n.URL, e.n.Token, clientPolicy(p), client.WithCallerKey(e.owner))
	if _, err = c.Attest(context.Background()); !errors.Is(err, attest.ErrMeasurement) {
		t.Fatalf("wrong pinned measurement: got %v, want ErrMeasurement", err)
	}
}

// TestNamespaces: an API key sees and runs only its own namespace's functions,
// and only a key with the admin scope can create keys.
func TestNamespaces(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	tok, err := e.c.CreateToken(ctx, "team-b", "b")
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.New(e.n.URL, tok, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	if fns, err := b.List(ctx); err != nil || len(fns) != 0 {
		t.Errorf("team-b lists %v (%v), want nothing", fns, err)
	}
	var ce *client.Error
	if _, err := b.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); !errors.As(err, &ce) || ce.Code != "not_found" {
		t.Errorf("team-b invoking default's echo: got %v, want not_found", err)
	}
	if _, err := b.CreateToken(ctx, "default", "x"); !errors.As(err, &ce) || ce.Code != string(apierr.InsufficientScope) {
		t.Errorf("a deploy key creating a key: got %v, want insufficient_scope", err)
	}
	// team-b deploys its own echo, with its own key and certificate.
	eb := &env{t: t, n: e.n, c: b, owner: e.owner, ns: "team-b"}
	fi := eb.deploy("echo", fixture(t, "echo.wasm"), nil)
	if fi.Namespace != "team-b" || fi.Version != 1 {
		t.Errorf("team-b deploy: got %s v%d", fi.Namespace, fi.Version)
	}
	res, err := b.Invoke(ctx, "echo", []byte("from b"), client.InvokeOptions{})
	if err != nil || string(res.Output) != "from b" || res.Receipt.Namespace != "team-b" {
		t.Errorf("team-b invoke: %v %+v", err, res)
	}
	// A client pinned to team-b refuses a certificate from another namespace,
	// as it would if a lying gateway routed it to default's echo.
	pinned, _ := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithNamespace("team-b"), client.WithCallerKey(e.owner))
	if _, err := pinned.Invoke(ctx, "echo", []byte("secret"), client.InvokeOptions{}); !errors.Is(err, client.ErrVerification) {
		t.Errorf("namespace pin: got %v, want a verification error", err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	owned, _ := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithOwnerKeys(stranger.Public().(ed25519.PublicKey)))
	if _, err := owned.Invoke(ctx, "echo", []byte("secret"), client.InvokeOptions{}); !errors.Is(err, client.ErrVerification) {
		t.Errorf("owner pin: got %v, want a verification error", err)
	}
}

// TestSignedForAnotherNamespace plays a host that takes what an owner
// signed for namespace default and offers it in team-b, another namespace
// of the same owner: a bundle (over the gateway, and registered directly
// over the bus) and a sequence definition (over the gateway, and written
// into team-b's store). The owner's signature covers the namespace, so
// each is refused.
func TestSignedForAnotherNamespace(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	echo := fixture(t, "echo.wasm")
	e.deploy("echo", echo, nil)
	tok, err := e.c.CreateToken(ctx, "team-b", "b")
	if err != nil {
		t.Fatal(err)
	}
	bc, err := client.New(e.n.URL, tok, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	b := &env{t: t, n: e.n, c: bc, owner: e.owner, ns: "team-b"}
	build := func(ns string) []byte {
		m := bundle.DefaultManifest("echo")
		m.Version, m.Namespace = 1, ns
		raw, err := bundle.Build(m, echo, e.owner)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	var ce *client.Error
	if _, err := bc.Deploy(ctx, "echo", build("default")); !errors.As(err, &ce) || ce.Code != string(apierr.BundleSignature) || !strings.Contains(ce.Message, `"default"`) {
		t.Errorf("a bundle signed for default, deployed in team-b: got %v, want bundle_signature", err)
	}
	if _, err := bc.Deploy(ctx, "echo", build("")); !errors.As(err, &ce) || ce.Code != string(apierr.BundleSignature) || !strings.Contains(ce.Message, "no namespace") {
		t.Errorf("a bundle signed for no namespace: got %v, want bundle_signature", err)
	}
	pinned, _ := client.New(e.n.URL, tok, clientPolicy(e.n.Policy), client.WithNamespace("team-b"), client.WithCallerKey(e.owner))
	if _, err := pinned.Deploy(ctx, "echo", build("default")); !errors.Is(err, bundle.ErrNamespace) {
		t.Errorf("a pinned client uploading a bundle for another namespace: got %v, want ErrNamespace", err)
	}
	// The host registers default's stored bundle in team-b itself.
	nc, err := e.n.Bus().Connect("evil-host")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var latest struct{ Record struct{ Object string } }
	raw, err := getRegistry(ctx, nc, "latest.default.echo")
	if err != nil || json.Unmarshal(raw, &latest) != nil || latest.Record.Object == "" {
		t.Fatalf("reading default's record: %v %s", err, raw)
	}
	err = bus.Call(ctx, nc, bus.SubjectRegister, wire.RegisterRequest{Namespace: "team-b", Name: "echo", Object: latest.Record.Object}, &wire.FunctionInfo{})
	if apierr.CodeOf(err) != apierr.BundleSignature {
		t.Errorf("registering default's bundle in team-b over the bus: got %v, want bundle_signature", err)
	}
	if fns, err := bc.List(ctx); err != nil || len(fns) != 0 {
		t.Fatalf("team-b lists %+v (%v), want nothing", fns, err)
	}

	// Sequences: the owner signs pipe for default; team-b has an echo of
	// the same owner.
	if fi := b.deploy("echo", echo, nil); fi.Namespace != "team-b" {
		t.Fatalf("team-b's own deploy: %+v", fi)
	}
	def, err := e.c.PutSequence(ctx, "pipe", []client.StepRef{{Name: "echo"}}, e.owner)
	if err != nil {
		t.Fatal(err)
	}
	body := mustJSON(map[string]any{"steps": def.Steps, "signer": def.Signer, "signature": def.Signature})
	if st, eb := e.send(http.MethodPut, "/v1/sequences/pipe", "application/json", tok, body); st != 422 || eb.Code != apierr.BundleSignature {
		t.Errorf("default's signed definition stored in team-b: %d %s, want 422 bundle_signature", st, eb.Code)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, bus.BucketSequences)
	if err != nil {
		t.Fatal(err)
	}
	moved := *def
	moved.Namespace = "team-b"
	if _, err := kv.Put(ctx, "s.team-b.pipe", mustJSON(moved)); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.InvokeSequence(ctx, "pipe", []byte("x")); !errors.Is(err, client.ErrVerification) {
		t.Errorf("default's definition served in team-b: got %v, want a verification error", err)
	}
	if res, err := e.c.InvokeSequence(ctx, "pipe", []byte("x")); err != nil || string(res.Output) != "x" {
		t.Errorf("the definition where it was signed: %v", err)
	}

	// A definition signed before signatures covered the namespace (the v1
	// message: name and steps only) runs for a client that pins no owner,
	// like an unsigned one, and not for one that pins owners.
	msg := append([]byte("cloister-sequence-v1\n"), byte(len("pipe")))
	msg = append(msg, "pipe"...)
	msg = binary.BigEndian.AppendUint16(msg, 1)
	msg = append(append(msg, byte(len("echo"))), "echo"...)
	msg = binary.BigEndian.AppendUint32(msg, 0)
	legacy := *def
	legacy.Signature = ed25519.Sign(e.owner, msg)
	if _, err := kv.Put(ctx, "s.default.pipe", mustJSON(legacy)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.InvokeSequence(ctx, "pipe", []byte("x")); err != nil {
		t.Errorf("a legacy signature, no owner pinned: %v", err)
	}
	owned, _ := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithOwnerKeys(e.owner.Public().(ed25519.PublicKey)))
	if _, err := owned.InvokeSequence(ctx, "pipe", []byte("x")); !errors.Is(err, client.ErrVerification) || !errors.Is(err, bundle.ErrSequenceUnbound) {
		t.Errorf("a legacy signature, owner pinned: got %v, want a verification error (unbound)", err)
	}
}

// TestIdenticalRedeployKeepsTheLiveBundle: uploading the same bundle bytes
// again fails with version_conflict and must not remove the stored bundle.
func TestIdenticalRedeployKeepsTheLiveBundle(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	m := bundle.DefaultManifest("echo")
	m.Version, m.Namespace = 1, "default"
	b, err := bundle.Build(m, fixture(t, "echo.wasm"), e.owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Deploy(ctx, "echo", b); err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if _, err := e.c.Deploy(ctx, "echo", b); !errors.As(err, &ce) || ce.Code != "version_conflict" {
		t.Fatalf("second identical deploy: got %v, want version_conflict", err)
	}
	if res, err := e.c.Invoke(ctx, "echo", []byte("ok"), client.InvokeOptions{}); err != nil || string(res.Output) != "ok" {
		t.Fatalf("invoke after the refused duplicate: %v", err)
	}
}

// TestConcurrencyLimit: a function that allows one invocation at a time
// refuses the others with concurrency_limit while it runs.
func TestConcurrencyLimit(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("slow", fixture(t, "infinite_loop.wasm"), func(m *bundle.Manifest) {
		m.Limits.Concurrency = 1
		m.Limits.TimeoutMS = 1000
	})
	codes := make(chan string, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.c.Invoke(ctx, "slow", nil, client.InvokeOptions{})
			var ce *client.Error
			if errors.As(err, &ce) {
				codes <- ce.Code
			} else {
				codes <- "unexpected: " + err.Error()
			}
		}()
	}
	wg.Wait()
	close(codes)
	got := map[string]int{}
	for c := range codes {
		got[c]++
	}
	if got["timeout"] < 1 || got["concurrency_limit"] < 1 || got["timeout"]+got["concurrency_limit"] != 4 {
		t.Errorf("got %v, want one or more timeouts and the rest concurrency_limit", got)
	}
}

// flipSignature re-encodes a bundle with one bit of its owner signature flipped.
func flipSignature(t *testing.T, b []byte) []byte {
	t.Helper()
	n := binary.BigEndian.Uint32(b[5:9])
	var h map[string]any
	if err := json.Unmarshal(b[9:9+n], &h); err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(h["signature"].(string))
	sig[7] ^= 1
	h["signature"] = sig
	hb, _ := json.Marshal(h)
	out := append(bytes.Clone(b[:5]), binary.BigEndian.AppendUint32(nil, uint32(len(hb)))...)
	out = append(out, hb...)
	return append(out, b[9+n:]...)
}

// TestReactorEndToEnd: a C reactor is initialised once at deploy, every
// invocation starts from its certified snapshot (the call counter is always
// 1), receipts carry the snapshot hash and the reset generation, and the
// pool's metrics are exported.
func TestReactorEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	// The C reactor compiles in milliseconds, also under the race detector
	// (the Go reactor is covered by the sandbox and end-to-end tests).
	wasm, err := os.ReadFile(filepath.Join("..", "..", "examples", "reactor-c", "reactor-c.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	e.deploy("words", wasm, func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor })
	fn, err := e.c.Function(ctx, "words", 0)
	if err != nil {
		t.Fatal(err)
	}
	if fn.SnapshotHash == "" {
		t.Fatal("the function certificate has no snapshot hash")
	}
	s, err := e.c.OpenSession(ctx, "words", 0)
	if err != nil {
		t.Fatal(err)
	}
	var gens []uint64
	for range 4 {
		res, err := s.Invoke(ctx, []byte("123456789"))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Output) != "cbf43926 calls=1" {
			t.Errorf("output %q: want \"cbf43926 calls=1\"", res.Output)
		}
		if res.Receipt.SnapshotHash != fn.SnapshotHash || res.Receipt.ResetGeneration == nil {
			t.Fatalf("receipt snapshot %q generation %v, want %q and a generation", res.Receipt.SnapshotHash, res.Receipt.ResetGeneration, fn.SnapshotHash)
		}
		gens = append(gens, *res.Receipt.ResetGeneration)
	}
	if gens[len(gens)-1] == 0 {
		t.Errorf("generations %v: the sandbox was never reused", gens)
	}
	body := scrape(t, e.n.URL, e.n.Token)
	if !bytes.Contains(body, []byte(`cloister_pool_events_total{event="reset",function="words"`)) {
		t.Errorf("/metrics has no pool reset counter for words")
	}
}

// TestNoCompiledCodeOnDisk: compiled native code stays in (TEE) memory. The
// data directory is untrusted; a host that could edit cached native code
// would run its own code inside the TEE, so nothing executable is kept there.
// After deploys and invocations, the directory holds only the bus store, the
// sealed coordinator state, the sim root key, the ledger (receipts) and the
// client files.
func TestNoCompiledCodeOnDisk(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	if _, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"nats": true, "coordinator": true, "sim": true, "ledger": true, "policy.json": true, "client.env": true, "wskprops": true,
		node.AdminKeyFile: true}
	entries, err := os.ReadDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		if !allowed[de.Name()] {
			t.Errorf("unexpected %s in the data directory", de.Name())
		}
	}
	filepath.WalkDir(filepath.Join(e.dir, "coordinator"), func(p string, d fs.DirEntry, err error) error {
		// state.sealed: the coordinator's secrets; state/anchor.log: the
		// sealed log of the state anchor (internal/state); node-id: the
		// coordinator's random id for the lease. The manifest history of
		// earlier versions is public JSON (signed manifests), not code.
		if err == nil && !d.IsDir() && d.Name() != "state.sealed" && d.Name() != "node-id" && p != filepath.Join(e.dir, "coordinator", "state", "anchor.log") &&
			!(filepath.Base(filepath.Dir(p)) == "manifests" && strings.HasSuffix(p, ".json")) {
			t.Errorf("unexpected %s in the coordinator directory", p)
		}
		return nil
	})
}

// TestSharedCompiledCode: the same code deployed by two tenants and as a new
// version is compiled once by the worker; later loads hit the cache.
func TestSharedCompiledCode(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	echo := fixture(t, "echo.wasm")
	e.deploy("a", echo, nil)
	e.deploy("a", echo, nil)
	tok, err := e.c.CreateToken(ctx, "other", "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := client.New(e.n.URL, tok, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner))
	(&env{t: t, n: e.n, c: b, owner: e.owner, ns: "other"}).deploy("b", echo, nil)
	for _, c := range []*client.Client{e.c, b} {
		name := map[*client.Client]string{e.c: "a", b: "b"}[c]
		if _, err := c.Invoke(ctx, name, []byte("x"), client.InvokeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.c.Invoke(ctx, "a", []byte("x"), client.InvokeOptions{Version: 1}); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, e.n.URL, e.n.Token)
	if !bytes.Contains(body, []byte("\ncloister_worker_compiles_total 1\n")) {
		t.Errorf("the worker compiled the same code more than once:\n%s", grepLines(body, "cloister_worker_comp"))
	}
}

func grepLines(b []byte, prefix string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReceiptsReachTheLedger: every invocation's receipt is appended to the
// transparency log; the client finds it and verifies its inclusion against a
// checkpoint signed by the attested coordinator; an audit of the log verifies
// every receipt; and the coordinator refuses to log a forged receipt.
func TestReceiptsReachTheLedger(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	var signed []*client.SignedReceipt
	for i := range 5 {
		res, err := e.c.Invoke(ctx, "echo", []byte(fmt.Sprint("in", i)), client.InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, res.SignedReceipt)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range signed {
		for {
			_, cp, err := e.c.VerifyInclusion(ctx, s)
			if err == nil {
				if cp.Size == 0 {
					t.Fatal("empty checkpoint")
				}
				break
			}
			if !errors.Is(err, client.ErrNotLogged) || time.Now().After(deadline) {
				t.Fatalf("inclusion: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r, err := e.c.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.c.Attest(ctx)
	v := receipt.NewVerifier(a.IdentityKey)
	var mu sync.Mutex
	seen := 0
	rep, err := r.Audit(ctx, 0, func(_ uint64, entry []byte) error {
		var s receipt.Signed
		if err := json.Unmarshal(entry, &s); err != nil {
			return err
		}
		_, err := v.Verify(&s, receipt.Expect{})
		mu.Lock()
		seen++
		mu.Unlock()
		return err
	}, nil)
	if err != nil || !rep.RootMatches || seen < len(signed) {
		t.Fatalf("audit: %v (root matches %v, %d entries checked)", err, rep != nil && rep.RootMatches, seen)
	}

	// A path that is not in the log gets the API's JSON error.
	hreq, _ := http.NewRequest("GET", e.n.URL+"/v1/ledger/log/tile/entries/x999/999", nil)
	hreq.Header.Set("Authorization", "Bearer "+e.n.Token)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	var body apierr.Error
	derr := json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || derr != nil || body.Code != apierr.NotFound || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("missing ledger path: %d %v %+v %q", resp.StatusCode, derr, body, resp.Header.Get("Cache-Control"))
	}

	// A host that tries to log a forged receipt is refused.
	nc, err := e.n.Bus().Connect("evil-host")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	forged := *signed[0]
	forged.Receipt = bytes.Replace(bytes.Clone(forged.Receipt), []byte(`"status":"ok"`), []byte(`"status":"xx"`), 1)
	fb, _ := forged.Entry()
	gb, _ := signed[0].Entry()
	req := wire.LedgerAppendRequest{WorkerCert: certs.Signed(signed[0].WorkerCert), Receipts: [][]byte{gb, fb}, Signature: make([]byte, 64)}
	batch, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.CallBytes(ctx, nc, bus.SubjectLedgerAppend, batch); apierrCode(err) != "forbidden" {
		t.Errorf("logging a batch with a forged receipt: got %v, want forbidden", err)
	}
	for _, bad := range [][]byte{nil, []byte("not a batch"), batch[:len(batch)-1]} {
		if _, err := bus.CallBytes(ctx, nc, bus.SubjectLedgerAppend, bad); apierrCode(err) != "bad_request" {
			t.Errorf("ledger append %q: got %v, want bad_request", bad, err)
		}
	}
}

func apierrCode(err error) string {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return string(ae.Code)
	}
	return ""
}
