package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/wire"
)

// coldPoolIdle is the reactor pool idle time of the cold-start node: a
// reactor's pool shrinks to zero this long after its last call.
const coldPoolIdle = 100 * time.Millisecond

// coldEnv is the cold-start fixture: its own node, with a short pool idle
// time, and a client and owner key shared by its sub-benchmarks.
type coldEnv struct {
	dir   string
	node  *node.Node
	hc    *http.Client
	c     *client.Client
	owner ed25519.PrivateKey
	mods  []coldModule
}

// coldModule is a reactor BenchmarkColdStart deploys, with a request and
// a check of its exact response.
type coldModule struct {
	name  string // sub-benchmark name
	fn    string // function name prefix
	wasm  []byte
	input []byte
	want  []byte
	// wantFor, if set, replaces want: the answer of function fn.
	wantFor func(fn string) []byte
	// command modules have no pool: they run only deploy-to-first-result.
	command bool
	// patch returns a copy of the module with n written in its data, so
	// that the -new-code variant deploys different code on every operation.
	patch func(wasm []byte, n uint64) ([]byte, error)
	// manifest, if set, replaces the default abi reactor (JavaScript).
	manifest func(*bundle.Manifest)
}

var (
	coldOnce sync.Once
	cold     *coldEnv
	coldErr  error
	// nonceSeq numbers the new-code deploys of this process.
	nonceSeq atomic.Uint64
)

// coldFixture returns the cold-start env, starting it on first use.
func coldFixture(tb testing.TB) *coldEnv {
	tb.Helper()
	coldOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cold, coldErr = startCold(ctx)
	})
	if coldErr != nil {
		tb.Fatalf("starting cold-start fixture: %v", coldErr)
	}
	return cold
}

