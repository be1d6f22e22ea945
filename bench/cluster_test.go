package bench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/wire"
)

var clusterOn = flag.Bool("cluster", false, "run BenchmarkCluster (or set CLOISTER_CLUSTER=1); bench/run.sh cluster does")

// The shape of the cluster issue 14 asks for.
const (
	clusterNATS     = 3
	clusterGateways = 2
	clusterWorkers  = 2
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture the project builds for (the kernel
// reports in it whatever its internal HZ is).
const clockTicks = 100

// natsMonitorRE finds the address of a NATS node's HTTP monitoring in its
// log, where nats-server announces it when one is configured.
var natsMonitorRE = regexp.MustCompile(`Starting http monitor on (\S+)`)

// optIn skips a long benchmark or test unless asked for by flag or
// environment, as TestSoak does, and always in -short mode: `go test ./...`
// must never start a cluster by accident.
func optIn(tb testing.TB, on bool, envVar, how string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts real processes for minutes; not in -short mode")
	}
	if !on && os.Getenv(envVar) != "1" {
		tb.Skipf("starts real processes for minutes: %s (or %s=1)", how, envVar)
	}
}

// BenchmarkCluster measures sealed (HPKE, attested, receipt-verified)
// synchronous calls of the echo command through a real `cloister dev
// cluster` (3 NATS nodes, a coordinator, 2 workers and 2 gateways, each its
// own process) against `cloister up` (one process), both built from this
// tree and run one after the other in the same run on the same machine.
// Each sub-benchmark starts its deployment on first use and stops it
// before the next one starts, so that the two never compete for the CPU.
// (With -count N, each runs N times on one deployment, up first: for runs
// that alternate, run the benchmark N times, as bench/run.sh does.)
//
// Besides req/s, p50-ms and p99-ms (as BenchmarkInvoke), it reports the
// CPU time of the servers' processes per 1,000 invocations (from
// /proc/PID/stat, over the measured calls and until the ledger has logged
// their receipts), for the cluster that of the coordinator alone, the
// messages the cluster's JetStream streams stored per invocation, and,
// when the NATS nodes serve HTTP monitoring, every message they received
// per invocation. The parent prints a table of all of it, with the
// cluster's CPU by process.
//
// It runs only when asked: bench/run.sh cluster.
func BenchmarkCluster(b *testing.B) {
	optIn(b, *clusterOn, "CLOISTER_CLUSTER", "bench/run.sh cluster (or -cluster)")
	conc := *concurrency
	if conc < 1 {
		b.Fatalf("-conc %d: need at least one client", conc)
	}
	bin := buildCloister(b)
	results := map[string]*clusterRound{}
	for _, kind := range []string{"up", "cluster"} {
		var (
			t    *target
			stop func()
		)
		b.Run(kind, func(sb *testing.B) {
			if t == nil {
				var err error
				// The cleanups go to the parent: a sub-benchmark's run
				// after each of its rounds, and the deployment serves
				// all of them.
				t, stop, err = startTarget(b, sb, kind, bin, conc)
				if err != nil {
					sb.Fatal(err)
				}
			}
			r := t.measure(sb, conc)
			results[kind] = r
			sb.ReportMetric(r.throughput, "req/s")
			sb.ReportMetric(ms(r.p50), "p50-ms")
			sb.ReportMetric(ms(r.p99), "p99-ms")
			if up := results["up"]; kind == "cluster" && up != nil && up.throughput > 0 {
				r.ratio = r.throughput / up.throughput
				sb.ReportMetric(r.ratio, "up-ratio")
			}
			sb.ReportMetric(r.perK(r.serverCPU()), "cpu-ms/kinv")
			if r.coordinator != "" {
				sb.ReportMetric(r.perK(r.cpu[r.coordinator]), "coord-cpu-ms/kinv")
			}
			if r.js != nil {
				sb.ReportMetric(r.perInv(r.jsTotal()), "js-msgs/inv")
			}
			if r.varz {
				sb.ReportMetric(r.perInv(float64(r.busIn)), "bus-msgs/inv")
				sb.ReportMetric(r.perInv(float64(r.busClientIn)), "bus-client-msgs/inv")
			}
		})
		if stop != nil {
			stop()
		}
	}
	printClusterReport(os.Stdout, results)
}

// buildCloister builds the cloister binary from this tree into a temporary
// directory, as the CLI's end-to-end tests do.
func buildCloister(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "cloister")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/cloister").CombinedOutput()
	if err != nil {
		tb.Fatalf("building cloister: %v\n%s", err, out)
	}
	return bin
}

