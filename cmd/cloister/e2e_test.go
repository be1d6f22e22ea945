package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/node"
)

// The end-to-end test builds the real binary, runs `cloister up` on a free
// port in a temporary directory, and drives it with the CLI as a user would.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cloister-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "cloister")
	args := []string{"build", "-o", binary}
	if raceBuild {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building cloister: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type server struct {
	t    *testing.T
	dir  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	env  map[string]string
	done chan error
	// extraEnv is added to the environment of cli's commands.
	extraEnv []string
}

func startUp(t *testing.T, dir string, extra ...string) *server {
	t.Helper()
	envPath := filepath.Join(dir, ".cloister", "client.env")
	started := time.Now().Add(-time.Second)
	s := &server{t: t, dir: dir, log: &bytes.Buffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(binary, append([]string{"up", "--addr", "127.0.0.1:0"}, extra...)...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		fi, statErr := os.Stat(envPath)
		if env, err := node.ReadEnvFile(envPath); statErr == nil && fi.ModTime().After(started) && err == nil && env["CLOISTER_TOKEN"] != "" {
			if resp, err := http.Get(env["CLOISTER_URL"] + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					s.env = env
					break
				}
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("cloister up exited early: %v\n%s", err, s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.cmd.Process.Kill()
			t.Fatalf("cloister up not ready in time:\n%s", s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
		childRaces(t, "cloister up", s.log.String())
	})
	return s
}

// childRaces fails the test if a child built with -race (raceBuild)
// reported a data race in its output.
func childRaces(t *testing.T, name, log string) {
	t.Helper()
	if i := strings.Index(log, "WARNING: DATA RACE"); i >= 0 {
		t.Errorf("%s reported a data race:\n%s", name, log[i:min(len(log), i+6000)])
	}
}

// stop sends SIGTERM and expects a clean exit.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("cloister up exited with %v after SIGTERM:\n%s", err, s.log)
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		s.t.Fatalf("cloister up did not stop within 30s of SIGTERM")
	}
	if !strings.Contains(s.log.String(), "NO hardware protection") {
		s.t.Errorf("cloister up did not print the sim warning")
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the CLI against the server.
func (s *server) cli(args ...string) result {
	s.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		"CLOISTER_ENV="+filepath.Join(s.dir, ".cloister", "client.env"),
		"CLOISTER_URL=", "CLOISTER_TOKEN=", "CLOISTER_POLICY=",
		"CLOISTER_KEY="+filepath.Join(s.dir, "owner.key"),
		"XDG_CACHE_HOME="+filepath.Join(s.dir, "cache"),
		"HOME="+s.dir,
	)
	cmd.Env = append(cmd.Env, s.extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	if strings.Contains(errb.String(), "cloister: cloister:") {
		s.t.Errorf("cloister %s: a doubled prefix in %q", strings.Join(args, " "), errb.String())
	}
	return result{out.String(), errb.String(), code}
}

func (s *server) mustCLI(args ...string) result {
	s.t.Helper()
	r := s.cli(args...)
	if r.code != 0 {
		s.t.Fatalf("cloister %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func repo(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, parts...)...)
}

func writeManifest(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name+".json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")

	// A Go function (GOOS=wasip1), confidential by default.
	r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm"))
	if !strings.Contains(r.stdout, "deployed hello v1") {
		t.Errorf("deploy output: %q", r.stdout)
	}
	// Without CLOISTER_NAMESPACE, fn deploy signs for the API key's
	// namespace as the gateway names it (GET /v1/whoami).
	envFile := filepath.Join(s.dir, ".cloister", "client.env")
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "CLOISTER_NAMESPACE") {
			kept = append(kept, l)
		}
	}
	unpinned := filepath.Join(dir, "unpinned.env")
	if err := os.WriteFile(unpinned, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	s.extraEnv = []string{"CLOISTER_ENV=" + unpinned, "CLOISTER_NAMESPACE="}
	if r := s.mustCLI("fn", "deploy", "hello2", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "deployed hello2 v1") {
		t.Errorf("deploy without a pinned namespace: %q", r.stdout)
	}
	s.extraEnv = nil

	receiptPath := filepath.Join(dir, "receipt.json")
	r = s.mustCLI("invoke", "hello", "--data", `{"name":"Ada"}`, "--receipt-out", receiptPath)
	if !strings.Contains(r.stdout, `"greeting":"Hello, Ada!"`) {
		t.Errorf("hello output: got %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "verified:") || !strings.Contains(r.stderr, "WARNING") {
		t.Errorf("invoke summary: got %q, want a verification line and the sim warning", r.stderr)
	}
	r = s.mustCLI("invoke", "hello", "--data", `{"name":"Bob"}`, "--json")
	var js struct {
		Output   string `json:"output"`
		Verified bool   `json:"verified"`
		Receipt  struct {
			Function string `json:"function"`
			Status   string `json:"status"`
			Metering map[string]any
		} `json:"receipt"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil {
		t.Fatalf("invoke --json: %v\n%s", err, r.stdout)
	}
	if !js.Verified || js.Receipt.Function != "hello" || js.Receipt.Status != "ok" || !strings.Contains(js.Output, "Hello, Bob!") {
		t.Errorf("invoke --json: got %+v", js)
	}
	if n, ok := js.Receipt.Metering["instructions"].(float64); !ok || n <= 0 {
		t.Errorf("receipt metering %v: want an instruction count", js.Receipt.Metering)
	}
	s.mustCLI("receipt", "verify", receiptPath)
	rb, _ := os.ReadFile(receiptPath)
	tampered := bytes.Replace(rb, []byte(`"sig": "`), []byte(`"sig": "AAAA`), 1)
	os.WriteFile(receiptPath+".bad", tampered, 0o644)
	if r := s.cli("receipt", "verify", receiptPath+".bad"); r.code != exitVerify {
		t.Errorf("tampered receipt: exit %d, want %d (%s)", r.code, exitVerify, r.stderr)
	}
	if r := s.mustCLI("attest"); !strings.Contains(r.stdout, "1 admitted") || !strings.Contains(r.stdout, "WARNING") {
		t.Errorf("attest: got %q, want one admitted worker and the sim warning", r.stdout)
	}

	// A C function (clang + wasi-libc).
	s.mustCLI("fn", "deploy", "sha", repo("examples", "sha256-c", "sha256-c.wasm"))
	r = s.mustCLI("invoke", "sha", "--data", "abc")
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; strings.TrimSpace(r.stdout) != want {
		t.Errorf("sha256-c: got %q, want %q", r.stdout, want)
	}

	// Freshness: every invocation sees a clean global and memory.
	s.mustCLI("fn", "deploy", "counter", repo("internal", "sandbox", "testdata", "counter.wasm"))
	for i := range 3 {
		if r := s.mustCLI("invoke", "counter"); strings.TrimSpace(r.stdout) != "1 1" {
			t.Errorf("counter invocation %d: got %q, want \"1 1\"", i, r.stdout)
		}
	}

	// A C reactor: initialised once, then every call from its snapshot.
	s.mustCLI("fn", "deploy", "crc", repo("examples", "reactor-c", "reactor-c.wasm"), "--manifest", writeManifest(t, dir, "crc", `{"abi":"reactor"}`))
	for range 3 {
		if r := s.mustCLI("invoke", "crc", "--data", "123456789"); r.stdout != "cbf43926 calls=1" || !strings.Contains(r.stderr, "snapshot") {
			t.Errorf("reactor-c: got %q (%s), want \"cbf43926 calls=1\"", r.stdout, r.stderr)
		}
	}
	// The manifest's ABI must match the module.
	if r := s.cli("fn", "deploy", "crc2", repo("examples", "reactor-c", "reactor-c.wasm")); r.code == 0 || !strings.Contains(r.stderr, "invalid_module") {
		t.Errorf("reactor deployed as a command: exit %d %q", r.code, r.stderr)
	}

	// Versions: a second deploy is v2; v1 is still reachable.
	s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm"))
	if r := s.mustCLI("fn", "get", "hello", "--json"); !strings.Contains(r.stdout, `"version": 2`) {
		t.Errorf("fn get after second deploy: %s", r.stdout)
	}
	s.mustCLI("invoke", "hello", "--version", "1")

	// Hostile fixtures: each fails with its code, and the server keeps serving.
	td := func(n string) string { return repo("internal", "sandbox", "testdata", n) }
	hostile := []struct {
		name, file, manifest string
		deployCode           string // non-empty: deploy must fail with it
		invokeCode           string
	}{
		{"notwasm", td("not_wasm.bin"), "", "invalid_module", ""},
		{"nostart", td("not_command.wasm"), "", "invalid_module", ""},
		{"huge", td("huge_memory.wasm"), "", "memory_limit", ""},
		{"trap", td("trap.wasm"), "", "", "function_trap"},
		{"loop", td("infinite_loop.wasm"), `{"limits":{"timeout_ms":300}}`, "", "timeout"},
		{"burner", td("infinite_loop.wasm"), `{"limits":{"fuel":1000000}}`, "", "fuel_exhausted"},
		{"bomb", td("memory_bomb.wasm"), `{"limits":{"memory_pages":64}}`, "", "memory_limit"},
		{"flood", td("big_output.wasm"), `{"limits":{"max_output_bytes":65536}}`, "", "output_too_large"},
		{"exit3", td("exit_code.wasm"), "", "", "function_exit"},
	}
	for _, h := range hostile {
		args := []string{"fn", "deploy", h.name, h.file}
		if h.manifest != "" {
			args = append(args, "--manifest", writeManifest(t, dir, h.name, h.manifest))
		}
		r := s.cli(args...)
		if h.deployCode != "" {
			if r.code == 0 || !strings.Contains(r.stderr, h.deployCode) {
				t.Errorf("deploy %s: exit %d, stderr %q; want failure with %s", h.name, r.code, r.stderr, h.deployCode)
			}
		} else {
			if r.code != 0 {
				t.Fatalf("deploy %s: exit %d: %s", h.name, r.code, r.stderr)
			}
			r = s.cli("invoke", h.name)
			if r.code != exitFunction || !strings.Contains(r.stderr, h.invokeCode) {
				t.Errorf("invoke %s: exit %d, stderr %q; want exit %d with %s", h.name, r.code, r.stderr, exitFunction, h.invokeCode)
			}
		}
		if r := s.cli("invoke", "counter"); r.code != 0 || strings.TrimSpace(r.stdout) != "1 1" {
			t.Fatalf("after %s the server stopped serving: exit %d %q %q", h.name, r.code, r.stdout, r.stderr)
		}
	}

	// Plaintext to a confidential function is refused; a missing key too.
	if r := s.cli("invoke", "hello", "--plaintext", "--data", "{}"); r.code == 0 || !strings.Contains(r.stderr, "confidential_required") {
		t.Errorf("plaintext to a confidential function: exit %d, %q", r.code, r.stderr)
	}
	req, _ := http.NewRequest(http.MethodGet, s.env["CLOISTER_URL"]+"/v1/functions", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no API key: got %v %v, want 401", resp.StatusCode, err)
	}

	// fn list, then delete.
	if r := s.mustCLI("fn", "list"); !strings.Contains(r.stdout, "hello") || !strings.Contains(r.stdout, "sha") {
		t.Errorf("fn list: %s", r.stdout)
	}
	s.mustCLI("fn", "delete", "trap")
	if r := s.cli("invoke", "trap"); r.code == 0 || !strings.Contains(r.stderr, "not_found") {
		t.Errorf("invoke after delete: exit %d %q", r.code, r.stderr)
	}

	// The ledger: the saved receipt is included in a signed checkpoint, the
	// log is consistent, and the audit bills every function.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.cli("receipt", "verify", receiptPath, "--require-inclusion")
		if r.code == 0 && strings.Contains(r.stdout, "included at index") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipt never included in the ledger: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.mustCLI("ledger", "verify")
	// The audit covers what the latest checkpoint covers (one a second).
	for {
		r := s.mustCLI("ledger", "audit", "--csv")
		if strings.Contains(r.stdout, "default,hello,") && strings.Contains(r.stdout, "default,trap,1,1,") && strings.Contains(r.stdout, ",peak_memory_pages,duplicates\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger audit --csv never billed every function: %s", r.stdout)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Restart on the same data: functions, keys and the API key survive.
	token := s.env["CLOISTER_TOKEN"]
	s.stop()
	s = startUp(t, dir)
	if s.env["CLOISTER_TOKEN"] != token {
		t.Errorf("API key changed across restart")
	}
	r = s.mustCLI("invoke", "hello", "--data", `{"name":"again"}`)
	if !strings.Contains(r.stdout, "Hello, again!") {
		t.Errorf("after restart: %q", r.stdout)
	}
	s.mustCLI("receipt", "verify", receiptPath, "--require-inclusion") // same coordinator identity and log after restart
	if r := s.mustCLI("ledger", "verify"); !strings.Contains(r.stdout, "consistent") {
		t.Errorf("ledger verify after restart: %q", r.stdout)
	}
	if r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "v3") {
		t.Errorf("deploy after restart: %q, want v3", r.stdout)
	}
	s.stop()
}

// TestLedgerSurvivesKill: receipts the ledger acknowledged survive a
// SIGKILL of the whole process, the log stays consistent with the checkpoint
// a client stored before, and an audit after the restart verifies every entry.
func TestLedgerSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	s := startUp(t, dir)
	s.mustCLI("keys", "new")
	s.mustCLI("fn", "deploy", "echo", repo("internal", "sandbox", "testdata", "echo.wasm"))
	var receipts []string
	for i := range 5 {
		p := filepath.Join(dir, fmt.Sprintf("r%d.json", i))
		s.mustCLI("invoke", "echo", "--data", fmt.Sprint("x", i), "--receipt-out", p)
		receipts = append(receipts, p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range receipts {
		for s.cli("receipt", "verify", p, "--require-inclusion").code != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s never acknowledged by the ledger", p)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	s.mustCLI("ledger", "verify") // store the checkpoint as trusted
	// More invocations in flight while the process is killed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			s.cli("invoke", "echo", "--data", fmt.Sprint("y", i))
		}
	}()
	time.Sleep(300 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	<-done

	s = startUp(t, dir)
	for _, p := range receipts {
		s.mustCLI("receipt", "verify", p, "--require-inclusion")
	}
	if r := s.mustCLI("ledger", "verify"); !strings.Contains(r.stdout, "consistent") {
		t.Errorf("ledger verify after SIGKILL: %q", r.stdout)
	}
	// A batch retried across the restart may be logged twice: it is
	// counted as a duplicate, billed once, and is not a finding.
	if r := s.mustCLI("ledger", "audit", "--json"); !strings.Contains(r.stdout, `"root_matches": true`) || !strings.Contains(r.stdout, `"ok": true`) || !strings.Contains(r.stdout, `"duplicates": `) {
		t.Errorf("ledger audit after SIGKILL: %s", r.stdout)
	}
	s.stop()
}
