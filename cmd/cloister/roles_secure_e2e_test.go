package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
)

// violationLog keeps what the NATS server logs as an error or a warning:
// permission violations and refused connections.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}
func (l *violationLog) Noticef(string, ...any)         {}
func (l *violationLog) Debugf(string, ...any)          {}
func (l *violationLog) Tracef(string, ...any)          {}
func (l *violationLog) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *violationLog) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *violationLog) Fatalf(format string, v ...any) { l.add(format, v...) }
func (l *violationLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, "Violation") {
			out = append(out, s)
		}
	}
	return out
}

// startSecureNATS generates a deployment's NATS files in dir and runs the
// node's config in this process, on 127.0.0.1 and a random port.
func startSecureNATS(t *testing.T, dir string) (*natsconf.Result, string, *violationLog) {
	t.Helper()
	res, err := natsconf.Generate(natsconf.Options{Dir: dir, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	opts, err := natsserver.ProcessConfigFile(res.Configs[0])
	if err != nil {
		t.Fatal(err)
	}
	opts.Port, opts.StoreDir, opts.NoSigs = -1, t.TempDir(), true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	vl := &violationLog{}
	ns.SetLogger(vl, false, false)
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("NATS did not become ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return res, strings.Replace(ns.ClientURL(), "nats://", "tls://", 1), vl
}

// TestRolesSecureNATS runs the three roles as processes on a NATS started
// from `cloister nats config`'s files: TLS and one nkey per role, with
// least-privilege permissions. Deploying, a sealed invoke with its
// receipt's inclusion in the ledger, queueing an async job, the manifest's
// history, attestation and deleting the function all work, and the
// server reports no permission violation. A role without its credentials
// or without TLS is refused.
func TestRolesSecureNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	natsDir := filepath.Join(dir, "nats")
	// The command writes the files; the test runs a server from them.
	out, err := runBinary(dir, "nats", "config", "--dir", filepath.Join(dir, "nats-cli"), "--hosts", "127.0.0.1", "--nodes", "3")
	if err != nil || !strings.Contains(out, "nats-server -c") || !strings.Contains(out, "--nats-nkey") {
		t.Fatalf("nats config: %v\n%s", err, out)
	}
	if out, err := runBinary(dir, "nats", "config", "--dir", filepath.Join(dir, "nats-cli")); err == nil {
		t.Fatalf("nats config into a used directory succeeded:\n%s", out)
	}
	res, natsURL, vl := startSecureNATS(t, natsDir)

	rs := newRoleSet(t, 90*time.Second)
	start := rs.start
	logs := func() string {
		return rs.logs() + "--- NATS violations:\n" + strings.Join(vl.violations(), "\n")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs())
		}
	})
	deadline := time.Now().Add(75 * time.Second)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		rs.waitFor(deadline, logs, what, ok)
	}
	sec := func(r natsconf.Role) []string {
		return []string{"--nats", natsURL, "--nats-ca", res.CA, "--nats-nkey", res.Seeds[r]}
	}

	// Refused: no credentials, another role's credentials for the
	// coordinator's subjects, plaintext.
	for _, c := range []struct {
		name string
		args []string
	}{
		{"no nkey", []string{"--nats", natsURL, "--nats-ca", res.CA}},
		{"the worker's nkey", sec(natsconf.Worker)},
		{"the gateway's nkey", sec(natsconf.Gateway)},
		{"plaintext", []string{"--nats", strings.Replace(natsURL, "tls://", "nats://", 1), "--nats-nkey", res.Seeds[natsconf.Coordinator]}},
	} {
		args := append([]string{"coordinator", "--tee", "sim", "--data", filepath.Join(dir, "refused")}, c.args...)
		out, err := runBinaryTimeout(dir, 20*time.Second, args...)
		if err == nil || strings.Contains(out, "coordinator starting") {
			t.Errorf("coordinator with %s: %v\n%s", c.name, err, out)
		}
	}

	// Those refusals are in the server's log; what follows must add none.
	refusals := len(vl.violations())
	if refusals == 0 {
		t.Error("another role's nkey subscribed to the coordinator's inbox without a violation")
	}

	gwAddr := freeAddr(t)
	gwURL := "http://" + gwAddr
	coordData := filepath.Join(dir, ".cloister")
	coord := start(filepath.Join(dir, "coord-wd"), "coordinator",
		append([]string{"coordinator", "--tee", "sim", "--data", coordData, "--gateway-url", gwURL}, sec(natsconf.Coordinator)...)...)
	envPath := filepath.Join(coordData, "client.env")
	var env map[string]string
	waitFor("client.env", func() bool {
		e, err := node.ReadEnvFile(envPath)
		env = e
		return err == nil && e["CLOISTER_TOKEN"] != ""
	})
	workerData := filepath.Join(dir, "worker-data")
	for _, f := range []string{filepath.Join("sim", "root.key"), "policy.json"} {
		if err := copyFile(filepath.Join(coordData, f), filepath.Join(workerData, f)); err != nil {
			t.Fatal(err)
		}
	}
	wk := start(filepath.Join(dir, "worker-wd"), "worker", append([]string{"worker", "--tee", "sim",
		"--data", workerData, "--policy", filepath.Join(workerData, "policy.json"), "--id", "w-secure"}, sec(natsconf.Worker)...)...)
	gw := start(filepath.Join(dir, "gateway-wd"), "gateway", append([]string{"gateway", "--addr", gwAddr}, sec(natsconf.Gateway)...)...)
	waitFor("the gateway to be ready", ready(gwURL))

	s := &server{t: t, dir: dir, env: env}
	s.mustCLI("keys", "new")
	if r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "deployed hello v1") {
		t.Errorf("deploy: %q", r.stdout)
	}
	receiptPath := filepath.Join(dir, "receipt.json")
	r := s.mustCLI("invoke", "hello", "--data", `{"name":"Ada"}`, "--receipt-out", receiptPath)
	if !strings.Contains(r.stdout, `"greeting":"Hello, Ada!"`) {
		t.Errorf("sealed invoke: stdout %q stderr %q", r.stdout, r.stderr)
	}
	waitFor("the receipt's inclusion in the ledger", func() bool {
		r := s.cli("receipt", "verify", receiptPath, "--require-inclusion")
		return r.code == 0 && strings.Contains(r.stdout, "included at index")
	})
	// The gateway queues an async job (the worker process takes none:
	// `cloister worker` runs no async consumer yet).
	r = s.mustCLI("invoke", "hello", "--async", "--data", `{"name":"Bob"}`)
	id := strings.TrimSpace(r.stdout)
	if r := s.mustCLI("activations", "get", id); !strings.Contains(r.stdout, id) {
		t.Errorf("activations get %s: %q", id, r.stdout)
	}
	s.mustCLI("manifest", "history")
	s.mustCLI("attest")
	s.mustCLI("ledger", "verify")
	s.mustCLI("fn", "delete", "hello")
	if v := vl.violations()[refusals:]; len(v) != 0 {
		t.Errorf("the roles hit permission violations:\n%s", strings.Join(v, "\n"))
	}
	for _, p := range []*roleProc{gw, wk, coord} {
		p.stop(t)
	}
}

// runBinary runs `cloister args...` in dir (20 s at most) and returns its
// combined output.
func runBinary(dir string, args ...string) (string, error) {
	return runBinaryTimeout(dir, 20*time.Second, args...)
}

func runBinaryTimeout(dir string, d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CLOISTER_ENV=", "CLOISTER_POLICY=", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
