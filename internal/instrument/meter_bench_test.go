package instrument

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

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
// (PrepareMetered, with unlimited fuel) sub-benchmarks, and interleaved,
// which alternates the two op by op and reports the instrumented one's
// overhead-% (a change in the machine's load falls on both alike):
//
//	go test ./internal/instrument/ -run '^$' -bench BenchmarkMetering -benchtime 10s -count 3
//
// Both are compiled as the sandbox compiles every module, with wazero's
// termination checks. Each instrumented sub-benchmark reports instrs/op,
// the count.
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
		op   func(b *testing.B, wasm []byte) func() int64
		size int
	}{
		{"sha256", sha256C, func(b *testing.B, wasm []byte) func() int64 { return commandOp(b, wasm, string(mib)) }, len(mib)},
		{"go", reactorGo, func(b *testing.B, wasm []byte) func() int64 { return reactorOp(b, wasm, request) }, len(request)},
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
		b.Run(bm.name+"/plain", func(b *testing.B) { benchOp(b, bm.op(b, plain), bm.size) })
		b.Run(bm.name+"/instrumented", func(b *testing.B) { benchOp(b, bm.op(b, metered), bm.size) })
		b.Run(bm.name+"/interleaved", func(b *testing.B) { benchInterleaved(b, bm.op(b, plain), bm.op(b, metered)) })
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

// commandOp returns one run of a command module: instantiate with stdin,
// run _start, check the digest's length. It returns the instruction count
// (0 if the module is not metered).
func commandOp(b *testing.B, wasm []byte, stdin string) func() int64 {
	ctx := context.Background()
	r, cm := benchRuntime(b, wasm)
	return func() int64 {
		var out strings.Builder
		mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().
			WithName("").
			WithStdin(strings.NewReader(stdin)).
			WithStdout(&out))
		if err != nil {
			b.Fatal(err)
		}
		defer mod.Close(ctx)
		if out.Len() != 65 {
			b.Fatalf("stdout %q", out.String())
		}
		var n int64
		reportCount(b, mod, &n)
		return n
	}
}

// reactorOp returns one call of a reactor's cloister_handle with request.
func reactorOp(b *testing.B, wasm []byte, request string) func() int64 {
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
	return func() int64 {
		g.output.Reset()
		if counter != nil {
			counter.Set(0)
		}
		res, err := handle.Call(ctx)
		if err != nil || res[0] != 0 {
			b.Fatalf("cloister_handle: %v %v", res, err)
		}
		if !strings.HasPrefix(g.output.String(), `{"words":`) {
			b.Fatalf("response %.100q", g.output.String())
		}
		var n int64
		reportCount(b, mod, &n)
		return n
	}
}

// benchOp times op, reporting the mean instruction count.
func benchOp(b *testing.B, op func() int64, bytes int) {
	b.SetBytes(int64(bytes))
	var count int64
	for b.Loop() {
		count += op()
	}
	if count > 0 {
		b.ReportMetric(float64(count)/float64(b.N), "instrs/op")
	}
}

// benchInterleaved alternates plain and metered, timing each, so that a
// change in the machine's load falls on both alike, and reports the
// metered one's overhead.
//
// overhead-% is the instrumented ops' total time over the plain ones';
// median-overhead-% is the median of each pair's ratio, which a GC pause
// or a preemption in one op of the run moves less.
func benchInterleaved(b *testing.B, plain, metered func() int64) {
	var tp, tm time.Duration
	var ratios []float64
	for i := 0; b.Loop(); i++ {
		first, second, t1, t2 := plain, metered, &tp, &tm
		if i%2 == 1 {
			first, second, t1, t2 = metered, plain, &tm, &tp
		}
		start := time.Now()
		first()
		mid := time.Now()
		second()
		d1, d2 := mid.Sub(start), time.Since(mid)
		*t1 += d1
		*t2 += d2
		if i%2 == 0 {
			ratios = append(ratios, float64(d2)/float64(d1))
		} else {
			ratios = append(ratios, float64(d1)/float64(d2))
		}
	}
	b.ReportMetric(100*(float64(tm)/float64(tp)-1), "overhead-%")
	slices.Sort(ratios)
	b.ReportMetric(100*(ratios[len(ratios)/2]-1), "median-overhead-%")
}

// BenchmarkInstrumentPass meters hello-go.wasm, a 3.3 MB Go wasip1 module:
// the whole of PrepareMetered, wazero's validation of the output included.
func BenchmarkInstrumentPass(b *testing.B) {
	benchGoPass(b, func(ctx context.Context, in []byte) error {
		_, _, _, err := PrepareMetered(ctx, in)
		return err
	})
}

// BenchmarkInstrumentPassRewrite is the pass alone on hello-go.wasm,
// without wazero's validation: decode, export, scan, meter and encode.
func BenchmarkInstrumentPassRewrite(b *testing.B) {
	benchGoPass(b, func(ctx context.Context, in []byte) error { return rewriteOnly(ctx, in, true) })
}
