package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The worker queues every signed receipt for the coordinator's ledger and
// appends it in the background (internal/worker/ledger.go); a full queue
// blocks invocations. A benchmark that leaves a backlog behind would make
// the next one pay for it, so each sub-benchmark first waits for the queue
// to drain (untimed), and TestMain does before closing a node.

// ledgerCounts are the worker's receipt counters from /metrics.
type ledgerCounts struct {
	receipts float64 // invocations other than session opens: each made a receipt
	logged   float64 // receipts the ledger acknowledged or gave up on
}

func (c ledgerCounts) backlog() float64 { return c.receipts - c.logged }

// getMetrics asks the gateway at url for its /metrics, with token, which
// must be a platform key (the node's own, from client.env).
func getMetrics(ctx context.Context, hc *http.Client, url, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return hc.Do(req)
}

// readLedgerCounts reads the counters from the gateway's /metrics.
func readLedgerCounts(ctx context.Context, hc *http.Client, url, token string) (ledgerCounts, error) {
	resp, err := getMetrics(ctx, hc, url, token)
	if err != nil {
		return ledgerCounts{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ledgerCounts{}, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	return parseLedgerCounts(resp.Body)
}

func parseLedgerCounts(r io.Reader) (ledgerCounts, error) {
	var c ledgerCounts
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		name, rest, _ := strings.Cut(line, " ")
		var dst *float64
		switch {
		case strings.HasPrefix(name, "cloister_worker_invocations_total{"):
			if strings.Contains(name, `mode="session-open"`) {
				continue
			}
			dst = &c.receipts
		case name == "cloister_worker_ledger_appends_total", name == "cloister_worker_ledger_append_failures_total":
			dst = &c.logged
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return c, fmt.Errorf("malformed metric line %q", line)
		}
		*dst += v
	}
	return c, sc.Err()
}

// waitLedger waits until every receipt the worker made has been logged,
// or until none was logged for stall (no ledger, or a receipt that will
// never count), or until max. It returns the backlog it found first.
func waitLedger(ctx context.Context, hc *http.Client, url, token string, stall, max time.Duration) (float64, error) {
	c, err := readLedgerCounts(ctx, hc, url, token)
	if err != nil {
		return 0, err
	}
	first := c.backlog()
	deadline := time.Now().Add(max)
	last, lastChange := c.logged, time.Now()
	for c.backlog() > 0 && time.Since(lastChange) < stall && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return first, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if c, err = readLedgerCounts(ctx, hc, url, token); err != nil {
			return first, err
		}
		if c.logged != last {
			last, lastChange = c.logged, time.Now()
		}
	}
	return first, nil
}

// drainLedger is waitLedger with the benchmarks' bounds: a backlog of a
// few thousand receipts takes tens of seconds at the ledger's append rate.
func drainLedger(tb testing.TB, hc *http.Client, url, token string) {
	tb.Helper()
	if _, err := waitLedger(tb.Context(), hc, url, token, 2*time.Second, 3*time.Minute); err != nil {
		tb.Fatalf("waiting for the ledger: %v", err)
	}
}

func TestParseLedgerCounts(t *testing.T) {
	text := `# HELP cloister_worker_invocations_total Invocations run by this worker, by mode and status.
cloister_worker_invocations_total{mode="hpke",status="ok"} 10
cloister_worker_invocations_total{mode="session",status="ok"} 5
cloister_worker_invocations_total{mode="session-open",status="ok"} 2
cloister_worker_ledger_appends_total 12
cloister_worker_ledger_append_failures_total 1
cloister_worker_compiles_total 3
`
	c, err := parseLedgerCounts(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if c.receipts != 15 || c.logged != 13 || c.backlog() != 2 {
		t.Errorf("got %+v, want 15 receipts, 13 logged", c)
	}
}
