package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/wire"
)

// mode is one way of invoking the echo function. op performs one
// invocation and returns an error unless the output equals the input.
type mode struct {
	name string
	op   func(ctx context.Context) error
}

// modes returns the five measured modes in report order.
func (e *env) modes() []mode {
	return []mode{
		{"hpke", func(ctx context.Context) error {
			res, err := e.c.Invoke(ctx, fnName, input, client.InvokeOptions{})
			return checkResult(res, err, wire.ModeHPKE)
		}},
		{"session", func(ctx context.Context) error {
			res, err := e.sess.Invoke(ctx, input)
			return checkResult(res, err, wire.ModeSession)
		}},
		{"reactor-session", func(ctx context.Context) error {
			res, err := e.rsess.Invoke(ctx, input)
			if err := checkResult(res, err, wire.ModeSession); err != nil {
				return err
			}
			// Only a reactor's receipt meters calls to the "cloister"
			// host module: the call went through the reactor pool.
			if res.Receipt.Metering.HostCalls["cloister"] == 0 {
				return fmt.Errorf("receipt meters no reactor host calls: not served by a reactor")
			}
			return nil
		}},
		{"plaintext", func(ctx context.Context) error {
			res, err := e.c.Invoke(ctx, fnName, input, client.InvokeOptions{Plaintext: true})
			return checkResult(res, err, wire.ModePlain)
		}},
		{"native", e.nativeOp},
	}
}

// checkResult accepts a verified SDK result only if it came in the
// expected mode, with a receipt, and echoes the input.
func checkResult(res *client.Result, err error, wantMode string) error {
	if err != nil {
		return err
	}
	if res.Mode != wantMode {
		return fmt.Errorf("result mode %q, want %q", res.Mode, wantMode)
	}
	if res.Receipt == nil {
		return fmt.Errorf("%s result without a receipt", wantMode)
	}
	return checkEcho(res.Output)
}

// checkEcho fails unless out equals the input.
func checkEcho(out []byte) error {
	if !bytes.Equal(out, input) {
		return fmt.Errorf("output %q (%d bytes), want the input %q (%d bytes)", out, len(out), input, len(input))
	}
	return nil
}

// nativeOp sends the same request as the plaintext mode (same body and
// headers) to the native echo server.
func (e *env) nativeOp(ctx context.Context) error {
	return nativeCall(ctx, e.hc, e.native.URL, e.node.Token)
}

// nativeCall sends the plaintext mode's request, with token, to the native
// echo server at url, and checks the echo.
func nativeCall(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/functions/"+fnName+"/invoke", bytes.NewReader(input))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("native echo: HTTP %d: %s", resp.StatusCode, out)
	}
	return checkEcho(out)
}

// load is the outcome of runLoad.
type load struct {
	elapsed time.Duration
	lat     []time.Duration // one per completed op, sorted
	// early and late count the ops completed in the first and the second
	// half of elapsed.
	early, late int
}

func (l load) throughput() float64 { return float64(len(l.lat)) / l.elapsed.Seconds() }

// sustained is the throughput of the second half of the run over that of
// the first: below 1, the rate fell as the run went on (a queue filling,
// a store growing). With -benchtime 60s it compares the last 30 s with the
// first 30 s.
func (l load) sustained() float64 {
	if l.early == 0 {
		return 0
	}
	return float64(l.late) / float64(l.early)
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// runLoad performs n ops with conc concurrent clients and records each
// op's latency. It stops at the first failure and returns it.
func runLoad(ctx context.Context, n, conc int, op func(context.Context) error) (load, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		perConn = make([][]time.Duration, conc)
		doneAt  = make([][]time.Duration, conc) // completion times since start
	)
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			lat := make([]time.Duration, 0, n/conc+1)
			at := make([]time.Duration, 0, n/conc+1)
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					cancel(err)
					break
				}
				t1 := time.Now()
				lat, at = append(lat, t1.Sub(t0)), append(at, t1.Sub(start))
			}
			perConn[g], doneAt[g] = lat, at
		})
	}
	wg.Wait()
	l := load{elapsed: time.Since(start)}
	if err := context.Cause(ctx); err != nil {
		return l, err
	}
	l.lat = slices.Concat(perConn...)
	slices.Sort(l.lat)
	for _, at := range doneAt {
		for _, d := range at {
			if d < l.elapsed/2 {
				l.early++
			} else {
				l.late++
			}
		}
	}
	if len(l.lat) != n {
		return l, fmt.Errorf("completed %d ops, want %d", len(l.lat), n)
	}
	return l, nil
}

