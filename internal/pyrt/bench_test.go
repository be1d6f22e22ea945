package pyrt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// The benchmarks' function, testdata/hello.py, with the same input and
// output as the JavaScript runtime's benchmark (examples/hello-js).
var (
	benchInput = []byte(`{"name":"Ada"}`)
	benchWant  = []byte(`{"greeting":"Hello, Ada!","calls":1}`)
)

func hello(tb testing.TB) []byte {
	tb.Helper()
	script, err := os.ReadFile(filepath.Join("testdata", "hello.py"))
	if err != nil {
		tb.Fatal(err)
	}
	return script
}

// callHello calls the hello function once on f and checks the answer.
func callHello(ctx context.Context, tb testing.TB, f *sandbox.Function, script []byte) {
	out, res, err := Call(ctx, f, script, benchInput)
	if err != nil {
		tb.Fatalf("%v (log %q)", err, res.Stderr)
	}
	if !bytes.Equal(out, benchWant) {
		tb.Fatalf("got %s, want %s", out, benchWant)
	}
}

// BenchmarkPython compares the two ways to give every call of
// testdata/hello.py a clean interpreter, in the sandbox (no network, no
// encryption, no receipt), with the engine already compiled:
//
//   - reset: one call on a pooled sandbox, which is then reset to the
//     snapshot taken after the interpreter's start-up (what a worker does);
//   - fresh: a new instance of the engine per call, which starts the
//     interpreter (_initialize, cloister_init), is snapshotted, serves the
//     call and is closed: a fresh interpreter per call;
//   - loaded: reset, from a snapshot taken after the script was loaded
//     (NewFunction, Invoke): a call runs main only, not the script's top
//     level.
//
// The ratio fresh/reset is what the snapshot saves per call.
func BenchmarkPython(b *testing.B) {
	ctx := context.Background()
	script := hello(b)
	m, err := Compile(ctx, testEngine, sandbox.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	spec := sandbox.FunctionSpec{Name: "hello", MaxSandboxes: 1, IdleTimeout: -1}
	b.Run("reset", func(b *testing.B) {
		f, err := m.NewFunction(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		callHello(ctx, b, f, script)
		for b.Loop() {
			callHello(ctx, b, f, script)
		}
		if s := f.Stats(); s.Discards != 0 {
			b.Fatalf("%d sandboxes discarded, want every call reset", s.Discards)
		}
	})
	b.Run("loaded", func(b *testing.B) {
		f, err := NewFunction(ctx, m, spec, script)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		invokeHello := func() {
			out, res, err := Invoke(ctx, f, benchInput)
			if err != nil {
				b.Fatalf("%v (log %q)", err, res.Stderr)
			}
			if !bytes.Equal(out, benchWant) {
				b.Fatalf("got %s, want %s", out, benchWant)
			}
		}
		invokeHello()
		for b.Loop() {
			invokeHello()
		}
		if s := f.Stats(); s.Discards != 0 {
			b.Fatalf("%d sandboxes discarded, want every call reset", s.Discards)
		}
	})
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			f, err := m.NewFunction(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			callHello(ctx, b, f, script)
			f.Close()
		}
	})
}

// BenchmarkPythonCompile is the worker's one-time cost per process and
// memory limit: compiling the engine. sandbox is what a worker does (the
// engine instrumented for metering, then compiled with wazero's
// compiler); compiler and interpreter compile the engine as it is, with
// wazero's two engines, for comparison.
func BenchmarkPythonCompile(b *testing.B) {
	ctx := context.Background()
	b.Run("sandbox", func(b *testing.B) {
		for b.Loop() {
			e, err := sandbox.New(ctx, sandbox.Config{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Compile(ctx, e, sandbox.Limits{}); err != nil {
				b.Fatal(err)
			}
			_ = e.Close(ctx)
		}
	})
	for name, cfg := range map[string]func() wazero.RuntimeConfig{
		"compiler":    wazero.NewRuntimeConfigCompiler,
		"interpreter": wazero.NewRuntimeConfigInterpreter,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				r := wazero.NewRuntimeWithConfig(ctx, cfg())
				if _, err := r.CompileModule(ctx, engine); err != nil {
					b.Fatal(err)
				}
				_ = r.Close(ctx)
			}
		})
	}
}
