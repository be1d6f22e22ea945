package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAsyncSequencesTriggersCLI drives async invocations, activations,
// sequences (with `receipt verify` of the chain) and triggers through the
// CLI against a real `cloister up`.
func TestAsyncSequencesTriggersCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")
	s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm"))
	s.mustCLI("fn", "deploy", "sha", repo("examples", "sha256-c", "sha256-c.wasm"))
	s.mustCLI("fn", "deploy", "boom", repo("internal", "sandbox", "testdata", "trap.wasm"))

	// A failing function: --logs shows what it wrote on stderr, sealed to
	// the caller; without it, a hint says how to see it.
	if r := s.cli("invoke", "hello", "--data", "not json", "--logs"); r.code != 4 || !strings.Contains(r.stderr, "--- function stderr") || !strings.Contains(r.stderr, "invalid") {
		t.Fatalf("invoke --logs of a failing function: exit %d %q", r.code, r.stderr)
	}
	if r := s.cli("invoke", "hello", "--data", "not json"); r.code != 4 || strings.Contains(r.stderr, "--- function stderr") || !strings.Contains(r.stderr, "add --logs") {
		t.Fatalf("invoke of a failing function: exit %d %q", r.code, r.stderr)
	}
	if r := s.cli("invoke", "hello", "--logs", "--async"); r.code != 2 {
		t.Fatalf("invoke --logs --async: exit %d %q", r.code, r.stderr)
	}

	// Async: the id comes back at once; result verifies and opens the output.
	r := s.mustCLI("invoke", "hello", "--async", "--data", `{"name":"Ada"}`, "--idempotency-key", "k1")
	id := strings.TrimSpace(r.stdout)
	if len(id) != 32 || !strings.Contains(r.stderr, "activations result "+id) {
		t.Fatalf("invoke --async: %q / %q", r.stdout, r.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, ".config", "cloister", "activations", id+".json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved activation key: %v %v", fi, err)
	}
	r = s.mustCLI("activations", "result", id, "--wait", "60s")
	if !strings.Contains(r.stdout, "Hello, Ada!") || !strings.Contains(r.stderr, "verified:") {
		t.Fatalf("activations result: %q / %q", r.stdout, r.stderr)
	}
	r = s.mustCLI("invoke", "hello", "--async", "--data", `{"name":"Ada"}`, "--idempotency-key", "k1")
	if strings.TrimSpace(r.stdout) != id || !strings.Contains(r.stderr, "seen before") {
		t.Fatalf("idempotent resubmission: %q / %q", r.stdout, r.stderr)
	}
	// The same key for another function is a mistake, not a duplicate.
	if r := s.cli("invoke", "sha", "--async", "--data", "abc", "--idempotency-key", "k1"); r.code != 1 || !strings.Contains(r.stderr, "idempotency_conflict") || !strings.Contains(r.stderr, id) {
		t.Fatalf("idempotency key reused for another function: exit %d %q / %q", r.code, r.stdout, r.stderr)
	}
	r = s.mustCLI("activations", "list", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0]["activationId"] != id || list[0]["status"] != "success" {
		t.Fatalf("activations list: %v %s", err, r.stdout)
	}
	r = s.mustCLI("activations", "logs", id)
	if !strings.Contains(r.stdout, "queued") || !strings.Contains(r.stdout, "attempt 1 on worker") {
		t.Fatalf("activations logs: %q", r.stdout)
	}
	r = s.mustCLI("activations", "get", id, "--json")
	if !strings.Contains(r.stdout, `"duration"`) || !strings.Contains(r.stdout, `"success": true`) {
		t.Fatalf("activations get: %s", r.stdout)
	}
	if r := s.cli("activations", "get", "0123456789abcdef0123456789abcdef"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("unknown activation: exit %d %q", r.code, r.stderr)
	}
	if r := s.mustCLI("activations", "dead", "--since", "1h"); !strings.HasPrefix(r.stdout, "TIME") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("activations dead with none: %q", r.stdout)
	}
	if r := s.cli("activations", "dead", "--since", "yesterday"); r.code != 2 {
		t.Fatalf("activations dead --since yesterday: exit %d %q", r.code, r.stderr)
	}
	if r := s.cli("activations", "result", "nope"); r.code != 2 {
		t.Fatalf("malformed activation id: exit %d %q", r.code, r.stderr)
	}

	// A sequence is invoked like a function; its receipt chain verifies.
	// The owner key signs the definition.
	if r := s.mustCLI("seq", "create", "pipe", "sha", "sha@1"); !strings.Contains(r.stdout, "sha@latest → sha@v1  (signed by owner ") {
		t.Fatalf("seq create: %q", r.stdout)
	}
	chain := filepath.Join(dir, "chain.json")
	r = s.mustCLI("invoke", "pipe", "--data", "abc", "--receipt-out", chain)
	// sha256(hex(sha256("abc")) + "\n"?) is what two sha steps produce; check the shape.
	if len(strings.TrimSpace(r.stdout)) != 64 || !strings.Contains(r.stderr, "all 2 step receipts verified") || !strings.Contains(r.stderr, "definition signed by owner") {
		t.Fatalf("sequence invoke: %q / %q", r.stdout, r.stderr)
	}
	if r := s.mustCLI("seq", "create", "loose", "sha", "--unsigned"); !strings.Contains(r.stdout, "(unsigned)") {
		t.Fatalf("seq create --unsigned: %q", r.stdout)
	}
	if r := s.mustCLI("invoke", "loose", "--data", "abc"); !strings.Contains(r.stderr, "definition UNSIGNED") {
		t.Fatalf("unsigned sequence invoke: %q", r.stderr)
	}
	if r := s.cli("seq", "create", "nokey", "sha", "--key", filepath.Join(dir, "missing.key")); r.code != 1 || !strings.Contains(r.stderr, "--unsigned") {
		t.Fatalf("seq create without a key: exit %d %q", r.code, r.stderr)
	}
	r = s.mustCLI("receipt", "verify", chain)
	if !strings.Contains(r.stdout, "receipt chain verified: 2 steps") {
		t.Fatalf("receipt verify chain: %q", r.stdout)
	}
	var signed []json.RawMessage
	b, _ := os.ReadFile(chain)
	json.Unmarshal(b, &signed)
	os.WriteFile(chain, mustMarshal([]json.RawMessage{signed[1], signed[0]}), 0o644)
	if r := s.cli("receipt", "verify", chain); r.code != 3 {
		t.Fatalf("reordered chain: exit %d %q", r.code, r.stderr)
	}
	s.mustCLI("seq", "create", "bad", "sha", "boom", "sha")
	r = s.cli("invoke", "bad", "--data", "x")
	if r.code != 4 || !strings.Contains(r.stderr, "sequence_step_failed") || !strings.Contains(r.stderr, "step 2") {
		t.Fatalf("failing sequence: exit %d %q", r.code, r.stderr)
	}

	// Triggers: bad input has stable codes; a manual fire runs a rule.
	if r := s.cli("trigger", "create", "t", "--cron", "61 * * * *"); r.code != 1 || !strings.Contains(r.stderr, "invalid_trigger") {
		t.Fatalf("bad cron: exit %d %q", r.code, r.stderr)
	}
	writeManifest(t, dir, "open", `{"confidential":"optional","invokers":"any"}`)
	s.mustCLI("fn", "deploy", "open-sha", repo("examples", "sha256-c", "sha256-c.wasm"), "--manifest", filepath.Join(dir, "open.json"))
	s.mustCLI("trigger", "create", "manual")
	s.mustCLI("rule", "create", "r1", "--trigger", "manual", "--function", "open-sha")
	r = s.mustCLI("trigger", "fire", "manual", "--data", "abc")
	fired := strings.TrimSpace(r.stdout)
	if len(fired) != 32 {
		t.Fatalf("trigger fire: %q", r.stdout)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = s.cli("activations", "result", fired)
		if r.code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(r.stdout, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") {
		t.Fatalf("triggered activation result: exit %d %q %q", r.code, r.stdout, r.stderr)
	}

	// The rule's function is redeployed confidential: the next fire's
	// plaintext job is dead-lettered, and the namespace sees why.
	s.mustCLI("fn", "deploy", "open-sha", repo("examples", "sha256-c", "sha256-c.wasm"))
	fired = strings.TrimSpace(s.mustCLI("trigger", "fire", "manual", "--data", "abc").stdout)
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = s.mustCLI("activations", "dead")
		if strings.Contains(r.stdout, fired) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(r.stdout, fired+"  open-sha  confidential_required") {
		t.Fatalf("activations dead: %q", r.stdout)
	}
	s.stop()
}

func mustMarshal(v any) []byte { b, _ := json.Marshal(v); return b }
