package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/wire"
)

// fakeClock is a clock that tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// keyEnv is a gateway (no coordinator, no worker) with a platform admin key
// of namespace "default", as `up` writes it.
type keyEnv struct {
	t        *testing.T
	g        *Gateway
	st       *bus.Stores
	platform string
	clock    *fakeClock
	log      *syncBuffer
}

// syncBuffer is a bytes.Buffer that a logger and a test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newKeyEnv(t *testing.T) *keyEnv {
	t.Helper()
	nc, st, as, platform := testStores(t, "default")
	e := &keyEnv{t: t, st: st, platform: platform, clock: &fakeClock{t: time.Now().UTC()}, log: &syncBuffer{}}
	e.g = New(Config{Conn: nc, Stores: st, Async: as, Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.g.auth.now = e.clock.Now
	return e
}

// call sends a request with key (none if "") and returns the status, the
// error code (if any) and the body.
func (e *keyEnv) call(h http.Handler, method, path, key string, body any) (int, apierr.Code, []byte) {
	e.t.Helper()
	var rd *bytes.Reader
	if s, ok := body.(string); ok {
		rd = bytes.NewReader([]byte(s))
	} else {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	r := httptest.NewRequest(method, path, rd)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var ae apierr.Error
	if w.Code >= 300 {
		_ = json.Unmarshal(w.Body.Bytes(), &ae)
	}
	return w.Code, ae.Code, w.Body.Bytes()
}

// create makes a key with by; it fails the test unless that works.
func (e *keyEnv) create(by string, req wire.APIKeyRequest) wire.NewAPIKey {
	e.t.Helper()
	code, _, b := e.call(e.g, "POST", "/v1/keys", by, req)
	var k wire.NewAPIKey
	if code != http.StatusCreated || json.Unmarshal(b, &k) != nil || !strings.HasPrefix(k.Key, TokenPrefix) {
		e.t.Fatalf("creating %+v: %d %s", req, code, b)
	}
	return k
}

// TestKeyScopes: each scope reaches its routes and no further, each refusal
// with its own code.
func TestKeyScopes(t *testing.T) {
	e := newKeyEnv(t)
	inv := e.create(e.platform, wire.APIKeyRequest{Scope: "invoke", Name: "ci"})
	dep := e.create(e.platform, wire.APIKeyRequest{Scope: "deploy"})
	adm := e.create(e.platform, wire.APIKeyRequest{Scope: "admin"})
	if inv.Namespace != "default" || inv.Scope != "invoke" || inv.ID != wire.APIKeyID(inv.Key) || inv.Status != "active" || inv.Platform {
		t.Fatalf("created %+v", inv)
	}
	for _, c := range []struct {
		method, path, body string
		key                string
		want               apierr.Code // "" = admitted (any other answer)
	}{
		{"GET", "/v1/functions", "", inv.Key, ""},
		{"GET", "/v1/activations", "", inv.Key, ""},
		{"POST", "/v1/functions/f/invoke", "x", inv.Key, ""},
		{"POST", "/v1/functions/f", "x", inv.Key, apierr.InsufficientScope},
		{"DELETE", "/v1/functions/f", "", inv.Key, apierr.InsufficientScope},
		{"PUT", "/v1/triggers/t", "{}", inv.Key, apierr.InsufficientScope},
		{"PUT", "/v1/sequences/s", `{"steps":[{"name":"a"}]}`, inv.Key, apierr.InsufficientScope},
		{"PUT", "/api/v1/namespaces/_/actions/a", "{}", inv.Key, apierr.InsufficientScope},
		{"POST", "/v1/keys", `{"scope":"invoke"}`, inv.Key, apierr.InsufficientScope},
		{"POST", "/v1/functions/f", "x", dep.Key, ""},
		{"PUT", "/v1/triggers/t", "{}", dep.Key, ""},
		{"POST", "/v1/keys", `{"scope":"invoke"}`, dep.Key, apierr.InsufficientScope},
		{"GET", "/v1/keys", "", dep.Key, apierr.InsufficientScope},
		{"POST", "/v1/tokens", `{"namespace":"default"}`, dep.Key, apierr.InsufficientScope},
		{"POST", "/v1/keys", `{"scope":"invoke"}`, adm.Key, ""},
		{"POST", "/v1/keys", `{"scope":"admin","platform":true}`, adm.Key, apierr.Forbidden},
		{"GET", "/metrics", "", adm.Key, apierr.Forbidden},
		{"GET", "/v1/cluster", "", adm.Key, apierr.Forbidden},
		{"PUT", "/v1/manifest", `{}`, adm.Key, apierr.Forbidden},
		{"GET", "/metrics", "", "", apierr.Unauthorized},
		{"GET", "/metrics", "", e.platform, ""},
		{"GET", "/v1/functions", "", TokenPrefix + "unknown", apierr.Unauthorized},
	} {
		code, got, body := e.call(e.g, c.method, c.path, c.key, c.body)
		switch {
		case c.want == "" && (got == apierr.InsufficientScope || got == apierr.Forbidden || got == apierr.Unauthorized):
			t.Errorf("%s %s with %s: got %d %s, want it admitted", c.method, c.path, c.key[:8], code, body)
		case c.want != "" && got != c.want:
			t.Errorf("%s %s: got %d %q, want %s", c.method, c.path, code, got, c.want)
		}
	}
	// An invoke key made a platform key reads what platform keys read.
	mon := e.create(e.platform, wire.APIKeyRequest{Scope: "invoke", Platform: true, Name: "prometheus"})
	if code, _, b := e.call(e.g, "GET", "/metrics", mon.Key, ""); code != http.StatusOK || !bytes.Contains(b, []byte("cloister_http_requests_total")) {
		t.Errorf("/metrics with a platform invoke key: %d", code)
	}
	if _, got, _ := e.call(e.g, "POST", "/v1/keys", mon.Key, `{"scope":"invoke"}`); got != apierr.InsufficientScope {
		t.Errorf("a platform invoke key creating a key: %q, want insufficient_scope", got)
	}
	code, _, b := e.call(e.g, "GET", "/v1/whoami", inv.Key, "")
	var who struct {
		Namespace, Scope, ID string
		Admin, Platform      bool
	}
	if json.Unmarshal(b, &who) != nil || code != 200 || who.Scope != "invoke" || who.ID != inv.ID || who.Admin || who.Platform {
		t.Errorf("whoami: %d %s", code, b)
	}
}

// TestKeyExpiryAndRevocation: an expired key and a revoked key are refused
// with their own codes, and the gateway keeps serving other keys.
func TestKeyExpiryAndRevocation(t *testing.T) {
	e := newKeyEnv(t)
	short := e.create(e.platform, wire.APIKeyRequest{Scope: "invoke", ExpiresIn: "1h"})
	if !short.Expires.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("expires %v, want now + 1h", short.Expires)
	}
	if code, _, _ := e.call(e.g, "GET", "/v1/functions", short.Key, ""); code != 200 {
		t.Fatalf("a fresh key: %d", code)
	}
	e.clock.Add(time.Hour)
	if _, got, body := e.call(e.g, "GET", "/v1/functions", short.Key, ""); got != apierr.KeyExpired || !bytes.Contains(body, []byte(short.ID)) {
		t.Errorf("an expired key: %q %s, want key_expired naming its id", got, body)
	}
	doomed := e.create(e.platform, wire.APIKeyRequest{Scope: "deploy"})
	if code, _, _ := e.call(e.g, "GET", "/v1/functions", doomed.Key, ""); code != 200 {
		t.Fatalf("a fresh key: %d", code)
	}
	code, _, b := e.call(e.g, "DELETE", "/v1/keys/"+doomed.ID, e.platform, "")
	var rk wire.APIKey
	if code != 200 || json.Unmarshal(b, &rk) != nil || rk.Status != "revoked" || rk.Revoked.IsZero() {
		t.Fatalf("revoke: %d %s", code, b)
	}
	// At once on the gateway that revoked it, though it was cached.
	if _, got, _ := e.call(e.g, "GET", "/v1/functions", doomed.Key, ""); got != apierr.KeyRevoked {
		t.Errorf("a revoked key: %q, want key_revoked", got)
	}
	// OpenWhisk's basic auth says the same.
	r := httptest.NewRequest("GET", "/api/v1/namespaces/_/actions", nil)
	r.SetBasicAuth(OpenWhiskUUID(doomed.Key), doomed.Key)
	w := httptest.NewRecorder()
	e.g.ServeHTTP(w, r)
	if !strings.Contains(w.Body.String(), string(apierr.KeyRevoked)) {
		t.Errorf("OpenWhisk auth with a revoked key: %d %s", w.Code, w.Body)
	}
	// Revoking again changes nothing.
	code, _, b = e.call(e.g, "DELETE", "/v1/keys/"+doomed.ID, e.platform, "")
	var again wire.APIKey
	if code != 200 || json.Unmarshal(b, &again) != nil || !again.Revoked.Equal(rk.Revoked) {
		t.Errorf("revoking twice: %d %s", code, b)
	}
	past, err := IssueToken(context.Background(), e.st.Auth, Principal{Namespace: "default", Scope: ScopeAdmin, Platform: true, Expires: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if TokenValid(context.Background(), e.st.Auth, doomed.Key) || TokenValid(context.Background(), e.st.Auth, past) || !TokenValid(context.Background(), e.st.Auth, e.platform) {
		t.Error("TokenValid accepts a revoked or expired key (up would keep it in client.env), or refuses a valid one")
	}
	// The node keeps serving.
	if code, _, _ := e.call(e.g, "GET", "/v1/functions", e.platform, ""); code != 200 {
		t.Errorf("the platform key after the refusals: %d", code)
	}
	code, _, b = e.call(e.g, "GET", "/v1/keys", e.platform, "")
	var l struct{ Keys []wire.APIKey }
	if code != 200 || json.Unmarshal(b, &l) != nil || len(l.Keys) != 4 {
		t.Fatalf("list: %d %s", code, b)
	}
	status := map[string]string{}
	for _, k := range l.Keys {
		status[k.ID] = k.Status
	}
	if status[short.ID] != "expired" || status[doomed.ID] != "revoked" || status[wire.APIKeyID(e.platform)] != "active" {
		t.Errorf("list statuses %v", status)
	}
	for _, k := range []string{e.platform, short.Key, doomed.Key} {
		if bytes.Contains(b, []byte(k)) || strings.Contains(e.log.String(), k) {
			t.Errorf("a key appears in the listing or the log")
		}
	}
}

// TestNamespaceAdmin: an admin key of one namespace manages that
// namespace's keys only; a platform admin key manages every namespace's.
func TestNamespaceAdmin(t *testing.T) {
	e := newKeyEnv(t)
	a := e.create(e.platform, wire.APIKeyRequest{Namespace: "team-a", Scope: "admin"})
	b := e.create(e.platform, wire.APIKeyRequest{Namespace: "team-b", Scope: "invoke"})
	if a.Namespace != "team-a" {
		t.Fatalf("created %+v", a)
	}
	mine := e.create(a.Key, wire.APIKeyRequest{Scope: "invoke"})
	if mine.Namespace != "team-a" {
		t.Errorf("a namespace admin's key is of %q, want team-a", mine.Namespace)
	}
	for _, c := range []struct {
		method, path, body string
		want               apierr.Code
	}{
		{"POST", "/v1/keys", `{"scope":"invoke","namespace":"team-b"}`, apierr.Forbidden},
		{"POST", "/v1/keys", `{"scope":"admin","namespace":"default"}`, apierr.Forbidden},
		{"POST", "/v1/tokens", `{"namespace":"team-b"}`, apierr.Forbidden},
		{"GET", "/v1/keys?namespace=team-b", "", apierr.Forbidden},
		{"DELETE", "/v1/keys/" + b.ID, "", apierr.NotFound},
		{"DELETE", "/v1/keys/" + wire.APIKeyID(e.platform), "", apierr.NotFound},
		{"DELETE", "/v1/keys/XYZ", "", apierr.BadRequest},
	} {
		if _, got, body := e.call(e.g, c.method, c.path, a.Key, c.body); got != c.want {
			t.Errorf("team-a admin: %s %s: got %q %s, want %s", c.method, c.path, got, body, c.want)
		}
	}
	if _, got, _ := e.call(e.g, "GET", "/v1/functions", b.Key, ""); got != "" {
		t.Errorf("team-b's key after team-a's attempts: %q", got)
	}
	_, _, body := e.call(e.g, "GET", "/v1/keys", a.Key, "")
	var l struct{ Keys []wire.APIKey }
	json.Unmarshal(body, &l)
	if len(l.Keys) != 2 {
		t.Errorf("team-a lists %d keys, want its 2: %s", len(l.Keys), body)
	}
	for _, k := range l.Keys {
		if k.Namespace != "team-a" {
			t.Errorf("team-a lists a key of %s", k.Namespace)
		}
	}
	if code, _, _ := e.call(e.g, "DELETE", "/v1/keys/"+mine.ID, a.Key, ""); code != 200 {
		t.Errorf("team-a revoking its own key: %d", code)
	}
	// A platform key in team-a's namespace is out of its admin's reach.
	pa := e.create(e.platform, wire.APIKeyRequest{Namespace: "team-a", Scope: "invoke", Platform: true})
	if _, got, _ := e.call(e.g, "DELETE", "/v1/keys/"+pa.ID, a.Key, ""); got != apierr.Forbidden {
		t.Errorf("team-a revoking a platform key: %q, want forbidden", got)
	}
	// The platform admin key reaches every namespace.
	if code, _, _ := e.call(e.g, "DELETE", "/v1/keys/"+b.ID, e.platform, ""); code != 200 {
		t.Errorf("platform admin revoking team-b's key: %d", code)
	}
	_, _, body = e.call(e.g, "GET", "/v1/keys", e.platform, "")
	l.Keys = nil
	json.Unmarshal(body, &l)
	if len(l.Keys) != 5 {
		t.Errorf("the platform admin lists %d keys, want 5", len(l.Keys))
	}
}

// TestRevocationReachesEveryGateway: a key revoked through one gateway is
// refused by another, which had it cached, within authCacheTTL, and
// authCacheTTL is well within the 10 s that issue 15 allows. The clocks
// are the tests'; the second part runs on real time.
func TestRevocationReachesEveryGateway(t *testing.T) {
	if authCacheTTL > 5*time.Second {
		t.Fatalf("authCacheTTL is %v: a revocation must reach every gateway within 10 s", authCacheTTL)
	}
	e := newKeyEnv(t)
	other := New(Config{Conn: e.g.cfg.Conn, Stores: e.st, Logger: quiet})
	other.auth.now = e.clock.Now
	k := e.create(e.platform, wire.APIKeyRequest{Scope: "invoke"})
	if code, _, _ := e.call(other, "GET", "/v1/functions", k.Key, ""); code != 200 {
		t.Fatalf("the other gateway: %d", code)
	}
	if code, _, _ := e.call(e.g, "DELETE", "/v1/keys/"+k.ID, e.platform, ""); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	e.clock.Add(authCacheTTL)
	if _, got, _ := e.call(other, "GET", "/v1/functions", k.Key, ""); got != apierr.KeyRevoked {
		t.Errorf("the other gateway %v after the revocation: %q, want key_revoked", authCacheTTL, got)
	}

	// Real time: two gateways with their own caches, as in a cluster.
	g1 := New(Config{Conn: e.g.cfg.Conn, Stores: e.st, Logger: quiet})
	g2 := New(Config{Conn: e.g.cfg.Conn, Stores: e.st, Logger: quiet})
	k2 := e.create(e.platform, wire.APIKeyRequest{Scope: "invoke"})
	if code, _, _ := e.call(g2, "GET", "/v1/functions", k2.Key, ""); code != 200 {
		t.Fatalf("g2: %d", code)
	}
	if code, _, _ := e.call(g1, "DELETE", "/v1/keys/"+k2.ID, e.platform, ""); code != 200 {
		t.Fatalf("revoke on g1: %d", code)
	}
	start := time.Now()
	for {
		_, got, _ := e.call(g2, "GET", "/v1/functions", k2.Key, "")
		if got == apierr.KeyRevoked {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("g2 still accepts the key 10 s after g1 revoked it (%q)", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("g2 refused the key %v after the revocation", time.Since(start).Round(time.Millisecond))
}

// TestKeysStoredHashed: the auth bucket holds the key's SHA-256 and
// nothing of the key, and the log never names it.
func TestKeysStoredHashed(t *testing.T) {
	e := newKeyEnv(t)
	k := e.create(e.platform, wire.APIKeyRequest{Scope: "admin", Name: "ops"})
	e.call(e.g, "GET", "/v1/functions", k.Key, "")
	e.call(e.g, "DELETE", "/v1/keys/"+k.ID, e.platform, "")
	e.call(e.g, "GET", "/v1/functions", k.Key, "")
	ctx := context.Background()
	w, err := e.st.Auth.WatchAll(ctx, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	n := 0
	for en := range w.Updates() {
		if en == nil {
			break
		}
		n++
		if strings.Contains(en.Key(), k.Key) || bytes.Contains(en.Value(), []byte(k.Key)) || bytes.Contains(en.Value(), []byte(k.Key[len(TokenPrefix):])) {
			t.Errorf("the auth bucket holds the key under %s", en.Key())
		}
	}
	if n < 2 || e.log.String() == "" {
		t.Fatalf("%d records, log %q", n, e.log)
	}
	if strings.Contains(e.log.String(), k.Key[len(TokenPrefix):]) {
		t.Errorf("the log holds the key:\n%s", e.log)
	}
	if !strings.Contains(e.log.String(), k.ID) {
		t.Errorf("the log does not name the key's id:\n%s", e.log)
	}
}

// TestLegacyKeyRecords: records stored before scopes keep the powers they
// had: the admin key of client.env is a platform admin key, any other
// key a deploy key of its namespace.
func TestLegacyKeyRecords(t *testing.T) {
	e := newKeyEnv(t)
	ctx := context.Background()
	legacy := func(rec string) string {
		tok := TokenPrefix + "legacy-" + strings.Repeat("x", len(rec)%7) + rec[:5]
		if _, err := e.st.Auth.Create(ctx, tokenKey(tok), []byte(rec)); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := legacy(`{"namespace":"default","admin":true,"name":"admin (cloister up)","created":"2026-01-01T00:00:00Z"}`)
	plain := legacy(`{"namespace":"team","name":"ci","created":"2026-01-01T00:00:00Z"}`)
	if code, _, b := e.call(e.g, "POST", "/v1/keys", admin, `{"scope":"invoke","namespace":"other"}`); code != http.StatusCreated {
		t.Errorf("a legacy admin key minting for another namespace: %d %s", code, b)
	}
	if _, got, _ := e.call(e.g, "POST", "/v1/functions/f", plain, "x"); got == apierr.InsufficientScope {
		t.Error("a legacy key can no longer deploy")
	}
	if _, got, _ := e.call(e.g, "POST", "/v1/keys", plain, `{"scope":"invoke"}`); got != apierr.InsufficientScope {
		t.Errorf("a legacy non-admin key creating a key: %q", got)
	}
	_, _, b := e.call(e.g, "GET", "/v1/keys?namespace=team", e.platform, "")
	if !bytes.Contains(b, []byte(`"scope":"deploy"`)) || !bytes.Contains(b, []byte(wire.APIKeyID(plain))) {
		t.Errorf("a legacy key's listing: %s", b)
	}
	if code, _, _ := e.call(e.g, "DELETE", "/v1/keys/"+wire.APIKeyID(plain), e.platform, ""); code != 200 {
		t.Errorf("revoking a legacy key: %d", code)
	}
	if _, got, _ := e.call(e.g, "GET", "/v1/functions", plain, ""); got != apierr.KeyRevoked {
		t.Errorf("a revoked legacy key: %q", got)
	}
}

func TestParseScope(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Scope
		ok   bool
	}{{"invoke", ScopeInvoke, true}, {"deploy", ScopeDeploy, true}, {"admin", ScopeAdmin, true}, {"", "", false}, {"Admin", "", false}, {"root", "", false}} {
		got, err := ParseScope(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseScope(%q) = %q, %v; want %q, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
	if !(ScopeAdmin.rank() > ScopeDeploy.rank() && ScopeDeploy.rank() > ScopeInvoke.rank() && ScopeInvoke.rank() > 0) {
		t.Error("scopes are not ordered invoke < deploy < admin")
	}
}
