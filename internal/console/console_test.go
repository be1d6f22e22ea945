package console

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/node"
)

// The tests run the console against an embedded single-process Cloister
// (what `cloister up` starts, sim TEE), shared by the package's tests.
// Its gateway sits behind a proxy that flips a byte in invocation
// receipts while tamper is set.

var (
	nodeOnce sync.Once
	testNode *node.Node
	nodeErr  error
	tamper   atomic.Bool
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testNode != nil {
		testNode.Close() // the tests are over
	}
	os.Exit(code)
}

// sharedNode starts the node on first use.
func sharedNode(t *testing.T) *node.Node {
	t.Helper()
	nodeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cloister-console-test-")
		if err != nil {
			nodeErr = err
			return
		}
		testNode, nodeErr = node.Start(context.Background(), node.Options{Dir: dir, Addr: "127.0.0.1:0",
			Logger: slog.New(slog.DiscardHandler), Wrap: tamperReceipts})
	})
	if nodeErr != nil {
		t.Fatalf("starting a node: %v", nodeErr)
	}
	return testNode
}

// tamperReceipts wraps the gateway: while tamper is set, it flips a byte
// of the receipt of every successful invocation, as a lying gateway would.
func tamperReceipts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !tamper.Load() || r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/invoke") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var resp map[string]json.RawMessage
		if rec.Code == http.StatusOK && json.Unmarshal(body, &resp) == nil && resp["receipt"] != nil {
			var sr struct {
				Receipt   []byte          `json:"receipt"`
				Signature json.RawMessage `json:"sig"`
				Cert      json.RawMessage `json:"worker_cert"`
			}
			if json.Unmarshal(resp["receipt"], &sr) == nil && len(sr.Receipt) > 10 {
				sr.Receipt[len(sr.Receipt)/2] ^= 0x01
				resp["receipt"], _ = json.Marshal(sr)
				body, _ = json.Marshal(resp)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

type testConsole struct {
	*httptest.Server
	token string
	owner ed25519.PrivateKey
	pol   client.Policy
}

// newConsole starts a console of the shared node, whose client signs with
// a new owner key.
func newConsole(t *testing.T) *testConsole {
	t.Helper()
	n := sharedNode(t)
	pol, err := client.LoadPolicy(n.PolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(n.URL, n.Token, pol, client.WithCallerKey(owner))
	if err != nil {
		t.Fatal(err)
	}
	token, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tc := &testConsole{token: token, owner: owner, pol: pol}
	tc.Server = httptest.NewUnstartedServer(nil)
	s, err := New(Config{Client: c, Policy: pol, Gateways: []string{n.URL}, OwnerKey: owner, Token: token,
		AllowedHosts: LoopbackHosts(tc.Listener.Addr().String()), PendingDir: t.TempDir(), CheckpointDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tc.Config.Handler = s
	tc.Start()
	t.Cleanup(tc.Close)
	return tc
}

// do sends a request with the token (unless hdr sets another) and decodes
// a JSON answer into out (if not nil).
func (tc *testConsole) do(t *testing.T, method, path string, body io.Reader, hdr http.Header, out any) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, tc.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(TokenHeader, tc.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := tc.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: HTTP %d, not JSON: %v: %s", method, path, resp.StatusCode, err, b)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func jsonBody(t *testing.T, v any) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the browser's JSON.stringify
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestToken(t *testing.T) {
	tc := newConsole(t)
	wrong := strings.Repeat("0", len(tc.token))
	for _, tt := range []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"none", http.Header{TokenHeader: {""}}, http.StatusUnauthorized},
		{"wrong", http.Header{TokenHeader: {wrong}}, http.StatusUnauthorized},
		{"prefix", http.Header{TokenHeader: {tc.token[:len(tc.token)-1]}}, http.StatusUnauthorized},
		{"longer", http.Header{TokenHeader: {tc.token + "0"}}, http.StatusUnauthorized},
		{"wrong bearer", http.Header{TokenHeader: {""}, "Authorization": {"Bearer " + wrong}}, http.StatusUnauthorized},
		{"header", nil, http.StatusOK},
		{"bearer", http.Header{TokenHeader: {""}, "Authorization": {"Bearer " + tc.token}}, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body map[string]any
			resp := tc.do(t, http.MethodGet, "/api/overview", nil, tt.hdr, &body)
			if resp.StatusCode != tt.want {
				t.Fatalf("got HTTP %d, want %d: %v", resp.StatusCode, tt.want, body)
			}
			if tt.want == http.StatusUnauthorized && body["attestation"] != nil {
				t.Fatalf("a refused request got the overview: %v", body)
			}
		})
	}
	// A query-string token is not accepted by the API: only the page's
	// first load carries it, and the page moves it to a header.
	resp, err := tc.Client().Get(tc.URL + "/api/overview?token=" + tc.token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token in the query: got HTTP %d, want 401", resp.StatusCode)
	}
}

func TestTokenIsRandom(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || len(a) != 64 {
		t.Fatalf("tokens %q and %q: want two different 64-digit tokens", a, b)
	}
	if _, err := New(Config{Client: &client.Client{}, Token: "short"}); err == nil {
		t.Fatal("New accepted a short token")
	}
}

func TestCrossOrigin(t *testing.T) {
	tc := newConsole(t)
	invoke := func() io.Reader { return jsonBody(t, InvokeRequest{Name: "nope", Params: json.RawMessage(`{}`)}) }
	for _, tt := range []struct {
		name   string
		method string
		hdr    http.Header
		want   int
	}{
		{"other origin", http.MethodPost, http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"other port", http.MethodPost, http.Header{"Origin": {"http://127.0.0.1:1"}}, http.StatusForbidden},
		{"null origin", http.MethodPost, http.Header{"Origin": {"null"}}, http.StatusForbidden},
		{"cross-site", http.MethodPost, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"same-site", http.MethodPost, http.Header{"Sec-Fetch-Site": {"same-site"}}, http.StatusForbidden},
		{"delete cross-site", http.MethodDelete, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"same origin", http.MethodPost, http.Header{"Origin": {tc.URL}, "Sec-Fetch-Site": {"same-origin"}}, http.StatusNotFound},
		{"no browser headers", http.MethodPost, nil, http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body struct{ Error apiError }
			path, b := "/api/invoke", invoke()
			if tt.method == http.MethodDelete {
				path, b = "/api/functions/nope", nil
			}
			resp := tc.do(t, tt.method, path, b, tt.hdr, &body)
			if resp.StatusCode != tt.want {
				t.Fatalf("got HTTP %d (%v), want %d", resp.StatusCode, body.Error, tt.want)
			}
		})
	}
}

func TestHostChecked(t *testing.T) {
	tc := newConsole(t)
	req, err := http.NewRequest(http.MethodGet, tc.URL+"/api/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "rebound.evil.example"
	req.Header.Set(TokenHeader, tc.token)
	resp, err := tc.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Host %s: got HTTP %d, want 403", req.Host, resp.StatusCode)
	}
}

func TestLoopbackHosts(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want []string
	}{
		{"127.0.0.1:8090", []string{"127.0.0.1:8090", "[::1]:8090", "localhost:8090"}},
		{"[::1]:9", []string{"127.0.0.1:9", "[::1]:9", "localhost:9"}},
		{"0.0.0.0:8090", nil},
		{"10.0.0.1:8090", nil},
		{"nonsense", nil},
	} {
		if got := LoopbackHosts(tt.addr); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("LoopbackHosts(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestAssetsAndCSP(t *testing.T) {
	tc := newConsole(t)
	for _, tt := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/app.js", "javascript", "textContent"},
		{"/style.css", "text/css", "@media"},
	} {
		resp, err := tc.Client().Get(tc.URL + tt.path) // the assets need no token: they hold no data
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d", tt.path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
			t.Errorf("GET %s: CSP %q, want %q", tt.path, got, ContentSecurityPolicy)
		}
		if got := resp.Header.Get("Content-Type"); !strings.Contains(got, tt.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tt.path, got, tt.ctype)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: missing nosniff or frame denial: %v", tt.path, resp.Header)
		}
		if !strings.Contains(string(b), tt.contains) {
			t.Errorf("GET %s: no %q in the answer", tt.path, tt.contains)
		}
	}
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, want) {
			t.Errorf("CSP %q lacks %q", ContentSecurityPolicy, want)
		}
	}
	if strings.Contains(ContentSecurityPolicy, "unsafe") {
		t.Errorf("CSP %q allows something unsafe", ContentSecurityPolicy)
	}
	// An API error is refused as JSON, with the same headers.
	resp := tc.do(t, http.MethodGet, "/api/nothing", nil, nil, nil)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /api/nothing: HTTP %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
}

