package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The fuzz targets below feed arbitrary request bodies to every handler
// that decodes one, native and OpenWhisk. The handler targets run the real
// gateway (routing, auth, decoding and checks) on an embedded NATS server
// with no coordinator and no worker, so a body that passes every check ends
// with a stable code such as not_found or unavailable. What they assert: no
// panic, and every answer is either a success with a JSON body or an error
// whose body carries a stable code that matches the status. A client's
// body must never cause a 500.

// fuzzGateway is a gateway with its stores and an admin key of namespace
// "fuzz".
type fuzzGateway struct {
	h     http.Handler
	token string
}

func newFuzzGateway(f *testing.F) *fuzzGateway {
	f.Helper()
	nc, st, as, tok := testStores(f, "fuzz")
	return &fuzzGateway{h: New(Config{Conn: nc, Stores: st, Async: as, Logger: quiet}), token: tok}
}

// testStores starts an embedded NATS with the gateway's stores and a
// platform admin key of namespace ns (Admin without a scope is one).
func testStores(tb testing.TB, ns string) (*nats.Conn, *bus.Stores, *bus.AsyncStores, string) {
	tb.Helper()
	ctx := context.Background()
	nc := bustest.Connect(tb)
	st, err := bus.OpenStores(ctx, nc, 1, quiet)
	if err != nil {
		tb.Fatal(err)
	}
	as, err := bus.OpenAsync(ctx, st.JS, 1, bus.AsyncLimits{})
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := IssueToken(ctx, st.Auth, Principal{Namespace: ns, Admin: true, Name: ns})
	if err != nil {
		tb.Fatal(err)
	}
	return nc, st, as, tok
}

// serve sends one request, authenticated as the API's clients do.
func (g *fuzzGateway) serve(method, target, contentType string, body []byte, openWhisk bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	if openWhisk {
		r.SetBasicAuth(OpenWhiskUUID(g.token), g.token)
	} else {
		r.Header.Set("Authorization", "Bearer "+g.token)
	}
	w := httptest.NewRecorder()
	g.h.ServeHTTP(w, r)
	return w
}