func startCold(ctx context.Context) (e *coldEnv, err error) {
	e = &coldEnv{}
	defer func() {
		if err != nil {
			_ = e.close()
			e = nil
		}
	}()
	if e.dir, e.node, err = startNode(ctx, node.Options{PoolIdle: coldPoolIdle}); err != nil {
		return nil, err
	}
	e.hc = &http.Client{Transport: transport(1), Timeout: time.Minute}
	if _, e.owner, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	if e.c, err = client.New(e.node.URL, e.node.Token, clientPolicy(e.node), client.WithHTTPClient(e.hc), client.WithCallerKey(e.owner)); err != nil {
		return nil, err
	}
	m100k, err := os.ReadFile(reactor100KWasm)
	if err != nil {
		return nil, err
	}
	goWasm, err := os.ReadFile(goReactorWasm)
	if err != nil {
		return nil, err
	}
	goCmd, err := os.ReadFile(goCommandWasm)
	if err != nil {
		return nil, err
	}
	e.mods = []coldModule{
		{name: "module-100KB", fn: "r100k", wasm: m100k, input: input, want: input, patch: withNonce},
		{name: "go-reactor", fn: "rgo", wasm: goWasm, input: []byte(`{"text":"two words"}`),
			want: []byte(`{"words":2,"upper":"TWO WORDS","calls":1}`), patch: withGoBuildInfo},
		{name: "go-3MB", fn: "go3mb", wasm: goCmd, input: []byte(`{"name":"Ada"}`), command: true, patch: withGoBuildInfo,
			wantFor: func(fn string) []byte {
				return []byte(`{"greeting":"Hello, Ada!","function":"` + fn + `","bytes":14}` + "\n")
			},
			manifest: func(m *bundle.Manifest) { m.ABI = bundle.ABICommand }},
	}
	// Attest once: every sub-benchmark then starts with a verified
	// coordinator, as a deploying client that has talked to it before.
	if _, err := e.c.Attest(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *coldEnv) close() error { return closeNode(e.hc, e.node, e.dir) }

// deploy signs wasm as the next version of the reactor fn, uploads and
// registers it, and returns the version: what `cloister deploy` does.
func (e *coldEnv) deploy(ctx context.Context, fn string, wasm []byte, manifest func(*bundle.Manifest)) (int, error) {
	v, err := e.c.NextVersion(ctx, fn)
	if err != nil {
		return 0, fmt.Errorf("getting next version of %s: %w", fn, err)
	}
	m := bundle.DefaultManifest(fn)
	m.ABI = bundle.ABIReactor
	if manifest != nil {
		manifest(&m)
	}
	m.Version, m.Namespace = v, "default" // the node's admin key's namespace
	b, err := bundle.Build(m, wasm, e.owner)
	if err != nil {
		return 0, fmt.Errorf("building bundle: %w", err)
	}
	if _, err := e.c.Deploy(ctx, fn, b); err != nil {
		return 0, fmt.Errorf("deploying %s v%d: %w", fn, v, err)
	}
	return v, nil
}

// invoke calls version v of fn once with per-request HPKE and checks the
// verified output. The first call of a version also fetches and verifies
// its function certificate, as any client's first call does.
func (e *coldEnv) invoke(ctx context.Context, fn string, v int, m coldModule) error {
	res, err := e.c.Invoke(ctx, fn, m.input, client.InvokeOptions{Version: v})
	if err != nil {
		return fmt.Errorf("invoking %s v%d: %w", fn, v, err)
	}
	if res.Mode != wire.ModeHPKE || res.Receipt == nil || res.Version != v {
		return fmt.Errorf("result of %s v%d: mode %q, version %d, receipt %v", fn, v, res.Mode, res.Version, res.Receipt != nil)
	}
	want := m.want
	if m.wantFor != nil {
		want = m.wantFor(fn)
	}
	if !bytes.Equal(res.Output, want) {
		return fmt.Errorf("%s v%d answered %q, want %q", fn, v, res.Output, want)
	}
	return nil
}

// firstResult deploys a new version (with new code if newCode) and calls
// it once. It returns the time to a registered deploy and to the first
// verified result after it.
func (e *coldEnv) firstResult(ctx context.Context, fn string, m coldModule, newCode bool) (deploy, first time.Duration, err error) {
	wasm := m.wasm
	t0 := time.Now()
	if newCode {
		// Patching a copy is part of making a new module, but it is a
		// memcpy: at most a millisecond for the 3.3 MB Go module.
		if wasm, err = m.patch(m.wasm, nonceSeq.Add(1)); err != nil {
			return 0, 0, err
		}
	}
	v, err := e.deploy(ctx, fn, wasm, m.manifest)
	if err != nil {
		return 0, 0, err
	}
	t1 := time.Now()
	if err := e.invoke(ctx, fn, v, m); err != nil {
		return 0, 0, err
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// poolMetrics reads the pool sandboxes and events of fn version v from
// the gateway's /metrics, keyed by state or event ("idle", "busy", "miss",
// "hit", ...).
func (e *coldEnv) poolMetrics(ctx context.Context, fn string, v int) (map[string]float64, error) {
	resp, err := getMetrics(ctx, e.hc, e.node.URL, e.node.Token)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	return parsePoolMetrics(bufio.NewScanner(resp.Body), fn, v)
}

// parsePoolMetrics picks cloister_pool_sandboxes{state=...} and
// cloister_pool_events_total{event=...} of one function version out of
// the Prometheus text format.
func parsePoolMetrics(sc *bufio.Scanner, fn string, v int) (map[string]float64, error) {
	want := []string{`function="` + fn + `"`, `namespace="default"`, `version="` + strconv.Itoa(v) + `"`}
	out := map[string]float64{}
	for sc.Scan() {
		line := sc.Text()
		var key string
		switch {
		case strings.HasPrefix(line, "cloister_pool_sandboxes{"):
			key = "state"
		case strings.HasPrefix(line, "cloister_pool_events_total{"):
			key = "event"
		default:
			continue
		}
		open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		if end < open {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		labels := strings.Split(line[open+1:end], ",")
		if !hasAll(labels, want) {
			continue
		}
		var name string
		for _, l := range labels {
			if k, val, ok := strings.Cut(l, "="); ok && k == key {
				name = strings.Trim(val, `"`)
			}
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil || name == "" {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		out[name] = f
	}
	return out, sc.Err()
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// waitScaledToZero waits until fn version v has no sandbox left, idle or
// busy: its pool shrank to zero after coldPoolIdle without calls.
func (e *coldEnv) waitScaledToZero(ctx context.Context, fn string, v int) error {
	deadline := time.Now().Add(10 * time.Second)
	time.Sleep(coldPoolIdle)
	for {
		pm, err := e.poolMetrics(ctx, fn, v)
		if err != nil {
			return err
		}
		idle, ok1 := pm["idle"]
		busy, ok2 := pm["busy"]
		if !ok1 || !ok2 {
			return fmt.Errorf("/metrics has no pool of %s v%d", fn, v)
		}
		if idle == 0 && busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool of %s v%d still holds %v idle and %v busy sandboxes after 10s", fn, v, idle, busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// coldStats accumulates per-operation times.
type coldStats struct{ op, deploy, first []time.Duration }

// report adds ms/op (the mean operation), p50-ms and max-ms and, for
// deploy-to-first-result, the mean deploy-ms and first-ms (first result
// after the deploy returned).
func (s *coldStats) report(b *testing.B) {
	b.ReportMetric(msMean(s.op), "ms/op")
	sorted := slices.Sorted(slices.Values(s.op))
	b.ReportMetric(ms(percentile(sorted, 50)), "p50-ms")
	b.ReportMetric(ms(sorted[len(sorted)-1]), "max-ms")
	if len(s.deploy) > 0 {
		b.ReportMetric(msMean(s.deploy), "deploy-ms")
		b.ReportMetric(msMean(s.first), "first-ms")
	}
}

func msMean(d []time.Duration) float64 {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return ms(sum) / float64(len(d))
}

// BenchmarkColdStart measures cold starts end to end through the client
// SDK, with per-request HPKE, on a node whose reactor pools shrink to zero
// after 100 ms idle:
//
//   - M: deploy-to-first-result of module M: sign, upload and register a
//     new version, then invoke it once and verify the result;
//   - M-new-code: the same, with different module bytes on every
//     operation, so that no compiled code is reused (go-3MB-new-code and
//     go-reactor-new-code are the 3.3 MB Go command and reactor);
//   - after-scale-to-zero/M: one invocation of a deployed reactor whose
//     pool has shrunk to zero (the wait for that is not timed);
//   - warm/M: one invocation of a reactor with the pool warm.
//
// ms/op is the mean operation; the node's start-up is never timed.
func BenchmarkColdStart(b *testing.B) {
	e := coldFixture(b)
	for _, m := range e.mods {
		b.Run(m.name, func(b *testing.B) { e.benchFirstResult(b, m, false) })
		b.Run(m.name+"-new-code", func(b *testing.B) { e.benchFirstResult(b, m, true) })
	}
	b.Run("after-scale-to-zero", func(b *testing.B) {
		for _, m := range e.mods {
			if !m.command {
				b.Run(m.name, func(b *testing.B) { e.benchInvoke(b, m, true) })
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		for _, m := range e.mods {
			if !m.command {
				b.Run(m.name, func(b *testing.B) { e.benchInvoke(b, m, false) })
			}
		}
	})
}

// benchFirstResult times deploy + first verified result, each operation
// with a new version of one function (and new code if newCode). One untimed
// deploy first makes every timed one alike: for the same bytes, the code is
// then compiled already (by the coordinator and the worker), as it is for
// every version after a function's first.
func (e *coldEnv) benchFirstResult(b *testing.B, m coldModule, newCode bool) {
	ctx := b.Context()
	drainLedger(b, e.hc, e.node.URL, e.node.Token)
	fn := "cold-" + m.fn
	if newCode {
		fn += "-new"
	}
	if _, _, err := e.firstResult(ctx, fn, m, newCode); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	var s coldStats
	b.ResetTimer()
	for range b.N {
		d, f, err := e.firstResult(ctx, fn, m, newCode)
		if err != nil {
			b.Fatal(err)
		}
		s.op, s.deploy, s.first = append(s.op, d+f), append(s.deploy, d), append(s.first, f)
	}
	b.StopTimer()
	s.report(b)
}

// benchInvoke times single invocations of one deployed version: after its
// pool shrank to zero if scaledToZero, else with the pool warm. It checks
// the pool's counters afterwards: every timed call of the first kind must
// have missed the pool (made a sandbox), every call of the second kind hit it.
func (e *coldEnv) benchInvoke(b *testing.B, m coldModule, scaledToZero bool) {
	ctx := b.Context()
	drainLedger(b, e.hc, e.node.URL, e.node.Token)
	fn := "warm-" + m.fn
	if scaledToZero {
		fn = "idle-" + m.fn
	}
	v, err := e.deploy(ctx, fn, m.wasm, m.manifest)
	if err != nil {
		b.Fatal(err)
	}
	for range 3 { // load it, fetch its certificate, warm the pool
		if err := e.invoke(ctx, fn, v, m); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	if scaledToZero {
		if err := e.waitScaledToZero(ctx, fn, v); err != nil {
			b.Fatal(err)
		}
	}
	before, err := e.poolMetrics(ctx, fn, v)
	if err != nil {
		b.Fatal(err)
	}
	var s coldStats
	b.ResetTimer()
	for i := range b.N {
		if scaledToZero && i > 0 {
			b.StopTimer()
			if err := e.waitScaledToZero(ctx, fn, v); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		t0 := time.Now()
		if err := e.invoke(ctx, fn, v, m); err != nil {
			b.Fatal(err)
		}
		s.op = append(s.op, time.Since(t0))
	}
	b.StopTimer()
	after, err := e.poolMetrics(ctx, fn, v)
	if err != nil {
		b.Fatal(err)
	}
	event := "hit"
	if scaledToZero {
		event = "miss"
	}
	if got := after[event] - before[event]; got != float64(b.N) {
		b.Fatalf("%d timed calls made %v pool %ss, want %d", b.N, got, event, b.N)
	}
	s.report(b)
}

// TestColdStart is the quick check of the cold-start harness: one
// deploy-to-first-result of the 100 KB reactor with new code, then one call
// after its pool shrank to zero, which must make a new sandbox.
func TestColdStart(t *testing.T) {
	e := coldFixture(t)
	ctx := t.Context()
	m := e.mods[0]
	fn := "test-" + m.fn
	if _, _, err := e.firstResult(ctx, fn, m, true); err != nil {
		t.Fatal(err)
	}
	v, err := e.c.NextVersion(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	v-- // the version just deployed
	if err := e.waitScaledToZero(ctx, fn, v); err != nil {
		t.Fatal(err)
	}
	before, err := e.poolMetrics(ctx, fn, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.invoke(ctx, fn, v, m); err != nil {
		t.Fatal(err)
	}
	after, err := e.poolMetrics(ctx, fn, v)
	if err != nil {
		t.Fatal(err)
	}
	if after["miss"] != before["miss"]+1 {
		t.Errorf("pool misses went from %v to %v, want one more: the call did not start cold", before["miss"], after["miss"])
	}
}

func TestParsePoolMetrics(t *testing.T) {
	text := `# HELP cloister_pool_sandboxes Sandboxes of a reactor function, by state.
cloister_pool_sandboxes{function="f",namespace="default",state="busy",version="2"} 0
cloister_pool_sandboxes{function="f",namespace="default",state="idle",version="2"} 1
cloister_pool_sandboxes{function="f",namespace="default",state="idle",version="12"} 5
cloister_pool_sandboxes{function="ff",namespace="default",state="idle",version="2"} 7
cloister_pool_events_total{event="miss",function="f",namespace="default",version="2"} 3
cloister_pool_reset_pages_total{function="f",namespace="default",version="2"} 9
`
	got, err := parsePoolMetrics(bufio.NewScanner(strings.NewReader(text)), "f", 2)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"busy": 0, "idle": 1, "miss": 3}
	if len(got) != len(want) || got["busy"] != 0 || got["idle"] != 1 || got["miss"] != 3 {
		t.Errorf("got %v, want %v", got, want)
	}
}
