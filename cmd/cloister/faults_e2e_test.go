package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// faultLoad is the steady mix TestClusterFaults keeps running: sealed
// synchronous reads, sealed state increments and asynchronous writes with
// idempotency keys, all through both gateways.
type faultLoad struct {
	c *client.Client

	mu sync.Mutex
	// calls are the synchronous calls' outcomes, in the order they ended.
	calls []callOutcome
	// acked counts the increments answered with success; uncertain those
	// that failed in a way that leaves open whether they committed, cutOff
	// among them those the end of the load interrupted.
	acked, uncertain, cutOff int
	// jobs are the acknowledged async submissions, by idempotency key.
	jobs map[string]*client.Pending
	// receipts are the receipts of the successful synchronous calls.
	receipts []*client.SignedReceipt
}

type callOutcome struct {
	end time.Time
	ok  bool
	err string
}

func (l *faultLoad) record(err error, r *client.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recordLocked(err, r)
}

// recordLocked is record with l.mu held.
func (l *faultLoad) recordLocked(err error, r *client.Result) {
	o := callOutcome{end: time.Now(), ok: err == nil}
	if err != nil {
		o.err = err.Error()
	} else if r.SignedReceipt != nil {
		l.receipts = append(l.receipts, r.SignedReceipt)
	}
	l.calls = append(l.calls, o)
}

// nothingRan reports whether a failed call certainly did not run.
func nothingRan(err error) bool {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch apierr.Code(ce.Code) {
	case apierr.NoWorker, apierr.Overloaded, apierr.NotFound, apierr.BadRequest:
		return true
	}
	return false
}