// TestAssetsInsertTextOnly checks the front end statically: no inline
// script or style, no handler attributes, and nothing that parses HTML.
func TestAssetsInsertTextOnly(t *testing.T) {
	files, err := filepath.Glob("web/*")
	if err != nil || len(files) < 3 {
		t.Fatalf("assets: %v %v", files, err)
	}
	forbidden := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|setAttribute\("on|\son[a-z]+=|style=|javascript:|https?://`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := forbidden.Find(b); m != nil {
			t.Errorf("%s holds %q", f, m)
		}
		if strings.HasSuffix(f, ".html") {
			for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(b, -1) {
				if !bytes.Contains(tag, []byte(" src=")) {
					t.Errorf("%s: inline script %s", f, tag)
				}
			}
			if bytes.Contains(b, []byte("<style")) {
				t.Errorf("%s: inline style", f)
			}
		}
	}
}

func TestOverview(t *testing.T) {
	tc := newConsole(t)
	var o Overview
	if resp := tc.do(t, http.MethodGet, "/api/overview", nil, nil, &o); resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	a := o.Attestation
	if !a.OK || a.Error != "" || len(a.Checks) == 0 {
		t.Fatalf("attestation not verified: %+v", a)
	}
	if !a.Sim || a.TEE != "sim" || a.Warning == "" || !o.PolicyAllowsSim {
		t.Errorf("sim: got sim=%v tee=%q warning=%q policy allows sim=%v, want a loud sim", a.Sim, a.TEE, a.Warning, o.PolicyAllowsSim)
	}
	if a.ManifestHash != tc.pol.ManifestHash || a.Measurement == "" || a.IdentityKey == "" {
		t.Errorf("got manifest %q measurement %q, want the pinned manifest %q", a.ManifestHash, a.Measurement, tc.pol.ManifestHash)
	}
	if len(o.Workers) == 0 || o.Workers[0].NotAfter.Before(time.Now()) || o.Workers[0].Expired {
		t.Errorf("workers: %+v, want an admitted worker with a valid certificate", o.Workers)
	}
	if len(o.Health) != 1 || !o.Health[0].Live || !o.Health[0].Ready {
		t.Errorf("health: %+v, want one live and ready gateway", o.Health)
	}
	if !o.CanDeploy || o.Caller == "" {
		t.Errorf("can deploy %v, caller %q", o.CanDeploy, o.Caller)
	}
}

