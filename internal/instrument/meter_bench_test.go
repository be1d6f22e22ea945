package instrument

import (
	"context"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// BenchmarkMetering measures what metering costs at run time, in wazero's
// compiler (the sandbox's engine):
//
//   - sha256: examples/sha256-c over 1 MiB of stdin, one instance per
//     run (its _start reads stdin to the end);
//   - go: examples/reactor-go handling a 64 KiB request (JSON decoding,
//     strings.Fields, upper-casing by table, JSON encoding), in one
//     instance initialised once, as the sandbox calls a reactor.
//
// Each has plain (the module as Prepare leaves it) and instrumented
// (PrepareMetered, with unlimited fuel) sub-benchmarks; the overhead is
// the ratio of their median times over several runs:
//
//	go test ./internal/instrument/ -run '^$' -bench BenchmarkMetering -count 10
//
// Each instrumented sub-benchmark reports instrs/op, the count. On a
// shared machine the times are noisy: take medians, and compare runs made
// together.
func BenchmarkMetering(b *testing.B) {
	ctx := context.Background()
	mib := make([]byte, 1<<20)
	for i := range mib {
		mib[i] = byte(i * 7 / 3)
	}
	request := `{"text":"` + strings.Repeat("the quick brown fox jumps over the lazy dög ", 64<<10/45) + `"}`
	for _, bm := range []struct {
		name string
		path string
		run  func(b *testing.B, wasm []byte)
	}{
		{"sha256", sha256C, func(b *testing.B, wasm []byte) { benchCommand(b, wasm, string(mib)) }},
		{"go", reactorGo, func(b *testing.B, wasm []byte) { benchReactor(b, wasm, request) }},
	} {
		in := readFile(b, bm.path)
		plain, _, err := Prepare(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		metered, _, _, err := PrepareMetered(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bm.name+"/plain", func(b *testing.B) { bm.run(b, plain) })
		b.Run(bm.name+"/instrumented", func(b *testing.B) { bm.run(b, metered) })
	}
}

// benchRuntime returns a compiler runtime with WASI and wasm compiled.
func benchRuntime(b *testing.B, wasm []byte) (wazero.Runtime, wazero.CompiledModule) {
	b.Helper()
	ctx := context.Background()
	// The sandbox compiles every module with termination checks
	// (WithCloseOnContextDone), metered or not: so does the baseline.
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true))
	b.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		b.Fatal(err)
	}
	return r, cm
}

// reportCount reports the counter of a metered instance as instrs/op.
func reportCount(b *testing.B, mod api.Module, total *int64) {
	if c := mod.ExportedGlobal(CounterExport); c != nil {
		*total += int64(c.Get())
	}
}

func benchCommand(b *testing.B, wasm []byte, stdin string) {
	ctx := context.Background()
	r, cm := benchRuntime(b, wasm)
	var count int64
	b.SetBytes(int64(len(stdin)))
	for b.Loop() {
		var out strings.Builder
		mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().
			WithName("").
			WithStdin(strings.NewReader(stdin)).
			WithStdout(&out))
		if err != nil {
			b.Fatal(err)
		}
		if out.Len() != 65 {
			b.Fatalf("stdout %q", out.String())
		}
		reportCount(b, mod, &count)
		mod.Close(ctx)
	}
	if count > 0 {
		b.ReportMetric(float64(count)/float64(b.N), "instrs/op")
	}
}

func benchReactor(b *testing.B, wasm []byte, request string) {
	ctx := context.Background()
	r, cm := benchRuntime(b, wasm)
	g := &guest{}
	if _, err := r.NewHostModuleBuilder("cloister").
		NewFunctionBuilder().WithFunc(g.inputLen).Export("input_len").
		NewFunctionBuilder().WithFunc(g.inputRead).Export("input_read").
		NewFunctionBuilder().WithFunc(g.outputWrite).Export("output_write").
		Instantiate(ctx); err != nil {
		b.Fatal(err)
	}
	mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mod.ExportedFunction("_initialize").Call(ctx); err != nil {
		b.Fatal(err)
	}
	handle := mod.ExportedFunction("cloister_handle")
	counter, _ := mod.ExportedGlobal(CounterExport).(api.MutableGlobal)
	g.input = []byte(request)
	b.SetBytes(int64(len(request)))
	var count int64
	for b.Loop() {
		g.output.Reset()
		if counter != nil {
			counter.Set(0)
		}
		res, err := handle.Call(ctx)
		if err != nil || res[0] != 0 {
			b.Fatalf("cloister_handle: %v %v", res, err)
		}
		reportCount(b, mod, &count)
	}
	if !strings.HasPrefix(g.output.String(), `{"words":`) {
		b.Fatalf("response %.100q", g.output.String())
	}
	if count > 0 {
		b.ReportMetric(float64(count)/float64(b.N), "instrs/op")
	}
}

// BenchmarkInstrumentPass meters hello-go.wasm, a 3.3 MB Go wasip1 module:
// the whole of PrepareMetered, wazero's validation of the output included.
func BenchmarkInstrumentPass(b *testing.B) {
	in := readFile(b, helloGo)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := PrepareMetered(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstrumentPassRewrite is the pass alone on hello-go.wasm,
// without wazero's validation: decode, export, scan, meter and encode.
func BenchmarkInstrumentPassRewrite(b *testing.B) {
	in := readFile(b, helloGo)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := Decode(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		info, err := ExportMutableGlobals(m)
		if err != nil {
			b.Fatal(err)
		}
		if err := ScanCode(ctx, m, info); err != nil {
			b.Fatal(err)
		}
		if _, err := Meter(ctx, m); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}