// checkAnswer fails t unless w is a success with a JSON (or no) body, or
// an error body with a stable code that matches the status and is not
// internal. OpenWhisk errors are {"error": message, "code": code}.
func checkAnswer(t *testing.T, route string, w *httptest.ResponseRecorder) {
	t.Helper()
	body := w.Body.Bytes()
	if w.Code < 300 {
		if w.Code != http.StatusNoContent && !json.Valid(body) {
			t.Fatalf("%s: %d with a body that is not JSON: %q", route, w.Code, body)
		}
		return
	}
	var e struct {
		Code    apierr.Code `json:"code"`
		Message string      `json:"message"`
		Error   string      `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%s: %d with a body that is not a JSON error: %q", route, w.Code, body)
	}
	switch {
	case w.Code == http.StatusInternalServerError || e.Code == apierr.Internal:
		t.Fatalf("%s: a client's body caused an internal error: %s", route, body)
	case e.Code == "" || e.Code.Status() != w.Code:
		t.Fatalf("%s: status %d with code %q (whose status is %d)", route, w.Code, e.Code, e.Code.Status())
	case e.Message == "" && e.Error == "":
		t.Fatalf("%s: error %q without a message", route, e.Code)
	}
}

// bodyRoute is a route that reads a request body.
type bodyRoute struct {
	method, target, contentType string
	seeds                       []string
}

var nativeBodyRoutes = []bodyRoute{
	{"POST", "/v1/tokens", "application/json", []string{`{"namespace":"fz","name":"k"}`, `{"namespace":"Not Valid"}`}},
	{"POST", "/v1/keys", "application/json", []string{
		`{"scope":"invoke"}`, `{"scope":"admin","namespace":"other","name":"ci","expires_in":"1h","platform":true}`,
		`{"scope":"root"}`, `{"scope":"deploy","expires_in":"-1s"}`, `{"scope":"deploy","name":"a\u0000b"}`,
	}},
	{"POST", "/v1/functions/fz", "application/octet-stream", []string{"\x00CLB\x01\x00\x00\x00\x02{}"}},
	{"POST", "/v1/functions/fz/invoke", "application/json", []string{`{"name":"Ada"}`}},
	{"POST", "/v1/functions/fz/invoke", wire.SealedContentType, []string{
		`{"mode":"hpke","version":1,"enc":"AAAA","ct":"AAAA"}`, `{"mode":"session","ticket":"AA==","ct":""}`, `{"mode":"plain"}`, `{"mode":"hpke","version":-1}`,
	}},
	{"POST", "/v1/functions/fz/invoke?version=2", wire.SealedContentType, []string{`{"mode":"hpke","version":3,"ct":"AA=="}`}},
	{"POST", "/v1/functions/fz/invoke?async=true", "application/json", []string{`{}`}},
	{"POST", "/v1/functions/fz/invoke?async=true", wire.SealedContentType, []string{`{"mode":"hpke","ct":"AA=="}`, `{"mode":"session"}`}},
	{"POST", "/v1/functions/fz/sessions", wire.SealedContentType, []string{`{"mode":"session-open","enc":"AA==","ct":"AA=="}`}},
	{"PUT", "/v1/sequences/fz", "application/json", []string{
		`{"steps":[{"name":"a"},{"name":"b","version":2}]}`, `{"steps":[]}`, `{"steps":[{"name":"a"}],"signer":"AA==","signature":"AA=="}`,
	}},
	{"POST", "/v1/sequences/fz/invoke", wire.SealedContentType, []string{`{"mode":"sequence","ct":"AA==","steps":[{"name":"a","version":1,"code_sha256":"00"}]}`}},
	{"POST", "/v1/sequences/fz/invoke?async=true", wire.SealedContentType, []string{`{"mode":"sequence","steps":[]}`}},
	{"PUT", "/v1/triggers/fz", "application/json", []string{
		`{"cron":"*/5 * * * *","payload":{"a":1}}`, `{"subject":"events.x"}`, `{"cron":"bad"}`, `{"payload":"x","cron":"@every 1m"}`,
	}},
	{"POST", "/v1/triggers/fz/fire", "application/json", []string{`{"event":1}`, ``}},
	{"PUT", "/v1/rules/fz", "application/json", []string{`{"trigger":"fz","function":"echo","version":1}`, `{"function":"Bad Name"}`}},
	{"PUT", "/v1/manifest", "application/json", []string{`{"manifest":{"version":2},"signatures":[{"key":"00","sig":"AA=="}]}`, `{}`}},
}

var owBodyRoutes = []bodyRoute{
	{"PUT", "/api/v1/namespaces/_/actions/fz?overwrite=true", "application/json", []string{
		`{"exec":{"kind":"nodejs:default","code":"function main(p) { return p }"},"parameters":[{"key":"a","value":1}]}`,
		`{"exec":{"kind":"wasm","code":"` + base64.StdEncoding.EncodeToString([]byte("\x00asm\x01\x00\x00\x00")) + `"},"limits":{"timeout":1000,"memory":64}}`,
		`{"exec":{"kind":"blackbox","code":"not base64"}}`,
		`{"exec":{"kind":"sequence","components":["/_/a","b"]}}`,
		`{"exec":{"kind":"nodejs:20","code":"x","binary":true}}`,
		`{"limits":{"memory":-1}}`, `{"parameters":[{"key":"","value":1}]}`,
		`{"exec":{"kind":"wasm","code":"AA=="},"annotations":[{"key":"confidential","value":"required"},{"key":"cloister-abi","value":"reactor"}]}`,
	}},
	{"POST", "/api/v1/namespaces/_/actions/fz", "application/json", []string{`{"name":"Ada"}`, `[1]`, `null`, ` `}},
	{"PUT", "/api/v1/namespaces/_/triggers/fz?overwrite=true", "application/json", []string{
		`{"parameters":[{"key":"a","value":"b"}]}`, `{"annotations":[{"key":"feed","value":"/whisk.system/alarms/alarm"}]}`,
	}},
	{"POST", "/api/v1/namespaces/_/triggers/fz", "application/json", []string{`{"x":1}`, ``, `"s"`}},
	{"PUT", "/api/v1/namespaces/_/rules/fz?overwrite=true", "application/json", []string{
		`{"trigger":"/_/fz","action":"/_/echo"}`, `{"trigger":"/other/fz","action":"a/b/c"}`, `{"trigger":"fz","action":"echo","status":"on"}`,
	}},
	{"POST", "/api/v1/namespaces/_/rules/fz", "application/json", []string{`{"status":"inactive"}`, `{"status":"maybe"}`}},
}

func fuzzRoutes(f *testing.F, routes []bodyRoute, openWhisk bool) {
	g := newFuzzGateway(f)
	for i, rt := range routes {
		for _, s := range append(rt.seeds, "", "{", "[]", "null", `{"a":`+strings.Repeat("[", 100)) {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, i uint8, body []byte) {
		rt := routes[int(i)%len(routes)]
		route := rt.method + " " + rt.target + " (" + rt.contentType + ")"
		checkAnswer(t, route, g.serve(rt.method, rt.target, rt.contentType, body, openWhisk))
	})
}

// FuzzNativeBodies drives every native route that reads a body: tokens,
// API keys, deploy, plaintext and sealed invocations (sync and async), sessions,
// sequences, triggers, rules and the manifest.
func FuzzNativeBodies(f *testing.F) { fuzzRoutes(f, nativeBodyRoutes, false) }

// FuzzOpenWhiskBodies drives every OpenWhisk route that reads a body:
// actions (create or update, invoke), triggers (create, fire) and rules
// (create, enable or disable).
func FuzzOpenWhiskBodies(f *testing.F) { fuzzRoutes(f, owBodyRoutes, true) }

// The shapes readDefinition decodes in the handlers that keep theirs
// unnamed (putSequence, owPutTrigger, owPutRule, owSetRuleStatus).
type (
	fuzzSequenceDef struct {
		Steps     []wire.StepRef `json:"steps"`
		Signer    []byte         `json:"signer"`
		Signature []byte         `json:"signature"`
	}
	fuzzOWTrigger struct {
		Parameters  []OWKeyValue `json:"parameters"`
		Annotations []OWKeyValue `json:"annotations"`
	}
	fuzzOWRule struct {
		Trigger string `json:"trigger"`
		Action  string `json:"action"`
		Status  string `json:"status"`
	}
)

// FuzzReadDefinition checks that readDefinition fails only with
// bad_request, or payload_too_large for a body over maxDefinitionBytes,
// and that what it accepts has a canonical form that reads back the same:
// the handler stores exactly what it understood.
func FuzzReadDefinition(f *testing.F) {
	for _, s := range []string{
		`{"cron":"* * * * *","payload":{"a":[1,2]},"created":"2026-01-02T03:04:05+01:00"}`,
		`{"trigger":"t","function":"f","version":3,"active":false}`,
		`{"steps":[{"name":"a","version":1,"code_sha256":"ab"}],"signer":"AAEC"}`,
		`{"parameters":[{"key":"k","value":{"x":null}}],"annotations":[{"key":"feed"}]}`,
		`{"status":"active"}`, `{"payload":1e400}`, `{"name":"\ud800"}`, `null`, `{} {}`, `{"steps":"x"}`,
		strings.Repeat(" ", maxDefinitionBytes) + "{}",
	} {
		f.Add([]byte(s))
	}
	kinds := []func() any{
		func() any { return new(wire.Trigger) },
		func() any { return new(wire.Rule) },
		func() any { return new(fuzzSequenceDef) },
		func() any { return new(fuzzOWTrigger) },
		func() any { return new(fuzzOWRule) },
	}
	read := func(b []byte, v any) error {
		r := httptest.NewRequest("PUT", "/", bytes.NewReader(b))
		return readDefinition(httptest.NewRecorder(), r, v)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, kind := range kinds {
			v := kind()
			err := read(b, v)
			if err != nil {
				want := apierr.BadRequest
				if len(b) > maxDefinitionBytes {
					want = apierr.PayloadTooLarge
				}
				if got := apierr.CodeOf(err); got != want {
					t.Fatalf("%T: got %v, want %s", v, err, want)
				}
				continue
			}
			canon, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%T: accepted %q but cannot encode it: %v", v, b, err)
			}
			again := kind()
			if err := read(canon, again); err != nil {
				t.Fatalf("%T: canonical form %s of %q does not read back: %v", v, canon, b, err)
			}
			if b2, _ := json.Marshal(again); !bytes.Equal(b2, canon) {
				t.Fatalf("%T: %q reads as %s, which reads back as %s", v, b, canon, b2)
			}
		}
	})
}

// FuzzOWParams checks the merge of an OpenWhisk invocation's parameters
// (a JSON object, or nothing) over the action's defaults: anything else
// is bad_request; the result is an object with every parameter of the
// request, and every default the request did not set.
func FuzzOWParams(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":"<x>"}`), []byte(`[{"key":"b","value":2},{"key":"c","value":[3]}]`))
	f.Add([]byte(``), []byte(`[{"key":"c"}]`))
	f.Add([]byte(` `), []byte(`[]`))
	f.Add([]byte(`null`), []byte(`[{"key":"c","value":1},{"key":"c","value":2}]`))
	f.Add([]byte(`[1]`), []byte(`null`))
	f.Add([]byte(`{"a": 1 }`), []byte(`[{"key":"a","value":  {"x" : 1}}]`))
	canonical := func(v json.RawMessage) string { b, _ := json.Marshal(v); return string(b) }
	f.Fuzz(func(t *testing.T, body, defaultsJSON []byte) {
		// Defaults come from a decoded action or trigger record.
		var defaults []OWKeyValue
		if json.Unmarshal(defaultsJSON, &defaults) != nil {
			return
		}
		out, err := owParams(body, defaults)
		var req map[string]json.RawMessage
		reqErr := json.Unmarshal(body, &req)
		blank := len(bytes.TrimSpace(body)) == 0
		if err != nil {
			if got := apierr.CodeOf(err); got != apierr.BadRequest {
				t.Fatalf("got %v, want bad_request", err)
			}
			if blank || (reqErr == nil && req != nil) {
				t.Fatalf("refused parameters %q: %v", body, err)
			}
			return
		}
		if !blank && (reqErr != nil || req == nil) {
			t.Fatalf("accepted parameters %q that are not a JSON object", body)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil || got == nil {
			t.Fatalf("result %q is not a JSON object: %v", out, err)
		}
		want := map[string]string{}
		for _, kv := range defaults {
			if _, ok := want[kv.Key]; !ok {
				want[kv.Key] = canonical(kv.Value)
			}
		}
		for k, v := range req {
			want[k] = canonical(v)
		}
		if len(got) != len(want) {
			t.Fatalf("result %s has %d parameters, want %d", out, len(got), len(want))
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || canonical(g) != v {
				t.Fatalf("parameter %q: got %s, want %s (body %q, defaults %q)", k, g, v, body, defaultsJSON)
			}
		}
	})
}

// FuzzOWName checks the parsing of OpenWhisk entity names ("/ns/x",
// "ns/x", "_/x", "x") from request bodies and queries: what it accepts is
// a valid Cloister name, the last segment, in the caller's namespace; it
// refuses with bad_request or forbidden.
func FuzzOWName(f *testing.F) {
	for _, s := range []string{"x", "/fuzz/x", "fuzz/x", "_/x", "/_/x", "other/x", "a/b/c", "", "/", "X", "fuzz/", "//x"} {
		f.Add("fuzz", s)
	}
	f.Fuzz(func(t *testing.T, ns, full string) {
		name, err := owName(ns, full)
		if err != nil {
			if c := apierr.CodeOf(err); c != apierr.BadRequest && c != apierr.Forbidden {
				t.Fatalf("owName(%q, %q): got %v, want bad_request or forbidden", ns, full, err)
			}
			return
		}
		if !bundle.ValidName(name) || !strings.HasSuffix(full, name) {
			t.Fatalf("owName(%q, %q) = %q", ns, full, name)
		}
		parts := strings.Split(strings.TrimPrefix(full, "/"), "/")
		if len(parts) > 2 || (len(parts) == 2 && parts[0] != "_" && parts[0] != ns) {
			t.Fatalf("owName(%q, %q) accepted %q from another namespace or a package", ns, full, name)
		}
	})
}
