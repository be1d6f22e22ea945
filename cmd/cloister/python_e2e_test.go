package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPythonCLI deploys .py files with `cloister fn deploy` and invokes
// them with `cloister invoke`, against a real `cloister up`.
func TestPythonCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	defer s.stop()
	s.mustCLI("keys", "new")
	write := func(name, src string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	stats := write("stats.py", `import statistics
calls = 0

def main(params):
    global calls
    calls += 1
    return {"mean": statistics.mean(params.get("xs", [0])), "calls": calls}
`)
	r := s.mustCLI("fn", "deploy", "stats", stats)
	if !strings.Contains(r.stdout, "deployed stats v1") {
		t.Errorf("deploy output: %q", r.stdout)
	}
	// Every call starts from the snapshot taken after the import: the
	// global counter is 1 each time.
	for range 2 {
		r = s.mustCLI("invoke", "stats", "--data", `{"xs":[1,2,3,4]}`)
		if !strings.Contains(r.stdout, `{"mean":2.5,"calls":1}`) {
			t.Errorf("invoke output: got %q", r.stdout)
		}
		if !strings.Contains(r.stderr, "verified:") {
			t.Errorf("invoke summary: got %q, want a verification line", r.stderr)
		}
	}
	r = s.mustCLI("fn", "get", "stats", "--json")
	if !strings.Contains(r.stdout, `"python"`) {
		t.Errorf("fn get: %q does not say runtime python", r.stdout)
	}

	// An uncaught exception is python_error, with the traceback for a
	// plaintext caller and in the sealed logs for a sealed one.
	optional := writeManifest(t, dir, "raiser", `{"confidential":"optional","invokers":"any","limits":{"memory_pages":512,"timeout_ms":2000}}`)
	s.mustCLI("fn", "deploy", "raiser", write("raiser.py", "def main(params):\n    return {\"x\": 1 / params.get(\"d\", 0)}\n"), "--manifest", optional)
	r = s.cli("invoke", "raiser", "--data", `{}`, "--plaintext")
	if r.code == 0 || !strings.Contains(r.stderr, "python_error") || !strings.Contains(r.stderr, "ZeroDivisionError: division by zero") || !strings.Contains(r.stderr, "line 2, in main") {
		t.Errorf("raiser, plaintext: exit %d, stderr %q; want python_error with the traceback", r.code, r.stderr)
	}
	r = s.cli("invoke", "raiser", "--data", `{}`, "--logs")
	if r.code == 0 || !strings.Contains(r.stderr, "python_error") || !strings.Contains(r.stderr, "ZeroDivisionError") {
		t.Errorf("raiser, sealed with --logs: exit %d, stderr %q", r.code, r.stderr)
	}

	// What needs the host fails inside Python, and the node serves on.
	s.mustCLI("fn", "deploy", "net", write("net.py", "def main(params):\n    import socket\n    return {}\n"), "--manifest",
		writeManifest(t, dir, "net", `{"confidential":"optional","invokers":"any","limits":{"memory_pages":512}}`))
	r = s.cli("invoke", "net", "--data", `{}`, "--plaintext")
	if r.code == 0 || !strings.Contains(r.stderr, "python_error") || !strings.Contains(r.stderr, "socket") {
		t.Errorf("import socket: exit %d, stderr %q", r.code, r.stderr)
	}

	// A script whose import fails is refused at deploy, with the traceback.
	r = s.cli("fn", "deploy", "broken", write("broken.py", "import json\nraise RuntimeError(\"not at import time\")\n"))
	if r.code == 0 || !strings.Contains(r.stderr, "invalid_module") || !strings.Contains(r.stderr, "RuntimeError: not at import time") {
		t.Errorf("broken import: exit %d, stderr %q; want invalid_module with the traceback", r.code, r.stderr)
	}
	r = s.cli("fn", "deploy", "syntax", write("syntax.py", "def main(params)\n    return {}\n"))
	if r.code == 0 || !strings.Contains(r.stderr, "invalid_module") || !strings.Contains(r.stderr, "SyntaxError") {
		t.Errorf("syntax error: exit %d, stderr %q; want invalid_module", r.code, r.stderr)
	}
	r = s.mustCLI("invoke", "stats", "--data", `{"xs":[5]}`)
	if !strings.Contains(r.stdout, `{"mean":5,"calls":1}`) {
		t.Errorf("after the refusals: got %q", r.stdout)
	}
}
