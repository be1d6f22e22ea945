package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/node"
)

// testCluster is a `cloister dev cluster` under test: the launcher, the
// processes of cluster.json (by name, with the PID of their latest start)
// and the ones the test started again from their argv. Whatever happens,
// Cleanup kills them all.
type testCluster struct {
	t        *testing.T
	dir      string // the test's directory (HOME of the CLI runs)
	cdir     string // the cluster's --dir
	launcher *roleProc
	env      map[string]string
	deadline time.Time

	mu        sync.Mutex
	procs     map[string]clusterEntry
	restarted []*restartedProc
	failures  []string // the test's failures, as fatalf and errorf saw them
}

// failure formats a failure's message and keeps it, for the cleanup to
// repeat after the processes' logs: those fill the end of the output,
// where a CI report that keeps only the end would otherwise lose it.
func (c *testCluster) failure(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.failures = append(c.failures, msg)
	c.mu.Unlock()
	return msg
}

// errorf fails the test with the message (see failure).
func (c *testCluster) errorf(format string, args ...any) {
	c.t.Helper()
	c.t.Error(c.failure(format, args...))
}

// fatalf ends the test with the message (see failure).
func (c *testCluster) fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatal(c.failure(format, args...))
}

// restartedProc is a process the test started again from its argv.
type restartedProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited; err is then set
	err  error
}

// startCluster starts `cloister dev cluster` with args and waits until it
// wrote client.env. budget bounds the whole test: past it every process is
// killed.
func startCluster(t *testing.T, budget time.Duration, args ...string) *testCluster {
	t.Helper()
	dir := t.TempDir()
	c := &testCluster{t: t, dir: dir, cdir: filepath.Join(dir, "cluster"), deadline: time.Now().Add(budget - 5*time.Second),
		procs: map[string]clusterEntry{}}
	c.launcher = startRole(t, dir, "dev cluster", append([]string{"dev", "cluster", "--dir", c.cdir}, args...)...)
	t.Cleanup(c.killAll)
	stop := time.AfterFunc(budget, c.killAll)
	t.Cleanup(func() { stop.Stop() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.logs())
			c.mu.Lock()
			defer c.mu.Unlock()
			for i, f := range c.failures {
				if i == 10 {
					t.Logf("and %d more failures (above)", len(c.failures)-i)
					break
				}
				t.Log("failure (repeated after the logs): " + f)
			}
		}
	})
	envPath := filepath.Join(c.cdir, "client.env")
	c.waitFor("client.env", func() bool {
		e, err := node.ReadEnvFile(envPath)
		c.env = e
		return err == nil && e["CLOISTER_URL"] != "" && e["CLOISTER_TOKEN"] != ""
	})
	b, err := os.ReadFile(filepath.Join(c.cdir, "cluster.json"))
	if err != nil {
		t.Fatal(err)
	}
	var procs []clusterEntry
	if err := json.Unmarshal(b, &procs); err != nil {
		t.Fatalf("cluster.json: %v", err)
	}
	for _, p := range procs {
		c.procs[p.Name] = p
	}
	return c
}

// killAll kills the launcher, every process it started and every process
// the test started again.
func (c *testCluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.launcher.cmd.Process.Kill()
	for _, p := range c.procs {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	for _, r := range c.restarted {
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	c.restarted = nil
}

func (c *testCluster) logs() string {
	var b strings.Builder
	b.WriteString("--- launcher:\n" + c.launcher.log.String())
	files, _ := filepath.Glob(filepath.Join(c.cdir, "logs", "*.log"))
	for _, f := range files {
		l, _ := os.ReadFile(f)
		if len(l) > 4000 {
			l = l[len(l)-4000:]
		}
		b.WriteString("--- " + filepath.Base(f) + ":\n" + string(l))
	}
	return b.String()
}

// grep returns the lines of every role's log that contain s, each
// prefixed with its file, at most max of them.
func (c *testCluster) grep(s string, max int) []string {
	var out []string
	files, _ := filepath.Glob(filepath.Join(c.cdir, "logs", "*.log"))
	for _, f := range files {
		l, _ := os.ReadFile(f)
		for line := range strings.Lines(string(l)) {
			if strings.Contains(line, s) && len(out) < max {
				out = append(out, filepath.Base(f)+": "+strings.TrimSpace(line))
			}
		}
	}
	return out
}

// waitFor polls ok until it holds, failing the test past the budget or if
// the launcher exits.
func (c *testCluster) waitFor(what string, ok func() bool) {
	c.t.Helper()
	for !ok() {
		if done, err := c.launcher.exited(); done {
			c.fatalf("waiting for %s: the launcher exited (%v)", what, err)
		}
		c.mu.Lock()
		for _, r := range c.restarted {
			select {
			case <-r.done:
				if p := c.procs[r.name]; p.PID == r.cmd.Process.Pid {
					c.mu.Unlock()
					tail, _ := os.ReadFile(p.Log)
					if len(tail) > 3000 {
						tail = tail[len(tail)-3000:]
					}
					c.fatalf("waiting for %s: %s, started again, exited (%v); the end of %s:\n%s", what, r.name, r.err, p.Log, tail)
				}
			default:
			}
		}
		c.mu.Unlock()
		if time.Now().After(c.deadline) {
			c.fatalf("waiting for %s: out of time", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proc returns the named process as the test last knows it.
func (c *testCluster) proc(name string) clusterEntry {
	c.mu.Lock()
	p, ok := c.procs[name]
	c.mu.Unlock()
	if !ok {
		c.fatalf("no process %s in cluster.json", name)
	}
	return p
}

// kill sends SIGKILL to the named process and waits until it is gone. It
// returns when it sent the signal.
func (c *testCluster) kill(name string) time.Time {
	c.t.Helper()
	p := c.proc(name)
	at := time.Now()
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		c.fatalf("killing %s: %v", name, err)
	}
	c.waitFor(name+" to die", func() bool { return !alive(p.PID) })
	return at
}

// restart starts the named process again from its argv in cluster.json,
// with its output appended to its log, as an operator or a supervisor
// would.
func (c *testCluster) restart(name string) {
	c.t.Helper()
	p := c.proc(name)
	lf, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		c.fatalf("%v", err)
	}
	defer lf.Close()
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Dir = c.cdir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.fatalf("restarting %s: %v", name, err)
	}
	r := &restartedProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	c.mu.Lock()
	c.restarted = append(c.restarted, r)
	p.PID = cmd.Process.Pid
	c.procs[name] = p
	c.mu.Unlock()
}

// client returns an SDK client over every gateway of client.env.
func (c *testCluster) client() *client.Client {
	c.t.Helper()
	pol, err := client.LoadPolicy(c.env["CLOISTER_POLICY"])
	if err != nil {
		c.fatalf("%v", err)
	}
	var opts []client.Option
	// The CLI's key (`keys new`) deployed the functions and, by their
	// default invoker policy, is their one caller.
	if k, err := loadKey(filepath.Join(c.dir, "owner.key")); err == nil {
		opts = append(opts, client.WithCallerKey(k))
	}
	cl, err := client.New(c.env["CLOISTER_URL"], c.env["CLOISTER_TOKEN"], pol, opts...)
	if err != nil {
		c.fatalf("%v", err)
	}
	return cl
}

// cli runs the CLI with the cluster's client.env.
func (c *testCluster) cli() *server {
	return &server{t: c.t, dir: c.dir, extraEnv: []string{"CLOISTER_ENV=" + filepath.Join(c.cdir, "client.env")}}
}
