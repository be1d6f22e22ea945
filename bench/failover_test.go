package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/natsconf"
	"github.com/cloister-faas/cloister/internal/wire"
)

var (
	failoverOn   = flag.Bool("failover", false, "run TestFailover (or set CLOISTER_FAILOVER=1); bench/run.sh failover does")
	failoverLoad = flag.Int("failover.load", 4, "TestFailover's background clients, each pausing failover.pause between calls (0: none)")
	failoverGap  = flag.Duration("failover.pause", 20*time.Millisecond, "pause between two calls of one background client of TestFailover")
)

// Bounds of TestFailover.
const (
	// One call. Longer than a gateway waits for a worker's answer (the
	// function's timeout, 5 s by default, and 30 s), so that a call's
	// outcome is the platform's, not the client's impatience.
	failoverCallTimeout  = time.Minute
	failoverRecoverMax   = 2 * time.Minute // kill → first successful probe
	failoverReadyMax     = 2 * time.Minute // restart → ready
	failoverSteadyProbes = 20              // successful probes in a row before a kill and after a restart
)

// failoverKind is a kind of process TestFailover kills: which one of the
// role it picks, and how it knows that the process, restarted from its
// argv, is ready again.
type failoverKind struct {
	role  string
	pick  func(dc *devCluster) (victim clusterProc, why string, err error)
	ready func(dc *devCluster, p clusterProc, c *child) bool
}

// failoverCoordinators is the coordinators of TestFailover's cluster: the
// first active, the second a standby.
const failoverCoordinators = 2

// failoverKinds are killed in this order, once each per run. A restarted
// coordinator comes back as a standby, which is what `cloister dev
// cluster` waits for. The prober, a new client, attests first, which needs
// an active coordinator.
var failoverKinds = []failoverKind{
	{role: "worker", pick: firstOf("worker"), ready: logSays(`msg="worker serving"`)},
	// The first gateway: each kind's prober lists it first, so the kill
	// hits the gateway the prober is using.
	{role: "gateway", pick: firstOf("gateway"), ready: gatewayReady},
	{role: "nats", pick: replayLeader, ready: logSays("Server is ready")},
	// A restarted coordinator stands by, or, if no standby took its lease
	// yet, takes its own lease back.
	{role: "coordinator", pick: activeCoordinator, ready: logSaysAny(`msg="coordinator standby`, `msg="coordinator active"`)},
}

// activeCoordinator picks the coordinator that holds the lease (the key
// "active" of bus.BucketCoord names its node, and each coordinator's data
// directory holds its node id).
func activeCoordinator(dc *devCluster) (clusterProc, string, error) {
	cs := dc.byRole("coordinator")
	js, done, err := jetStreamAs(cs, natsconf.Coordinator)
	if err != nil {
		return clusterProc{}, "", err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bus.BucketCoord)
	if err != nil {
		return clusterProc{}, "", err
	}
	h, err := coordinator.Holder(ctx, kv)
	if err != nil || h == nil {
		return clusterProc{}, "", fmt.Errorf("no active coordinator: %v", err)
	}
	for _, c := range cs {
		id, _ := os.ReadFile(filepath.Join(c.Data, "coordinator", "node-id"))
		if strings.TrimSpace(string(id)) == h.Node {
			return c, "the active coordinator", nil
		}
	}
	return clusterProc{}, "", fmt.Errorf("no coordinator of cluster.json has node id %s", h.Node)
}

