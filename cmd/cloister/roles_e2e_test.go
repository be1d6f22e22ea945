package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/tee/hw"
)

// syncBuffer is a bytes.Buffer that a child process writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// roleProc is one role running as a child process.
type roleProc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

// startRole starts `cloister args...` in dir. The child is killed when the
// test ends, if it still runs.
func startRole(t *testing.T, dir, name string, args ...string) *roleProc {
	t.Helper()
	p := &roleProc{name: name, cmd: exec.Command(binary, args...), log: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "CLOISTER_ENV=", "CLOISTER_POLICY=", "HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		childRaces(t, name, p.log.String())
	})
	return p
}

// exited reports whether the process has stopped, with its error.
func (p *roleProc) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and expects a clean exit within 20 s.
func (p *roleProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name, err, p.log)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop within 20s of SIGTERM:\n%s", p.name, p.log)
	}
}

// startNATS starts a NATS server with JetStream in this test process, on
// loopback and a random port, as an external NATS would be to the roles.
func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: bus.MaxPayload, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("NATS did not become ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

// TestRolesAsProcesses runs every role as its own process on an external
// NATS: `cloister coordinator --tee sim`, `cloister worker --tee sim` with
// its own data directory, and `cloister gateway`, which has none. Through
// the gateway the CLI deploys a function, invokes it sealed, verifies the
// receipt and its inclusion in the ledger, and verifies the ledger, whose
// files the gateway fetches from the coordinator over NATS.
func TestRolesAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	natsURL := startNATS(t)
	// All children are killed if the test runs over its budget.
	rs := newRoleSet(t, 60*time.Second)
	start, logs := rs.start, rs.logs
	deadline := time.Now().Add(45 * time.Second)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		rs.waitFor(deadline, logs, what, ok)
	}

	// --tee auto never falls back to sim: without hardware it refuses to
	// start, and says how to ask for sim.
	if _, err := hw.Detect(); err != nil {
		out, err := exec.Command(binary, "coordinator", "--tee", "auto", "--nats", natsURL, "--data", filepath.Join(dir, "auto")).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--tee sim") || strings.Contains(string(out), "coordinator starting") {
			t.Fatalf("coordinator --tee auto without hardware: %v\n%s", err, out)
		}
	}

	// The coordinator keeps its data where the CLI helpers look for
	// client.env (dir/.cloister); the gateway's URL is known in advance.
	gwAddr := freeAddr(t)
	gwURL := "http://" + gwAddr
	coordData := filepath.Join(dir, ".cloister")
	// Two URLs, the first dead: the connection fails over to the second.
	coord := start(filepath.Join(dir, "coord-wd"), "coordinator", "coordinator", "--tee", "sim",
		"--nats", "nats://127.0.0.1:1,"+natsURL, "--data", coordData, "--gateway-url", gwURL)
	envPath := filepath.Join(coordData, "client.env")
	var env map[string]string
	waitFor("client.env", func() bool {
		e, err := node.ReadEnvFile(envPath)
		env = e
		return err == nil && e["CLOISTER_TOKEN"] != ""
	})
	if env["CLOISTER_URL"] != gwURL || !strings.HasPrefix(env["CLOISTER_TOKEN"], "clk_") {
		t.Fatalf("client.env written by the coordinator: %v", env)
	}
	for _, f := range []string{"policy.json", node.AdminKeyFile} {
		if _, err := os.Stat(filepath.Join(coordData, f)); err != nil {
			t.Fatalf("the coordinator did not write %s: %v", f, err)
		}
	}
	// Its output reaches the test through a pipe, later than the file.
	waitFor("the sim coordinator's warning", func() bool {
		return strings.Contains(coord.log.String(), "NO hardware protection") && strings.Contains(coord.log.String(), "NOT SECURE")
	})

	// The worker gets its own data directory: a copy of the sim root (the
	// simulated hardware vendor's key, which the manifest trusts) and of
	// the coordinator's policy.
	workerData := filepath.Join(dir, "worker-data")
	for _, f := range []string{filepath.Join("sim", "root.key"), "policy.json"} {
		if err := copyFile(filepath.Join(coordData, f), filepath.Join(workerData, f)); err != nil {
			t.Fatal(err)
		}
	}
	start(filepath.Join(dir, "worker-wd"), "worker", "worker", "--tee", "sim", "--nats", natsURL,
		"--data", workerData, "--policy", filepath.Join(workerData, "policy.json"), "--id", "w-roles")
	// The gateway runs in an empty directory and is given none.
	gwWD := filepath.Join(dir, "gateway-wd")
	gw := start(gwWD, "gateway", "gateway", "--addr", gwAddr, "--nats", natsURL)
	waitFor("the gateway to be ready (a coordinator with an admitted worker)", ready(gwURL))

	s := &server{t: t, dir: dir, env: env}
	s.mustCLI("keys", "new")
	if r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "deployed hello v1") {
		t.Errorf("deploy: %q", r.stdout)
	}
	receiptPath := filepath.Join(dir, "receipt.json")
	r := s.mustCLI("invoke", "hello", "--data", `{"name":"Ada"}`, "--receipt-out", receiptPath)
	if !strings.Contains(r.stdout, `"greeting":"Hello, Ada!"`) || !strings.Contains(r.stderr, "verified:") {
		t.Errorf("sealed invoke: stdout %q stderr %q", r.stdout, r.stderr)
	}
	s.mustCLI("receipt", "verify", receiptPath)
	if r := s.mustCLI("attest"); !strings.Contains(r.stdout, "1 admitted") {
		t.Errorf("attest: %q, want one admitted worker", r.stdout)
	}
	// The receipt reaches the coordinator's ledger; the CLI reads the
	// checkpoint and tiles through the gateway, which asks the coordinator.
	waitFor("the receipt's inclusion in the ledger", func() bool {
		r := s.cli("receipt", "verify", receiptPath, "--require-inclusion")
		return r.code == 0 && strings.Contains(r.stdout, "included at index")
	})
	s.mustCLI("ledger", "verify")
	s.mustCLI("invoke", "hello", "--data", `{"name":"Bob"}`)
	waitFor("the ledger to grow and stay consistent", func() bool {
		r := s.cli("ledger", "verify")
		return r.code == 0 && strings.Contains(r.stdout, "consistent") && !strings.Contains(r.stdout, "size 1 → 1;")
	})

	// Only the ledger's public files are served; nothing else of the
	// coordinator's directory, and not without an API key.
	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, gwURL+"/v1/ledger/log/"+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+env["CLOISTER_TOKEN"])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("checkpoint", true); code != http.StatusOK || !strings.HasPrefix(body, "cloister/ledger\n") {
		t.Errorf("checkpoint: %d %q", code, body)
	}
	if code, _ := get("checkpoint", false); code != http.StatusUnauthorized {
		t.Errorf("checkpoint without an API key: %d, want 401", code)
	}
	for _, p := range []string{".state/treeState", ".entry-sha256", "tile/0/000.p/999", "tile/64/000", "tile/0/..%2f..%2fpolicy.json", "checkpoint.tmp", "tile/0/x000/x000/x000/x000/x000/x000/x000/000"} {
		if code, body := get(p, true); code != http.StatusNotFound || !strings.Contains(body, "not_found") {
			t.Errorf("GET /v1/ledger/log/%s: %d %q, want 404 not_found", p, code, body)
		}
	}
	if entries, err := os.ReadDir(gwWD); err != nil || len(entries) != 0 {
		t.Errorf("the gateway wrote to its directory: %v %v", entries, err)
	}

	// A graceful stop, gateway first and the coordinator last.
	for _, p := range []*roleProc{gw, rs.procs[1], coord} {
		p.stop(t)
	}
	if t.Failed() {
		t.Log(logs())
	}
}

