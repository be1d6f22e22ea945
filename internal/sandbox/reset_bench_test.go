package sandbox

import (
	"context"
	"os"
	"testing"

	"github.com/tetratelabs/wazero/api"
)

// BenchmarkReset compares, per call of a function that dirties two pages:
//   - fresh: a new instance for every call (instantiate, init, call, close),
//     the baseline the snapshot design replaces;
//   - reset: a pooled sandbox restored from the snapshot after every call
//     (copy-on-write memory, dirty pages found by PAGEMAP_SCAN and dropped);
//   - warm-noreset: the same instance called again without any reset, the
//     floor (and unsafe: state leaks between calls).
func BenchmarkReset(b *testing.B) {
	cases := []struct{ name, file string }{
		{"mem=1MiB", "testdata/dirty2_1mib.wasm"},
		{"mem=64MiB", "testdata/dirty2_64mib.wasm"},
		{"go-reactor", "../../examples/reactor-go/reactor-go.wasm"},
	}
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(ctx)
	for _, c := range cases {
		wasm, err := os.ReadFile(c.file)
		if err != nil {
			b.Fatal(err)
		}
		m, err := e.Compile(ctx, c.file, wasm, Limits{MemoryPages: 2048})
		if err != nil {
			b.Fatal(err)
		}
		input := []byte(`{"text":"two words"}`)
		b.Run(c.name+"/fresh", func(b *testing.B) {
			for b.Loop() {
				inst, err := m.runtime.InstantiateModule(isolate(ctx), m.compiled, m.base)
				if err != nil {
					b.Fatal(err)
				}
				for _, name := range []string{ExportInitialize, ExportInit} {
					if fn := inst.ExportedFunction(name); fn != nil {
						if _, err := fn.Call(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
				callHandle(b, inst, input)
				inst.Close(ctx)
			}
		})
		f, err := m.NewFunction(ctx, FunctionSpec{MaxSandboxes: 1, Prewarm: 1, IdleTimeout: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/reset", func(b *testing.B) {
			for b.Loop() {
				if _, err := f.Call(ctx, input); err != nil {
					b.Fatal(err)
				}
			}
			st := f.Stats()
			b.ReportMetric(float64(st.ResetPages)/float64(max(st.Resets, 1)), "pages/reset")
		})
		f.Close()
		if c.name == "go-reactor" {
			continue
		}
		b.Run(c.name+"/warm-noreset", func(b *testing.B) {
			inst, err := m.runtime.InstantiateModule(isolate(ctx), m.compiled, m.base)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			for b.Loop() {
				callHandle(b, inst, input)
			}
		})
	}
}

// callHandle calls cloister_handle with input, as Function.Call does
// (without the pool, the timer and the CPU clock).
func callHandle(b *testing.B, inst api.Module, input []byte) {
	st := &callState{input: input, output: &boundedBuffer{limit: 1 << 20, onOverflow: func() {}}}
	rets, err := inst.ExportedFunction(ExportHandle).Call(context.WithValue(context.Background(), callStateKey{}, st))
	if err != nil || rets[0] != 0 {
		b.Fatalf("handle: %v %v (%s)", err, rets, st.output.buf)
	}
}