// jetStreamAs connects to the cluster's JetStream with the credentials of
// the first of ps, a process of role; done closes the connection.
func jetStreamAs(ps []clusterProc, role natsconf.Role) (jetstream.JetStream, func(), error) {
	if len(ps) == 0 {
		return nil, nil, fmt.Errorf("cluster.json lists no %s", role)
	}
	nc, err := dialAs(ps[0], role)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// firstOf picks the first process of role in cluster.json.
func firstOf(role string) func(dc *devCluster) (clusterProc, string, error) {
	return func(dc *devCluster) (clusterProc, string, error) {
		ps := dc.byRole(role)
		if len(ps) == 0 {
			return clusterProc{}, "", fmt.Errorf("cluster.json lists no %s", role)
		}
		return ps[0], "the first " + role, nil
	}
}

// replayLeader picks the NATS node that leads the replay log's stream:
// every sealed call stores its nonce there, so its loss is the one calls
// cannot route around (they wait for the stream's next leader), besides
// the connections that move to the other nodes.
func replayLeader(dc *devCluster) (clusterProc, string, error) {
	js, done, err := jetStreamAs(dc.byRole("gateway"), natsconf.Gateway)
	if err != nil {
		return clusterProc{}, "", err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := bus.StreamReplay
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return clusterProc{}, "", fmt.Errorf("stream %s: %w", stream, err)
	}
	ci := st.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return clusterProc{}, "", fmt.Errorf("stream %s has no leader", stream)
	}
	// Data is the node's config file, which names the server.
	for _, p := range dc.byRole("nats") {
		b, err := os.ReadFile(p.Data)
		if err != nil {
			return clusterProc{}, "", err
		}
		if m := serverNameRE.FindSubmatch(b); m != nil && string(m[1]) == ci.Leader {
			return p, "leader of " + stream, nil
		}
	}
	return clusterProc{}, "", fmt.Errorf("no NATS node of cluster.json is %q, the leader of %s", ci.Leader, stream)
}

// serverNameRE finds the server name in a NATS config file.
var serverNameRE = regexp.MustCompile(`(?m)^server_name:\s*"([^"]+)"`)

// logSays is ready once the restarted process's own log holds s.
func logSays(s string) func(*devCluster, clusterProc, *child) bool { return logSaysAny(s) }

// logSaysAny is ready once the child's log holds one of ss.
func logSaysAny(ss ...string) func(*devCluster, clusterProc, *child) bool {
	return func(_ *devCluster, _ clusterProc, c *child) bool {
		b, err := os.ReadFile(c.log)
		if err != nil {
			return false
		}
		for _, s := range ss {
			if bytes.Contains(b, []byte(s)) {
				return true
			}
		}
		return false
	}
}

// gatewayReady is ready once the gateway's /readyz answers 200.
func gatewayReady(_ *devCluster, p clusterProc, _ *child) bool {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + p.Addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// failoverResult is what one kill showed.
type failoverResult struct {
	kind, victim, why string
	gone              time.Duration     // SIGKILL → the process no longer runs
	recovery          time.Duration     // SIGKILL → the prober's first successful sealed call (its calls start once the process is gone)
	failedProbes      map[string]int    // the prober's calls that failed in between, by label
	firstErr          map[string]string // the first error of each label, in full
	restartReady      time.Duration     // restart from argv → ready
	bg                bgWindow          // the background clients' calls around the kill
	err               error
}

// TestFailover kills one process of each kind in failoverKinds with
// SIGKILL, by PID from cluster.json, in a real `cloister dev cluster` (3
// NATS nodes, a coordinator, 2 workers, 2 gateways) under a light
// background load, and measures the time from the kill to the first
// successful sealed call (HPKE, verified receipt and output) that started
// after it. The probe calls run one after the other from a client that
// lists every gateway, the first gateway first. Once a call has succeeded,
// the killed process is started again from its argv in cluster.json (the
// launcher restarts nothing), and the next kind is killed once the
// restarted process is ready and calls succeed again.
//
// It runs only when asked: bench/run.sh failover.
func TestFailover(t *testing.T) {
	optIn(t, *failoverOn, "CLOISTER_FAILOVER", "bench/run.sh failover (or -failover)")
	bin := buildCloister(t)
	dc, err := startDevCluster(t, bin, failoverCoordinators)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(dc.logTails())
		}
	})
	pol, err := client.LoadPolicy(dc.env["CLOISTER_POLICY"])
	if err != nil {
		t.Fatal(err)
	}
	conc := max(*failoverLoad, 1)
	hc := &http.Client{Transport: transport(conc + 1), Timeout: time.Minute}
	gws := dc.gateways()
	loadClients, err := rotatedClients(gws, dc.env["CLOISTER_TOKEN"], pol, hc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := deployEcho(ctx, loadClients[0], conc); err != nil {
		t.Fatal(err)
	}

	bg := startBackground(ctx, loadClients, *failoverLoad, *failoverGap)
	defer bg.stop()

	var results []failoverResult
	for _, k := range failoverKinds {
		r := runFailover(ctx, t, dc, k, gws, pol, hc, bg)
		results = append(results, r)
		for _, label := range slices.Sorted(maps.Keys(r.firstErr)) {
			t.Logf("%s: the prober's first %q: %s", k.role, label, r.firstErr[label])
		}
		if r.err != nil {
			t.Errorf("%s: %v", k.role, r.err)
			break // the cluster is not whole: the next kind would measure something else
		}
		t.Logf("%s: %s (%s) killed; gone after %s; the prober's first successful call after %s; restarted and ready in %s",
			k.role, r.victim, r.why, r.gone.Round(time.Microsecond), r.recovery.Round(time.Millisecond), r.restartReady.Round(time.Millisecond))
	}
	bg.stop()
	for _, label := range slices.Sorted(maps.Keys(bg.firstErr)) {
		t.Logf("background: the first %q: %s", label, bg.firstErr[label])
	}
	printFailover(os.Stdout, results, *failoverLoad, *failoverGap)
}

