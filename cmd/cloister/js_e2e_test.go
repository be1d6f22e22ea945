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
