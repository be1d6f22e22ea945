package sandbox

import (
	"context"
	"sync"
	"testing"
)

func spareCount(m *Module) int {
	m.spares.mu.Lock()
	defer m.spares.mu.Unlock()
	return len(m.spares.mems)
}

// TestRunReusesZeroedMemory checks that a command's next run takes the
// memory of the one before, and that it starts at its initial size with
// every byte zero, also where the run before grew it and wrote there.
func TestRunReusesZeroedMemory(t *testing.T) {
	e := newEngine(t)
	m := compileFixture(t, e, "grow_counter", Limits{})
	var first *cowMemory
	for i := range 5 {
		res, err := m.Run(context.Background(), Invocation{})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if got := res.Stdout; len(got) != 2 || got[0] != 1 || got[1] != 1 {
			t.Fatalf("run %d: got %v, want [1 1] (one page before the grow, the new page's word zero before it): state survived a run", i, got)
		}
		if n := spareCount(m); n != 1 {
			t.Fatalf("run %d: the module keeps %d spare memories, want 1", i, n)
		}
		if i == 0 {
			first = m.spares.mems[0]
		} else if m.spares.mems[0] != first {
			t.Fatalf("run %d: a new memory was mapped, want the first run's reused", i)
		}
	}
	// The counter fixture writes in its only page, which is reused without
	// a grow in between: it too starts clean.
	c := compileFixture(t, e, "counter", Limits{})
	for i := range 3 {
		res, err := c.Run(context.Background(), Invocation{})
		if err != nil || string(res.Stdout) != "1 1\n" {
			t.Fatalf("counter run %d: got %q, %v; want \"1 1\\n\"", i, res.Stdout, err)
		}
	}
}

// TestSpareMemoriesBounded checks that an engine keeps at most maxSpares
// memories, whatever the concurrency, and frees a module's when the module
// is released and the rest when the engine closes.
func TestSpareMemoriesBounded(t *testing.T) {
	e := newEngine(t)
	e.maxSpares = 3
	m := compileFixture(t, e, "counter", Limits{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				if _, err := m.Run(context.Background(), Invocation{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := spareCount(m); n < 1 || n > 3 {
		t.Errorf("after concurrent runs the module keeps %d spare memories, want 1 to 3", n)
	}
	if got, want := e.spares.Load(), int64(spareCount(m)); got != want {
		t.Errorf("the engine counts %d spare memories, the module holds %d", got, want)
	}
	m.Release()
	if n, c := spareCount(m), e.spares.Load(); n != 0 || c != 0 {
		t.Errorf("after Release: %d spare memories kept, %d counted; want none", n, c)
	}

	other := compileFixture(t, e, "echo", Limits{})
	if _, err := other.Run(context.Background(), Invocation{}); err != nil {
		t.Fatal(err)
	}
	if n := spareCount(other); n != 1 {
		t.Fatalf("got %d spare memories, want 1", n)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, c := spareCount(other), e.spares.Load(); n != 0 || c != 0 {
		t.Errorf("after Close: %d spare memories kept, %d counted; want none", n, c)
	}
}
