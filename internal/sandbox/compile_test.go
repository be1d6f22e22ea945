package sandbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// TestFuncCost checks the compile work model on the shapes it is meant to
// catch: chains and nesting cost in the square of their length, while
// straight-line code, dead code and Go's dispatch cost at most in
// proportion to their size (the model counts only wazero's super-linear
// work).
func TestFuncCost(t *testing.T) {
	brIf := []byte{byte(instrument.OpI32Const), 0, byte(instrument.OpBrIf), 0}
	deadIfs := func(n int) instrument.Body {
		b := genBody(n, if0...)
		b.Expr = append([]byte{byte(instrument.OpReturn)}, b.Expr...)
		return b
	}
	tests := []struct {
		name      string
		body      func(n int) instrument.Body
		quadratic bool // else linear
	}{
		{"straight-line code", func(n int) instrument.Body { return genBody(n, drop1...) }, false},
		{"Go-like dispatch", genGoLike, false},
		{"dead code after return", deadIfs, false},
		{"nested blocks", func(n int) instrument.Body { return genNested(instrument.OpBlock, n) }, true},
		{"nested loops", func(n int) instrument.Body { return genNested(instrument.OpLoop, n) }, true},
		{"nested ifs", func(n int) instrument.Body { return genNested(instrument.OpIf, n) }, true},
		{"if chain", func(n int) instrument.Body { return genBody(n, if0...) }, true},
		{"br_if chain", func(n int) instrument.Body { return genBody(n, brIf...) }, true},
		{"call chain", func(n int) instrument.Body { return genBody(n, call0...) }, true},
		{"br_table entries to one label", brTable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cost := func(n int) float64 {
				b := tt.body(n)
				_, w, err := funcCost(b.Expr, b.NumLocals())
				if err != nil {
					t.Fatalf("funcCost(%d): %v", n, err)
				}
				return w
			}
			w1, w2 := cost(1000), cost(2000)
			ratio := w2 / w1
			lo, hi := 0.0, 2.2
			if tt.quadratic {
				lo, hi = 3.6, 4.4
			}
			if ratio < lo || ratio > hi {
				t.Errorf("got work %.3g for 1000 and %.3g for 2000 (×%.2f), want ×%.1f to ×%.1f", w1, w2, ratio, lo, hi)
			}
		})
	}

	t.Run("locals multiply chains", func(t *testing.T) {
		b := genLiveLocals(100)
		_, with, _ := funcCost(b.Expr, 100)
		_, without, _ := funcCost(b.Expr, 0)
		if with < 6*without {
			t.Errorf("got work %.3g with 100 locals and %.3g without, want at least 6 times more", with, without)
		}
	})
	t.Run("depth", func(t *testing.T) {
		for _, tt := range []struct {
			body instrument.Body
			want int
		}{
			{genBody(10, drop1...), 0},
			{genNested(instrument.OpIf, 7), 7},
			{genGoLike(100), 101},
		} {
			if got, _, _ := funcCost(tt.body.Expr, 0); got != tt.want {
				t.Errorf("got depth %d, want %d", got, tt.want)
			}
		}
	})
}

// TestCompileLimits: modules over a compile bound are refused by Compile
// with ErrInvalidModule and ErrCompileLimit before anything compiles them.
// Compiling the nested blocks of the finding (40,000 levels, 120 KB) took
// wazero 10 s.
func TestCompileLimits(t *testing.T) {
	tests := []struct {
		name string
		wasm []byte
	}{
		{"the finding: 40,000 nested blocks", genModule(genNested(instrument.OpBlock, 40_000))},
		{"blocks nested one past the limit", genModule(genNested(instrument.OpBlock, MaxNestingDepth+1))},
		{"locals over the module limit", genModule(manyLocals(MaxModuleLocals/maxFunctionLocals + 1)...)},
		{"call chain over the work budget", genModule(genBody(7_000, call0...))},
		{"locals live across an if chain", genModule(genLiveLocals(1_000))},
	}
	e := newEngine(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			m, err := e.Compile(context.Background(), tt.name, tt.wasm, Limits{})
			if m != nil {
				t.Errorf("got module %v, want nil", m)
			}
			checkErr(t, err, []error{ErrInvalidModule, ErrCompileLimit}, []error{ErrTimeout})
			t.Logf("refused in %s: %v", time.Since(start), err)
		})
	}
	if got := e.Stats().Compiles; got != 0 {
		t.Errorf("got %d compiles, want 0: the bounds are checked before compiling", got)
	}
	checkEcho(t, e)
}