// run keeps the load going until ctx ends.
func (l *faultLoad) run(ctx context.Context, wg *sync.WaitGroup) {
	call := func(op string) (*client.Result, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return l.c.Invoke(cctx, "kv", []byte(op), client.InvokeOptions{})
	}
	loop := func(pause time.Duration, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				f(i)
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		}()
	}
	// Sealed reads: they measure how long calls fail after each kill.
	loop(20*time.Millisecond, func(int) {
		r, err := call(`{"op":"get","key":"probe"}`)
		if ctx.Err() == nil {
			l.record(err, r)
		}
	})
	// Sealed increments: none acknowledged may be lost.
	loop(40*time.Millisecond, func(int) {
		r, err := call(`{"op":"add","key":"counter"}`)
		l.mu.Lock()
		defer l.mu.Unlock()
		if ctx.Err() != nil && err != nil {
			// Cut off by the end of the load: the client gave up, but
			// the worker may have applied it all the same.
			l.uncertain++
			l.cutOff++
			return
		}
		l.recordLocked(err, r)
		switch {
		case err == nil:
			l.acked++
		case !nothingRan(err):
			l.uncertain++
		}
	})
	// Async writes with idempotency keys: submitted until acknowledged,
	// each must complete exactly once.
	loop(100*time.Millisecond, func(i int) {
		key := fmt.Sprintf("job-%d", i)
		in := fmt.Sprintf(`{"op":"put","key":%q,"value":"done"}`, key)
		for ctx.Err() == nil {
			sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			p, err := l.c.InvokeAsync(sctx, "kv", []byte(in), client.AsyncOptions{IdempotencyKey: key})
			cancel()
			if err == nil {
				l.mu.Lock()
				l.jobs[key] = p
				l.mu.Unlock()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// recovered reports whether a call that ended after at succeeded.
func (l *faultLoad) recovered(at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.calls {
		if o.ok && o.end.After(at) {
			return true
		}
	}
	return false
}

// window reports on the calls that ended between from and to: how long
// after from the calls recovered (the end of the last failed call, or of
// the first call if none failed), how many failed and how many ended, the
// most frequent error and the last one.
func (l *faultLoad) window(from, to time.Time) (rec time.Duration, failed, total int, top, last string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := map[string]int{}
	for _, o := range l.calls {
		if o.end.Before(from) || o.end.After(to) {
			continue
		}
		total++
		if total == 1 {
			rec = o.end.Sub(from)
		}
		if !o.ok {
			failed++
			errs[o.err]++
			rec, last = o.end.Sub(from), o.err
		}
	}
	n := 0
	for e, k := range errs {
		if k > n {
			top, n = e, k
		}
	}
	return rec, failed, total, top, last
}

// TestClusterFaults: a cluster of 3 NATS nodes, 2 coordinators, 2 gateways
// and 2 workers, each a real process, under a steady mix of sealed calls,
// sealed state increments and async jobs with idempotency keys. One at a
// time, a worker, a gateway, a NATS node and the active coordinator are
// killed with SIGKILL, synchronous calls must recover within 10 s, and
// each is started again from its argv and rejoins. Then: no acknowledged
// async job is lost or run twice, no acknowledged increment is lost, every
// receipt a client got is in the ledger, the audit is clean, and the
// checkpoints before and after the coordinator failover are consistent.
func TestClusterFaults(t *testing.T) {
	if os.Getenv("CLOISTER_FAULTS") != "1" {
		// It asserts recovery times, so it runs alone, not beside the
		// other packages' tests.
		t.Skip("runs a cluster of real processes for minutes and times its recovery: set CLOISTER_FAULTS=1 (.ci/run runs it on its own)")
	}
	c := startCluster(t, 6*time.Minute, "--nats", "3", "--coordinators", "2", "--gateways", "2", "--workers", "2")
	cli := c.cli()
	cli.mustCLI("keys", "new")
	m := writeManifest(t, c.dir, "kv", `{"abi": "reactor", "capabilities": {"state": true}}`)
	cli.mustCLI("fn", "deploy", "kv", repo("examples", "reactor-kv-go", "reactor-kv-go.wasm"), "--manifest", m)
	cli.mustCLI("ledger", "verify") // trust on first use; later runs check consistency

	l := &faultLoad{c: c.client(), jobs: map[string]*client.Pending{}}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	l.run(ctx, &wg)
	c.waitFor("the load to succeed", func() bool { return l.recovered(time.Now().Add(-time.Second)) })

	status := func() *client.ClusterStatus {
		r := cli.cli("cluster", "status", "--json")
		var st client.ClusterStatus
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
			return nil
		}
		return &st
	}
	activeCoordinator := func() string {
		var name string
		c.waitFor("an active coordinator", func() bool {
			st := status()
			if st == nil || st.Coordinator == nil {
				return false
			}
			for _, n := range []string{"coordinator-1", "coordinator-2"} {
				id, _ := os.ReadFile(filepath.Join(c.proc(n).Data, "coordinator", "node-id"))
				if strings.TrimSpace(string(id)) == st.Coordinator.Node {
					name = n
					return true
				}
			}
			return false
		})
		return name
	}
	rejoined := map[string]func(*client.ClusterStatus) bool{
		"worker": func(st *client.ClusterStatus) bool {
			return len(st.Workers) == 2 && st.Coordinator != nil && st.Coordinator.Alive == 2
		},
		"gateway":     func(st *client.ClusterStatus) bool { return len(st.Gateways) == 2 },
		"coordinator": func(st *client.ClusterStatus) bool { return st.Coordinator != nil && len(st.Coordinator.Standbys) == 1 },
		"nats": func(st *client.ClusterStatus) bool {
			current := 0
			for _, n := range st.NATS.Replicas {
				if n.Current && n.ActiveMS < 5000 {
					current++
				}
			}
			return current == 3
		},
	}

	type report struct {
		kill      string
		recovered time.Duration
		failed    int
		total     int
	}
	var reports []report
	killed := map[string]time.Time{}
	for _, name := range []string{"worker-1", "gateway-1", "nats-2", ""} {
		if name == "" {
			name = activeCoordinator()
		}
		role := c.proc(name).Role
		at := c.kill(name)
		t.Logf("%s killed at %s", name, at.Format("15:04:05.000"))
		killed[name] = at
		c.waitFor("calls to succeed after killing "+name, func() bool { return l.recovered(at) })
		// Let the load run on the survivors for a while, then look back:
		// calls have recovered once none fails any more.
		time.Sleep(5 * time.Second)
		rec, failed, total, top, last := l.window(at, time.Now())
		reports = append(reports, report{name, rec, failed, total})
		t.Logf("killed %s: calls recovered after %v; %d of %d calls failed (mostly: %s; the last: %s)", name, rec.Round(time.Millisecond), failed, total, top, last)
		if rec > 10*time.Second {
			c.errorf("killing %s: calls recovered only after %v (want within 10 s)", name, rec)
		}
		c.restart(name)
		c.waitFor(name+" to rejoin", func() bool { st := status(); return st != nil && rejoined[role](st) })
		if role == "gateway" {
			c.waitFor("the restarted gateway to be ready", ready("http://"+c.proc(name).Addr))
		}
	}
	time.Sleep(2 * time.Second)
	stopLoad()
	wg.Wait()

	// Every acknowledged async job completed, once.
	l.mu.Lock()
	jobs, acked, uncertain, cutOff, receipts := l.jobs, l.acked, l.uncertain, l.cutOff, l.receipts
	l.mu.Unlock()
	// Every acknowledged async job completed (within a minute of the
	// load stopping: retries and redeliveries included), once.
	vctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lost := 0
	pending := maps.Clone(jobs)
	// A job on the killed worker comes back after the queue's ack wait
	// (30 s); retries wait 2 s, then 15 s.
	for until := time.Now().Add(2 * time.Minute); len(pending) > 0 && time.Now().Before(until); time.Sleep(500 * time.Millisecond) {
		for key, p := range pending {
			rctx, stop := context.WithTimeout(vctx, 10*time.Second)
			_, err := l.c.ActivationResult(rctx, p)
			stop()
			var ce *client.Error
			switch {
			case errors.As(err, &ce) && ce.Code == string(apierr.ActivationPending):
				continue
			case err != nil && (errors.As(err, &ce) || errors.Is(err, client.ErrVerification)):
				// Finished, and failed: lost as far as its caller knows.
				a, _ := l.c.Activation(vctx, p.ActivationID)
				if a != nil {
					c.errorf("job %s (activation %s): %v; %d attempts: %q", key, p.ActivationID, err, a.Attempts, a.Logs)
				} else {
					c.errorf("job %s (activation %s): %v", key, p.ActivationID, err)
				}
				lost++
			case err != nil:
				continue // the gateway did not answer: ask again
			}
			delete(pending, key)
		}
	}
	for key, p := range pending {
		a, _ := l.c.Activation(vctx, p.ActivationID)
		if a != nil {
			c.errorf("job %s (activation %s) did not complete within 2 minutes: %s after %d attempts: %q; the roles logged: %q", key, p.ActivationID, a.Status, a.Attempts, a.Logs, c.grep(p.ActivationID, 20))
		} else {
			c.errorf("job %s (activation %s) did not complete within 2 minutes", key, p.ActivationID)
		}
		lost++
	}
	// And its effect is there.
	for key := range jobs {
		r, err := l.c.Invoke(vctx, "kv", fmt.Appendf(nil, `{"op":"get","key":%q}`, key), client.InvokeOptions{})
		if err != nil || !strings.Contains(string(r.Output), `"found":true`) {
			c.errorf("job %s: its write is not there (%v)", key, err)
			lost++
		}
	}

	// No acknowledged increment lost.
	r, err := l.c.Invoke(vctx, "kv", []byte(`{"op":"add","key":"counter","delta":0}`), client.InvokeOptions{})
	if err != nil {
		c.fatalf("%v", err)
	}
	var v struct{ Value int }
	if err := json.Unmarshal(r.Output, &v); err != nil {
		c.fatalf("counter: %s: %v", r.Output, err)
	}
	if v.Value < acked || v.Value > acked+uncertain {
		c.errorf("counter is %d after %d acknowledged increments (%d more of unknown outcome, %d of them cut off by the end of the load)", v.Value, acked, uncertain, cutOff)
	}

	// Every receipt a client got is in the ledger, unless the worker that
	// signed it was killed before it could send it (threat-model gap 18:
	// a worker sends receipts in the background). The log is read whole
	// (an audit, which also checks every entry against the checkpoint)
	// until it holds them all or 20 s have passed.
	rd, err := l.c.Ledger(vctx)
	if err != nil {
		c.fatalf("%v", err)
	}
	want := map[string]*client.SignedReceipt{}
	for _, s := range receipts {
		e, err := s.Entry()
		if err != nil {
			c.fatalf("%v", err)
		}
		want[receipt.EntryHash(e)] = s
	}
	var logMu sync.Mutex
	var logged map[string]bool
	var entries [][]byte
	for until := time.Now().Add(20 * time.Second); ; time.Sleep(2 * time.Second) {
		logged, entries = map[string]bool{}, nil
		_, err := rd.Audit(vctx, 0, func(_ uint64, entry []byte) error {
			logMu.Lock()
			defer logMu.Unlock()
			logged[receipt.EntryHash(entry)] = true
			entries = append(entries, entry)
			return nil
		}, nil)
		if err != nil {
			c.fatalf("ledger audit: %v", err)
		}
		missing := 0
		for h := range want {
			if !logged[h] {
				missing++
			}
		}
		if missing == 0 || time.Now().After(until) {
			break
		}
	}
	notLogged, excused := 0, 0
	for h, s := range want {
		if logged[h] {
			continue
		}
		var rc receipt.Receipt
		if json.Unmarshal(s.Receipt, &rc) == nil && rc.WorkerID == "dev-worker-1" && !rc.Time.After(killed["worker-1"]) && killed["worker-1"].Sub(rc.Time) < 5*time.Second {
			excused++
			continue
		}
		notLogged++
		if notLogged <= 5 {
			c.errorf("receipt %s (invocation %s, worker %s, signed %s) is not in the ledger", h[:12], rc.InvocationID, rc.WorkerID, rc.Time.Format("15:04:05.000"))
		}
	}

	// Async jobs ran once: one successful receipt per job in the log.
	runs := map[string]int{}
	jobOf := map[string]string{}
	for key, p := range jobs {
		jobOf[p.RequestHash] = key
	}
	for _, entry := range entries {
		var s receipt.Signed
		var rc receipt.Receipt
		if json.Unmarshal(entry, &s) != nil || json.Unmarshal(s.Receipt, &rc) != nil || rc.Status != "ok" {
			continue
		}
		if key, ok := jobOf[rc.RequestHash]; ok {
			runs[key]++
		}
	}
	twice := 0
	for key, n := range runs {
		if n > 1 {
			twice++
			c.errorf("job %s ran %d times", key, n)
		}
	}
	if out := cli.mustCLI("ledger", "audit", "--json"); !strings.Contains(out.stdout, `"ok": true`) {
		c.errorf("ledger audit: %s", out.stdout)
	}
	// The checkpoint trusted before the kills is consistent with today's.
	cli.mustCLI("ledger", "verify")

	t.Logf("async jobs: %d acknowledged, %d lost, %d ran twice; increments: %d acknowledged, %d of unknown outcome (%d cut off by the end of the load), counter %d; receipts: %d, %d not logged (%d excused: signed just before their worker was killed)",
		len(jobs), lost, twice, acked, uncertain, cutOff, v.Value, len(receipts), notLogged+excused, excused)
	t.Log("kill → calls recovered (no call failed after), and the calls that failed:")
	for _, r := range reports {
		rate := 0.0
		if r.total > 0 {
			rate = float64(r.failed) / float64(r.total)
		}
		t.Logf("  %-14s %8v  %3d of %3d failed (%.0f%%)", r.kill, r.recovered.Round(time.Millisecond), r.failed, r.total, 100*rate)
	}
}