// TestOverviewBadPolicy checks that an attestation that does not verify
// against the user's policy is reported as such.
func TestOverviewBadPolicy(t *testing.T) {
	tc := newConsole(t)
	n := sharedNode(t)
	pol := tc.pol
	pol.ManifestHash = strings.Repeat("ab", 32) // not the coordinator's
	c, err := client.New(n.URL, n.Token, pol)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Client: c, Policy: pol, Token: tc.token})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/overview", nil)
	req.Header.Set(TokenHeader, tc.token)
	s.ServeHTTP(rec, req)
	var o Overview
	if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil {
		t.Fatal(err)
	}
	if o.Attestation.OK || !strings.Contains(o.Attestation.Error, "verification failed") || o.Attestation.TEE != "" {
		t.Fatalf("got %+v, want a failed verification and no attested fields", o.Attestation)
	}
}

// deployEcho deploys the echo module through the console's API.
func deployEcho(t *testing.T, tc *testConsole, name string) FunctionView {
	t.Helper()
	module, err := os.ReadFile(filepath.Join("..", "sandbox", "testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(module)
	mw.WriteField("manifest", "")
	mw.Close()
	var out struct {
		Function FunctionView
		Error    apiError
	}
	resp := tc.do(t, http.MethodPost, "/api/functions/"+name, &buf, http.Header{"Content-Type": {mw.FormDataContentType()}, "Origin": {tc.URL}}, &out)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deploy: HTTP %d: %+v", resp.StatusCode, out.Error)
	}
	return out.Function
}

func TestDeployInvokeVerified(t *testing.T) {
	tc := newConsole(t)
	f := deployEcho(t, tc, "echo-console")
	if !f.Certificate.OK || f.Name != "echo-console" || f.Version != 1 || f.CodeHash == "" || f.Confidential != "required" {
		t.Fatalf("deployed %+v", f)
	}
	if want := fmt.Sprintf("%x", tc.owner.Public()); f.OwnerKey != want {
		t.Errorf("owner key %s, want %s", f.OwnerKey, want)
	}

	var list struct{ Functions []FunctionView }
	tc.do(t, http.MethodGet, "/api/functions", nil, nil, &list)
	found := false
	for _, g := range list.Functions {
		if g.Name == f.Name {
			found = true
			if !g.Certificate.OK || g.CodeHash != f.CodeHash || g.Runtime != "wasm" || g.SnapshotHash == "" || g.Suite == "" {
				t.Errorf("listed %+v", g)
			}
		}
	}
	if !found {
		t.Fatalf("%s not in the list %+v", f.Name, list.Functions)
	}

	var one struct{ Function FunctionView }
	if tc.do(t, http.MethodGet, "/api/functions/"+f.Name, nil, nil, &one); !one.Function.Certificate.OK || one.Function.Limits == nil || one.Function.Limits.TimeoutMS == 0 {
		t.Fatalf("one function: %+v", one.Function)
	}

	// Output with HTML in it comes back as a JSON string: the page
	// shows it with textContent.
	params := `{"html":"<img src=x onerror=alert(1)>"}`
	var res ResultView
	resp := tc.do(t, http.MethodPost, "/api/invoke", jsonBody(t, InvokeRequest{Name: f.Name, Params: json.RawMessage(params), Logs: true}), nil, &res)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke: HTTP %d: %+v", resp.StatusCode, res)
	}
	if !res.OK || !res.Verification.OK || len(res.Verification.Checks) == 0 {
		t.Fatalf("invoke: got %+v, want a verified result", res)
	}
	if res.Output != params {
		t.Errorf("output %q, want %q", res.Output, params)
	}
	r := res.Receipt
	if r == nil || r.Status != "ok" || r.Function != f.Name || r.FunctionVersion != 1 || r.CodeHash != f.CodeHash || r.Mode != "hpke" || r.TEE.Kind != "sim" {
		t.Fatalf("receipt %+v", r)
	}
	if res.Signed == nil || res.Worker == nil || res.Logs == nil {
		t.Fatalf("signed receipt %v, worker %v, logs %v: want all three", res.Signed != nil, res.Worker, res.Logs)
	}
	if raw := resp.Body; raw != nil {
		b, _ := io.ReadAll(raw)
		if bytes.Contains(b, []byte("<img")) {
			t.Errorf("the answer holds raw HTML: %s", b)
		}
	}

	// The receipt is proved to be in the ledger, and the bill counts it.
	var inc struct {
		Included     bool
		Index        uint64
		Checkpoint   *CheckpointView
		Verification Verification
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp := tc.do(t, http.MethodPost, "/api/ledger/inclusion", jsonBody(t, InclusionRequest{Receipt: res.Signed}), nil, &inc)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("inclusion: HTTP %d", resp.StatusCode)
		}
		if inc.Included || time.Now().After(deadline) {
			break
		}
	}
	if !inc.Included || inc.Checkpoint == nil || inc.Checkpoint.Size <= inc.Index || !inc.Verification.OK {
		t.Fatalf("inclusion: %+v", inc)
	}
	var led struct {
		Checkpoint   *CheckpointView
		Verification Verification
	}
	if resp := tc.do(t, http.MethodGet, "/api/ledger", nil, nil, &led); resp.StatusCode != http.StatusOK || !led.Verification.OK || led.Checkpoint == nil || led.Checkpoint.Size == 0 {
		t.Fatalf("ledger: HTTP %d %+v", resp.StatusCode, led)
	}
	// Again: now with a consistency proof against the stored checkpoint.
	if tc.do(t, http.MethodGet, "/api/ledger", nil, nil, &led); !led.Verification.OK || !strings.Contains(strings.Join(led.Verification.Checks, " "), "consistency") {
		t.Fatalf("ledger, second look: %+v", led)
	}
	var bill BillReport
	if resp := tc.do(t, http.MethodGet, "/api/ledger/bill", nil, nil, &bill); resp.StatusCode != http.StatusOK || !bill.Verification.OK {
		t.Fatalf("bill: HTTP %d %+v", resp.StatusCode, bill)
	}
	var line *uint64
	for _, l := range bill.Bill {
		if l.Function == f.Name {
			line = &l.Invocations
		}
	}
	if line == nil || *line < 1 {
		t.Fatalf("bill %+v: want a line for %s", bill.Bill, f.Name)
	}
}

