package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/wire"
)

var (
	unaccountedOnce sync.Once
	unaccounted     *env
	unaccountedErr  error
)

// unaccountedFixture is a second node like the shared one, with instruction
// metering and the receipt ledger off (node.Options.NoAccounting).
func unaccountedFixture(tb testing.TB) *env {
	tb.Helper()
	unaccountedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		unaccounted, unaccountedErr = start(ctx, *concurrency, node.Options{NoAccounting: true})
	})
	if unaccountedErr != nil {
		tb.Fatalf("starting the node without accounting: %v", unaccountedErr)
	}
	return unaccounted
}

// BenchmarkAccounting measures what trusted accounting costs end to end:
// the same load (conc clients, session mode, the reactor echo) against two
// nodes in the same run, "off" without instruction metering and the ledger,
// "on" with both (the default). For "on", the clock stops only once the
// ledger has durably logged every receipt of the run (less the batch age
// that the last receipts wait by design), so the throughput is what the
// node sustains, not what it acknowledges while a backlog grows.
// "interleaved" alternates the two in six rounds, so that a change in the
// machine's load during the run falls on both alike, and reports the ratio.
// Goal: on ≥ 0.9 × off.
func BenchmarkAccounting(b *testing.B) {
	envs := map[bool]*env{false: unaccountedFixture(b), true: fixture(b)}
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			e := envs[on]
			warmAccounting(b, e, on)
			b.ResetTimer()
			elapsed, lat, err := accountedLoad(b.Context(), e, on, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		const rounds = 6
		n := max(b.N/rounds, 1)
		var total, cpu [2]time.Duration
		for _, on := range []bool{false, true} {
			warmAccounting(b, envs[on], on)
		}
		b.ResetTimer()
		for r := range rounds {
			on := r%2 == 1
			cpu0 := processCPU()
			elapsed, _, err := accountedLoad(b.Context(), envs[on], on, n)
			if err != nil {
				b.Fatal(err)
			}
			total[r%2] += elapsed
			cpu[r%2] += processCPU() - cpu0
		}
		b.StopTimer()
		off, on := float64(n*rounds/2)/total[0].Seconds(), float64(n*rounds/2)/total[1].Seconds()
		b.ReportMetric(off, "off-req/s")
		b.ReportMetric(on, "on-req/s")
		b.ReportMetric(on/off, "on/off")
		// CPU per request (clients and node together, this process): on a
		// machine shared with other work it moves less than throughput.
		offCPU, onCPU := cpu[0].Seconds()*1e6/float64(n*rounds/2), cpu[1].Seconds()*1e6/float64(n*rounds/2)
		b.ReportMetric(offCPU, "off-cpu-us/op")
		b.ReportMetric(onCPU, "on-cpu-us/op")
		b.ReportMetric(offCPU/onCPU, "cpu-off/on")
	})
}

// accountingOp is one session-mode invocation of the reactor echo, whose
// receipt must carry an instruction count exactly when accounting is on.
func accountingOp(e *env, on bool) func(context.Context) error {
	return func(ctx context.Context) error {
		res, err := e.rsess.Invoke(ctx, input)
		if err := checkResult(res, err, wire.ModeSession); err != nil {
			return err
		}
		if measured := res.Receipt.Metering.Instructions != nil; measured != on {
			return fmt.Errorf("accounting on=%v: the receipt's instruction count is present: %v", on, measured)
		}
		return nil
	}
}

// warmAccounting opens the clients' connections and leaves no receipt
// waiting for the ledger.
func warmAccounting(b *testing.B, e *env, on bool) {
	b.Helper()
	if on {
		drainLedger(b, e.hc, e.node.URL, e.node.Token)
	}
	if _, err := runLoad(b.Context(), 2*(*concurrency), *concurrency, accountingOp(e, on)); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	if on {
		drainLedger(b, e.hc, e.node.URL, e.node.Token)
	}
}

// accountedLoad runs n invocations from conc clients and, with accounting
// on, waits until the ledger has logged them. The time is until then, less
// the ledger's batch age (coordinator.LedgerBatchAge): the last receipts of
// any run wait that long by design, which a sustained load never sees. A
// ledger that falls behind still shows, as a drain longer than that.
func accountedLoad(ctx context.Context, e *env, on bool, n int) (time.Duration, []time.Duration, error) {
	start := time.Now()
	l, err := runLoad(ctx, n, *concurrency, accountingOp(e, on))
	if err != nil {
		return 0, nil, err
	}
	elapsed := time.Since(start)
	if on {
		if _, err := waitLedger(ctx, e.hc, e.node.URL, e.node.Token, 2*time.Second, 3*time.Minute); err != nil {
			return 0, nil, fmt.Errorf("waiting for the ledger: %w", err)
		}
		elapsed += max(0, time.Since(start)-elapsed-coordinator.LedgerBatchAge)
	}
	return elapsed, l.lat, nil
}
