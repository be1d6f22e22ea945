package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
)

// devNATSReady is the line a `cloister dev nats` node prints once
// JetStream is ready: alone, at once; in a cluster, on the meta leader once
// every node has been seen for 2 s. The launcher waits for it.
const devNATSReady = "cloister dev nats: JetStream ready"

// Time limits of the launcher.
const (
	devStartTimeout = 90 * time.Second // each stage: NATS, coordinator, workers and gateways
	devStopTimeout  = 25 * time.Second // each group, after SIGTERM, before SIGKILL
)

// cmdDevNATS runs one NATS server in this process from a config file (as
// `cloister nats config` writes them), so that a local cluster needs no
// nats-server binary. It stops gracefully on SIGINT or SIGTERM.
func cmdDevNATS(fs *pflag.FlagSet) runFunc {
	config := fs.String("config", "", "NATS server config file (from 'cloister nats config')")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 {
			return usageErr("dev nats: unexpected argument %q", pos[0])
		}
		if *config == "" {
			return usageErr("dev nats: --config is required")
		}
		opts, err := natsserver.ProcessConfigFile(*config)
		if err != nil {
			return usageErr("dev nats: --config %s: %v", *config, err)
		}
		// Signals end ctx; the server must not handle them itself.
		opts.NoSigs = true
		// A development node serves NATS monitoring (/varz, /jsz) on a free
		// loopback port, printed in its log ("Starting http monitor on"), so
		// that benchmarks can count the messages (bench/README.md), unless the
		// config chose a port.
		if opts.HTTPPort == 0 && opts.HTTPSPort == 0 {
			opts.HTTPHost, opts.HTTPPort = "127.0.0.1", natsserver.RANDOM_PORT
		}
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			return fmt.Errorf("creating the NATS server: %w", err)
		}
		ns.ConfigureLogger()
		ns.Start()
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		if !ns.ReadyForConnections(30 * time.Second) {
			return errors.New("the NATS server did not become ready within 30s")
		}
		peers := 1
		if opts.Cluster.Port != 0 {
			peers += len(opts.Routes)
		}
		// In a cluster, the meta leader must see every node for 2 s in a row:
		// routes are re-made for a while after the nodes first meet.
		seen := 0
		for {
			if ns.JetStreamEnabled() && (!ns.JetStreamIsClustered() || ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) >= peers) {
				if seen++; !ns.JetStreamIsClustered() || seen >= 20 {
					fmt.Fprintf(os.Stderr, "%s (%d node(s))\n", devNATSReady, peers)
					break
				}
			} else {
				seen = 0
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
		<-ctx.Done()
		return nil
	}
}

// devProc is one process of a local cluster, as cluster.json lists it.
// Its argv alone restarts it: every path in it is absolute and every port
// fixed.
type devProc struct {
	Name string   `json:"name"`
	Role string   `json:"role"`
	PID  int      `json:"pid"`
	Argv []string `json:"argv"`
	// Addr is the client address of a NATS node and the HTTP address of a
	// gateway; empty for the others.
	Addr string `json:"addr,omitempty"`
	// Data is the data directory of a coordinator or a worker, or the
	// config file of a NATS node.
	Data string `json:"data,omitempty"`
	Log  string `json:"log"`

	logStart int64 // the log's size when this process started
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
}

