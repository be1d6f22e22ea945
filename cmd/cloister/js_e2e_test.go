package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJavaScriptCLI deploys a .js file with `cloister fn deploy` and
// invokes it with `cloister invoke`, against a real `cloister up`.
func TestJavaScriptCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	defer s.stop()
	s.mustCLI("keys", "new")

	r := s.mustCLI("fn", "deploy", "hello-js", repo("examples", "hello-js", "main.js"))
	if !strings.Contains(r.stdout, "deployed hello-js v1") {
		t.Errorf("deploy output: %q", r.stdout)
	}
	for range 2 {
		r = s.mustCLI("invoke", "hello-js", "--data", `{"name":"Ada"}`)
		if !strings.Contains(r.stdout, `{"greeting":"Hello, Ada!","calls":1}`) {
			t.Errorf("invoke output: got %q", r.stdout)
		}
		if !strings.Contains(r.stderr, "verified:") {
			t.Errorf("invoke summary: got %q, want a verification line", r.stderr)
		}
	}
	// The result has no trailing newline: the summary on stderr starts a
	// line of its own, and stdout holds the function's bytes only.
	if r.stdout != `{"greeting":"Hello, Ada!","calls":1}` || !strings.HasPrefix(r.stderr, "\nverified:") {
		t.Errorf("invoke: stdout %q, stderr %q; want the result as is and the summary on its own line", r.stdout, r.stderr)
	}

	// A folder, as the examples are laid out: its one script is deployed.
	r = s.mustCLI("fn", "deploy", "hello-dir", repo("examples", "hello-js"))
	if !strings.Contains(r.stdout, "deployed hello-dir v1") {
		t.Errorf("deploy of a folder: %q", r.stdout)
	}
	if r = s.mustCLI("invoke", "hello-dir", "--data", `{"name":"Bo"}`); !strings.Contains(r.stdout, "Hello, Bo!") {
		t.Errorf("invoke of the folder's function: %q", r.stdout)
	}
	// A folder with its manifest.json: the manifest applies.
	withManifest := filepath.Join(dir, "with-manifest")
	src, err := os.ReadFile(repo("examples", "hello-js", "main.js"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(withManifest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withManifest, "main.js"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withManifest, "manifest.json"), []byte(`{"confidential":"optional","invokers":"any"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if r = s.mustCLI("fn", "deploy", "open-dir", withManifest); !strings.Contains(r.stdout, "confidential: optional") {
		t.Errorf("deploy of a folder with a manifest: %q, want confidential: optional", r.stdout)
	}
	if r = s.cli("fn", "deploy", "nothing", dir); r.code != exitUsage || !strings.Contains(r.stderr, "holds no function") {
		t.Errorf("deploy of a folder without a function: exit %d %q", r.code, r.stderr)
	}

	// Input the script never saw (not a JSON object) is a refused request,
	// not a failed function: exit 1, and no hint to read the logs.
	r = s.cli("invoke", "hello-js", "--data", "not json")
	if r.code != exitError || !strings.Contains(r.stderr, "bad_request") || strings.Contains(r.stderr, "--logs") {
		t.Errorf("bad JSON: exit %d, stderr %q; want exit %d with bad_request and no --logs hint", r.code, r.stderr, exitError)
	}

	r = s.mustCLI("fn", "get", "hello-js", "--json")
	if !strings.Contains(r.stdout, `"js"`) {
		t.Errorf("fn get: %q does not say abi js", r.stdout)
	}

	// An exception is an error with its stable code; the manifest's
	// limits apply to scripts as to modules.
	script := filepath.Join(dir, "throw.js")
	if err := os.WriteFile(script, []byte(`async function main() { throw new TypeError("no") }`), 0o644); err != nil {
		t.Fatal(err)
	}
	s.mustCLI("fn", "deploy", "thrower", script, "--manifest",
		writeManifest(t, dir, "thrower", `{"confidential":"optional","invokers":"any","limits":{"timeout_ms":2000}}`))
	r = s.cli("invoke", "thrower", "--data", `{}`, "--plaintext")
	if r.code == 0 || !strings.Contains(r.stderr, "js_error") || !strings.Contains(r.stderr, "TypeError: no") {
		t.Errorf("thrower: exit %d, stderr %q; want js_error with the message", r.code, r.stderr)
	}
}
