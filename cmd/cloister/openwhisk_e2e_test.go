package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/node"
)

// owRequest sends an OpenWhisk API request with basic auth user:key.
func owRequest(t *testing.T, method, url, user, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestOpenWhiskClient drives a real `cloister up` with the official
// `openwhisk` npm client (test/openwhisk/client_test.js), pointed at it by
// DATA/wskprops, and checks the confidential-required refusal.
func TestOpenWhiskClient(t *testing.T) {
	script := repo("test", "openwhisk", "client_test.js")
	nodeBin, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(repo("test", "openwhisk", "node_modules", "openwhisk", "package.json"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node or the openwhisk npm package is missing (.ci/run installs them with npm ci in test/openwhisk): %v", err)
		}
		t.Skipf("skipping: node or the openwhisk npm package is missing (run `npm ci` in test/openwhisk): %v", err)
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	props, err := node.ReadEnvFile(filepath.Join(dir, ".cloister", "wskprops"))
	if err != nil {
		t.Fatal(err)
	}
	if props["APIHOST"] != s.env["CLOISTER_URL"] || props["NAMESPACE"] != "default" || !strings.HasSuffix(props["AUTH"], ":"+s.env["CLOISTER_TOKEN"]) {
		t.Fatalf("wskprops = %v, want APIHOST=%s, NAMESPACE=default, AUTH=uuid:<token>", props, s.env["CLOISTER_URL"])
	}

	cmd := exec.Command(nodeBin, script)
	cmd.Dir = repo("test", "openwhisk")
	cmd.Env = append(os.Environ(), "APIHOST="+props["APIHOST"], "AUTH="+props["AUTH"], "NAMESPACE="+props["NAMESPACE"])
	out, err := cmd.CombinedOutput()
	t.Logf("node %s:\n%s", filepath.Base(script), out)
	if err != nil {
		t.Fatalf("the openwhisk client checks failed: %v\ncloister log:\n%s", err, s.log)
	}

	// A function deployed by its owner with confidential: required (the
	// default) refuses an OpenWhisk invocation, and says what to use.
	s.mustCLI("keys", "new")
	s.mustCLI("fn", "deploy", "secret-js", repo("examples", "hello-js", "main.js"))
	user, key, _ := strings.Cut(props["AUTH"], ":")
	code, body := owRequest(t, "POST", props["APIHOST"]+"/api/v1/namespaces/_/actions/secret-js?blocking=true", user, key, `{"name":"Ada"}`)
	msg, _ := body["error"].(string)
	if code != http.StatusForbidden || body["code"] != "confidential_required" || !strings.Contains(msg, "cloister invoke") || !strings.Contains(msg, "Go SDK") {
		t.Fatalf("OpenWhisk invoke of a confidential function: %d %v, want 403 confidential_required naming cloister invoke and the Go SDK", code, body)
	}
	// The owner-signed function is listed with its deployer.
	code, body = owRequest(t, "GET", props["APIHOST"]+"/api/v1/namespaces/default/actions/secret-js?code=false", user, key, "")
	if code != http.StatusOK {
		t.Fatalf("get: %d %v", code, body)
	}
	var deployer any
	for _, a := range body["annotations"].([]any) {
		if kv := a.(map[string]any); kv["key"] == "cloister-deployer" {
			deployer = kv["value"]
		}
	}
	if deployer != "owner" {
		t.Fatalf("cloister-deployer = %v, want owner", deployer)
	}
	s.stop()
}