// runFailover kills the victim of one kind and measures the recovery.
func runFailover(ctx context.Context, t *testing.T, dc *devCluster, k failoverKind, gws []string, pol client.Policy, hc *http.Client, bg *background) failoverResult {
	r := failoverResult{kind: k.role, failedProbes: map[string]int{}, firstErr: map[string]string{}}
	victim, why, err := k.pick(dc)
	if err != nil {
		r.err = err
		return r
	}
	r.victim, r.why = victim.Name, why
	// A new prober for each kind, listing the first gateway first: a
	// client sends to the gateway that last answered it, and the kinds
	// before may have moved an older one to the second.
	probers, err := rotatedClients(gws, dc.env["CLOISTER_TOKEN"], pol, hc)
	if err != nil {
		r.err = err
		return r
	}
	probe := func() error {
		pctx, cancel := context.WithTimeout(ctx, failoverCallTimeout)
		defer cancel()
		res, err := probers[0].Invoke(pctx, fnName, input, client.InvokeOptions{})
		return checkResult(res, err, wire.ModeHPKE)
	}
	if err := steady(probe); err != nil {
		r.err = fmt.Errorf("before the kill: %w", err)
		return r
	}
	if !runsBinary(victim.PID, dc.bin) {
		r.err = fmt.Errorf("%s (pid %d) is not running", victim.Name, victim.PID)
		return r
	}

	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		r.err = fmt.Errorf("killing %s: %w", victim.Name, err)
		return r
	}
	// The prober's first call starts once the process is gone (its
	// PID reaped or a zombie, so its sockets are closed): a call sent while
	// the kernel still tears it down is one in flight at the kill, which
	// the background calls count.
	for runsBinary(victim.PID, dc.bin) && time.Since(killed) < 10*time.Second {
		time.Sleep(time.Millisecond)
	}
	r.gone = time.Since(killed)
	for {
		err := probe()
		if err == nil {
			r.recovery = time.Since(killed)
			break
		}
		label := failLabel(err)
		if r.failedProbes[label]++; r.firstErr[label] == "" {
			r.firstErr[label] = err.Error()
		}
		if time.Since(killed) > failoverRecoverMax {
			r.err = fmt.Errorf("no successful call within %s of killing %s", failoverRecoverMax, victim.Name)
			return r
		}
		// Quick refusals (no worker, unavailable) come back at once:
		// a short pause keeps the prober from taking the CPU that the
		// recovery needs, at the cost of that much resolution.
		time.Sleep(5 * time.Millisecond)
	}

	restarted := time.Now()
	c, err := dc.restart(victim)
	if err != nil {
		r.err = err
		return r
	}
	for !k.ready(dc, victim, c) {
		if c.exited() {
			r.err = fmt.Errorf("%s exited after its restart (%v); see %s", victim.Name, c.err, c.log)
			return r
		}
		if time.Since(restarted) > failoverReadyMax {
			r.err = fmt.Errorf("%s not ready within %s of its restart; see %s", victim.Name, failoverReadyMax, c.log)
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	ready := time.Now()
	r.restartReady = ready.Sub(restarted)
	r.bg = bg.around(killed, ready)
	if err := steady(probe); err != nil {
		r.err = fmt.Errorf("after the restart: %w", err)
	}
	return r
}

// steady waits for failoverSteadyProbes successful probes in a row, for a
// minute at most.
func steady(probe func() error) error {
	deadline := time.Now().Add(time.Minute)
	var err error
	for ok := 0; ok < failoverSteadyProbes; {
		if err = probe(); err == nil {
			ok++
			continue
		}
		ok = 0
		if time.Now().After(deadline) {
			return fmt.Errorf("calls do not succeed steadily: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// failLabel names an outcome for the tables: ok, the platform's error
// code, the SDK's "outcome unknown", or the client's own timeout.
func failLabel(err error) string {
	var ce *client.Error
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, client.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "client timeout"
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60] + "…"
	}
	return "no code: " + msg
}

// background is a light, steady load beside the probes: n clients, each
// calling and then pausing. It fails nothing; it records when each call
// started and ended, and how.
type background struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	calls    []bgCall
	firstErr map[string]string // the first error of each label, in full
	once     sync.Once
}

type bgCall struct {
	start, end time.Time
	label      string
}

func startBackground(ctx context.Context, clients []*client.Client, n int, pause time.Duration) *background {
	ctx, cancel := context.WithCancel(ctx)
	bg := &background{cancel: cancel, firstErr: map[string]string{}}
	for i := range n {
		c := clients[i%len(clients)]
		bg.wg.Go(func() {
			for ctx.Err() == nil {
				cctx, done := context.WithTimeout(ctx, failoverCallTimeout)
				start := time.Now()
				res, err := c.Invoke(cctx, fnName, input, client.InvokeOptions{})
				done()
				if ctx.Err() != nil {
					return // stopped: this outcome is the test's doing
				}
				err = checkResult(res, err, wire.ModeHPKE)
				call := bgCall{start: start, end: time.Now(), label: failLabel(err)}
				bg.mu.Lock()
				bg.calls = append(bg.calls, call)
				if err != nil && bg.firstErr[call.label] == "" {
					bg.firstErr[call.label] = err.Error()
				}
				bg.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return bg
}

// bgWindow is what the background calls saw around one kill.
type bgWindow struct {
	inFlight  map[string]int // calls under way at the kill, by outcome
	after     map[string]int // calls started from the kill until the restarted process was ready, by outcome
	firstOK   time.Duration  // kill → the end of the first successful call that started after it (-1: none)
	worstFail time.Duration  // the longest of the failed calls in after
}

// around sums up the calls around a kill at killed, until ready. A call
// still running is not counted.
func (bg *background) around(killed, ready time.Time) bgWindow {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	w := bgWindow{inFlight: map[string]int{}, after: map[string]int{}, firstOK: -1}
	for _, c := range bg.calls {
		switch {
		case c.start.Before(killed) && !c.end.Before(killed):
			w.inFlight[c.label]++
		case !c.start.Before(killed) && !c.start.After(ready):
			w.after[c.label]++
			if d := c.end.Sub(killed); c.label == "ok" && (w.firstOK < 0 || d < w.firstOK) {
				w.firstOK = d
			} else if c.label != "ok" {
				w.worstFail = max(w.worstFail, c.end.Sub(c.start))
			}
		}
	}
	return w
}

func (bg *background) stop() {
	bg.once.Do(func() {
		bg.cancel()
		bg.wg.Wait()
	})
}

// printFailover prints the results as a markdown table.
func printFailover(w io.Writer, results []failoverResult, load int, pause time.Duration) {
	counts := func(m map[string]int) string {
		if len(m) == 0 {
			return "none"
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "\nbackground load: %d clients, each pausing %s between calls; every call times out after %s\n\n", load, pause, failoverCallTimeout)
	fmt.Fprintln(w, "| kind | process killed | prober: kill → first successful sealed call ms | prober's failed calls | background: kill → first successful call ms | background calls in flight at the kill | background calls started from the kill to ready (longest failed, s) | restart → ready s |")
	fmt.Fprintln(w, "|---|---|---:|---|---:|---|---|---:|")
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "| %s | %s (%s) | failed: %v | %s | | | | |\n", r.kind, r.victim, r.why, r.err, counts(r.failedProbes))
			continue
		}
		firstOK := "none"
		if r.bg.firstOK >= 0 {
			firstOK = fmt.Sprintf("%.0f", ms(r.bg.firstOK))
		}
		after := counts(r.bg.after)
		if r.bg.worstFail > 0 {
			after += fmt.Sprintf(" (%.1f)", r.bg.worstFail.Seconds())
		}
		fmt.Fprintf(w, "| %s | %s (%s) | %.0f | %s | %s | %s | %s | %.1f |\n", r.kind, r.victim, r.why, ms(r.recovery),
			counts(r.failedProbes), firstOK, counts(r.bg.inFlight), after, r.restartReady.Seconds())
	}
}
