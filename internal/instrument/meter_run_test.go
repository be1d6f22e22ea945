package instrument

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// This file runs modules in wazero for the metering tests: a WASI command,
// a reactor of the Cloister reactor ABI v1 (docs/reactor-abi.md), or a
// module whose exports are called directly, each with its metering
// globals read and set around every call.

// naiveExport is the export name of the counter meterNaive adds.
const naiveExport = "__naive_instructions"

// meterCache keeps compiled modules across the tests' runtimes: the Go
// examples take a while to compile.
var meterCache = wazero.NewCompilationCache()

// step is one call of a scenario.
type step struct {
	fn    string   // the export to call
	args  []uint64 // its arguments
	input string   // the request, for a reactor's cloister_handle
	// optional steps are skipped when fn is not exported (a reactor's
	// _initialize and cloister_init).
	optional bool
}

// scenario is what a test does with a module: instantiate it without
// running any start function (the start section runs, as always), with
// stdin, then call the steps in order in the same instance.
type scenario struct {
	stdin string
	steps []step
}

// command is the scenario of a WASI command: _start, with stdin.
func command(stdin string) scenario {
	return scenario{stdin: stdin, steps: []step{{fn: "_start"}}}
}

// reactor is the scenario of a reactor: _initialize and cloister_init if
// exported, then one cloister_handle per request, without reset.
func reactor(requests ...string) scenario {
	sc := scenario{steps: []step{{fn: "_initialize", optional: true}, {fn: "cloister_init", optional: true}}}
	for _, r := range requests {
		sc.steps = append(sc.steps, step{fn: "cloister_handle", input: r})
	}
	return sc
}

// outcome is how a step ended, what it showed, and what its meter says.
type outcome struct {
	Skipped  bool   // an optional step whose export is missing
	Results  string // the call's results
	Output   string // the reactor's response
	Stdout   string
	Stderr   string
	ExitCode uint32
	Err      string // the first line of an error other than an exit
	// Count is the counter after the step (CounterExport, or
	// naiveExport), or -1 if the module has neither. Fuel is the fuel
	// left, if the module has FuelExport.
	Count, Fuel int64
}

// behaviour is the outcome less the meter, for comparisons with the
// original module.
func (o outcome) behaviour() outcome {
	o.Count, o.Fuel = 0, 0
	return o
}

// guest is one instance of a module, with the host side of WASI and of the
// reactor ABI.
type guest struct {
	mod            api.Module
	input          []byte
	output         bytes.Buffer
	stdout, stderr bytes.Buffer
	counter, fuel  api.MutableGlobal
}

// engine selects wazero's compiler or interpreter.
type engine bool

const (
	compiler    engine = false
	interpreter engine = true
)

func (e engine) String() string {
	if e == interpreter {
		return "interpreter"
	}
	return "compiler"
}