// roleSet starts a test's role processes and kills them all if the test
// runs over its budget.
type roleSet struct {
	t     *testing.T
	mu    sync.Mutex
	procs []*roleProc
}

func newRoleSet(t *testing.T, budget time.Duration) *roleSet {
	rs := &roleSet{t: t}
	timer := time.AfterFunc(budget, func() {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		for _, p := range rs.procs {
			_ = p.cmd.Process.Kill()
		}
	})
	t.Cleanup(func() { timer.Stop() })
	return rs
}

// start runs the binary with args in wd (made if need be) as role name.
func (rs *roleSet) start(wd, name string, args ...string) *roleProc {
	if err := os.MkdirAll(wd, 0o700); err != nil {
		rs.t.Fatal(err)
	}
	p := startRole(rs.t, wd, name, args...)
	rs.mu.Lock()
	rs.procs = append(rs.procs, p)
	rs.mu.Unlock()
	return p
}

// logs returns every process's output so far, for a failure message.
func (rs *roleSet) logs() string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var b strings.Builder
	for _, p := range rs.procs {
		b.WriteString("--- " + p.name + ":\n" + p.log.String())
	}
	return b.String()
}

// waitFor polls ok until it holds; it fails the test at deadline, or at
// once when one of the processes exited, with logs() in the message.
func (rs *roleSet) waitFor(deadline time.Time, logs func() string, what string, ok func() bool) {
	rs.t.Helper()
	for !ok() {
		rs.mu.Lock()
		procs := append([]*roleProc(nil), rs.procs...)
		rs.mu.Unlock()
		for _, p := range procs {
			if done, err := p.exited(); done {
				rs.t.Fatalf("waiting for %s: %s exited (%v)\n%s", what, p.name, err, logs())
			}
		}
		if time.Now().After(deadline) {
			rs.t.Fatalf("waiting for %s: out of time\n%s", what, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready reports, each time it is called, whether the gateway at url
// answers /readyz with 200.
func ready(url string) func() bool {
	return func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}
