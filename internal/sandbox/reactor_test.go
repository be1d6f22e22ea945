package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func newReactor(t testing.TB, file string, lim Limits, spec FunctionSpec) (*Engine, *Function) {
	t.Helper()
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(ctx) })
	wasm, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, file, wasm, lim)
	if err != nil {
		t.Fatal(err)
	}
	if m.ABI() != ABIReactor {
		t.Fatalf("%s: ABI %q, want reactor", file, m.ABI())
	}
	f, err := m.NewFunction(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return e, f
}

func call(t *testing.T, f *Function, in string) (string, Result, error) {
	t.Helper()
	res, err := f.Call(context.Background(), []byte(in))
	return string(res.Stdout), res, err
}

// TestReactorFreshness: whatever a call changes (globals, memory, memory
// size, a secret), the next call sees the snapshot exactly, also after a
// trap or a timeout.
func TestReactorFreshness(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{Timeout: 300 * time.Millisecond}, FunctionSpec{MaxSandboxes: 1})
	steps := []struct {
		in, want string
		err      error
	}{
		{"c", "11", nil},
		{"c", "11", nil},
		{"i", "7", nil}, // the state cloister_init left is in the snapshot
		{"sTOPSECRET", "ok", nil},
		{"r", "\x00\x00\x00\x00\x00\x00\x00\x00", nil},
		{"g", "3", nil},
		{"g", "3", nil}, // grown memory is discarded, not served
		{"c", "11", nil},
		{"t", "", ErrTrap},
		{"c", "11", nil}, // the trap's global increment did not survive
		{"l", "", ErrTimeout},
		{"c", "11", nil},
		{"x", "", ErrExit},
		{"c", "11", nil},
		{"f", "0", nil}, // closing stdout taints the sandbox: it is discarded
		{"c", "11", nil},
	}
	for i, s := range steps {
		got, _, err := call(t, f, s.in)
		if s.err != nil {
			if !errors.Is(err, s.err) {
				t.Errorf("step %d (%q): got %v, want %v", i, s.in, err, s.err)
			}
			continue
		}
		if err != nil || got != s.want {
			t.Errorf("step %d (%q): got %q, %v; want %q", i, s.in, got, err, s.want)
		}
	}
	st := f.Stats()
	if st.Resets == 0 || st.Discards < 5 || st.Live > 1 {
		t.Errorf("pool stats %+v: want resets, five discards (grow twice, trap, timeout, fd_close) and at most one sandbox", st)
	}
}

// TestReactorReuse: a sandbox is reused after a reset, with a growing
// generation, and every call reports the same snapshot hash.
func TestReactorReuse(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{}, FunctionSpec{MaxSandboxes: 1, Prewarm: 1})
	hash := f.Snapshot().Hash()
	for i := range 5 {
		_, res, err := call(t, f, "c")
		if err != nil {
			t.Fatal(err)
		}
		// The pre-warmed sandbox serves every call; its generation counts
		// the resets before the call.
		if !res.Reused || res.Generation != uint64(i) || res.SnapshotHash != hash {
			t.Errorf("call %d: reused %v generation %d hash %s; want reused, generation %d, %s", i, res.Reused, res.Generation, res.SnapshotHash, i, hash)
		}
	}
	if st := f.Stats(); st.Hits != 5 || st.Misses != 0 || st.Resets != 5 {
		t.Errorf("stats %+v, want 5 hits, 0 misses, 5 resets", st)
	}
}

// TestReactorSnapshotDeterministic: two engines compute the same snapshot
// hash for the same module and spec, so a coordinator can certify it.
func TestReactorSnapshotDeterministic(t *testing.T) {
	for _, file := range []string{"testdata/reactor.wasm", "../../examples/reactor-go/reactor-go.wasm", "../../examples/reactor-c/reactor-c.wasm"} {
		spec := FunctionSpec{Env: map[string]string{"CLOISTER_FUNCTION": "x"}}
		_, f1 := newReactor(t, file, Limits{}, spec)
		_, f2 := newReactor(t, file, Limits{}, spec)
		if f1.Snapshot().Hash() != f2.Snapshot().Hash() {
			t.Errorf("%s: snapshot hashes differ across engines", file)
		}
		spec.Env["CLOISTER_FUNCTION"] = "y"
		// Go's runtime copies the environment into memory during init, so
		// it is part of the snapshot (wasi-libc reads it lazily).
		if file == "../../examples/reactor-go/reactor-go.wasm" {
			_, f3 := newReactor(t, file, Limits{}, spec)
			if f3.Snapshot().Hash() == f1.Snapshot().Hash() {
				t.Errorf("%s: the environment is not part of the snapshot", file)
			}
		}
	}
}