// TestCompileBoundsRealModules: real programs are well within the bounds.
// Their compile work is checked against a quarter of their budget, so
// that a change to the model or the budgets that takes the margin away
// shows here first.
func TestCompileBoundsRealModules(t *testing.T) {
	for _, path := range []string{
		"../../examples/hello-go/hello-go.wasm",
		"../../examples/reactor-go/reactor-go.wasm",
		"../../examples/reactor-kv-go/reactor-kv-go.wasm",
		"../../examples/reactor-c/reactor-c.wasm",
		"../../examples/reactor-counter-c/reactor-counter-c.wasm",
		"../../examples/reactor-hello-c/reactor-hello-c.wasm",
		"../../examples/sha256-c/sha256-c.wasm",
		"../jsrt/engine/quickjs.wasm",
	} {
		t.Run(path, func(t *testing.T) {
			wasm, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, shape, err := prepareModule(wasm)
			if err != nil {
				t.Fatalf("prepareModule: %v", err)
			}
			m, err := instrument.Decode(context.Background(), wasm)
			if err != nil {
				t.Fatal(err)
			}
			var code int
			for i := range m.Code {
				code += len(m.Code[i].Expr)
			}
			var c compileCost
			c.startCode(code)
			if shape.compileWork > c.budget/4 {
				t.Errorf("got compile work %.3g, want at most a quarter of its budget %.3g", shape.compileWork, c.budget)
			}
			if shape.maxDepth > MaxNestingDepth/8 {
				t.Errorf("got nesting depth %d, want at most an eighth of the limit %d", shape.maxDepth, MaxNestingDepth)
			}
			t.Logf("%d bytes of code: work %.3g (%.1f a byte), budget %.3g, depth %d", code, shape.compileWork, shape.compileWork/float64(code), c.budget, shape.maxDepth)
		})
	}
}

// slowModule returns the most expensive module of calls the compile bounds
// let through: about a second of wazero's compiler, more under the race
// detector.
func slowModule(t *testing.T) []byte {
	t.Helper()
	_, wasm := largestAccepted(func(n int) []byte { return genModule(genBody(n, call0...)) }, 64)
	return wasm
}

// waitFor polls cond until it holds, or fails the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cached reports whether e's cache holds an entry for codeHash.
func cached(e *Engine, codeHash string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.modules[cacheKey{codeHash: codeHash, pages: DefaultMemoryPages}]
	return ok
}