// exited reports whether the process has stopped.
func (p *devProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// devCluster is the launcher's state: the processes it started.
type devCluster struct {
	dir, exe string
	log      *slog.Logger
	mu       sync.Mutex
	procs    []*devProc
}

// cmdDevCluster runs `cloister dev cluster`: NATS nodes, a coordinator,
// workers and gateways, each a child process on loopback, with TLS and one
// nkey per role as in production, and the sim TEE. It writes DIR/client.env
// and DIR/cluster.json, stays in the foreground and stops every process it
// started on SIGINT or SIGTERM. It restarts nothing.
func cmdDevCluster(fs *pflag.FlagSet) runFunc {
	dirFlag := fs.String("dir", "", "directory for the cluster's files: NATS config and store, data directories, logs, client.env, cluster.json (must not hold an earlier cluster)")
	nNATS := fs.Int("nats", 1, "NATS nodes (1 to 9); the coordinator and the gateways ask for min(3, N) JetStream replicas")
	nCoord := fs.Int("coordinators", 1, "coordinators (1 to 9): the first is active, the others standbys that take over when it dies")
	nGW := fs.Int("gateways", 1, "gateways (1 to 9), each on a free loopback port")
	nWorkers := fs.Int("workers", 1, "sim workers (1 to 9)")
	logLevel := fs.String("log-level", "info", "the children's --log-level: debug, info, warn or error")
	return func(ctx context.Context, pos []string) error {
		if len(pos) != 0 {
			return usageErr("dev cluster: unexpected argument %q", pos[0])
		}
		if *dirFlag == "" {
			return usageErr("dev cluster: --dir is required")
		}
		for _, c := range []struct {
			name string
			n    int
		}{{"--nats", *nNATS}, {"--coordinators", *nCoord}, {"--gateways", *nGW}, {"--workers", *nWorkers}} {
			if c.n < 1 || c.n > 9 {
				return usageErr("dev cluster: %s %d: want 1 to 9", c.name, c.n)
			}
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return usageErr("--log-level: %v", err)
		}
		dir, err := filepath.Abs(*dirFlag)
		if err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, "cluster.json")); err == nil {
			return usageErr("dev cluster: %s already holds a cluster (cluster.json); use a new directory", dir)
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this binary: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("finding this binary: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		c := &devCluster{dir: dir, exe: exe, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
		fmt.Fprint(os.Stderr, node.Banner())
		err = c.start(ctx, *nNATS, *nCoord, *nWorkers, *nGW, *logLevel)
		if err == nil {
			fmt.Fprintf(os.Stderr, "\ncloister dev cluster is up (TEE: sim, NOT SECURE); stop it with Ctrl-C\n  client settings: CLOISTER_ENV=%s\n  processes: %s\n  logs: %s\n\n",
				filepath.Join(dir, "client.env"), filepath.Join(dir, "cluster.json"), filepath.Join(dir, "logs"))
			<-ctx.Done()
			c.log.Info("stopping the cluster")
		}
		c.stop()
		if err == nil {
			c.log.Info("cluster stopped")
		}
		return err
	}
}

// start starts the NATS nodes, the coordinator, the workers and the
// gateways, each stage once the one before is ready, and writes
// client.env last.
func (c *devCluster) start(ctx context.Context, nNATS, nCoord, nWorkers, nGW int, logLevel string) error {
	ports, release, err := reservePorts(2*nNATS+nGW, nNATS)
	if err != nil {
		return err
	}
	clientPort, clusterPort, gwPorts := ports[0], ports[nNATS], ports[2*nNATS:]
	natsDir := filepath.Join(c.dir, "nats")
	res, err := natsconf.Generate(natsconf.Options{Dir: natsDir, Hosts: []string{"127.0.0.1"}, Nodes: nNATS,
		ClientPort: clientPort, ClusterPort: clusterPort, StoreDir: filepath.Join(natsDir, "store")})
	if errors.Is(err, natsconf.ErrExists) {
		release()
		return usageErr("dev cluster: %v; use a new directory", err)
	}
	if err != nil {
		release()
		return fmt.Errorf("generating the NATS config: %w", err)
	}
	release()

	// NATS.
	for i, conf := range res.Configs {
		addr := strings.TrimPrefix(res.ClientURLs[i], "tls://")
		if _, err := c.spawn("nats", i+1, addr, conf, "dev", "nats", "--config", conf); err != nil {
			return err
		}
	}
	// The meta leader prints the line once every node has joined.
	if err := c.waitFor(ctx, "NATS and JetStream", func() bool {
		for i := range res.Configs {
			b, _ := os.ReadFile(c.logPath("nats", i+1)) // a log not there yet: not ready, ask again
			if bytes.Contains(b, []byte(devNATSReady)) {
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}

	urls := strings.Join(res.ClientURLs, ",")
	replicas := strconv.Itoa(min(3, nNATS))
	sec := func(r natsconf.Role) []string {
		return []string{"--nats", urls, "--nats-ca", res.CA, "--nats-nkey", res.Seeds[r], "--log-level", logLevel}
	}

	// The coordinator: ready once it has written client.env.
	coordData := filepath.Join(c.dir, "coordinator-1")
	var coordEnv map[string]string
	if err := c.startOne(ctx, "coordinator", 1, "", coordData, func(*devProc) bool {
		e, err := node.ReadEnvFile(filepath.Join(coordData, "client.env"))
		coordEnv = e
		return err == nil && e["CLOISTER_TOKEN"] != "" && e["CLOISTER_POLICY"] != ""
	}, append([]string{"coordinator", "--tee", "sim", "--data", coordData, "--replicas", replicas}, sec(natsconf.Coordinator)...)...); err != nil {
		return err
	}
	policy := coordEnv["CLOISTER_POLICY"]

	// Standby coordinators: the same sim root (one "vendor" on this
	// machine) and the same manifest admin key, so that their genesis
	// manifest is the first one's; each gets the secrets from the active
	// one by peer recovery, then follows it.
	for i := 2; i <= nCoord; i++ {
		data := filepath.Join(c.dir, "coordinator-"+strconv.Itoa(i))
		for _, f := range []string{filepath.Join("sim", "root.key"), node.AdminKeyFile} {
			if err := copyFile(filepath.Join(coordData, f), filepath.Join(data, f)); err != nil {
				return err
			}
		}
		if err := c.startOne(ctx, "coordinator", i, "", data, func(p *devProc) bool {
			b, _ := os.ReadFile(p.Log) // as for NATS: not ready, ask again
			return int64(len(b)) > p.logStart && bytes.Contains(b[p.logStart:], []byte(`msg="coordinator standby`))
		}, append([]string{"coordinator", "--tee", "sim", "--data", data, "--replicas", replicas}, sec(natsconf.Coordinator)...)...); err != nil {
			return err
		}
	}

	// Workers, each with its copy of the sim root and the policy, one at
	// a time: each opens the buckets, and JetStream may leave one of two
	// concurrent updates of a replicated stream unanswered.
	for i := 1; i <= nWorkers; i++ {
		data := filepath.Join(c.dir, "worker-"+strconv.Itoa(i))
		for _, f := range []string{filepath.Join("sim", "root.key"), "policy.json"} {
			if err := copyFile(filepath.Join(coordData, f), filepath.Join(data, f)); err != nil {
				return err
			}
		}
		if err := c.startOne(ctx, "worker", i, "", data, func(p *devProc) bool {
			b, _ := os.ReadFile(p.Log) // as for NATS: not ready, ask again
			return int64(len(b)) > p.logStart && bytes.Contains(b[p.logStart:], []byte(`msg="worker serving"`))
		}, append([]string{"worker", "--tee", "sim", "--data", data, "--policy", filepath.Join(data, "policy.json"),
			"--id", "dev-worker-" + strconv.Itoa(i), "--replicas", replicas}, sec(natsconf.Worker)...)...); err != nil {
			return err
		}
	}

	// Gateways, one at a time for the same reason: each is started once
	// the one before listens. All are ready once /readyz answers 200 (a
	// coordinator answers and has admitted a worker).
	hc := &http.Client{Timeout: 2 * time.Second}
	var gwURLs []string
	for i, port := range gwPorts {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		u := "http://" + addr
		gwURLs = append(gwURLs, u)
		if err := c.startOne(ctx, "gateway", i+1, addr, "", func(*devProc) bool {
			resp, err := hc.Get(u + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close() // a probe: only that it answered counts
			return true
		}, append([]string{"gateway", "--addr", addr, "--replicas", replicas}, sec(natsconf.Gateway)...)...); err != nil {
			return err
		}
	}
	if err := c.waitFor(ctx, "the gateways", func() bool {
		for _, u := range gwURLs {
			resp, err := hc.Get(u + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close() // a probe: only the status counts
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}

	envPath := filepath.Join(c.dir, "client.env")
	body := "# written by cloister dev cluster; source it or point CLOISTER_ENV here\n" +
		"export CLOISTER_URL=" + envQuote(strings.Join(gwURLs, ",")) + "\n" +
		"export CLOISTER_TOKEN=" + envQuote(coordEnv["CLOISTER_TOKEN"]) + "\n" +
		"export CLOISTER_POLICY=" + envQuote(policy) + "\n" +
		"export CLOISTER_NAMESPACE=" + envQuote("default") + "\n"
	if err := writeFileAtomic(envPath, []byte(body)); err != nil {
		return fmt.Errorf("writing client.env: %w", err)
	}
	c.log.Info("cluster ready", "gateways", strings.Join(gwURLs, ","), "nats", urls, "client_env", envPath)
	return nil
}

// startOne starts the i-th process of role and waits until ready holds.
// A process that exits before it is ready is started again, twice at most:
// while a new NATS cluster settles, JetStream may briefly report a peer
// offline and refuse to place a replicated stream. Once started, nothing
// is restarted.
func (c *devCluster) startOne(ctx context.Context, role string, i int, addr, data string, ready func(*devProc) bool, args ...string) error {
	for attempt := 1; ; attempt++ {
		p, err := c.spawn(role, i, addr, data, args...)
		if err != nil {
			return err
		}
		err = c.waitFor(ctx, p.Name, func() bool { return ready(p) })
		var ee *exitedError
		if err == nil || attempt == 3 || !errors.As(err, &ee) || ee.p != p {
			return err
		}
		c.log.Warn("exited before it was ready; starting it again", "name", p.Name, "pid", p.PID, "err", p.err, "log", p.Log)
		c.mu.Lock()
		for j, q := range c.procs {
			if q == p {
				c.procs = append(c.procs[:j:j], c.procs[j+1:]...)
				break
			}
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// exitedError reports a process that exited while the launcher waited.
type exitedError struct {
	what string
	p    *devProc
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("waiting for %s: %s exited (%v); see %s", e.what, e.p.Name, e.p.err, e.p.Log)
}

// logPath is the log file of the i-th process of role.
func (c *devCluster) logPath(role string, i int) string {
	return filepath.Join(c.dir, "logs", role+"-"+strconv.Itoa(i)+".log")
}

// spawn starts `cloister args...` as the i-th process of role, in its own
// process group, with its output in DIR/logs, and rewrites cluster.json.
func (c *devCluster) spawn(role string, i int, addr, data string, args ...string) (*devProc, error) {
	p := &devProc{Name: role + "-" + strconv.Itoa(i), Role: role, Argv: append([]string{c.exe}, args...),
		Addr: addr, Data: data, Log: c.logPath(role, i), done: make(chan struct{})}
	lf, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", p.Log, err)
	}
	defer lf.Close() // the child holds its own descriptor; this one wrote nothing
	if fi, err := lf.Stat(); err == nil {
		p.logStart = fi.Size()
	}
	p.cmd = exec.Command(p.Argv[0], p.Argv[1:]...)
	p.cmd.Dir = c.dir
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	ownProcessGroup(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.PID = p.cmd.Process.Pid
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
		c.log.Info("process exited", "name", p.Name, "pid", p.PID, "err", p.err)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.log.Info("started", "name", p.Name, "pid", p.PID, "addr", addr, "log", p.Log)
	return p, c.writeClusterJSON()
}

// writeClusterJSON writes DIR/cluster.json: every process started so far.
func (c *devCluster) writeClusterJSON() error {
	c.mu.Lock()
	b, err := json.MarshalIndent(c.procs, "", "  ")
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(c.dir, "cluster.json"), append(b, '\n')); err != nil {
		return fmt.Errorf("writing cluster.json: %w", err)
	}
	return nil
}

// waitFor polls ok until it holds; it fails when ctx ends, time runs out
// or a process has exited.
func (c *devCluster) waitFor(ctx context.Context, what string, ok func() bool) error {
	deadline := time.Now().Add(devStartTimeout)
	for !ok() {
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for _, p := range procs {
			if p.exited() {
				return &exitedError{what: what, p: p}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not ready within %s; see the logs in %s", what, devStartTimeout, filepath.Join(c.dir, "logs"))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// stop stops the processes this launcher started: gateways, workers, the
// coordinator, then NATS. Each group gets SIGTERM, then SIGKILL after
// devStopTimeout. A process restarted by someone else is not its child and
// is left alone.
func (c *devCluster) stop() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, role := range []string{"gateway", "worker", "coordinator", "nats"} {
		var group []*devProc
		for _, p := range procs {
			if p.Role == role && !p.exited() {
				group = append(group, p)
			}
		}
		for _, p := range group {
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only on a process already gone; the wait below sees it
		}
		deadline := time.After(devStopTimeout)
		for _, p := range group {
			select {
			case <-p.done:
			case <-deadline:
				c.log.Warn("killing a process that did not stop", "name", p.Name, "pid", p.PID)
				_ = p.cmd.Process.Kill() // as for SIGTERM
				<-p.done
			}
		}
	}
}

// reservePorts finds n free loopback TCP ports whose first 2*run come as
// two runs of run consecutive ports (the NATS client and cluster ports,
// which natsconf numbers consecutively), then the others. It keeps them
// open until release is called, so that no two are the same.
func reservePorts(n, run int) ([]int, func(), error) {
	var lns []net.Listener
	release := func() {
		for _, l := range lns {
			l.Close() // freeing a reserved port: nothing to keep
		}
	}
	listen := func(port int) (int, error) {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return 0, err
		}
		lns = append(lns, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var ports []int
	for range 2 {
		found := false
		// Below Linux's ephemeral range (32768 and up), so that no
		// outgoing connection takes a port a restart needs.
	try:
		for range 100 {
			base := 20000 + rand.IntN(12000)
			var got []net.Listener
			for j := range run {
				if _, err := listen(base + j); err != nil {
					for _, l := range got {
						l.Close() // as in release
					}
					lns = lns[:len(lns)-len(got)]
					continue try
				}
				got = append(got, lns[len(lns)-1])
			}
			for j := range run {
				ports = append(ports, base+j)
			}
			found = true
			break
		}
		if !found {
			release()
			return nil, nil, errors.New("finding free loopback ports: none after 100 tries")
		}
	}
	for len(ports) < n {
		p, err := listen(0)
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		ports = append(ports, p)
	}
	return ports, release, nil
}

// ownProcessGroup puts cmd's process in a process group of its own, so that
// a Ctrl-C in the launcher's terminal reaches only the launcher, which then
// stops the children in order, and each child outlives the launcher.
// (Unix only, like the ledger's storage.)
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// envQuote returns s as one word of a POSIX shell.
func envQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// copyFile copies src to dst (0600), creating dst's directory.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}

// writeFileAtomic writes path (0600) through a temporary file, so that a
// reader never sees half of it.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