// TestReactorConcurrent: parallel calls each get their own sandbox and see
// only their own input.
func TestReactorConcurrent(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{}, FunctionSpec{MaxSandboxes: 8})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				secret := fmt.Sprintf("%08d", w*1000+i)
				if out, err := f.Call(context.Background(), []byte("s"+secret)); err != nil || string(out.Stdout) != "ok" {
					errs <- fmt.Errorf("store: %q %v", out.Stdout, err)
					return
				}
				out, err := f.Call(context.Background(), []byte("r"))
				if err != nil || !bytes.Equal(out.Stdout, make([]byte, 8)) {
					errs <- fmt.Errorf("read after reset: got %q %v, want zeros", out.Stdout, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReactorPoolShrinksToZero: idle sandboxes are discarded after the idle time.
func TestReactorPoolShrinksToZero(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{}, FunctionSpec{MaxSandboxes: 4, Prewarm: 2, IdleTimeout: 50 * time.Millisecond})
	if st := f.Stats(); st.Live != 2 || st.Idle != 2 {
		t.Fatalf("after prewarm: %+v, want 2 idle", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Stats().Live != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pool did not shrink to zero: %+v", f.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, _, err := call(t, f, "c"); err != nil || out != "11" {
		t.Errorf("call after scale to zero: %q %v", out, err)
	}
}

// TestReactorBusy: a pool at its limit refuses more.
func TestReactorBusy(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{Timeout: time.Second}, FunctionSpec{MaxSandboxes: 1})
	done := make(chan struct{})
	go func() { call(t, f, "l"); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.Stats().Live-f.Stats().Idle == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, _, err := call(t, f, "c"); !errors.Is(err, ErrBusy) {
		t.Errorf("second call while the only sandbox is busy: got %v, want ErrBusy", err)
	}
	<-done
}

func TestReactorExamples(t *testing.T) {
	_, g := newReactor(t, "../../examples/reactor-go/reactor-go.wasm", Limits{}, FunctionSpec{MaxSandboxes: 1})
	for range 3 {
		out, res, err := call(t, g, `{"text":"hello brave new world"}`)
		if err != nil || !bytes.Contains([]byte(out), []byte(`"calls":1`)) || !bytes.Contains([]byte(out), []byte(`"words":4`)) {
			t.Errorf("reactor-go: got %q %v (generation %d)", out, err, res.Generation)
		}
	}
	_, c := newReactor(t, "../../examples/reactor-c/reactor-c.wasm", Limits{}, FunctionSpec{MaxSandboxes: 1})
	for range 3 {
		out, _, err := call(t, c, "123456789")
		if err != nil || !bytes.Contains([]byte(out), []byte("cbf43926")) {
			t.Errorf("reactor-c: got %q %v, want the CRC-32 of 123456789 (cbf43926)", out, err)
		}
	}
}

// TestReactorTableMutation: a reactor that writes its table cannot be reset
// exactly, so every call gets a one-shot sandbox in which init ran afresh.
func TestReactorTableMutation(t *testing.T) {
	_, f := newReactor(t, "testdata/reactor_table.wasm", Limits{}, FunctionSpec{MaxSandboxes: 1})
	for i := range 3 {
		if out, _, err := call(t, f, ""); err != nil || out != "a" {
			t.Errorf("call %d: got %q %v, want \"a\"", i, out, err)
		}
	}
	if st := f.Stats(); st.Resets != 0 || st.Discards != 3 {
		t.Errorf("stats %+v: want no resets and 3 discards", st)
	}
}

// TestReactorNoLeaks: making and discarding sandboxes and functions leaves
// no file descriptors or memory mappings behind.
func TestReactorNoLeaks(t *testing.T) {
	count := func(path string) int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Skipf("no %s: %v", path, err)
		}
		return bytes.Count(b, []byte("\n"))
	}
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	wasm, _ := os.ReadFile("testdata/reactor.wasm")
	m, err := e.Compile(ctx, "reactor", wasm, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	round := func() {
		f, err := m.NewFunction(ctx, FunctionSpec{MaxSandboxes: 4, IdleTimeout: -1, Prewarm: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []string{"c", "g", "t", "c"} {
			f.Call(ctx, []byte(in))
		}
		f.Close()
	}
	round() // warm up lazily opened files (/proc/self/pagemap)
	fd0, maps0 := fds(), count("/proc/self/maps")
	for range 20 {
		round()
	}
	if fd1 := fds(); fd1 > fd0 {
		t.Errorf("file descriptors: %d before, %d after", fd0, fd1)
	}
	if maps1 := count("/proc/self/maps"); maps1 > maps0+8 {
		t.Errorf("memory mappings: %d before, %d after 20 rounds", maps0, maps1)
	}
}

// TestMetering: every run reports an exact, deterministic instruction count,
// and a guest that exceeds its fuel is stopped with ErrFuelExhausted.
func TestMetering(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	loop, _ := os.ReadFile("testdata/infinite_loop.wasm")
	m, err := e.Compile(ctx, "loop", loop, Limits{Fuel: 1_000_000, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Run(ctx, Invocation{})
	if !errors.Is(err, ErrFuelExhausted) || !res.InstructionsMeasured || res.Instructions < 1_000_000 {
		t.Errorf("infinite loop with fuel 1e6: got %v after %d instructions, want ErrFuelExhausted after at least 1e6", err, res.Instructions)
	}
	echo, _ := os.ReadFile("testdata/echo.wasm")
	em, err := e.Compile(ctx, "echo", echo, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	r1, err1 := em.Run(ctx, Invocation{Stdin: []byte("same input")})
	r2, err2 := em.Run(ctx, Invocation{Stdin: []byte("same input")})
	if err1 != nil || err2 != nil || !r1.InstructionsMeasured || r1.Instructions == 0 || r1.Instructions != r2.Instructions {
		t.Errorf("echo counts %d and %d (%v %v): want equal and non-zero", r1.Instructions, r2.Instructions, err1, err2)
	}
	_, f := newReactor(t, "testdata/reactor.wasm", Limits{Fuel: 100_000}, FunctionSpec{MaxSandboxes: 1})
	_, a, _ := call(t, f, "c")
	_, b, _ := call(t, f, "c")
	if a.Instructions == 0 || a.Instructions != b.Instructions {
		t.Errorf("reactor counts %d and %d: want equal and non-zero", a.Instructions, b.Instructions)
	}
	if _, _, err := call(t, f, "l"); !errors.Is(err, ErrFuelExhausted) {
		t.Errorf("reactor loop with fuel 1e5: got %v, want ErrFuelExhausted", err)
	}
	if out, _, err := call(t, f, "c"); err != nil || out != "11" {
		t.Errorf("after fuel exhaustion: %q %v", out, err)
	}
}

// TestUnmeteredEngine: an engine with metering off (for same-run cost
// comparisons) runs the same reactor, resets it, and reports no instruction
// count rather than a zero one; the metered engine counts.
func TestUnmeteredEngine(t *testing.T) {
	ctx := context.Background()
	wasm, err := os.ReadFile("testdata/reactor.wasm")
	if err != nil {
		t.Fatal(err)
	}
	for _, unmetered := range []bool{false, true} {
		e, err := New(ctx, Config{Unmetered: unmetered})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close(ctx)
		m, err := e.Compile(ctx, "reactor", wasm, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := m.NewFunction(ctx, FunctionSpec{MaxSandboxes: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := range 2 {
			res, err := f.Call(ctx, []byte("c"))
			if err != nil {
				t.Fatalf("unmetered=%v call %d: %v", unmetered, i, err)
			}
			if res.InstructionsMeasured == unmetered || (res.Instructions == 0) != unmetered {
				t.Errorf("unmetered=%v: instructions %d measured %v", unmetered, res.Instructions, res.InstructionsMeasured)
			}
			if i == 1 && !res.Reused {
				t.Errorf("unmetered=%v: second call not served by the reset sandbox", unmetered)
			}
		}
	}
}