// BenchmarkInvoke measures throughput and latency of the echo function in
// each mode, with -conc concurrent clients over loopback HTTP. ns/op is
// the inverse of the throughput, not a latency; read p50-ms and p99-ms.
// p99/p50 is the tail's spread; late/early is the throughput of the run's
// second half over its first (with -benchtime 60s: the last 30 s against
// the first 30 s, the sustained-load check; below 1, the rate fell).
func BenchmarkInvoke(b *testing.B) {
	e := fixture(b)
	conc := *concurrency
	if conc < 1 {
		b.Fatalf("-conc %d: need at least one client", conc)
	}
	benchModes(b, e, conc, e.modes())
}

// benchModes runs each mode as a sub-benchmark under the same load loop.
func benchModes(b *testing.B, e *env, conc int, modes []mode) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			ctx := b.Context()
			// Start with no receipt waiting for the ledger: the previous
			// mode's backlog must not slow this one down.
			drainLedger(b, e.hc, e.node.URL, e.node.Token)
			// Warm up outside the timer: open conc keep-alive connections
			// and make sure the worker holds the function loaded.
			if _, err := runLoad(ctx, 2*conc, conc, m.op); err != nil {
				b.Fatalf("warm-up: %v", err)
			}
			b.ResetTimer()
			l, err := runLoad(ctx, b.N, conc, m.op)
			b.StopTimer()
			if err != nil {
				b.Fatalf("%s: %v", m.name, err)
			}
			b.ReportMetric(l.throughput(), "req/s")
			b.ReportMetric(ms(percentile(l.lat, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(l.lat, 99)), "p99-ms")
			b.ReportMetric(float64(percentile(l.lat, 99))/float64(percentile(l.lat, 50)), "p99/p50")
			b.ReportMetric(l.sustained(), "late/early")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestInvokeModes is the quick check CI runs: one node, the function
// deployed, one invocation in each mode, then a short concurrent burst
// through the benchmark's own load loop.
func TestInvokeModes(t *testing.T) {
	e := fixture(t)
	for _, m := range e.modes() {
		t.Run(m.name, func(t *testing.T) {
			if err := m.op(t.Context()); err != nil {
				t.Fatalf("one invocation: %v", err)
			}
			conc := max(*concurrency, 1)
			l, err := runLoad(t.Context(), 4*conc, conc, m.op)
			if err != nil {
				t.Fatalf("burst: %v", err)
			}
			if got := len(l.lat); got != 4*conc {
				t.Fatalf("burst recorded %d latencies, want %d", got, 4*conc)
			}
			// How the ops split between the halves is timing: a burst this
			// short can finish all of them in its second half when its
			// goroutines start late (it did once, on a loaded CI machine).
			if l.early+l.late != 4*conc || l.late == 0 {
				t.Fatalf("burst counted %d ops in its first half and %d in its second, want %d in all, the last one late", l.early, l.late, 4*conc)
			}
		})
	}
}

// TestCheckEchoRefusesWrongOutput makes sure a mode that does not echo
// cannot pass for one that does.
func TestCheckEchoRefusesWrongOutput(t *testing.T) {
	for _, out := range [][]byte{nil, {}, input[:len(input)-1], append(slices.Clone(input), '\n'), bytes.ToUpper(input)} {
		if err := checkEcho(out); err == nil {
			t.Errorf("checkEcho(%q) = nil, want an error", out)
		}
	}
	if err := checkEcho(slices.Clone(input)); err != nil {
		t.Errorf("checkEcho(input) = %v, want nil", err)
	}
	if err := checkResult(&client.Result{Output: input, Mode: wire.ModePlain, Receipt: &client.Receipt{}}, nil, wire.ModeHPKE); err == nil {
		t.Error("checkResult accepted a plain result as hpke")
	}
	if err := checkResult(&client.Result{Output: input, Mode: wire.ModeHPKE}, nil, wire.ModeHPKE); err == nil {
		t.Error("checkResult accepted a result without a receipt")
	}
}

func TestRunLoadStopsOnFailure(t *testing.T) {
	var calls atomic.Int64
	_, err := runLoad(t.Context(), 1000, 4, func(context.Context) error {
		if calls.Add(1) == 10 {
			return fmt.Errorf("boom")
		}
		return nil
	})
	if err == nil || err.Error() != "boom" {
		t.Fatalf("runLoad error = %v, want boom", err)
	}
}

func TestPercentile(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.5, time.Millisecond}} {
		if got := percentile(lat, tc.p); got != tc.want {
			t.Errorf("percentile(1..100ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile([7], 99) = %v, want 7", got)
	}
}
