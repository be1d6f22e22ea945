package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// acquireAsync starts an acquire and returns a channel with its outcome.
func acquireAsync(s *slots, ctx context.Context, ns string, mem int64) <-chan func() {
	ch := make(chan func(), 1)
	go func() {
		rel, err := s.acquire(ctx, ns, mem)
		if err != nil {
			rel = nil
		}
		ch <- rel
	}()
	return ch
}

// waitFor polls until cond holds (bounded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func mustAcquire(t *testing.T, s *slots, ns string, mem int64) func() {
	t.Helper()
	rel, err := s.acquire(context.Background(), ns, mem)
	if err != nil {
		t.Fatalf("acquire(%s): %v", ns, err)
	}
	return rel
}

// TestSlotsNamespaceShare: one namespace holds at most its share, and
// another namespace still gets a slot at once.
func TestSlotsNamespaceShare(t *testing.T) {
	s := newSlots(SlotLimits{Slots: 4, NamespaceSlots: 2}, nil)
	a1, a2 := mustAcquire(t, s, "a", 1), mustAcquire(t, s, "a", 1)
	third := acquireAsync(s, context.Background(), "a", 1)
	waitFor(t, "a's third call to queue", func() bool { return s.use().Waiting == 1 })
	b1 := mustAcquire(t, s, "b", 1) // not behind a's queue
	select {
	case <-third:
		t.Fatal("a got a third slot over its share of 2")
	default:
	}
	a1()
	if rel := <-third; rel == nil {
		t.Fatal("a's waiting call was refused after a slot was freed")
	} else {
		rel()
	}
	a2()
	b1()
	if u := s.use(); u.Used != 0 || u.Waiting != 0 || u.MemoryReserved != 0 || u.Namespaces != 0 {
		t.Fatalf("after every release: %+v", u)
	}
}

// TestSlotsRoundRobin: freed slots go to the waiting namespaces in turn,
// not to the one with the longest queue.
func TestSlotsRoundRobin(t *testing.T) {
	s := newSlots(SlotLimits{Slots: 2, NamespaceSlots: 2, QueueDepth: 16}, nil)
	held := []func(){mustAcquire(t, s, "a", 1), mustAcquire(t, s, "a", 1)}
	var order []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	enqueue := func(ns string) {
		ch := acquireAsync(s, context.Background(), ns, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel := <-ch
			mu.Lock()
			order = append(order, ns)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			rel()
		}()
	}
	for i := range 6 {
		enqueue("a")
		waitFor(t, "a to queue", func() bool { return s.use().Waiting == i+1 })
	}
	enqueue("b")
	waitFor(t, "b to queue", func() bool { return s.use().Waiting == 7 })
	held[0]()
	held[1]()
	wg.Wait()
	// a queued first and b second: b is served second, not seventh.
	pos := -1
	for i, ns := range order {
		if ns == "b" {
			pos = i
		}
	}
	if pos < 0 || pos > 2 {
		t.Fatalf("grant order %v: b served at %d, want within the first turn", order, pos)
	}
}

func TestSlotsRefusals(t *testing.T) {
	s := newSlots(SlotLimits{Slots: 1, QueueDepth: 1, QueueWait: 50 * time.Millisecond, MemoryBudget: 1 << 30}, nil)
	var ae *apierr.Error
	// More memory than a namespace may ever reserve: refused at once.
	if _, err := s.acquire(context.Background(), "a", 1<<30); !errors.As(err, &ae) || ae.Code != apierr.Overloaded {
		t.Fatalf("a call over the namespace memory share: got %v, want overloaded", err)
	}
	rel := mustAcquire(t, s, "a", 1)
	// One waiter fits in the queue; the second is refused at once.
	first := acquireAsync(s, context.Background(), "a", 1)
	waitFor(t, "a waiter", func() bool { return s.use().Waiting == 1 })
	if _, err := s.acquire(context.Background(), "a", 1); !errors.As(err, &ae) || ae.Code != apierr.Overloaded {
		t.Fatalf("past the queue depth: got %v, want overloaded", err)
	}
	// The waiter gives up after QueueWait.
	if r := <-first; r != nil {
		t.Fatal("a waiter was granted a slot that was never freed")
	}
	// An abandoned wait is unavailable, and leaves nothing behind.
	ctx, cancel := context.WithCancel(context.Background())
	abandoned := acquireAsync(s, ctx, "b", 1)
	waitFor(t, "b waiter", func() bool { return s.use().Waiting == 1 })
	cancel()
	if r := <-abandoned; r != nil {
		t.Fatal("an abandoned wait got a slot")
	}
	rel()
	rel() // a second call of release is a no-op
	u := s.use()
	if u.Used != 0 || u.Waiting != 0 || u.Namespaces != 0 || u.RefusedQueueFull != 1 || u.RefusedWait != 2 || u.RefusedMemory != 1 {
		t.Fatalf("after the refusals: %+v", u)
	}
}

