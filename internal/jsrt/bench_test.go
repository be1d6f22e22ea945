package jsrt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// The same function twice: examples/hello-js and its C twin
// examples/reactor-hello-c, with the same input and the same output.
var (
	benchInput = []byte(`{"name":"Ada"}`)
	benchWant  = []byte(`{"greeting":"Hello, Ada!","calls":1}`)
)

// benchCase is one of the two implementations, behind one interface: make
// a function from a compiled module, and call it once, checking the answer.
type benchCase struct {
	name string
	code []byte // the module (C) or the engine (JS)
	hash string
	call func(ctx context.Context, f *sandbox.Function) error
}

// examples reads the JavaScript example's script and the C example's module.
func examples(tb testing.TB) (script, cwasm []byte) {
	tb.Helper()
	script, err := os.ReadFile(filepath.Join("..", "..", "examples", "hello-js", "main.js"))
	if err != nil {
		tb.Fatal(err)
	}
	cwasm, err = os.ReadFile(filepath.Join("..", "..", "examples", "reactor-hello-c", "reactor-hello-c.wasm"))
	if err != nil {
		tb.Fatal(err)
	}
	return script, cwasm
}

func benchCases(b *testing.B) []benchCase {
	script, cwasm := examples(b)
	check := func(out []byte) error {
		if !bytes.Equal(out, benchWant) {
			return &benchMismatch{out}
		}
		return nil
	}
	return []benchCase{
		{name: "js", code: Engine(), hash: EngineHash(), call: func(ctx context.Context, f *sandbox.Function) error {
			out, _, err := Call(ctx, f, script, benchInput)
			if err != nil {
				return err
			}
			return check(out)
		}},
		{name: "c", code: cwasm, hash: "reactor-hello-c", call: func(ctx context.Context, f *sandbox.Function) error {
			res, err := f.Call(ctx, benchInput)
			if err != nil {
				return err
			}
			return check(res.Stdout)
		}},
	}
}

type benchMismatch struct{ got []byte }

func (e *benchMismatch) Error() string { return "unexpected answer " + string(e.got) }

// spec is the function spec of the benchmarks' functions.
var spec = sandbox.FunctionSpec{Name: "hello", MaxSandboxes: 4, IdleTimeout: -1}

// BenchmarkJSRuntime compares examples/hello-js on the JavaScript runtime
// with the same function in C (examples/reactor-hello-c), in the sandbox
// (no network, no encryption, no receipt):
//
//   - warm: one call on a pooled sandbox (reset to the snapshot after it);
//   - warm-parallel: the same from GOMAXPROCS goroutines (throughput);
//   - cold: a new function version from already compiled code: run init,
//     snapshot, make a sandbox, call once (what a worker does when it loads
//     a new version; for JS every version after the process's first);
//   - cold-compile: the same in a new engine, compiling the module first
//     (a worker's first function of the kind).
func BenchmarkJSRuntime(b *testing.B) {
	ctx := context.Background()
	for _, bc := range benchCases(b) {
		e, err := sandbox.New(ctx, sandbox.Config{})
		if err != nil {
			b.Fatal(err)
		}
		m, err := e.Compile(ctx, bc.hash, bc.code, sandbox.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		f, err := m.NewFunction(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("warm/"+bc.name, func(b *testing.B) {
			if err := bc.call(ctx, f); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if err := bc.call(ctx, f); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("warm-parallel/"+bc.name, func(b *testing.B) {
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bc.call(ctx, f); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
		b.Run("cold/"+bc.name, func(b *testing.B) {
			for b.Loop() {
				g, err := m.NewFunction(ctx, spec)
				if err != nil {
					b.Fatal(err)
				}
				if err := bc.call(ctx, g); err != nil {
					b.Fatal(err)
				}
				g.Close()
			}
		})
		f.Close()
		_ = e.Close(ctx)
		b.Run("cold-compile/"+bc.name, func(b *testing.B) {
			for b.Loop() {
				e, err := sandbox.New(ctx, sandbox.Config{})
				if err != nil {
					b.Fatal(err)
				}
				m, err := e.Compile(ctx, bc.hash, bc.code, sandbox.Limits{})
				if err != nil {
					b.Fatal(err)
				}
				g, err := m.NewFunction(ctx, spec)
				if err != nil {
					b.Fatal(err)
				}
				if err := bc.call(ctx, g); err != nil {
					b.Fatal(err)
				}
				g.Close()
				_ = e.Close(ctx)
			}
		})
	}
}

// TestBenchCasesAgree runs both implementations once: the benchmark's
// premise is that they compute the same answer.
func TestBenchCasesAgree(t *testing.T) {
	ctx := context.Background()
	script, cwasm := examples(t)
	jsf := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	m, err := testEngine.Compile(ctx, "reactor-hello-c", cwasm, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := m.NewFunction(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	for _, in := range []string{`{"name":"Ada"}`, `{}`, `{"other":1,"name":"Grace Hopper"}`, `{"name":"say \"hi\""}`} {
		js, _, err := Call(ctx, jsf, script, []byte(in))
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			res, err := cf.Call(ctx, []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Stdout, js) {
				t.Errorf("input %s: C answered %s, JS %s", in, res.Stdout, js)
			}
		}
	}
}