// TestCompileCancelledInFlight: wazero's CompileModule does not stop when
// its context ends, so a caller that gives up must not wait for it.
// Compile returns as soon as ctx ends, while wazero is still compiling;
// the abandoned result is not cached, and the next caller compiles again.
func TestCompileCancelledInFlight(t *testing.T) {
	e, err := New(context.Background(), Config{MaxCompiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	wasm := slowModule(t)

	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		m   *Module
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := e.Compile(ctx, "slow", wasm, Limits{})
		done <- result{m, err}
	}()
	waitFor(t, "the compile to start", func() bool { return len(e.compileSlots) == 1 })
	cancelled := time.Now()
	cancel()
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Compile still waiting 5 s after its context was cancelled")
	}
	returned := time.Since(cancelled)
	if len(e.compileSlots) != 1 {
		t.Skip("the compile finished before Compile returned; the machine is too fast for this module")
	}
	if res.m != nil {
		t.Errorf("got module %v, want nil", res.m)
	}
	checkErr(t, res.err, []error{context.Canceled}, []error{ErrInvalidModule, ErrTimeout})
	t.Logf("returned %s after the cancel: %v", returned, res.err)
	if cached(e, "slow") {
		t.Error("got the abandoned compile in the cache, want it gone")
	}

	waitFor(t, "the abandoned compile to end", func() bool { return len(e.compileSlots) == 0 })
	if cached(e, "slow") {
		t.Error("got the abandoned compile's result cached, want it discarded")
	}
	compiles := e.Stats().Compiles
	if _, err := e.Compile(context.Background(), "slow", wasm, Limits{}); err != nil {
		t.Fatalf("compiling again: %v", err)
	}
	if got, want := e.Stats().Compiles, compiles+1; got != want {
		t.Errorf("got %d compiles, want %d: the abandoned result must not be reused", got, want)
	}
}

// TestCompileDeadlineWhileQueued: a compile waiting for a slot ends with
// its caller's deadline (ErrTimeout), leaves nothing in the cache, and
// never runs.
func TestCompileDeadlineWhileQueued(t *testing.T) {
	e, err := New(context.Background(), Config{MaxCompiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	e.compileSlots <- struct{}{} // the only slot is taken

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = e.Compile(ctx, "echo", fixture(t, "echo"), Limits{})
	checkErr(t, err, []error{ErrTimeout, context.DeadlineExceeded}, []error{ErrInvalidModule})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("got Compile returning after %s, want it at the 50 ms deadline", d)
	}
	waitFor(t, "the abandoned compile to leave the cache", func() bool { return !cached(e, "echo") })

	<-e.compileSlots
	checkEcho(t, e)
	if got := e.Stats().Compiles; got != 1 {
		t.Errorf("got %d compiles, want 1 (the echo check's)", got)
	}
}

// TestCompileAbandonedDoNotPileUp: compiles abandoned while they wait for
// a slot end at once. Only the compiles holding a slot outlive their
// callers.
func TestCompileAbandonedDoNotPileUp(t *testing.T) {
	e, err := New(context.Background(), Config{MaxCompiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	echo := fixture(t, "echo")
	before := runtime.NumGoroutine()
	e.compileSlots <- struct{}{} // a compile that never ends

	const callers = 50
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := e.Compile(ctx, fmt.Sprint("key ", i), echo, Limits{})
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("got error %v, want one matching %v", err, ErrTimeout)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "the abandoned compiles' goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	e.mu.Lock()
	left := len(e.modules)
	e.mu.Unlock()
	if left != 0 {
		t.Errorf("got %d entries in the cache, want 0", left)
	}
	<-e.compileSlots
	if got := e.Stats().Compiles; got != 0 {
		t.Errorf("got %d compiles, want 0", got)
	}
}

// TestCompileCancelSomeWaiters: callers of one key that give up do not
// disturb the others, who get the compiled module.
func TestCompileCancelSomeWaiters(t *testing.T) {
	e := newEngine(t)
	echo := fixture(t, "echo")
	for round := range 20 {
		key := fmt.Sprint("round ", round)
		const callers = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		var got []*Module
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				if i%2 == 1 {
					time.AfterFunc(time.Duration(rand.IntN(2000))*time.Microsecond, cancel)
				}
				defer cancel()
				m, err := e.Compile(ctx, key, echo, Limits{})
				switch {
				case err == nil:
					mu.Lock()
					got = append(got, m)
					mu.Unlock()
				case i%2 == 0 || !errors.Is(err, context.Canceled):
					t.Errorf("caller %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if len(got) < callers/2 {
			t.Errorf("round %d: got %d modules, want at least %d", round, len(got), callers/2)
		}
		for _, m := range got {
			if m != got[0] {
				t.Errorf("round %d: callers got different modules", round)
				break
			}
		}
	}
}