// TestSlotsMemoryBudget: a call waits until the budget has room for its
// memory limit, even with slots free.
func TestSlotsMemoryBudget(t *testing.T) {
	s := newSlots(SlotLimits{Slots: 8, NamespaceSlots: 8, MemoryBudget: 100, NamespaceMemory: 100}, nil)
	big := mustAcquire(t, s, "a", 70)
	next := acquireAsync(s, context.Background(), "b", 40)
	waitFor(t, "b to wait for memory", func() bool { return s.use().Waiting == 1 })
	small := mustAcquire(t, s, "c", 30) // fits beside the 70
	big()
	rel := <-next
	if rel == nil {
		t.Fatal("b was refused after memory was freed")
	}
	if u := s.use(); u.MemoryReserved != 70 || u.Used != 2 {
		t.Fatalf("reserved %+v, want 70 bytes in 2 calls", u)
	}
	rel()
	small()
}

// TestSlotsConcurrent checks the invariants under contention: never more
// than the slots, the namespace share or the budget in use, and nothing
// left over once every call is done (run with -race).
func TestSlotsConcurrent(t *testing.T) {
	lim := SlotLimits{Slots: 4, NamespaceSlots: 2, MemoryBudget: 10, NamespaceMemory: 6, QueueDepth: 64, QueueWait: 5 * time.Second}
	s := newSlots(lim, nil)
	var running, peak atomic.Int64
	perNS := map[string]*atomic.Int64{"a": {}, "b": {}, "c": {}}
	var wg sync.WaitGroup
	var bad atomic.Value
	for i := range 120 {
		ns := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := s.acquire(context.Background(), ns, int64(1+i%3))
			if err != nil {
				bad.Store(err)
				return
			}
			if n := running.Add(1); n > int64(lim.Slots) {
				bad.Store(errors.New("over the slots"))
			} else if n > peak.Load() {
				peak.Store(n)
			}
			if perNS[ns].Add(1) > int64(lim.NamespaceSlots) {
				bad.Store(errors.New("over the namespace share"))
			}
			if u := s.use(); u.MemoryReserved > lim.MemoryBudget {
				bad.Store(errors.New("over the memory budget"))
			}
			time.Sleep(time.Millisecond)
			perNS[ns].Add(-1)
			running.Add(-1)
			rel()
		}()
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		t.Fatal(err)
	}
	if u := s.use(); u.Used != 0 || u.Waiting != 0 || u.MemoryReserved != 0 || u.Namespaces != 0 || u.Granted != 120 {
		t.Fatalf("after the run: %+v", u)
	}
}

func TestSlotsSaturated(t *testing.T) {
	s := newSlots(SlotLimits{Slots: 3, NamespaceSlots: 2}, nil)
	if s.saturated("a") {
		t.Fatal("an idle worker is saturated")
	}
	a1, a2 := mustAcquire(t, s, "a", 1), mustAcquire(t, s, "a", 1)
	if !s.saturated("a") || s.saturated("b") {
		t.Fatal("a at its share should be saturated, b not")
	}
	b1 := mustAcquire(t, s, "b", 1)
	if !s.saturated("b") || !s.saturated("c") {
		t.Fatal("a full worker is saturated for everyone")
	}
	a1()
	a2()
	b1()
	if s.saturated("a") {
		t.Fatal("saturated after every release")
	}
}
