package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
)

// TestAPIKeysCLI drives `cloister keys api create|list|revoke` against a
// real `cloister up`: create prints the key and nothing else on stdout;
// list never shows a key; a wrong-scope, expired or revoked key is refused
// with its own code while the node keeps serving; a namespace admin key
// stays in its namespace; no key reaches the node's log.
func TestAPIKeysCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	as := func(key string, args ...string) result {
		t.Helper()
		s.extraEnv = []string{"CLOISTER_TOKEN=" + key}
		defer func() { s.extraEnv = nil }()
		return s.cli(args...)
	}
	refused := func(r result, code string) bool { return r.code == exitError && strings.Contains(r.stderr, code) }
	keyLine := regexp.MustCompile(`^clk_[A-Za-z0-9_-]{43}\n$`)
	create := func(by string, args ...string) string {
		t.Helper()
		r := as(by, append([]string{"keys", "api", "create"}, args...)...)
		if r.code != 0 || !keyLine.MatchString(r.stdout) {
			t.Fatalf("keys api create %v: exit %d, stdout %q (want the key and nothing else), stderr %s", args, r.code, r.stdout, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	platform := s.env["CLOISTER_TOKEN"]
	var keys []string

	s.mustCLI("keys", "new")
	s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm"))

	// An invoke key: it invokes and reads, and cannot deploy.
	inv := create(platform, "--scope", "invoke", "--name", "ci")
	keys = append(keys, inv)
	if r := as(inv, "invoke", "hello", "--data", `{"name":"Ada"}`); r.code != 0 || !strings.Contains(r.stdout, "Hello, Ada!") {
		t.Errorf("invoke with an invoke key: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(inv, "fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !refused(r, "insufficient_scope") {
		t.Errorf("deploy with an invoke key: exit %d %s, want insufficient_scope", r.code, r.stderr)
	}
	if r := as(inv, "keys", "api", "list"); !refused(r, "insufficient_scope") {
		t.Errorf("keys api list with an invoke key: exit %d %s", r.code, r.stderr)
	}

	// list shows ids, never keys.
	r := s.mustCLI("keys", "api", "list")
	id := client.APIKeyID(inv)
	if !regexp.MustCompile(id + `\s+default\s+invoke\s+ci\s+\S+\s+-\s+active`).MatchString(r.stdout) {
		t.Errorf("keys api list:\n%s\nwant a row for %s", r.stdout, id)
	}
	r = s.mustCLI("keys", "api", "list", "--json")
	var listed []client.APIKey
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("keys api list --json: %v\n%s", err, r.stdout)
	}
	if strings.Contains(r.stdout, inv) || strings.Contains(r.stdout, platform) {
		t.Error("keys api list shows a key")
	}

	// An expiring key works, then is refused as expired.
	exp := create(platform, "--scope", "deploy", "--expires", "2s")
	keys = append(keys, exp)
	if r := as(exp, "fn", "list"); r.code != 0 {
		t.Errorf("fn list with a fresh key: exit %d %s", r.code, r.stderr)
	}
	time.Sleep(2100 * time.Millisecond)
	if r := as(exp, "fn", "list"); !refused(r, "key_expired") {
		t.Errorf("an expired key: exit %d %s, want key_expired", r.code, r.stderr)
	}

	// Revoke by key, then by id.
	if r := s.mustCLI("keys", "api", "revoke", inv); !strings.Contains(r.stdout, "revoked API key "+id) {
		t.Errorf("keys api revoke: %q", r.stdout)
	}
	if r := as(inv, "invoke", "hello", "--data", `{"name":"Ada"}`); !refused(r, "key_revoked") {
		t.Errorf("a revoked key: exit %d %s, want key_revoked", r.code, r.stderr)
	}
	dep := create(platform, "--scope", "deploy")
	keys = append(keys, dep)
	s.mustCLI("keys", "api", "revoke", strings.ToUpper(client.APIKeyID(dep)))
	if r := as(dep, "fn", "list"); !refused(r, "key_revoked") {
		t.Errorf("a key revoked by id: exit %d %s, want key_revoked", r.code, r.stderr)
	}
	r = s.mustCLI("keys", "api", "list", "--json")
	listed = nil
	json.Unmarshal([]byte(r.stdout), &listed)
	status := map[string]string{}
	for _, k := range listed {
		status[k.ID] = k.Status
	}
	if status[id] != "revoked" || status[client.APIKeyID(exp)] != "expired" || status[client.APIKeyID(dep)] != "revoked" || status[client.APIKeyID(platform)] != "active" {
		t.Errorf("statuses after revocation: %v", status)
	}

	// A namespace admin key stays in its namespace.
	teamAdmin := create(platform, "--scope", "admin", "--namespace", "team-a")
	keys = append(keys, teamAdmin)
	if r := as(teamAdmin, "keys", "api", "create", "--scope", "invoke", "--namespace", "default"); !refused(r, "forbidden") || r.stdout != "" {
		t.Errorf("a team-a admin key minting for default: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := as(teamAdmin, "keys", "api", "create", "--scope", "admin", "--platform"); !refused(r, "forbidden") {
		t.Errorf("a team-a admin key minting a platform key: exit %d %s", r.code, r.stderr)
	}
	if r := as(teamAdmin, "token", "create", "team-b"); !refused(r, "forbidden") {
		t.Errorf("a team-a admin key with token create team-b: exit %d %s", r.code, r.stderr)
	}
	teamKey := create(teamAdmin, "--scope", "invoke")
	keys = append(keys, teamKey)
	if r := as(teamAdmin, "keys", "api", "list", "--json"); r.code != 0 || strings.Contains(r.stdout, `"namespace": "default"`) || !strings.Contains(r.stdout, client.APIKeyID(teamKey)) {
		t.Errorf("team-a's listing: exit %d\n%s", r.code, r.stdout)
	}
	if r := as(teamAdmin, "keys", "api", "revoke", client.APIKeyID(platform)); !refused(r, "not_found") {
		t.Errorf("team-a revoking the platform key: exit %d %s", r.code, r.stderr)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"keys", "api", "create"},
		{"keys", "api", "create", "--scope", "invoke", "--expires", "banana"},
		{"keys", "api", "revoke", "nonsense"},
		{"keys", "api", "revoke"},
		{"keys", "api", "rotate"},
	} {
		if r := s.cli(args...); r.code != exitUsage {
			t.Errorf("cloister %s: exit %d, want %d", strings.Join(args, " "), r.code, exitUsage)
		}
	}
	if r := s.cli("keys", "api", "create", "--scope", "root"); !refused(r, "bad_request") {
		t.Errorf("--scope root: exit %d %s", r.code, r.stderr)
	}

	// The node kept serving, and no key reached its log.
	s.mustCLI("invoke", "hello", "--data", `{"name":"Bob"}`)
	for _, k := range append(keys, platform) {
		if strings.Contains(s.log.String(), k[len("clk_"):]) {
			t.Errorf("a key is in the node's log")
		}
	}
	if !strings.Contains(s.log.String(), client.APIKeyID(teamKey)) {
		t.Errorf("the node's log does not name the keys it created by id")
	}
	s.stop()
}
