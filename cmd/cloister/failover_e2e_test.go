package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGatewayFailoverCLI: CLOISTER_URL, in the environment or in
// client.env, may list several gateways. The CLI gets past one that is gone
// and one that answers unavailable, deploys and invokes through the one
// that works, and names the gateway that answered only with CLOISTER_DEBUG.
func TestGatewayFailoverCLI(t *testing.T) {
	dir := t.TempDir()
	s := startUp(t, dir)
	real := s.env["CLOISTER_URL"]

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code":"unavailable","message":"not connected to NATS"}`))
	}))
	defer busy.Close()
	list := dead + "," + busy.URL + "," + real

	s.mustCLI("keys", "new")
	s.extraEnv = []string{"CLOISTER_URL=" + list}
	if r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "deployed hello v1") {
		t.Errorf("deploy through the list: %q", r.stdout)
	}
	r := s.mustCLI("invoke", "hello", "--data", `{"name":"Ada"}`)
	if !strings.Contains(r.stdout, "Hello, Ada!") {
		t.Errorf("invoke through the list: %q", r.stdout)
	}
	if strings.Contains(r.stderr, "gateway answered") || strings.Contains(r.stderr, busy.URL) {
		t.Errorf("without CLOISTER_DEBUG the CLI names gateways: %q", r.stderr)
	}

	// The list in client.env, and the debug output.
	b, err := os.ReadFile(filepath.Join(dir, ".cloister", "client.env"))
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(dir, "list.env")
	if err := os.WriteFile(envFile, []byte(strings.Replace(string(b), "CLOISTER_URL="+real, "CLOISTER_URL="+list, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.extraEnv = []string{"CLOISTER_ENV=" + envFile, "CLOISTER_DEBUG=1"}
	r = s.mustCLI("invoke", "hello", "--data", `{"name":"Bob"}`)
	if !strings.Contains(r.stdout, "Hello, Bob!") {
		t.Errorf("invoke through client.env's list: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "gateway answered") || !strings.Contains(r.stderr, "gateway="+real) ||
		!strings.Contains(r.stderr, "gateway refused") || !strings.Contains(r.stderr, "gateway failed") {
		t.Errorf("CLOISTER_DEBUG output does not show the failover and the gateway that answered: %q", r.stderr)
	}
	s.extraEnv = []string{"CLOISTER_URL=" + dead + ",not a url"}
	if r := s.cli("fn", "list"); r.code == 0 || !strings.Contains(r.stderr, "invalid gateway URL") {
		t.Errorf("a malformed list: exit %d, %q", r.code, r.stderr)
	}
}
