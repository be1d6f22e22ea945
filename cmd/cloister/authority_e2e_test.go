package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCallerKeysCLI: the CLI signs every sealed call with the owner key
// (or the key --key or CLOISTER_KEY names); `fn policy` shows and changes
// who may invoke; the worker refuses everyone else, with a receipt; and
// `ledger audit --by-caller` bills each caller.
func TestCallerKeysCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")
	r := s.mustCLI("keys", "new", "--out", filepath.Join(dir, "friend.key"))
	friendPub := strings.TrimSpace(r.stdout[strings.LastIndex(r.stdout, "public key: ")+len("public key: "):])
	s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm"))

	var p struct {
		Version  int      `json:"policy_version"`
		Invokers string   `json:"invokers"`
		Keys     []string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI("fn", "policy", "hello", "--json").stdout), &p); err != nil || p.Version != 1 || p.Invokers != "owner" {
		t.Fatalf("a new function's policy: %+v %v", p, err)
	}
	s.mustCLI("invoke", "hello", "--data", `{"name":"owner"}`)
	if r := s.cli("invoke", "hello", "--data", `{}`, "--key", filepath.Join(dir, "friend.key")); r.code == 0 || !strings.Contains(r.stderr, "caller_not_authorised") {
		t.Fatalf("a caller not in the policy: exit %d %q", r.code, r.stderr)
	}
	if r := s.cli("invoke", "hello", "--data", `{}`, "--key", filepath.Join(dir, "missing.key")); r.code == 0 {
		t.Fatalf("--key naming no file: exit 0")
	}

	// The owner lets the friend in (and only the friend).
	r = s.mustCLI("fn", "policy", "hello", "--invokers", friendPub, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.Version != 2 || p.Invokers != "keys" || len(p.Keys) != 1 || p.Keys[0] != friendPub {
		t.Fatalf("the new policy: %+v %v", p, err)
	}
	if r := s.cli("fn", "policy", "hello", "--invokers", "everyone"); r.code != 2 {
		t.Fatalf("--invokers everyone: exit %d %q", r.code, r.stderr)
	}
	// Workers apply it within their 5-second registry check.
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := s.cli("invoke", "hello", "--data", `{"name":"friend"}`, "--key", filepath.Join(dir, "friend.key"))
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(r.stderr, "caller_not_authorised") {
			t.Fatalf("the friend, let in: exit %d %q", r.code, r.stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if r := s.cli("invoke", "hello", "--data", `{}`); r.code == 0 || !strings.Contains(r.stderr, "caller_not_authorised") {
		t.Fatalf("the owner, no longer listed: exit %d %q", r.code, r.stderr)
	}

	// The bill per caller: the owner's calls, the friend's, and the
	// refusals are each billed to whoever made them.
	var audit struct {
		Bill []struct {
			Function    string `json:"function"`
			Caller      string `json:"caller_sha256"`
			Invocations int    `json:"invocations"`
			Failed      int    `json:"failed"`
		} `json:"bill"`
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		r := s.mustCLI("ledger", "audit", "--by-caller", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &audit); err != nil {
			t.Fatal(err)
		}
		if len(audit.Bill) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond) // receipts reach the ledger asynchronously
	}
	if len(audit.Bill) != 2 || audit.Bill[0].Caller == audit.Bill[1].Caller || audit.Bill[0].Caller == "" || audit.Bill[1].Caller == "" {
		t.Fatalf("the bill per caller: %+v", audit.Bill)
	}
}
