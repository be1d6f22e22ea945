//go:build unix

package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/node"
)

// clusterEntry is one process in cluster.json.
type clusterEntry struct {
	Name string   `json:"name"`
	Role string   `json:"role"`
	PID  int      `json:"pid"`
	Argv []string `json:"argv"`
	Addr string   `json:"addr"`
	Data string   `json:"data"`
	Log  string   `json:"log"`
}

// alive reports whether a process with pid exists.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// TestDevCluster runs `cloister dev cluster` with three NATS nodes, two
// gateways and two workers. Through the CLI and DIR/client.env it deploys
// and invokes; with one gateway killed the CLI fails over to the other; the
// killed gateway restarts from its argv in cluster.json and is ready
// again; with one worker killed calls still succeed; SIGTERM to the
// launcher stops every process it started. The second coordinator is a
// standby (TestClusterFaults kills the active one).
func TestDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	cdir := filepath.Join(dir, "cluster")
	if out, err := runBinary(dir, "dev", "cluster", "--dir", filepath.Join(dir, "refused"), "--coordinators", "10"); err == nil ||
		!strings.Contains(out, "want 1 to 9") {
		t.Errorf("--coordinators 10: %v\n%s", err, out)
	}

	launcher := startRole(t, dir, "dev cluster", "dev", "cluster", "--dir", cdir, "--nats", "3", "--coordinators", "2", "--gateways", "2", "--workers", "2")
	// Whatever happens, every process the test knows of is killed: the
	// launcher's children (from cluster.json, until they are seen gone)
	// and the gateway the test restarts.
	var (
		mu        sync.Mutex
		reaped    bool
		restarted []*exec.Cmd
	)
	killAll := func() {
		mu.Lock()
		defer mu.Unlock()
		_ = launcher.cmd.Process.Kill()
		if !reaped {
			if b, err := os.ReadFile(filepath.Join(cdir, "cluster.json")); err == nil {
				var es []clusterEntry
				if json.Unmarshal(b, &es) == nil {
					for _, e := range es {
						_ = syscall.Kill(e.PID, syscall.SIGKILL)
					}
				}
			}
		}
		for _, c := range restarted {
			_ = c.Process.Kill()
		}
	}
	t.Cleanup(func() {
		killAll()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range restarted {
			_ = c.Wait()
		}
	})
	budget := time.AfterFunc(90*time.Second, killAll)
	defer budget.Stop()
	logs := func() string {
		var b strings.Builder
		b.WriteString("--- launcher:\n" + launcher.log.String())
		files, _ := filepath.Glob(filepath.Join(cdir, "logs", "*.log"))
		for _, f := range files {
			l, _ := os.ReadFile(f)
			if len(l) > 3000 {
				l = l[len(l)-3000:]
			}
			b.WriteString("--- " + filepath.Base(f) + ":\n" + string(l))
		}
		return b.String()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs())
		}
	})
	deadline := time.Now().Add(85 * time.Second)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if done, err := launcher.exited(); done {
				t.Fatalf("waiting for %s: the launcher exited (%v)", what, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: out of time", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ready := func(url string) bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}

	envPath := filepath.Join(cdir, "client.env")
	var env map[string]string
	waitFor("client.env", func() bool {
		e, err := node.ReadEnvFile(envPath)
		env = e
		return err == nil && e["CLOISTER_URL"] != "" && e["CLOISTER_TOKEN"] != ""
	})
	b, err := os.ReadFile(filepath.Join(cdir, "cluster.json"))
	if err != nil {
		t.Fatal(err)
	}
	var procs []clusterEntry
	if err := json.Unmarshal(b, &procs); err != nil {
		t.Fatalf("cluster.json: %v", err)
	}
	byRole := map[string][]clusterEntry{}
	for _, p := range procs {
		byRole[p.Role] = append(byRole[p.Role], p)
		if p.PID <= 0 || !alive(p.PID) {
			t.Errorf("%s: pid %d is not running", p.Name, p.PID)
		}
		for _, a := range p.Argv {
			if strings.Contains(a, "/") && !strings.Contains(a, "://") && !filepath.IsAbs(a) {
				t.Errorf("%s: argv %q has a relative path", p.Name, p.Argv)
			}
		}
		if len(p.Argv) == 0 || !filepath.IsAbs(p.Argv[0]) {
			t.Errorf("%s: argv[0] is not absolute: %q", p.Name, p.Argv)
		}
	}
	for role, n := range map[string]int{"nats": 3, "coordinator": 2, "gateway": 2, "worker": 2} {
		if len(byRole[role]) != n {
			t.Fatalf("cluster.json lists %d %s process(es), want %d: %s", len(byRole[role]), role, n, b)
		}
	}
	gws := byRole["gateway"]
	urls := strings.Split(env["CLOISTER_URL"], ",")
	for _, g := range gws {
		if !slices.Contains(urls, "http://"+g.Addr) {
			t.Errorf("CLOISTER_URL %q does not list gateway %s", env["CLOISTER_URL"], g.Addr)
		}
	}

	s := &server{t: t, dir: dir, extraEnv: []string{"CLOISTER_ENV=" + envPath}}
	s.mustCLI("keys", "new")
	if r := s.mustCLI("fn", "deploy", "hello", repo("examples", "hello-go", "hello-go.wasm")); !strings.Contains(r.stdout, "deployed hello v1") {
		t.Errorf("deploy: %q", r.stdout)
	}
	invoke := func(name string) result {
		t.Helper()
		r := s.mustCLI("invoke", "hello", "--data", `{"name":"`+name+`"}`)
		if !strings.Contains(r.stdout, "Hello, "+name+"!") {
			t.Errorf("invoke %s: stdout %q stderr %q", name, r.stdout, r.stderr)
		}
		return r
	}
	invoke("Ada")

	// cluster status: one coordinator active, the other its standby, both
	// gateways, both workers and three NATS replicas, all current.
	waitFor("the cluster status to show every part", func() bool {
		r := s.cli("cluster", "status", "--json")
		var st client.ClusterStatus
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Coordinator == nil {
			return false
		}
		current := 0
		for _, n := range st.NATS.Replicas {
			if n.Current {
				current++
			}
		}
		return len(st.Coordinator.Standbys) == 1 && len(st.Gateways) == 2 && len(st.Workers) == 2 && current == 3
	})
	if r := s.mustCLI("cluster", "status"); !strings.Contains(r.stdout, "active") || !strings.Contains(r.stdout, "standby") {
		t.Errorf("cluster status:\n%s", r.stdout)
	}

	// One gateway killed: the CLI fails over to the other.
	gone := func(pid int) func() bool { return func() bool { return !alive(pid) } }
	if err := syscall.Kill(gws[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("the first gateway to die", gone(gws[0].PID))
	s.extraEnv = append(s.extraEnv, "CLOISTER_DEBUG=1")
	if r := invoke("Bob"); !strings.Contains(r.stderr, "gateway="+"http://"+gws[1].Addr) {
		t.Errorf("after killing %s the answer did not come from %s: %q", gws[0].Addr, gws[1].Addr, r.stderr)
	}
	s.extraEnv = s.extraEnv[:1]

	// Restarted from its argv alone, it is ready again on the same address.
	lf, err := os.OpenFile(filepath.Join(dir, "gateway-1-restarted.log"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	rc := exec.Command(gws[0].Argv[0], gws[0].Argv[1:]...)
	rc.Stdout, rc.Stderr = lf, lf
	rc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := rc.Start(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	restarted = append(restarted, rc)
	mu.Unlock()
	waitFor("the restarted gateway", func() bool { return ready("http://" + gws[0].Addr) })
	invoke("Cy")

	// One worker killed: calls still succeed on the other.
	wks := byRole["worker"]
	if err := syscall.Kill(wks[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("the first worker to die", gone(wks[0].PID))
	for _, n := range []string{"Dee", "Eve", "Fay"} {
		invoke(n)
	}

	// SIGTERM to the launcher stops every process it started.
	if err := launcher.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-launcher.done:
		launcher.done <- err
		if err != nil {
			t.Errorf("the launcher exited with %v after SIGTERM", err)
		}
	case <-time.After(time.Until(deadline)):
		t.Fatal("the launcher did not stop after SIGTERM")
	}
	for _, p := range procs {
		if alive(p.PID) {
			t.Errorf("%s (pid %d) still runs after the launcher stopped", p.Name, p.PID)
		}
	}
	if !t.Failed() {
		mu.Lock()
		reaped = true
		mu.Unlock()
	}
	// The restarted gateway is the test's, not the launcher's.
	_ = rc.Process.Signal(syscall.SIGTERM)
	if err := rc.Wait(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Logf("the restarted gateway: %v", err)
	}
	mu.Lock()
	restarted = nil
	mu.Unlock()
}
