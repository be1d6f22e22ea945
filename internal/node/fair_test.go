package node_test

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/worker"
)

// metrics returns the node's /metrics page.
func (e *env) metrics() []byte {
	e.t.Helper()
	return scrape(e.t, e.n.URL, e.n.Token)
}

// metric reads one sample, named with its labels, from the node's /metrics.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(e.metrics())
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestLongCallsDoNotStarveOtherTenants: a hostile namespace fires three
// times the worker's slots of calls that sleep without using the CPU. It
// gets its share (half the slots) and a bounded queue, the rest is refused
// with overloaded, and the default namespace's trivial calls all finish
// while the hostile calls still hold their slots.
func TestLongCallsDoNotStarveOtherTenants(t *testing.T) {
	const slots = 8
	e := start(t, func(o *node.Options) {
		o.Slots = worker.SlotLimits{Slots: slots, QueueDepth: slots, QueueWait: 30 * time.Second}
	})
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	hostile := e.tenant("hostile")
	hostile.deploy("slow", fixture(t, "sleep.wasm"), func(m *bundle.Manifest) {
		m.Capabilities.Clock = true
		m.Limits.Concurrency = 256 // the default cap (coordinator.DefaultFunctionLimits)
	})

	// Unloaded: the slowest of a few trivial calls.
	var unloaded time.Duration
	for range 10 {
		t0 := time.Now()
		if _, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); err != nil {
			t.Fatal(err)
		}
		unloaded = max(unloaded, time.Since(t0))
	}

	type outcome struct {
		err error
		at  time.Time
	}
	results := make(chan outcome, 3*slots)
	var wg sync.WaitGroup
	for range 3 * slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := hostile.c.Invoke(ctx, "slow", nil, client.InvokeOptions{})
			if err == nil && string(res.Output) != "slept" {
				err = errors.New("unexpected output " + string(res.Output))
			}
			results <- outcome{err, time.Now()}
		}()
	}
	// Wait until the hostile calls hold their share of the slots (or a
	// second, for a worker that does not report it).
	for deadline := time.Now().Add(time.Second); e.metric("cloister_worker_slots_in_use") < slots/2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	var loaded time.Duration
	for range 5 {
		t0 := time.Now()
		if _, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); err != nil {
			t.Fatalf("the default namespace while hostile calls run: %v", err)
		}
		loaded = max(loaded, time.Since(t0))
	}
	otherDone := time.Now()
	if code, _ := e.send(http.MethodGet, "/readyz", "", "", nil); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	wg.Wait()
	close(results)

	// Every hostile call has an answer: it ran, or it was refused with
	// overloaded before it ran. The first ones to finish finished after the
	// default namespace's calls: those never waited behind them.
	ran, refused := 0, 0
	var firstSlept time.Time
	var ce *client.Error
	for r := range results {
		switch {
		case r.err == nil:
			ran++
			if firstSlept.IsZero() || r.at.Before(firstSlept) {
				firstSlept = r.at
			}
		case errors.As(r.err, &ce) && ce.Code == string(apierr.Overloaded):
			refused++
		default:
			t.Errorf("hostile call: %v", r.err)
		}
	}
	if ran < slots/2 || refused == 0 {
		t.Errorf("hostile calls: %d ran, %d refused; want at least %d run and some refused", ran, refused, slots/2)
	}
	if !otherDone.Before(firstSlept) {
		t.Errorf("the default namespace's calls finished at %s, after the first hostile call (%s): they waited behind it",
			otherDone.Format(time.StampMilli), firstSlept.Format(time.StampMilli))
	}
	t.Logf("default namespace, slowest call: %s unloaded (of 10), %s beside %d sleeping hostile calls (of 5) (%.1fx); hostile: %d ran, %d refused",
		unloaded, loaded, slots/2, float64(loaded)/float64(unloaded), ran, refused)
}

// TestMemoryBudgetBoundsGuests: a hostile namespace's calls of a function
// with a large memory limit reserve it from the worker's budget: at most
// its share runs at once, the rest wait or are refused with overloaded,
// a function over the share is refused outright, and the default
// namespace is still served.
func TestMemoryBudgetBoundsGuests(t *testing.T) {
	const mib = 1 << 20
	e := start(t, func(o *node.Options) {
		o.Slots = worker.SlotLimits{Slots: 16, MemoryBudget: 128 * mib, NamespaceMemory: 64 * mib, QueueWait: 30 * time.Second}
	})
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	h := e.tenant("hostile")
	big := func(pages uint32) func(*bundle.Manifest) {
		return func(m *bundle.Manifest) {
			m.Capabilities.Clock = true
			m.Limits.Concurrency, m.Limits.MemoryPages = 64, pages
		}
	}
	h.deploy("fat", fixture(t, "sleep.wasm"), big(512)) // 32 MiB: two fit in the share

	// 128 MiB, over the share: refused when the worker initialises it at
	// deploy, or when it is called.
	var ce *client.Error
	_, err := h.c.Deploy(ctx, "huge", h.build("huge", fixture(t, "sleep.wasm"), big(2048)))
	if err == nil {
		_, err = h.c.Invoke(ctx, "huge", nil, client.InvokeOptions{})
	}
	if !errors.As(err, &ce) || ce.Code != string(apierr.Overloaded) {
		t.Fatalf("a function over the namespace's memory share: got %v, want overloaded", err)
	}

	var wg sync.WaitGroup
	var peak float64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			peak = max(peak, e.metric("cloister_worker_memory_reserved_bytes"))
		}
	}()
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.c.Invoke(ctx, "fat", nil, client.InvokeOptions{})
			errs <- err
		}()
	}
	// The hostile calls alone for a while, then the default namespace's
	// beside them (which reserve memory of their own).
	time.Sleep(time.Second)
	close(stop)
	<-sampled
	for range 5 {
		if _, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); err != nil {
			t.Fatalf("the default namespace beside the hostile calls: %v", err)
		}
	}
	if code, _ := e.send(http.MethodGet, "/readyz", "", "", nil); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	wg.Wait()
	close(errs)
	ran := 0
	for err := range errs {
		switch {
		case err == nil:
			ran++
		case errors.As(err, &ce) && ce.Code == string(apierr.Overloaded):
		default:
			t.Errorf("hostile call: %v", err)
		}
	}
	if ran < 2 {
		t.Errorf("%d of 6 hostile calls ran, want at least the 2 that fit", ran)
	}
	if peak > 64*mib {
		t.Errorf("the hostile namespace reserved %.0f MiB at once, over its 64 MiB share", peak/mib)
	}
	t.Logf("hostile: %d of 6 ran; peak reservation %.0f MiB of a 64 MiB share", ran, peak/mib)
}
