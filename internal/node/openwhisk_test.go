package node_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/gateway"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// ow sends an OpenWhisk API request with the node's key as uuid:key.
func (e *env) ow(method, path, body string) (int, []byte) {
	e.t.Helper()
	return e.owAs(gateway.OpenWhiskUUID(e.n.Token), e.n.Token, method, path, body)
}

func (e *env) owAs(user, key, method, path, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.n.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" || key != "" {
		req.SetBasicAuth(user, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

type owError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func anno(list []gateway.OWKeyValue, key string) string {
	for _, kv := range list {
		if kv.Key == key {
			var s string
			_ = json.Unmarshal(kv.Value, &s)
			return s
		}
	}
	return ""
}

func TestOpenWhiskAuth(t *testing.T) {
	e := start(t)
	uuid := gateway.OpenWhiskUUID(e.n.Token)
	for _, tc := range []struct {
		name, user, key string
		status          int
		msg             string
	}{
		{"no auth", "", "", 401, "requires authentication"},
		{"unknown key", uuid, "clk_" + strings.Repeat("A", 43), 401, "The supplied authentication is invalid"},
		{"uuid of another key", gateway.OpenWhiskUUID("clk_other"), e.n.Token, 401, "The supplied authentication is invalid"},
		{"not a cloister key", uuid, "some-openwhisk-key", 401, "The supplied authentication is invalid"},
	} {
		code, b := e.owAs(tc.user, tc.key, "GET", "/api/v1/namespaces/_/actions", "")
		got := decode[owError](t, b)
		if code != tc.status || !strings.Contains(got.Error, tc.msg) || got.Code != "unauthorized" {
			t.Errorf("%s: got %d %s, want %d with %q", tc.name, code, b, tc.status, tc.msg)
		}
	}
	if code, b := e.ow("GET", "/api/v1/namespaces/other/actions", ""); code != 403 || decode[owError](t, b).Code != "forbidden" {
		t.Errorf("another namespace: got %d %s, want 403 forbidden", code, b)
	}
	if code, b := e.ow("GET", "/api/v1/namespaces/default/actions", ""); code != 200 || string(b) != "[]\n" {
		t.Errorf("own namespace by name: got %d %s, want 200 []", code, b)
	}
	if code, b := e.ow("GET", "/api/v1/namespaces/_/packages", ""); code != 404 || decode[owError](t, b).Code != "not_found" {
		t.Errorf("packages: got %d %s, want an OpenWhisk-shaped 404", code, b)
	}
}

func TestOpenWhiskActions(t *testing.T) {
	e := start(t)
	const base = "/api/v1/namespaces/_/"
	// Bad input, each with a clear error.
	for _, tc := range []struct{ body, code string }{
		{`{"exec":{"kind":"ruby:2.5","code":"x"}}`, "bad_request"},
		{`{"exec":{"kind":"python:3","code":"x"}}`, "invalid_module"}, // a script whose import raises (NameError)
		{`{"exec":{"kind":"python:3","code":"def main(p):\n  return {}","binary":true}}`, "bad_request"},
		{`{"exec":{"kind":"nodejs:default","code":"function main( {"}}`, "invalid_module"},
		{`{"exec":{"kind":"blackbox","image":"docker/x"}}`, "bad_request"},
		{`{"exec":{"kind":"wasm","code":"not base64!"}}`, "bad_request"},
		{`{"exec":{"kind":"sequence","components":["/_/missing"]}}`, "not_found"},
		{`{"exec":{"kind":"sequence","components":["/_/pkg/a"]}}`, "bad_request"},
		{`{"exec":{"kind":"nodejs:default","code":"function main(){}"},"limits":{"memory":999999}}`, "bad_request"},
		{`not json`, "bad_request"},
		{`{}`, "bad_request"},
	} {
		code, b := e.ow("PUT", base+"actions/bad", tc.body)
		if got := decode[owError](t, b); got.Code != tc.code || got.Error == "" {
			t.Errorf("PUT %s: got %d %s, want code %s", tc.body, code, b, tc.code)
		}
	}

	// A WebAssembly module as blackbox, and a JS action with a default parameter.
	echo := base64.StdEncoding.EncodeToString(fixture(t, "echo.wasm"))
	if code, b := e.ow("PUT", base+"actions/echo", `{"exec":{"kind":"blackbox","code":"`+echo+`"},"limits":{"memory":16,"timeout":3000}}`); code != 200 {
		t.Fatalf("PUT echo: %d %s", code, b)
	}
	code, b := e.ow("PUT", base+"actions/greet", `{"exec":{"kind":"nodejs:20","code":"function main(p){return {msg: p.greeting + ', ' + p.name}}"},
		"parameters":[{"key":"greeting","value":"Hi"}],"annotations":[{"key":"cloister-deployer","value":"owner"}]}`)
	if code != 200 {
		t.Fatalf("PUT greet: %d %s", code, b)
	}
	a := decode[gateway.OWAction](t, b)
	if a.Namespace != "default" || a.Name != "greet" || a.Version != "0.0.1" || a.Exec.Kind != "nodejs:20" || a.Limits.Memory != 16 ||
		anno(a.Annotations, "cloister-deployer") != bundle.DeployerGatewayTrusted || len(anno(a.Annotations, "cloister-owner-key")) != 64 {
		t.Errorf("action record = %s; want default/greet 0.0.1 nodejs:20, memory 16 MB, deployer gateway-trusted (not the client's claim) and an owner key", b)
	}
	if code, b := e.ow("PUT", base+"actions/greet", `{"exec":{"kind":"nodejs:20","code":"function main(){}"}}`); code != 409 || decode[owError](t, b).Code != "version_conflict" {
		t.Errorf("PUT without overwrite: %d %s, want 409", code, b)
	}

	// The bundle the gateway built is a Cloister function: signed by the
	// namespace's deploy key, and its manifest says gateway-trusted.
	req, _ := http.NewRequest("GET", e.n.URL+"/v1/functions/greet", nil)
	req.Header.Set("Authorization", "Bearer "+e.n.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fi := decode[struct {
		Manifest json.RawMessage `json:"manifest"`
	}](t, rb)
	m := decode[bundle.Manifest](t, fi.Manifest)
	if m.Deployer != bundle.DeployerGatewayTrusted || m.Confidential != bundle.ConfidentialOptional || m.Runtime != bundle.RuntimeJS {
		t.Errorf("manifest = %s, want a js function, confidential optional, deployer gateway-trusted", fi.Manifest)
	}

	// Blocking invocation: the activation, its receipt verified and marked gateway-trusted.
	code, b = e.ow("POST", base+"actions/greet?blocking=true", `{"name":"Ada"}`)
	if code != 200 {
		t.Fatalf("invoke: %d %s", code, b)
	}
	act := decode[gateway.OWActivation](t, b)
	if act.Response.Status != "success" || !act.Response.Success || string(act.Response.Result) != `{"msg":"Hi, Ada"}` ||
		act.Version != "0.0.1" || act.End < act.Start || anno(act.Annotations, "trust") != "gateway-trusted" {
		t.Errorf("activation = %s", b)
	}
	var signed receipt.Signed
	for _, kv := range act.Annotations {
		if kv.Key == "cloister-receipt" {
			signed = decode[receipt.Signed](t, kv.Value)
		}
	}
	att, err := e.c.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, err := receipt.Verify(&signed, att.IdentityKey, receipt.Expect{Namespace: "default", Function: "greet", Version: 1})
	if err != nil || v.Receipt.Trust != receipt.TrustGatewayTrusted || v.Receipt.Mode != "plain" {
		t.Errorf("receipt: %v %+v, want a verified plain receipt with trust gateway-trusted", err, v)
	}
	// The blocking activation ran at once, and its record is there to get.
	if code, b := e.ow("GET", base+"activations/"+act.ActivationID, ""); code != 200 ||
		decode[gateway.OWActivation](t, b).Response.Status != "success" {
		t.Errorf("the blocking activation's record: %d %s", code, b)
	}
	// result=true gives the result; the wasm action's non-object output is wrapped.
	if code, b := e.ow("POST", base+"actions/greet?blocking=true&result=true", `{"name":"Bo","greeting":"Yo"}`); code != 200 || string(b) != `{"msg":"Yo, Bo"}`+"\n" {
		t.Errorf("result=true: %d %s", code, b)
	}
	if code, b := e.ow("POST", base+"actions/greet?blocking=true", `[1,2]`); code != 400 || decode[owError](t, b).Code != "bad_request" {
		t.Errorf("non-object params: %d %s, want 400", code, b)
	}
	if code, b := e.ow("POST", base+"actions/echo?blocking=true&result=true", `{"x":1}`); code != 200 || !strings.Contains(string(b), `"x":1`) {
		t.Errorf("echo: %d %s", code, b)
	}

	// Non-blocking: 202 with an id; the record appears when it is final.
	code, b = e.ow("POST", base+"actions/greet", `{"name":"Cy"}`)
	id := decode[map[string]string](t, b)["activationId"]
	if code != 202 || len(id) != 32 {
		t.Fatalf("non-blocking: %d %s", code, b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, b = e.ow("GET", base+"activations/"+id+"/result", "")
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := decode[gateway.OWResponse](t, b); code != 200 || !r.Success || string(r.Result) != `{"msg":"Hi, Cy"}` {
		t.Errorf("activation result: %d %s", code, b)
	}
	if code, b := e.ow("GET", base+"activations/"+id+"/logs", ""); code != 200 || !strings.Contains(string(b), `"logs"`) {
		t.Errorf("logs: %d %s", code, b)
	}
	if code, b := e.ow("GET", base+"activations/nothex", ""); code != 400 {
		t.Errorf("bad activation id: %d %s, want 400", code, b)
	}
	if code, b := e.ow("GET", base+"activations?name=greet&limit=2&skip=1", ""); code != 200 || len(decode[[]gateway.OWActivation](t, b)) != 2 {
		t.Errorf("list with limit/skip: %d %s, want 2 records", code, b)
	}

	// An application error: 502 and an error activation.
	e.ow("PUT", base+"actions/boom", `{"exec":{"kind":"nodejs:default","code":"function main(){ throw new TypeError('nope') }"}}`)
	code, b = e.ow("POST", base+"actions/boom?blocking=true", `{}`)
	if act := decode[gateway.OWActivation](t, b); code != 502 || act.Response.Success || act.Response.Status != "action developer error" || !strings.Contains(string(act.Response.Result), "nope") {
		t.Errorf("throwing action: %d %s, want 502 action developer error (an uncaught exception, as in OpenWhisk)", code, b)
	}

	// A sequence; one of a missing action is refused; deleting returns the record.
	if code, b := e.ow("PUT", base+"actions/seq", `{"exec":{"kind":"sequence","components":["/default/greet","/_/echo"]}}`); code != 200 {
		t.Fatalf("PUT seq: %d %s", code, b)
	}
	code, b = e.ow("POST", base+"actions/seq?blocking=true", `{"name":"Di"}`)
	if act := decode[gateway.OWActivation](t, b); code != 200 || !strings.Contains(string(act.Response.Result), "Hi, Di") || len(act.Logs) != 2 {
		t.Errorf("sequence: %d %s, want the echo of greet's result and two component ids in logs", code, b)
	}
	if code, b := e.ow("DELETE", base+"actions/seq", ""); code != 200 || decode[gateway.OWAction](t, b).Exec.Kind != "sequence" {
		t.Errorf("DELETE seq: %d %s", code, b)
	}
	if code, _ := e.ow("GET", base+"actions/seq", ""); code != 404 {
		t.Errorf("GET after delete: %d, want 404", code)
	}

	// confidential: required refuses an OpenWhisk invocation, and says how to invoke it.
	e.deploy("secret", fixture(t, "echo.wasm"), nil)
	code, b = e.ow("POST", base+"actions/secret?blocking=true", `{}`)
	if got := decode[owError](t, b); code != 403 || got.Code != "confidential_required" || !strings.Contains(got.Error, "cloister invoke secret") || !strings.Contains(got.Error, "Go SDK") {
		t.Errorf("confidential function: %d %s", code, b)
	}
	if code, b := e.ow("PUT", base+"actions/seq2", `{"exec":{"kind":"sequence","components":["secret"]}}`); code != 200 {
		t.Fatalf("PUT seq2: %d %s", code, b)
	} else if code, b := e.ow("POST", base+"actions/seq2?blocking=true", `{}`); code != 403 || decode[owError](t, b).Code != "confidential_required" {
		t.Errorf("sequence over a confidential function: %d %s, want 403", code, b)
	}
}

func TestOpenWhiskTriggersAndRules(t *testing.T) {
	e := start(t)
	const base = "/api/v1/namespaces/_/"
	e.ow("PUT", base+"actions/greet", `{"exec":{"kind":"nodejs:default","code":"function main(p){return {msg: 'hi ' + p.who}}"}}`)
	if code, b := e.ow("PUT", base+"triggers/tick", `{"parameters":[{"key":"who","value":"trigger"}]}`); code != 200 {
		t.Fatalf("PUT trigger: %d %s", code, b)
	}
	if code, _ := e.ow("PUT", base+"triggers/tick", `{}`); code != 409 {
		t.Errorf("PUT trigger again: %d, want 409", code)
	}
	if code, b := e.ow("PUT", base+"triggers/feed", `{"annotations":[{"key":"feed","value":"/whisk.system/alarms/alarm"}]}`); code != 400 {
		t.Errorf("feed trigger: %d %s, want 400", code, b)
	}
	// No rule yet: firing is a 204.
	if code, _ := e.ow("POST", base+"triggers/tick", `{}`); code != 204 {
		t.Errorf("fire without rules: %d, want 204", code)
	}
	if code, b := e.ow("PUT", base+"rules/r1", `{"trigger":"/_/tick","action":"/_/nope"}`); code != 404 {
		t.Errorf("rule to a missing action: %d %s, want 404", code, b)
	}
	code, b := e.ow("PUT", base+"rules/r1", `{"trigger":"/_/tick","action":"/default/greet"}`)
	if ru := decode[gateway.OWRule](t, b); code != 200 || ru.Status != "active" || ru.Trigger.Name != "tick" || ru.Action.Name != "greet" {
		t.Fatalf("PUT rule: %d %s", code, b)
	}
	code, b = e.ow("POST", base+"triggers/tick", `{}`)
	fired := decode[map[string]string](t, b)["activationId"]
	if code != 202 || len(fired) != 32 {
		t.Fatalf("fire: %d %s", code, b)
	}
	code, b = e.ow("GET", base+"activations/"+fired, "")
	ta := decode[gateway.OWActivation](t, b)
	if code != 200 || len(ta.Logs) != 1 || string(ta.Response.Result) != `{"who":"trigger"}` {
		t.Fatalf("trigger activation: %d %s", code, b)
	}
	ruleAct := decode[map[string]any](t, []byte(ta.Logs[0]))["activationId"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, b = e.ow("GET", base+"activations/"+ruleAct+"/result", "")
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 200 || !strings.Contains(string(b), "hi trigger") {
		t.Errorf("rule's activation: %d %s", code, b)
	}
	// Disable: firing is a 204 again; enable: it fires.
	if code, b := e.ow("POST", base+"rules/r1", `{"status":"inactive"}`); code != 200 || decode[gateway.OWRule](t, b).Status != "inactive" {
		t.Errorf("disable: %d %s", code, b)
	}
	if code, _ := e.ow("POST", base+"triggers/tick", `{}`); code != 204 {
		t.Errorf("fire with the rule disabled: %d, want 204", code)
	}
	if code, _ := e.ow("POST", base+"rules/r1", `{"status":"sleeping"}`); code != 400 {
		t.Errorf("bad status: %d, want 400", code)
	}
	e.ow("POST", base+"rules/r1", `{"status":"active"}`)
	if code, _ := e.ow("POST", base+"triggers/tick", `{"who":"me"}`); code != 202 {
		t.Errorf("fire with the rule enabled: %d, want 202", code)
	}
	code, b = e.ow("GET", base+"triggers/tick", "")
	if tr := decode[gateway.OWTrigger](t, b); code != 200 || tr.Rules["default/r1"].Status != "active" {
		t.Errorf("trigger record: %d %s", code, b)
	}
	if code, b := e.ow("GET", base+"rules", ""); code != 200 || len(decode[[]gateway.OWRule](t, b)) != 1 {
		t.Errorf("list rules: %d %s", code, b)
	}
	if code, _ := e.ow("DELETE", base+"rules/r1", ""); code != 200 {
		t.Errorf("delete rule: %d", code)
	}
	if code, _ := e.ow("DELETE", base+"triggers/tick", ""); code != 200 {
		t.Errorf("delete trigger: %d", code)
	}
	if code, b := e.ow("GET", base+"triggers", ""); code != 200 || string(b) != "[]\n" {
		t.Errorf("list triggers: %d %s", code, b)
	}
}

// TestOpenWhiskQueryParameters: boolean query parameters are "true" or
// "false" and nothing else, and every list route pages with OpenWhisk's
// skip, limit and count.
func TestOpenWhiskQueryParameters(t *testing.T) {
	e := start(t)
	const base = "/api/v1/namespaces/_/"
	echo := fixture(t, "echo.wasm")
	for _, n := range []string{"c", "a", "b"} {
		e.deploy(n, echo, openToAll)
	}

	// A value that is not a boolean is refused, before anything runs.
	for _, req := range []string{
		"GET actions/a?code=maybe", "GET actions/a?code=1", "GET actions/a?code=TRUE",
		"POST actions/a?blocking=yes", "POST actions/a?blocking=true&result=1",
		"PUT actions/a?overwrite=0", "PUT triggers/t?overwrite=maybe", "PUT rules/r?overwrite=on",
		"GET actions?count=maybe", "GET triggers?count=1",
	} {
		method, path, _ := strings.Cut(req, " ")
		code, b := e.ow(method, base+path, `{}`)
		if got := decode[owError](t, b); code != 400 || got.Code != "bad_request" || !strings.Contains(got.Error, "must be true or false") {
			t.Errorf("%s: %d %s, want 400 bad_request", req, code, b)
		}
	}
	if code, b := e.ow("GET", base+"activations?limit=0", ""); code != 200 || len(decode[[]gateway.OWActivation](t, b)) != 0 {
		t.Errorf("activations after the refused invocations: %d %s, want none", code, b)
	}
	for q, want := range map[string]bool{"?code=false": false, "?code=true": true, "?code=": true, "": true} {
		code, b := e.ow("GET", base+"actions/a"+q, "")
		if a := decode[gateway.OWAction](t, b); code != 200 || (a.Exec.Code != "") != want {
			t.Errorf("GET actions/a%s: %d, code included %v, want %v", q, code, a.Exec.Code != "", want)
		}
	}

	// Paging, the same on every list route.
	names := func(path string) string {
		t.Helper()
		code, b := e.ow("GET", base+path, "")
		if code != 200 {
			t.Errorf("GET %s: %d %s", path, code, b)
			return ""
		}
		var out []string
		for _, v := range decode[[]struct{ Name string }](t, b) {
			out = append(out, v.Name)
		}
		return strings.Join(out, ",")
	}
	for _, n := range []string{"t3", "t1", "t2"} {
		if code, b := e.ow("PUT", base+"triggers/"+n, `{}`); code != 200 {
			t.Fatalf("PUT trigger %s: %d %s", n, code, b)
		}
	}
	for _, r := range [][2]string{{"r2", "t2"}, {"r1", "t1"}} {
		if code, b := e.ow("PUT", base+"rules/"+r[0], `{"trigger":"/_/`+r[1]+`","action":"/_/a"}`); code != 200 {
			t.Fatalf("PUT rule %s: %d %s", r[0], code, b)
		}
	}
	for path, want := range map[string]string{
		"actions":                 "a,b,c",
		"actions?limit=1":         "a",
		"actions?limit=2&skip=1":  "b,c",
		"actions?skip=3":          "",
		"actions?limit=0":         "a,b,c",
		"triggers?limit=1&skip=1": "t2",
		"triggers?skip=1":         "t2,t3",
		"rules?limit=1":           "r1",
		"rules?skip=1&limit=0":    "r2",
	} {
		if got := names(path); got != want {
			t.Errorf("GET %s: got [%s], want [%s]", path, got, want)
		}
	}
	for path, want := range map[string]string{
		"actions?count=true":          `{"actions":3}`,
		"actions?count=true&skip=1":   `{"actions":2}`,
		"triggers?count=true":         `{"triggers":3}`,
		"rules?count=true&skip=5":     `{"rules":0}`,
		"actions?count=false&limit=1": `[`,
	} {
		if code, b := e.ow("GET", base+path, ""); code != 200 || !strings.HasPrefix(string(b), want) {
			t.Errorf("GET %s: %d %s, want %s", path, code, b, want)
		}
	}
	for _, path := range []string{
		"actions?limit=201", "actions?limit=-1", "actions?limit=ten", "actions?skip=-1", "actions?skip=x",
		"triggers?limit=201", "rules?skip=-2", "activations?limit=201", "activations?skip=-1", "activations?count=true",
	} {
		if code, b := e.ow("GET", base+path, ""); code != 400 || decode[owError](t, b).Code != "bad_request" {
			t.Errorf("GET %s: %d %s, want 400 bad_request", path, code, b)
		}
	}
}