// child is a process the benchmark started itself, in a process group of
// its own, with its output in a file.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startChild starts argv in dir with its output appended to logPath.
func startChild(name, dir, logPath string, argv ...string) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	c := &child{name: name, log: logPath, done: make(chan struct{})}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = lf, lf
	// Its own group: a Ctrl-C of the benchmark's terminal must not reach
	// it before the benchmark stops it, and the group can be killed whole.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, waits up to grace for
// the child to exit, then kills the group.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// clusterProc is one process in DIR/cluster.json, as `cloister dev
// cluster` writes it.
type clusterProc struct {
	Name string   `json:"name"`
	Role string   `json:"role"`
	PID  int      `json:"pid"`
	Argv []string `json:"argv"`
	Addr string   `json:"addr"`
	Data string   `json:"data"`
	Log  string   `json:"log"`
}

// devCluster is a running `cloister dev cluster` and the processes the
// benchmark restarted in it.
type devCluster struct {
	dir, bin string
	launcher *child
	env      map[string]string // DIR/client.env
	procs    []clusterProc     // DIR/cluster.json once the cluster was ready

	mu        sync.Mutex
	restarted []*child
	closeOnce sync.Once
}

// startDevCluster runs `cloister dev cluster` with the shape and
// coordinators coordinators (the first active, the others standbys) in a
// temporary directory and waits until it has written client.env (its last
// step, once every gateway is ready). cleanup is where its close is
// registered, before anything is waited for.
func startDevCluster(cleanup testing.TB, bin string, coordinators int) (*devCluster, error) {
	root, err := os.MkdirTemp("", "cloister-cluster-*")
	if err != nil {
		return nil, err
	}
	dc := &devCluster{dir: filepath.Join(root, "cluster"), bin: bin}
	dc.launcher, err = startChild("dev cluster", root, filepath.Join(root, "launcher.log"), bin, "dev", "cluster", "--dir", dc.dir,
		"--nats", strconv.Itoa(clusterNATS), "--coordinators", strconv.Itoa(coordinators),
		"--gateways", strconv.Itoa(clusterGateways), "--workers", strconv.Itoa(clusterWorkers))
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	cleanup.Cleanup(func() {
		dc.close()
		os.RemoveAll(root)
	})
	// The launcher gives each of its stages 90 s.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		e, err := node.ReadEnvFile(filepath.Join(dc.dir, "client.env"))
		if err == nil && e["CLOISTER_URL"] != "" && e["CLOISTER_TOKEN"] != "" {
			dc.env = e
			break
		}
		if dc.launcher.exited() {
			return nil, fmt.Errorf("cloister dev cluster exited (%v) before it was ready:\n%s", dc.launcher.err, dc.logTails())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cloister dev cluster not ready within 5 minutes:\n%s", dc.logTails())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if dc.procs, err = dc.readProcs(); err != nil {
		return nil, err
	}
	for role, n := range map[string]int{"nats": clusterNATS, "coordinator": coordinators, "gateway": clusterGateways, "worker": clusterWorkers} {
		if got := len(dc.byRole(role)); got != n {
			return nil, fmt.Errorf("cluster.json lists %d %s process(es), want %d", got, role, n)
		}
	}
	return dc, nil
}