// runScenario runs sc on wasm in a fresh runtime of engine e. Before each
// step i, if the module is metered, it sets the counter to 0 and the fuel
// to fuel(i) (nil: InitialFuel).
func runScenario(t testing.TB, wasm []byte, sc scenario, e engine, fuel func(i int) int64) (string, []outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := wazero.NewRuntimeConfig()
	if e == interpreter {
		cfg = wazero.NewRuntimeConfigInterpreter()
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg.
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(1024).
		WithCompilationCache(meterCache))
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	g := &guest{}
	_, err := r.NewHostModuleBuilder("cloister").
		NewFunctionBuilder().WithFunc(g.inputLen).Export("input_len").
		NewFunctionBuilder().WithFunc(g.inputRead).Export("input_read").
		NewFunctionBuilder().WithFunc(g.outputWrite).Export("output_write").
		Instantiate(ctx)
	if err != nil {
		t.Fatalf("instantiating the cloister host module: %v", err)
	}
	mcfg := wazero.NewModuleConfig().
		WithStartFunctions().
		WithStdin(strings.NewReader(sc.stdin)).
		WithStdout(&g.stdout).
		WithStderr(&g.stderr).
		WithArgs("fn").
		WithEnv("CLOISTER_FUNCTION", "x")
	// CompileModule, not InstantiateWithConfig, which would drop the
	// compiled module from meterCache when the instance closes.
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return firstLine(err), nil
	}
	g.mod, err = r.InstantiateModule(ctx, cm, mcfg)
	if err != nil {
		return firstLine(err), nil
	}
	defer g.mod.Close(ctx)
	for _, name := range []string{CounterExport, naiveExport} {
		if c, ok := g.mod.ExportedGlobal(name).(api.MutableGlobal); ok {
			g.counter = c
		}
	}
	g.fuel, _ = g.mod.ExportedGlobal(FuelExport).(api.MutableGlobal)
	outs := make([]outcome, 0, len(sc.steps))
	for i, s := range sc.steps {
		fn := g.mod.ExportedFunction(s.fn)
		if fn == nil {
			if s.optional {
				outs = append(outs, outcome{Skipped: true, Count: -1})
			} else {
				outs = append(outs, outcome{Err: "no export " + s.fn, Count: -1})
			}
			continue
		}
		f := InitialFuel
		if fuel != nil {
			f = fuel(i)
		}
		if g.counter != nil {
			g.counter.Set(0)
		}
		if g.fuel != nil {
			g.fuel.Set(uint64(f))
		}
		g.input = []byte(s.input)
		res, err := fn.Call(ctx, s.args...)
		o := outcome{Count: -1}
		var exit *sys.ExitError
		switch {
		case errors.As(err, &exit):
			o.ExitCode = exit.ExitCode()
		case err != nil:
			o.Err = firstLine(err)
		default:
			o.Results = fmt.Sprint(res)
		}
		if ctx.Err() != nil {
			t.Fatalf("step %d (%s): timed out", i, s.fn)
		}
		o.Output, o.Stdout, o.Stderr = g.output.String(), g.stdout.String(), g.stderr.String()
		g.output.Reset()
		g.stdout.Reset()
		g.stderr.Reset()
		if g.counter != nil {
			o.Count = int64(g.counter.Get())
		}
		if g.fuel != nil {
			o.Fuel = int64(g.fuel.Get())
		}
		outs = append(outs, o)
	}
	return "", outs
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// inputLen is cloister.input_len.
func (g *guest) inputLen() uint32 { return uint32(len(g.input)) }

// inputRead is cloister.input_read.
func (g *guest) inputRead(_ context.Context, m api.Module, ptr, n uint32) int32 {
	n = min(n, uint32(len(g.input)))
	if !m.Memory().Write(ptr, g.input[:n]) {
		return -1
	}
	return int32(n)
}

// outputWrite is cloister.output_write.
func (g *guest) outputWrite(_ context.Context, m api.Module, ptr, n uint32) int32 {
	b, ok := m.Memory().Read(ptr, n)
	if !ok || g.output.Len()+len(b) > 4<<20 {
		return -1
	}
	g.output.Write(b)
	return 0
}

// meterNaive is the tests' oracle of the counts: it adds its own counter
// global, exported as naiveExport, and adds 1 to it before every
// instruction of cost 1, one instruction at a time. It knows nothing of
// basic blocks, so it counts exactly the instructions that start to
// execute, a trapping one included.
func meterNaive(t testing.TB, wasm []byte) []byte {
	t.Helper()
	m, err := Decode(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	g := uint32(len(m.GlobalTypes()))
	inc := AppendU32([]byte{byte(OpGlobalGet)}, g)
	inc = append(inc, byte(OpI64Const), 1, byte(OpI64Add), byte(OpGlobalSet))
	inc = AppendU32(inc, g)
	for i := range m.Code {
		b := &m.Code[i]
		var out []byte
		prev := 0
		ir := NewInstrReader(b.Expr)
		for ir.Next() {
			in := ir.Instr()
			switch in.Op {
			case OpBlock, OpLoop, OpElse, OpEnd:
				continue
			}
			out = append(out, b.Expr[prev:in.Pos]...)
			out = append(out, inc...)
			prev = in.Pos
		}
		if err := ir.Err(); err != nil {
			t.Fatal(err)
		}
		m.Code[i] = Body{Locals: b.Locals, Expr: append(out, b.Expr[prev:]...)}
	}
	m.Globals = append(m.Globals, GlobalDef{Type: GlobalType{Type: I64, Mutable: true}, Init: []byte{byte(OpI64Const), 0, byte(OpEnd)}})
	m.Exports = append(m.Exports, Export{Name: naiveExport, Kind: KindGlobal, Index: g})
	out, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(context.Background(), out); err != nil {
		t.Fatalf("the naive oracle's module: %v", err)
	}
	return out
}