func TestFunctionFailureIsAnswer(t *testing.T) {
	tc := newConsole(t)
	var res map[string]any
	resp := tc.do(t, http.MethodPost, "/api/invoke", jsonBody(t, InvokeRequest{Name: "no-such-function", Params: json.RawMessage(`{}`)}), nil, &res)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown function: HTTP %d %v, want 404", resp.StatusCode, res)
	}
	for _, tt := range []struct{ body, want string }{
		{`{"name":"x","params":{`, "reading the request"},
		{`{"name":"BAD NAME","params":{}}`, "invalid function name"},
		{`{"name":"x","params":{},"extra":1}`, "unknown field"},
	} {
		var e struct{ Error apiError }
		resp := tc.do(t, http.MethodPost, "/api/invoke", strings.NewReader(tt.body), nil, &e)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error.Message, tt.want) {
			t.Errorf("%s: HTTP %d %q, want 400 %q", tt.body, resp.StatusCode, e.Error.Message, tt.want)
		}
	}
	// A form post (what another origin could send without a preflight) is refused.
	resp = tc.do(t, http.MethodPost, "/api/invoke", strings.NewReader("name=x"), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, nil)
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form post: HTTP %d, want 415", resp.StatusCode)
	}
}

func TestTamperedReceiptIsVerificationFailure(t *testing.T) {
	tc := newConsole(t)
	f := deployEcho(t, tc, "echo-tamper")
	tamper.Store(true)
	defer tamper.Store(false)
	var res struct {
		OK           bool
		Output       string
		Receipt      *client.Receipt
		Error        apiError
		Verification Verification
	}
	resp := tc.do(t, http.MethodPost, "/api/invoke", jsonBody(t, InvokeRequest{Name: f.Name, Params: json.RawMessage(`"secret"`)}), nil, &res)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("tampered receipt: HTTP %d, want 502", resp.StatusCode)
	}
	if res.OK || res.Verification.OK || res.Error.Kind != kindVerification || res.Output != "" || res.Receipt != nil {
		t.Fatalf("tampered receipt: got %+v, want a verification failure and nothing shown as fact", res)
	}
	tamper.Store(false)
	var ok ResultView
	if resp := tc.do(t, http.MethodPost, "/api/invoke", jsonBody(t, InvokeRequest{Name: f.Name, Params: json.RawMessage(`"secret"`)}), nil, &ok); resp.StatusCode != http.StatusOK || !ok.Verification.OK {
		t.Fatalf("untampered: HTTP %d %+v", resp.StatusCode, ok)
	}
	// A receipt altered after the fact fails too.
	ok.Signed.Receipt[5] ^= 1
	var inc struct {
		Error        apiError
		Verification Verification
	}
	if resp := tc.do(t, http.MethodPost, "/api/ledger/inclusion", jsonBody(t, InclusionRequest{Receipt: ok.Signed}), nil, &inc); resp.StatusCode != http.StatusBadGateway || inc.Error.Kind != kindVerification || inc.Verification.OK {
		t.Fatalf("altered receipt: HTTP %d %+v", resp.StatusCode, inc)
	}
}