// readProcs reads DIR/cluster.json.
func (dc *devCluster) readProcs() ([]clusterProc, error) {
	b, err := os.ReadFile(filepath.Join(dc.dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	var ps []clusterProc
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("cluster.json: %w", err)
	}
	return ps, nil
}

func (dc *devCluster) byRole(role string) []clusterProc {
	var out []clusterProc
	for _, p := range dc.procs {
		if p.Role == role {
			out = append(out, p)
		}
	}
	return out
}

// gateways returns the gateways' base URLs, in the order of client.env.
func (dc *devCluster) gateways() []string { return strings.Split(dc.env["CLOISTER_URL"], ",") }

// restart starts p again from its argv alone, as cluster.json promises it
// can be (the launcher restarts nothing), with its output in a log of its
// own. The new process is the benchmark's: close stops it.
func (dc *devCluster) restart(p clusterProc) (*child, error) {
	c, err := startChild(p.Name+" (restarted)", dc.dir, filepath.Join(dc.dir, "logs", p.Name+"-restarted.log"), p.Argv...)
	if err != nil {
		return nil, err
	}
	dc.mu.Lock()
	dc.restarted = append(dc.restarted, c)
	dc.mu.Unlock()
	return c, nil
}

// close stops the cluster: SIGTERM to the launcher, which stops its
// children in order; then whatever is left of them, by PID from
// cluster.json (only processes still running this binary: a PID may have
// been reused); then the processes the benchmark restarted.
func (dc *devCluster) close() {
	dc.closeOnce.Do(func() {
		// The launcher gives each of its four groups 25 s.
		dc.launcher.stop(2 * time.Minute)
		if ps, err := dc.readProcs(); err == nil {
			for _, p := range ps {
				if runsBinary(p.PID, dc.bin) {
					_ = syscall.Kill(p.PID, syscall.SIGKILL)
				}
			}
		}
		dc.mu.Lock()
		restarted := dc.restarted
		dc.mu.Unlock()
		for _, c := range restarted {
			c.stop(15 * time.Second)
		}
	})
}

// runsBinary reports whether pid is a live process running bin.
func runsBinary(pid int, bin string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	argv0, _, _ := strings.Cut(string(b), "\x00")
	return argv0 == bin
}

// logTails returns the end of every log of the cluster, for a failure.
func (dc *devCluster) logTails() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dc.dir, "logs", "*.log"))
	for _, f := range append([]string{dc.launcher.log}, files...) {
		l, _ := os.ReadFile(f)
		if len(l) > 2000 {
			l = l[len(l)-2000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s", filepath.Base(f), l)
	}
	return b.String()
}

// upNode is a running `cloister up`.
type upNode struct {
	dir  string
	proc *child
	env  map[string]string
}

// startUpNode runs `cloister up` on a free loopback port in a temporary
// directory and waits until it is ready. Its request-rate quota is raised
// as the in-process benchmarks raise it: they measure the platform, not
// the quota (1,000 a second by default), which this node alone would pass.
func startUpNode(cleanup testing.TB, bin string) (*upNode, error) {
	dir, err := os.MkdirTemp("", "cloister-up-*")
	if err != nil {
		return nil, err
	}
	u := &upNode{dir: dir}
	u.proc, err = startChild("cloister up", dir, filepath.Join(dir, "up.log"), bin, "up", "--data", filepath.Join(dir, "data"),
		"--addr", "127.0.0.1:0", "--namespace-rate", "1000000")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cleanup.Cleanup(func() {
		u.proc.stop(30 * time.Second)
		os.RemoveAll(dir)
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if e, err := node.ReadEnvFile(filepath.Join(dir, "data", "client.env")); err == nil && e["CLOISTER_URL"] != "" && e["CLOISTER_TOKEN"] != "" {
			if resp, err := hc.Get(e["CLOISTER_URL"] + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					u.env = e
					return u, nil
				}
			}
		}
		if u.proc.exited() {
			l, _ := os.ReadFile(u.proc.log)
			return nil, fmt.Errorf("cloister up exited (%v) before it was ready:\n%s", u.proc.err, l)
		}
		if time.Now().After(deadline) {
			return nil, errors.New("cloister up not ready within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// target is a deployment under test as its clients see it, with the
// processes whose CPU is measured and, for the cluster, its bus counters.
type target struct {
	name        string
	hc          *http.Client
	clients     []*client.Client // one per gateway, each listing its own gateway first
	gateways    []string
	token       string         // the platform key of client.env, which /metrics needs
	pids        map[string]int // process name → PID
	coordinator string         // the coordinator's name in pids; "" when it shares a process
	js          *jsCounter     // nil for up, whose NATS is inside its process
	monitors    []string       // the NATS nodes' monitoring URLs, if they serve any

	next    atomic.Uint64            // round-robin over clients
	calls   atomic.Int64             // successful invocations, warm-ups included
	ledger0 uint64                   // the ledger's size before the first invocation
	idle    map[string]time.Duration // CPU per process per second, idle, after the deploy

	mu       sync.Mutex
	byWorker map[string]uint64 // successful invocations by the worker their verified receipt names
}

// startTarget starts the deployment of kind ("up" or "cluster"), with its
// cleanups registered on parent (sb is the sub-benchmark it logs to), and
// deploys the echo command to it. stop
// stops it at once (the cleanups then do nothing).
func startTarget(parent, sb *testing.B, kind, bin string, conc int) (t *target, stop func(), err error) {
	t = &target{name: kind, pids: map[string]int{}, byWorker: map[string]uint64{}}
	var env map[string]string
	switch kind {
	case "up":
		u, err := startUpNode(parent, bin)
		if err != nil {
			return nil, nil, err
		}
		env = u.env
		t.pids["cloister up"] = u.proc.cmd.Process.Pid
		stop = func() { u.proc.stop(30 * time.Second) }
	case "cluster":
		dc, err := startDevCluster(parent, bin, 1)
		if err != nil {
			return nil, nil, err
		}
		env = dc.env
		for _, p := range dc.procs {
			t.pids[p.Name] = p.PID
			if p.Role == "coordinator" {
				t.coordinator = p.Name
			}
		}
		if t.js, err = newJSCounter(dc.procs); err != nil {
			return nil, nil, err
		}
		parent.Cleanup(t.js.close)
		t.monitors = natsMonitors(dc.procs)
		if len(t.monitors) == 0 {
			sb.Logf("the NATS nodes serve no HTTP monitoring (no %q in their logs): bus messages are not counted; JetStream stores are", "Starting http monitor")
		}
		stop = func() { t.js.close(); dc.close() }
	default:
		return nil, nil, fmt.Errorf("unknown target %q", kind)
	}
	pol, err := client.LoadPolicy(env["CLOISTER_POLICY"])
	if err != nil {
		return nil, nil, err
	}
	t.hc = &http.Client{Transport: transport(conc), Timeout: time.Minute}
	t.gateways = strings.Split(env["CLOISTER_URL"], ",")
	t.token = env["CLOISTER_TOKEN"]
	if t.clients, err = rotatedClients(t.gateways, env["CLOISTER_TOKEN"], pol, t.hc); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := deployEcho(ctx, t.clients[0], conc); err != nil {
		return nil, nil, err
	}
	// The ledger's size before any call: settled once two reads 1.5 s
	// apart agree, so that what the deploy logs (if anything) is in it.
	for prev := uint64(1<<64 - 1); ; {
		n, err := t.ledgerSize(ctx)
		if err != nil {
			return nil, nil, err
		}
		if n == prev {
			t.ledger0 = n
			break
		}
		prev = n
		time.Sleep(1500 * time.Millisecond)
	}
	// What the processes burn doing nothing (NATS's heartbeats, the
	// workers' status, the coordinator's checkpoints), so that a reader can
	// tell it from what the calls cost: the measured window holds some idle
	// time while the ledger catches up.
	const idleFor = 3 * time.Second
	s0, err := t.snap(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	time.Sleep(idleFor)
	s1, err := t.snap(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	t.idle = map[string]time.Duration{}
	for name := range t.pids {
		t.idle[name] = (s1.cpu[name] - s0.cpu[name]) * time.Second / idleFor
	}
	return t, stop, nil
}

// benchOwner is the owner key of the cluster benchmarks' functions.
var benchOwner = func() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// rotatedClients returns one client per gateway, the i-th listing the
// gateways from the i-th on. A client sends to the gateway that answered
// it last (client/gateways.go), so one client would load one gateway;
// calls spread over these clients spread over the gateways, and each can
// still fail over to the others.
//
// They sign as benchOwner, which deployEcho deploys with, and so is the
// echo's one caller.
func rotatedClients(gws []string, token string, pol client.Policy, hc *http.Client) ([]*client.Client, error) {
	var out []*client.Client
	for i := range gws {
		c, err := client.New(strings.Join(append(slices.Clone(gws[i:]), gws[:i]...), ","), token, pol, client.WithHTTPClient(hc), client.WithCallerKey(benchOwner))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// deployEcho signs and deploys the echo command under fnName with the
// default manifest (confidential: required, so every call is sealed) and a
// concurrency limit above the number of clients.
func deployEcho(ctx context.Context, c *client.Client, conc int) error {
	wasm, err := os.ReadFile(echoWasm)
	if err != nil {
		return err
	}
	m := bundle.DefaultManifest(fnName)
	m.Namespace = "default" // the admin key's namespace in client.env
	m.Limits.Concurrency = min(max(m.Limits.Concurrency, 2*conc), bundle.MaxConcurrency)
	if m.Version, err = c.NextVersion(ctx, fnName); err != nil {
		return fmt.Errorf("next version of %s: %w", fnName, err)
	}
	bnd, err := bundle.Build(m, wasm, benchOwner)
	if err != nil {
		return err
	}
	if _, err := c.Deploy(ctx, fnName, bnd); err != nil {
		return fmt.Errorf("deploying %s: %w", fnName, err)
	}
	return nil
}

// op is one sealed call: HPKE to the attested worker, the receipt
// verified, the output decrypted and checked. Successive calls take the
// clients in turn, and so the gateways.
func (t *target) op(ctx context.Context) error {
	c := t.clients[t.next.Add(1)%uint64(len(t.clients))]
	res, err := c.Invoke(ctx, fnName, input, client.InvokeOptions{})
	if err := checkResult(res, err, wire.ModeHPKE); err != nil {
		return err
	}
	t.calls.Add(1)
	t.mu.Lock()
	t.byWorker[res.Receipt.WorkerID]++
	t.mu.Unlock()
	return nil
}

// ledgerSize is the size of the ledger's latest checkpoint, verified
// against the attested coordinator's key: the receipts logged so far.
func (t *target) ledgerSize(ctx context.Context) (uint64, error) {
	r, err := t.clients[0].Ledger(ctx)
	if err != nil {
		return 0, err
	}
	cp, _, err := r.VerifiedCheckpoint(ctx)
	if err != nil {
		return 0, err
	}
	return cp.Size, nil
}

// waitLogged waits until the ledger holds want entries. It fails if the
// ledger stops growing for 30 s or takes more than 3 minutes.
func (t *target) waitLogged(ctx context.Context, want uint64) error {
	deadline := time.Now().Add(3 * time.Minute)
	last, lastChange := uint64(0), time.Now()
	for {
		n, err := t.ledgerSize(ctx)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > 30*time.Second || time.Now().After(deadline) {
			return fmt.Errorf("the ledger holds %d entries, want %d", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterRound is what one round of measure found.
type clusterRound struct {
	target      string
	calls       int
	throughput  float64
	p50, p99    time.Duration
	ratio       float64                  // throughput ÷ up's, for the cluster
	ledgerLag   time.Duration            // from the last answer until the ledger held every receipt
	cpu         map[string]time.Duration // per server process, over the window
	coordinator string
	clientCPU   time.Duration     // this process: the clients' sealing and verification
	js          map[string]uint64 // messages stored per stream
	varz        bool
	busIn       uint64            // Σ in_msgs over the NATS nodes: from clients and routes
	busClientIn uint64            // Σ in_client_msgs: from the Cloister processes only
	perGateway  []uint64          // invocations each gateway answered (its /metrics)
	perWorker   map[string]uint64 // invocations by the worker their receipt names
	idle        map[string]time.Duration
}

func (r *clusterRound) perK(d time.Duration) float64 { return ms(d) * 1000 / float64(r.calls) }
func (r *clusterRound) perInv(n float64) float64     { return n / float64(r.calls) }

func (r *clusterRound) serverCPU() time.Duration {
	var sum time.Duration
	for _, d := range r.cpu {
		sum += d
	}
	return sum
}

func (r *clusterRound) jsTotal() float64 {
	var sum uint64
	for _, n := range r.js {
		sum += n
	}
	return float64(sum)
}

// snapshot is the counters at one moment.
type snapshot struct {
	cpu              map[string]time.Duration
	self             time.Duration
	js               map[string]uint64
	busIn, busClient uint64
	varz             bool
	gateways         []uint64
	workers          map[string]uint64
}

// snap reads every counter. The JetStream counts are read first and the
// NATS totals last (and the other way at the end), so that the requests
// the JetStream counts make stay out of the window of the bus totals.
func (t *target) snap(ctx context.Context, end bool) (snapshot, error) {
	s := snapshot{cpu: map[string]time.Duration{}}
	readJS := func() error {
		if t.js == nil {
			return nil
		}
		js, err := t.js.lastSeqs(ctx)
		s.js = js
		return err
	}
	readVarz := func() error {
		if len(t.monitors) == 0 {
			return nil
		}
		in, inClient, err := varzTotals(ctx, t.hc, t.monitors)
		s.busIn, s.busClient, s.varz = in, inClient, err == nil
		return err
	}
	first, second := readJS, readVarz
	if end {
		first, second = readVarz, readJS
	}
	for name, pid := range t.pids {
		d, err := procCPU(pid)
		if err != nil {
			return s, fmt.Errorf("%s (pid %d): %w", name, pid, err)
		}
		s.cpu[name] = d
	}
	s.self = processCPU()
	t.mu.Lock()
	s.workers = maps.Clone(t.byWorker)
	t.mu.Unlock()
	for _, g := range t.gateways {
		n, err := invocationsAnswered(ctx, t.hc, g, t.token)
		if err != nil {
			return s, err
		}
		s.gateways = append(s.gateways, n)
	}
	if err := first(); err != nil {
		return s, err
	}
	return s, second()
}

// measure runs one round: it waits until the ledger has logged every
// earlier call, warms up (2 × conc untimed calls, as BenchmarkInvoke),
// waits again, then times b.N calls from conc clients. The counters are
// read before the timed calls and after the ledger has logged their
// receipts: logging them is part of what an invocation costs the
// coordinator.
func (t *target) measure(b *testing.B, conc int) *clusterRound {
	ctx := b.Context()
	if _, err := runLoad(ctx, 2*conc, conc, t.op); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	if err := t.waitLogged(ctx, t.ledger0+uint64(t.calls.Load())); err != nil {
		b.Fatalf("before the timed calls: %v", err)
	}
	s0, err := t.snap(ctx, false)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	l, err := runLoad(ctx, b.N, conc, t.op)
	b.StopTimer()
	if err != nil {
		b.Fatalf("%s: %v", t.name, err)
	}
	done := time.Now()
	if err := t.waitLogged(ctx, t.ledger0+uint64(t.calls.Load())); err != nil {
		b.Fatalf("after the timed calls: %v", err)
	}
	lag := time.Since(done)
	s1, err := t.snap(ctx, true)
	if err != nil {
		b.Fatal(err)
	}
	// A process that died and came back as another (or not at all) would
	// make the CPU figures meaningless.
	for name, pid := range t.pids {
		if syscall.Kill(pid, 0) != nil {
			b.Fatalf("%s (pid %d) is gone", name, pid)
		}
	}
	r := &clusterRound{target: t.name, calls: b.N, throughput: l.throughput(), p50: percentile(l.lat, 50), p99: percentile(l.lat, 99),
		ledgerLag: lag, cpu: map[string]time.Duration{}, coordinator: t.coordinator, clientCPU: s1.self - s0.self, varz: s0.varz && s1.varz,
		perWorker: map[string]uint64{}, idle: t.idle}
	for w, n := range s1.workers {
		r.perWorker[w] = n - s0.workers[w]
	}
	for name := range t.pids {
		r.cpu[name] = s1.cpu[name] - s0.cpu[name]
	}
	if t.js != nil {
		r.js = map[string]uint64{}
		for st, n := range s1.js {
			r.js[st] = n - s0.js[st]
		}
	}
	if r.varz {
		r.busIn, r.busClientIn = s1.busIn-s0.busIn, s1.busClient-s0.busClient
	}
	for i := range s1.gateways {
		r.perGateway = append(r.perGateway, s1.gateways[i]-s0.gateways[i])
	}
	return r
}

// procCPU is the user and system CPU time pid has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(b))
}

func parseProcStatCPU(stat string) (time.Duration, error) {
	// The command (field 2) is in parentheses and may hold spaces and
	// parentheses itself: the fields that follow start after the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime and stime are f[11] and f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc stat %q: %w", stat, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// invocationsAnswered is the number of invocations a gateway has answered
// with any status, from its /metrics.
func invocationsAnswered(ctx context.Context, hc *http.Client, gw, token string) (uint64, error) {
	resp, err := getMetrics(ctx, hc, gw, token)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: HTTP %d", gw, resp.StatusCode)
	}
	return parseInvocationsAnswered(resp.Body)
}

func parseInvocationsAnswered(r io.Reader) (uint64, error) {
	var n float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// The route label holds a space: the value follows the last one.
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, v := line[:i], line[i+1:]
		if !strings.HasPrefix(name, "cloister_http_requests_total{") || !strings.Contains(name, `route="POST /v1/functions/{name}/invoke"`) {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("malformed metric line %q", sc.Text())
		}
		n += f
	}
	return uint64(n), sc.Err()
}

// jsCounter reads the last sequence of every JetStream stream of the
// cluster: how many messages each has stored since it was made. It
// connects with the roles' own identities from cluster.json (the
// gateway's for the shared buckets and streams, the coordinator's for its
// journals), whose permissions allow reading a stream's info.
type jsCounter struct {
	conns []*nats.Conn
	views []jsView
}

type jsView struct {
	js      jetstream.JetStream
	streams []string
}

// The streams each identity may read (internal/natsconf/perms.go).
var (
	gatewayStreams = []string{
		"KV_" + bus.BucketRegistry, "KV_" + bus.BucketAuth, bus.StreamReplay, "KV_" + bus.BucketState,
		"OBJ_" + bus.BucketBundles,
		"KV_" + bus.BucketActivations, "KV_" + bus.BucketAsyncNonces, "KV_" + bus.BucketTriggers,
		"KV_" + bus.BucketSequences, "KV_" + bus.BucketOpenWhisk,
		bus.StreamAsync, bus.StreamDead,
	}
	coordinatorStreams = []string{
		bus.StreamAnchorJournal, bus.StreamLedgerJournal, bus.StreamControlJournal, "KV_" + bus.BucketCoord,
	}
)

func newJSCounter(procs []clusterProc) (*jsCounter, error) {
	j := &jsCounter{}
	for _, v := range []struct {
		role    natsconf.Role
		streams []string
	}{{natsconf.Gateway, gatewayStreams}, {natsconf.Coordinator, coordinatorStreams}} {
		i := slices.IndexFunc(procs, func(p clusterProc) bool { return p.Role == string(v.role) })
		if i < 0 {
			j.close()
			return nil, fmt.Errorf("cluster.json lists no %s", v.role)
		}
		nc, err := dialAs(procs[i], v.role)
		if err != nil {
			j.close()
			return nil, err
		}
		j.conns = append(j.conns, nc)
		js, err := jetstream.New(nc)
		if err != nil {
			j.close()
			return nil, err
		}
		j.views = append(j.views, jsView{js: js, streams: v.streams})
	}
	return j, nil
}

// dialAs connects to the cluster's NATS as p does: its URLs, CA and nkey
// from its argv, and its role's reply-inbox prefix, which its permissions
// require.
func dialAs(p clusterProc, role natsconf.Role) (*nats.Conn, error) {
	urls, ca, seed := argValue(p.Argv, "--nats"), argValue(p.Argv, "--nats-ca"), argValue(p.Argv, "--nats-nkey")
	if urls == "" || ca == "" || seed == "" {
		return nil, fmt.Errorf("%s: no --nats, --nats-ca or --nats-nkey in %q", p.Name, p.Argv)
	}
	nk, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		return nil, err
	}
	return nats.Connect(urls, nats.Name("cloister-bench"), nats.RootCAs(ca), nk, nats.CustomInboxPrefix(natsconf.InboxPrefix(role)))
}

// argValue returns the value of flag name in argv ("--name value"), or "".
func argValue(argv []string, name string) string {
	for i, a := range argv {
		if a == name && i+1 < len(argv) {
			return argv[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// lastSeqs returns each existing stream's last sequence; a stream that no
// role has made yet is left out.
func (j *jsCounter) lastSeqs(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, v := range j.views {
		for _, name := range v.streams {
			s, err := v.js.Stream(ctx, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", name, err)
			}
			out[name] = s.CachedInfo().State.LastSeq
		}
	}
	return out, nil
}

func (j *jsCounter) close() {
	for _, nc := range j.conns {
		nc.Close()
	}
}

// natsMonitors returns the HTTP monitoring URL of each NATS node whose
// log announces one (the last announcement: a restarted node gets a new
// one), or nil unless every node has one.
func natsMonitors(procs []clusterProc) []string {
	var out []string
	for _, p := range procs {
		if p.Role != "nats" {
			continue
		}
		b, err := os.ReadFile(p.Log)
		if err != nil {
			return nil
		}
		m := natsMonitorRE.FindAllSubmatch(b, -1)
		if len(m) == 0 {
			return nil
		}
		out = append(out, "http://"+string(m[len(m)-1][1]))
	}
	return out
}

// varzTotals sums, over the NATS nodes, in_msgs (every message a node
// received: from clients and over routes, JetStream's replication
// included) and in_client_msgs (from client connections only: what the
// Cloister processes published).
func varzTotals(ctx context.Context, hc *http.Client, urls []string) (in, inClient uint64, err error) {
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/varz", nil)
		if err != nil {
			return 0, 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		var v struct {
			InMsgs       uint64 `json:"in_msgs"`
			InClientMsgs uint64 `json:"in_client_msgs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("%s/varz: %w", u, err)
		}
		in += v.InMsgs
		inClient += v.InClientMsgs
	}
	return in, inClient, nil
}

// printClusterReport prints the rounds last measured as markdown tables.
func printClusterReport(w io.Writer, results map[string]*clusterRound) {
	if len(results) == 0 {
		return
	}
	sumIdle := func(r *clusterRound) time.Duration {
		var d time.Duration
		for _, v := range r.idle {
			d += v
		}
		return d
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | calls | req/s | p50 ms | p99 ms | req/s ÷ up | server CPU ms / 1000 inv | coordinator CPU ms / 1000 inv | client CPU ms / 1000 inv | idle server CPU ms/s | JetStream msgs / inv | NATS msgs in / inv (from clients) | ledger lag ms |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, kind := range []string{"up", "cluster"} {
		r := results[kind]
		if r == nil {
			continue
		}
		ratio, coord, js, bus := "", "(one process)", "", "not counted"
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		if r.coordinator != "" {
			coord = fmt.Sprintf("%.0f", r.perK(r.cpu[r.coordinator]))
		}
		if r.js != nil {
			js = fmt.Sprintf("%.2f", r.perInv(r.jsTotal()))
		}
		if r.varz {
			bus = fmt.Sprintf("%.1f (%.1f)", r.perInv(float64(r.busIn)), r.perInv(float64(r.busClientIn)))
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %s | %.0f | %s | %.0f | %.0f | %s | %s | %.0f |\n",
			kind, r.calls, r.throughput, ms(r.p50), ms(r.p99), ratio, r.perK(r.serverCPU()), coord, r.perK(r.clientCPU),
			ms(sumIdle(r)), js, bus, ms(r.ledgerLag))
	}
	for _, kind := range []string{"up", "cluster"} {
		r := results[kind]
		if r == nil {
			continue
		}
		var gws, wks []string
		for i, n := range r.perGateway {
			gws = append(gws, fmt.Sprintf("gateway %d: %d", i+1, n))
		}
		for _, id := range slices.Sorted(maps.Keys(r.perWorker)) {
			wks = append(wks, fmt.Sprintf("%s: %d", id, r.perWorker[id]))
		}
		fmt.Fprintf(w, "\n%s: calls answered by %s; served by %s\n", kind, strings.Join(gws, ", "), strings.Join(wks, ", "))
	}
	r := results["cluster"]
	if r == nil {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| cluster process | CPU ms / 1000 inv | idle CPU ms/s |")
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, n := range slices.Sorted(maps.Keys(r.cpu)) {
		fmt.Fprintf(w, "| %s | %.0f | %.1f |\n", n, r.perK(r.cpu[n]), ms(r.idle[n]))
	}
	if len(r.js) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| JetStream stream | msgs / inv |")
		fmt.Fprintln(w, "|---|---:|")
		for _, st := range slices.Sorted(maps.Keys(r.js)) {
			if n := r.js[st]; n > 0 {
				fmt.Fprintf(w, "| %s | %.3f |\n", st, r.perInv(float64(n)))
			}
		}
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// A command with a space and a ')' in it; utime 250, stime 50 ticks.
	stat := "4242 (clo ister) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	got, err := parseProcStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("parseProcStatCPU = %v, want %v", got, want)
	}
	if _, err := parseProcStatCPU("4242 (short) S 1 2"); err == nil {
		t.Error("a truncated stat line was accepted")
	}
	// And this process's own, which must parse and be positive by now.
	if d, err := procCPU(os.Getpid()); err != nil || d < 0 {
		t.Errorf("procCPU(self) = %v, %v", d, err)
	}
}

func TestParseInvocationsAnswered(t *testing.T) {
	text := `# HELP cloister_http_requests_total HTTP requests by route and status code.
cloister_http_requests_total{code="200",route="POST /v1/functions/{name}/invoke"} 40
cloister_http_requests_total{code="503",route="POST /v1/functions/{name}/invoke"} 2
cloister_http_requests_total{code="200",route="GET /v1/functions/{name}/key"} 7
cloister_http_requests_total{code="200",route="POST /v1/functions/{name}/sessions"} 3
`
	n, err := parseInvocationsAnswered(strings.NewReader(text))
	if err != nil || n != 42 {
		t.Errorf("parseInvocationsAnswered = %d, %v; want 42", n, err)
	}
}

func TestArgValue(t *testing.T) {
	argv := []string{"/x/cloister", "gateway", "--addr", "127.0.0.1:1", "--nats=tls://a,tls://b", "--nats-nkey"}
	for name, want := range map[string]string{"--addr": "127.0.0.1:1", "--nats": "tls://a,tls://b", "--nats-nkey": "", "--nats-ca": ""} {
		if got := argValue(argv, name); got != want {
			t.Errorf("argValue(%s) = %q, want %q", name, got, want)
		}
	}
}