func TestAsyncActivation(t *testing.T) {
	tc := newConsole(t)
	f := deployEcho(t, tc, "echo-async")
	var q struct {
		ActivationID string `json:"activation_id"`
	}
	if resp := tc.do(t, http.MethodPost, "/api/invoke", jsonBody(t, InvokeRequest{Name: f.Name, Params: json.RawMessage(`"later"`), Async: true}), nil, &q); resp.StatusCode != http.StatusAccepted || !validActivationID(q.ActivationID) {
		t.Fatalf("async: HTTP %d %+v", resp.StatusCode, q)
	}
	var v ActivationView
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp := tc.do(t, http.MethodGet, "/api/activations/"+q.ActivationID, nil, nil, &v); resp.StatusCode != http.StatusOK {
			t.Fatalf("activation: HTTP %d", resp.StatusCode)
		}
		if v.Result != nil || time.Now().After(deadline) {
			break
		}
	}
	if v.Result == nil || !v.Result.OK || v.Result.Output != `"later"` || !v.Result.Verification.OK || v.Result.Receipt.Status != "ok" {
		t.Fatalf("activation: %+v", v)
	}
	if v.Record == nil || len(v.Record.Response.Result) != 0 {
		t.Errorf("the record keeps its sealed bytes: %+v", v.Record)
	}
	var list struct {
		Activations []ActivationSummary
		Verified    bool
	}
	tc.do(t, http.MethodGet, "/api/activations?function="+f.Name+"&status=success&since=1h", nil, nil, &list)
	if len(list.Activations) != 1 || list.Activations[0].ID != q.ActivationID || !list.Activations[0].KeyHeld || list.Verified {
		t.Fatalf("list: %+v", list)
	}
	tc.do(t, http.MethodGet, "/api/activations?function="+f.Name+"&status=queued", nil, nil, &list)
	if len(list.Activations) != 0 {
		t.Fatalf("status filter: %+v", list.Activations)
	}
	if resp := tc.do(t, http.MethodGet, "/api/activations?since=yesterday", nil, nil, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad since: HTTP %d", resp.StatusCode)
	}
}

func TestDeleteFunction(t *testing.T) {
	tc := newConsole(t)
	f := deployEcho(t, tc, "echo-delete")
	if resp := tc.do(t, http.MethodDelete, "/api/functions/"+f.Name, nil, http.Header{"Origin": {tc.URL}}, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: HTTP %d", resp.StatusCode)
	}
	var list struct{ Functions []FunctionView }
	tc.do(t, http.MethodGet, "/api/functions", nil, nil, &list)
	for _, g := range list.Functions {
		if g.Name == f.Name {
			t.Fatalf("%s still listed", f.Name)
		}
	}
}

func TestPrepareManifest(t *testing.T) {
	for _, tt := range []struct {
		name, file, manifest string
		runtime, err         string
	}{
		{"hello", "hello.wasm", "", "wasm", ""},
		{"hello", "main.js", "", "js", ""},
		{"hello", "main.py", "", "python", ""},
		{"hello", "main.js", `{"limits":{"timeout_ms":1000}}`, "js", ""},
		{"hello", "main.txt", "", "", "not a .wasm"},
		{"Hello!", "main.js", "", "", "invalid function name"},
		{"hello", "main.js", `{"name":"other"}`, "", "names function"},
		{"hello", "main.js", `{"nonsense":`, "", "manifest"},
	} {
		m, err := PrepareManifest(tt.name, tt.file, []byte(tt.manifest))
		var ue *UsageError
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &ue)):
			t.Errorf("%s %s %s: got error %v, want a usage error with %q", tt.name, tt.file, tt.manifest, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s %s %s: %v", tt.name, tt.file, tt.manifest, err)
		case tt.err == "" && m.Runtime != tt.runtime:
			t.Errorf("%s %s %s: runtime %q, want %q", tt.name, tt.file, tt.manifest, m.Runtime, tt.runtime)
		}
	}
}
