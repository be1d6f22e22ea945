package instrument

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

const (
	reactorC  = "../../examples/reactor-c/reactor-c.wasm"
	reactorGo = "../../examples/reactor-go/reactor-go.wasm"
	calcWasm  = "testdata/calc.wasm"
	meterWasm = "testdata/meter.wasm"
)

func meter(t testing.TB, wasm []byte) ([]byte, *MeterInfo) {
	t.Helper()
	out, _, mi, err := PrepareMetered(context.Background(), wasm)
	if err != nil {
		t.Fatalf("PrepareMetered: %v", err)
	}
	return out, mi
}

// TestMeterCounts calls the functions of testdata/meter.wat, whose counts
// are worked out by hand in its comments, and checks the counter after
// each call, the result against the original's, and the naive oracle's
// count.
func TestMeterCounts(t *testing.T) {
	type c = step
	tests := []struct {
		call      step
		want      string // the results
		wantCount int64
	}{
		{c{fn: "straight", args: []uint64{4, 5}}, "[27]", 5},
		{c{fn: "if_else", args: []uint64{1}}, "[11]", 5},
		{c{fn: "if_else", args: []uint64{0}}, "[22]", 7},
		{c{fn: "sum", args: []uint64{0}}, "[0]", 5},
		{c{fn: "sum", args: []uint64{1}}, "[1]", 12 + 5},
		{c{fn: "sum", args: []uint64{10}}, "[55]", 12*10 + 5},
		{c{fn: "sum", args: []uint64{1000}}, "[500500]", 12*1000 + 5},
		{c{fn: "countdown", args: []uint64{1}}, "[0]", 5 + 1},
		{c{fn: "countdown", args: []uint64{7}}, "[0]", 5*7 + 1},
		{c{fn: "br_if", args: []uint64{1}}, "[8]", 5},
		{c{fn: "br_if", args: []uint64{0}}, "[9]", 7},
		{c{fn: "br_table", args: []uint64{0}}, "[100]", 4},
		{c{fn: "br_table", args: []uint64{1}}, "[102]", 6},
		{c{fn: "br_table", args: []uint64{2}}, "[102]", 4},
		{c{fn: "br_table", args: []uint64{3}}, "[6]", 7},
		{c{fn: "br_table", args: []uint64{math.MaxUint32}}, "[6]", 7},
		{c{fn: "double", args: []uint64{21}}, "[42]", 3},
		{c{fn: "call", args: []uint64{21}}, "[43]", 7},
		{c{fn: "call_indirect", args: []uint64{21}}, "[43]", 8},
		{c{fn: "early", args: []uint64{0}}, "[0]", 5},
		{c{fn: "early", args: []uint64{3}}, "[6]", 6},
		{c{fn: "fact", args: []uint64{0}}, "[1]", 4},
		{c{fn: "fact", args: []uint64{5}}, "[120]", 9*5 + 4},
		{c{fn: "fact", args: []uint64{20}}, "[2432902008176640000]", 9*20 + 4},
		{c{fn: "nested"}, "[6]", 6},
		{c{fn: "multi", args: []uint64{1}}, "[2]", 11*1 + 8},
		{c{fn: "multi", args: []uint64{3}}, "[1009]", 11*3 + 10},
		{c{fn: "multi", args: []uint64{4}}, "[1014]", 11*4 + 10},
		{c{fn: "multi", args: []uint64{5}}, "[20]", 11*5 + 8},
		{c{fn: "trap", args: []uint64{3}}, "[5]", 7},
		{c{fn: "store", args: []uint64{8}}, "[]", 3},
		{c{fn: "calls_trap", args: []uint64{1}}, "[13]", 77},
		{c{fn: "arms_branch", args: []uint64{1, 0}}, "[10]", 5},
		{c{fn: "arms_branch", args: []uint64{0, 0}}, "[10]", 7},
		{c{fn: "arms_branch", args: []uint64{0, 1}}, "[20]", 5},
	}
	in := readFile(t, meterWasm)
	out, mi := meter(t, in)
	naive := meterNaive(t, in)
	var sc scenario
	for _, tt := range tests {
		sc.steps = append(sc.steps, tt.call)
	}
	_, orig := runScenario(t, in, sc, compiler, nil)
	_, got := runScenario(t, out, sc, compiler, nil)
	_, oracle := runScenario(t, naive, sc, compiler, nil)
	for i, tt := range tests {
		name := fmt.Sprintf("%s%v", tt.call.fn, tt.call.args)
		if got[i].Results != tt.want || got[i].Err != "" {
			t.Errorf("%s: got %q (error %q), want %s", name, got[i].Results, got[i].Err, tt.want)
		}
		if got[i].behaviour() != orig[i].behaviour() {
			t.Errorf("%s: metered %+v, original %+v", name, got[i], orig[i])
		}
		if got[i].Count != tt.wantCount {
			t.Errorf("%s: count %d, want %d", name, got[i].Count, tt.wantCount)
		}
		if oracle[i].Count != tt.wantCount {
			t.Errorf("%s: the naive oracle counts %d, want %d (is the hand count right?)", name, oracle[i].Count, tt.wantCount)
		}
		if want := InitialFuel - tt.wantCount; got[i].Fuel != want {
			t.Errorf("%s: fuel left %d, want %d", name, got[i].Fuel, want)
		}
	}
	t.Logf("%+v", *mi)
}

// TestMeterTrapCount checks what the package doc says of traps. An
// unreachable of the input is counted exactly, as a call is: the meter is
// flushed before it. A trap of another instruction leaves the counter and
// the fuel as the trapping function last flushed them, before its last
// call or at its entry: the counter is short of what that function
// executed since.
func TestMeterTrapCount(t *testing.T) {
	out, _ := meter(t, readFile(t, meterWasm))
	sc := scenario{steps: []step{
		{fn: "abort"},
		{fn: "trap", args: []uint64{0}},
		{fn: "store", args: []uint64{1 << 16}},
		{fn: "calls_trap", args: []uint64{0}},
	}}
	_, got := runScenario(t, out, sc, compiler, nil)
	want := []outcome{
		{Err: "wasm error: unreachable", Count: 3, Fuel: InitialFuel - 3},
		{Err: "wasm error: integer divide by zero", Count: 0, Fuel: InitialFuel},
		{Err: "wasm error: out of bounds memory access", Count: 0, Fuel: InitialFuel},
		{Err: "wasm error: integer divide by zero", Count: 70, Fuel: InitialFuel - 70},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	_, oracle := runScenario(t, meterNaive(t, readFile(t, meterWasm)), sc, compiler, nil)
	for i, n := range []int64{3, 3, 3, 73} {
		if oracle[i].Count != n {
			t.Errorf("step %d: the oracle counts %d, want %d", i, oracle[i].Count, n)
		}
	}
}

// TestMeterStackOverflow checks that a stack overflow is counted exactly:
// it comes at a call, after the meter was flushed. recurse executes 5
// instructions a level, and counts the levels in a global.
func TestMeterStackOverflow(t *testing.T) {
	out, _ := meter(t, readFile(t, meterWasm))
	for _, e := range []engine{compiler, interpreter} {
		ctx := context.Background()
		cfg := wazero.NewRuntimeConfigCompiler()
		if e == interpreter {
			cfg = wazero.NewRuntimeConfigInterpreter()
		}
		r := wazero.NewRuntimeWithConfig(ctx, cfg)
		defer r.Close(ctx)
		mod, err := r.Instantiate(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		_, err = mod.ExportedFunction("recurse").Call(ctx)
		if err == nil || !strings.Contains(err.Error(), "stack overflow") {
			t.Fatalf("%s: got %v, want a stack overflow", e, err)
		}
		depth := int64(mod.ExportedGlobal("depth").Get())
		count := int64(mod.ExportedGlobal(CounterExport).Get())
		if count != 5*depth || depth < 1000 {
			t.Errorf("%s: counted %d for %d levels; want 5 a level", e, count, depth)
		}
		t.Logf("%s: %d levels", e, depth)
	}
}

// meterCase is a module and what to do with it.
type meterCase struct {
	name string
	path string
	sc   scenario
	// interp runs it in wazero's interpreter too. Off for long runs.
	interp bool
}

// meterCases are the differential corpus: every fixture of the sandbox
// that ends by itself, the examples, and this package's fixtures.
func meterCases(t testing.TB) []meterCase {
	calls := func(ss ...step) scenario { return scenario{steps: ss} }
	fn := func(name string, args ...uint64) step { return step{fn: name, args: args} }
	mib := make([]byte, 1<<20)
	for i := range mib {
		mib[i] = byte(i * 7 / 3)
	}
	cases := []meterCase{
		{"sha256-c/abc", sha256C, command("abc"), true},
		{"sha256-c/empty", sha256C, command(""), true},
		{"sha256-c/1MiB", sha256C, command(string(mib)), false},
		{"hello-go/ok", helloGo, command(`{"name":"Ada"}`), true},
		{"hello-go/bad-json", helloGo, command(`{"name":`), false},
		{"reactor-c", reactorC, reactor("123456789", "", strings.Repeat("x", 10000)), true},
		{"reactor-go", reactorGo, reactor(`{"text":"hello, reactor world"}`, `{"text":`, ``, `{"text":"`+strings.Repeat("ünïcode wörds ", 2000)+`"}`), false},
		{"calc/small", calcWasm, command("a1 c2 b9 4"), true},
		{"calc/all-ops", calcWasm, command(calcExpr(rand.New(rand.NewPCG(1, 2)), 12)), true},
		{"calc/deep", calcWasm, command(strings.Repeat("a1 i", 10000) + "7"), false},
		{"calc/nested", calcWasm, command(strings.Repeat("j1 i", 300) + "7"), true},
		{"calc/div-zero", calcWasm, command("a1 d7 b3 3"), true},
		{"calc/syntax", calcWasm, command("a1 z"), true},
		{"calc/trailing", calcWasm, command("a1 2 3"), true},
		{"meter", meterWasm, calls(fn("sum", 100), fn("fact", 10), fn("multi", 9), fn("trap", 0), fn("br_table", 1), fn("calls_trap", 0), fn("abort")), true},
		{"br_table", "testdata/br_table.wasm", calls(fn("pick", 0), fn("pick", 3), fn("pick", 4), fn("pick", math.MaxUint32)), true},
		{"multi_value", "testdata/multi_value.wasm", calls(fn("divmod", 17, 5), fn("divmod", 1, 0), fn("swap_if", 1, 2, 0), fn("swap_if", 1, 2, 1), fn("sum_to", 100)), true},
		{"memory_grow", "testdata/memory_grow.wasm", calls(fn("size"), fn("grow", 2), fn("grow", 2), fn("size")), true},
		{"no_globals", "testdata/no_globals.wasm", calls(fn("apply", 21), fn("read", 65534)), true},
		{"simd", "testdata/simd.wasm", calls(fn("dot", 1, 2, 3, 4), fn("dot", 5, 0xffffffff, 7, 8), fn("lane")), true},
		{"table_set_grow", "testdata/table_set_grow.wasm", calls(fn("size"), fn("grow", 3), fn("set", 3), fn("set", 4), fn("grow", 100), fn("size")), true},
		{"data_drop", "testdata/data_drop.wasm", calls(fn("load"), fn("load")), true},
		{"reactor", "../sandbox/testdata/reactor.wasm", reactor("c", "ssecret", "r", "g", "t", "i", "c"), true},
		{"dirty2_1mib", "../sandbox/testdata/dirty2_1mib.wasm", reactor("", ""), true},
		{"dirty2_64mib", "../sandbox/testdata/dirty2_64mib.wasm", reactor(""), false},
		{"echo", echoWasm, command("hello, echo\n"), true},
	}
	// The sandbox's other fixtures, as commands. Those that never end are
	// in TestMeterFuelStops instead, and table_bomb needs the sandbox's
	// bound on tables: in plain wazero it runs for minutes.
	never := map[string]bool{"infinite_loop": true, "big_output": true, "start_loop": true, "table_bomb": true}
	files, err := filepath.Glob("../sandbox/testdata/*.wasm")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".wasm")
		if never[name] || slices.ContainsFunc(cases, func(c meterCase) bool { return c.path == f }) {
			continue
		}
		// A stack overflow comes at a depth that depends on the engine.
		cases = append(cases, meterCase{name, f, command(""), name != "memory_bomb" && name != "stack_overflow"})
	}
	return cases
}

// calcExpr returns a random expression for calc.c of the given depth,
// every operator included.
func calcExpr(r *rand.Rand, depth int) string {
	if depth == 0 {
		return fmt.Sprint(r.IntN(1000) + 1)
	}
	op := "abcdefghij"[r.IntN(10)]
	arity := map[byte]int{'i': 1, 'j': 3}[op]
	if arity == 0 {
		arity = 2
	}
	if op == 'd' || op == 'e' {
		// A divisor that is never 0: 1 + (x * y) % 1000, x and y > 0.
		return fmt.Sprintf("%c %s a1 e c%s %s 1000", op, calcExpr(r, depth-1), calcExpr(r, 0), calcExpr(r, 0))
	}
	s := string(op)
	for range arity {
		s += " " + calcExpr(r, depth-1)
	}
	return s
}

// TestMeterDifferential runs every module of the corpus original, metered
// and metered by the naive oracle, and checks that:
//   - the metered module behaves as the original: same results, output,
//     exit code and error;
//   - its count equals the oracle's whenever a step completes (returns
//     or exits) or traps at an unreachable, and is at most the oracle's
//     when it traps otherwise (the package doc says why);
//   - its count is the same in a second fresh runtime, and in wazero's
//     interpreter.
func TestMeterDifferential(t *testing.T) {
	for _, tc := range meterCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && (tc.path == helloGo || tc.path == reactorGo) {
				t.Skip("-short: the Go modules take seconds to compile")
			}
			in, err := os.ReadFile(tc.path)
			if errors.Is(err, os.ErrNotExist) {
				t.Skipf("fixture removed: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(context.Background(), in); err != nil {
				if _, _, _, err := PrepareMetered(context.Background(), in); err == nil {
					t.Errorf("PrepareMetered accepted a module wazero refuses")
				}
				t.Skipf("wazero itself refuses the module: %v", err)
			}
			out, mi := meter(t, in)
			origErr, orig := runScenario(t, in, tc.sc, compiler, nil)
			gotErr, got := runScenario(t, out, tc.sc, compiler, nil)
			if gotErr != origErr {
				t.Fatalf("instantiation: metered %q, original %q", gotErr, origErr)
			}
			if len(got) != len(orig) {
				t.Fatalf("metered: %d steps, original %d", len(got), len(orig))
			}
			for i := range got {
				if got[i].behaviour() != orig[i].behaviour() {
					t.Errorf("step %d: metered %s\noriginal %s", i, brief(got[i]), brief(orig[i]))
				}
			}
			if origErr != "" {
				t.Logf("does not instantiate: %s", origErr)
				return
			}
			_, oracle := runScenario(t, meterNaive(t, in), tc.sc, compiler, nil)
			for i := range got {
				if got[i].Count < 0 {
					continue // no such export
				}
				if got[i].Fuel != InitialFuel-got[i].Count {
					t.Errorf("step %d: fuel left %d after counting %d", i, got[i].Fuel, got[i].Count)
				}
				switch err := got[i].Err; {
				case err == "" || err == "wasm error: unreachable":
					// Returned, exited, or trapped at an unreachable:
					// exact.
					if got[i].Count != oracle[i].Count {
						t.Errorf("step %d: count %d, the oracle's %d (%s)", i, got[i].Count, oracle[i].Count, brief(got[i]))
					}
				case strings.Contains(err, "stack overflow"):
					// It comes at a depth that depends on the size of the
					// frames, which metering changes.
				default:
					// Another trap: a lower bound.
					if got[i].Count > oracle[i].Count {
						t.Errorf("step %d: count %d, over the oracle's %d (%s)", i, got[i].Count, oracle[i].Count, brief(got[i]))
					}
				}
			}
			engines := []engine{compiler}
			if tc.interp {
				engines = append(engines, interpreter)
			}
			for _, e := range engines {
				_, again := runScenario(t, out, tc.sc, e, nil)
				if !slices.Equal(again, got) {
					t.Errorf("%s, fresh runtime: %+v\nfirst run: %+v", e, again, got)
				}
			}
			var counts []int64
			for _, o := range got {
				counts = append(counts, o.Count)
			}
			t.Logf("%d blocks in %d functions; counts %v", mi.Blocks, mi.InstrumentedFuncs, counts)
		})
	}
}

// brief shows an outcome with its long outputs hashed.
func brief(o outcome) string {
	short := func(s string) string {
		if len(s) <= 64 {
			return fmt.Sprintf("%q", s)
		}
		h := sha256.Sum256([]byte(s))
		return fmt.Sprintf("%d bytes %s", len(s), hex.EncodeToString(h[:4]))
	}
	return fmt.Sprintf("{results %s output %s stdout %s stderr %s exit %d err %q count %d fuel %d}",
		o.Results, short(o.Output), short(o.Stdout), short(o.Stderr), o.ExitCode, o.Err, o.Count, o.Fuel)
}

// TestMeterFuel checks the exact budget: with as much fuel as a step
// counts, the step runs as without metering and leaves 0; with one less,
// it traps, with the fuel global at FuelExhausted, and the counter (which
// includes the block that overran) at the step's count. The steps before
// and after get unlimited fuel.
func TestMeterFuel(t *testing.T) {
	tests := []meterCase{
		{"meter", meterWasm, scenario{steps: []step{{fn: "sum", args: []uint64{10}}, {fn: "fact", args: []uint64{7}}, {fn: "multi", args: []uint64{4}}, {fn: "br_table", args: []uint64{1}}, {fn: "call_indirect", args: []uint64{2}}}}, true},
		{"sha256-c", sha256C, command("abc"), true},
		{"calc", calcWasm, command(calcExpr(rand.New(rand.NewPCG(3, 4)), 8)), true},
		{"exit_code", "../sandbox/testdata/exit_code.wasm", command(""), true},
		{"reactor-c", reactorC, reactor("123456789", "abc"), true},
		{"hello-go", helloGo, command(`{"name":"Ada"}`), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.path == helloGo {
				t.Skip("-short: the Go modules take seconds to compile")
			}
			out, _ := meter(t, readFile(t, tc.path))
			_, full := runScenario(t, out, tc.sc, compiler, nil)
			for i, f := range full {
				if f.Skipped {
					continue
				}
				if f.Err != "" {
					t.Fatalf("step %d fails with unlimited fuel: %s", i, f.Err)
				}
				budget := func(b int64) func(int) int64 {
					return func(j int) int64 {
						if j == i {
							return b
						}
						return InitialFuel
					}
				}
				_, exact := runScenario(t, out, tc.sc, compiler, budget(f.Count))
				want := f
				want.Fuel = 0
				if exact[i] != want {
					t.Errorf("step %d with fuel %d: %s\nwant %s", i, f.Count, brief(exact[i]), brief(want))
				}
				engines := []engine{compiler}
				if tc.interp {
					engines = append(engines, interpreter)
				}
				for _, e := range engines {
					_, short := runScenario(t, out, tc.sc, e, budget(f.Count-1))
					if s := short[i]; s.Err != "wasm error: unreachable" || s.Fuel != FuelExhausted || s.Count != f.Count {
						t.Errorf("%s: step %d with fuel %d: %s; want the trap of exhausted fuel, count %d", e, i, f.Count-1, brief(s), f.Count)
					}
				}
				t.Logf("step %d (%s): %d instructions", i, tc.sc.steps[i].fn, f.Count)
			}
		})
	}
}

// TestMeterFuelEveryBudget calls functions of testdata/meter.wat with
// every budget from 0 to their count: below it, the call traps for lack of
// fuel, having counted more than the budget and at most the count; at it
// and above, the call completes.
func TestMeterFuelEveryBudget(t *testing.T) {
	out, _ := meter(t, readFile(t, meterWasm))
	calls := []step{
		{fn: "sum", args: []uint64{10}},
		{fn: "fact", args: []uint64{7}},
		{fn: "multi", args: []uint64{4}},
		{fn: "br_table", args: []uint64{1}},
		{fn: "calls_trap", args: []uint64{1}},
	}
	for _, c := range calls {
		_, full := runScenario(t, out, scenario{steps: []step{c}}, compiler, nil)
		n := full[0].Count
		var sc scenario
		for range n + 2 {
			sc.steps = append(sc.steps, c)
		}
		_, got := runScenario(t, out, sc, compiler, func(i int) int64 { return int64(i) })
		for b, o := range got {
			b := int64(b)
			switch {
			case b < n && (o.Err != "wasm error: unreachable" || o.Fuel != FuelExhausted || o.Count <= b || o.Count > n):
				t.Errorf("%s%v with fuel %d: %s; want the trap of exhausted fuel, count in (%d, %d]", c.fn, c.args, b, brief(o), b, n)
			case b >= n && (o.Err != "" || o.Results != full[0].Results || o.Count != n || o.Fuel != b-n):
				t.Errorf("%s%v with fuel %d: %s; want %s, count %d", c.fn, c.args, b, brief(o), full[0].Results, n)
			}
		}
	}
}

// TestMeterFuelStops runs the fixtures that never end with a budget, and
// checks that fuel stops them: a loop in a function, output forever, and
// a call of one from the reactor fixture.
func TestMeterFuelStops(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		sc     scenario
		budget int64
	}{
		{"infinite_loop", "../sandbox/testdata/infinite_loop.wasm", command(""), 10_000_000},
		// Every write is 64 KiB of output, kept in memory here.
		{"big_output", "../sandbox/testdata/big_output.wasm", command(""), 1000},
		{"reactor/l", "../sandbox/testdata/reactor.wasm", reactor("l"), 10_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _ := meter(t, readFile(t, tt.path))
			last := len(tt.sc.steps) - 1
			_, got := runScenario(t, out, tt.sc, compiler, func(i int) int64 {
				if i == last {
					return tt.budget
				}
				return InitialFuel
			})
			o := got[len(got)-1]
			if o.Err != "wasm error: unreachable" || o.Fuel != FuelExhausted || o.Count <= tt.budget || o.Count > tt.budget+100 {
				t.Errorf("got %s; want the trap of exhausted fuel after just over %d instructions", brief(o), tt.budget)
			}
		})
	}
}

// TestMeterFixtures meters every fixture and checks that the output
// validates (with wazero, and with wabt's wasm-validate if installed),
// exports the two globals, keeps every export of the input, and reports
// the same Info as Prepare.
func TestMeterFixtures(t *testing.T) {
	wasmValidate, lookErr := exec.LookPath("wasm-validate")
	for _, path := range append(fixtures(t), reactorC, reactorGo) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			ctx := context.Background()
			in := readFile(t, path)
			if err := validate(ctx, in); err != nil {
				t.Skipf("wazero itself refuses the module: %v", err)
			}
			out, info, mi, err := PrepareMetered(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			_, wantInfo := prepare(t, in)
			if !reflect.DeepEqual(info, wantInfo) {
				t.Errorf("Info: got %+v, Prepare says %+v", info, wantInfo)
			}
			exports := exportSet(t, out)
			for name, e := range exportSet(t, in) {
				if exports[name] != e {
					t.Errorf("export %q: got %v, want %v", name, exports[name], e)
				}
			}
			for _, g := range info.Globals {
				if exports[g.Export] != (Export{Name: g.Export, Kind: KindGlobal, Index: g.Index}) {
					t.Errorf("no export %s", g.Export)
				}
			}
			m, err := Decode(ctx, out)
			if err != nil {
				t.Fatal(err)
			}
			types := m.GlobalTypes()
			for _, g := range []struct {
				name string
				idx  uint32
			}{{CounterExport, mi.CounterGlobal}, {FuelExport, mi.FuelGlobal}} {
				if exports[g.name] != (Export{Name: g.name, Kind: KindGlobal, Index: g.idx}) {
					t.Errorf("export %s: got %+v, want global %d", g.name, exports[g.name], g.idx)
				}
				if types[g.idx] != (GlobalType{Type: I64, Mutable: true}) {
					t.Errorf("global %d (%s) is %+v, want a mutable i64", g.idx, g.name, types[g.idx])
				}
			}
			if mi.FuelGlobal != uint32(len(types)-1) || mi.CounterGlobal != mi.FuelGlobal-1 {
				t.Errorf("the globals are %d and %d; want the last two of %d", mi.CounterGlobal, mi.FuelGlobal, len(types))
			}
			if lookErr == nil {
				f := filepath.Join(t.TempDir(), "m.wasm")
				if err := os.WriteFile(f, out, 0o600); err != nil {
					t.Fatal(err)
				}
				if msg, err := exec.Command(wasmValidate, f).CombinedOutput(); err != nil {
					t.Errorf("wasm-validate: %v\n%s", err, msg)
				}
			}
		})
	}
}

// TestMeterDeterministic checks that metering gives the same bytes twice.
func TestMeterDeterministic(t *testing.T) {
	for _, path := range []string{meterWasm, calcWasm, sha256C, helloGo} {
		in := readFile(t, path)
		out1, mi1 := meter(t, in)
		out2, mi2 := meter(t, in)
		if !bytes.Equal(out1, out2) || *mi1 != *mi2 {
			t.Errorf("%s: two runs differ", path)
		}
	}
}

// TestMeterRefuses checks the inputs Meter must refuse: a module already
// metered, or exporting the meter's names; code that names a global or
// local that would be the meter's; and the proposals the decoder does not
// accept (tail calls and exceptions), which the meter could not count.
func TestMeterRefuses(t *testing.T) {
	metered, _ := meter(t, readFile(t, meterWasm))
	withGlobal := func(code ...byte) []byte {
		m := &Module{
			Types:   []FuncType{{Params: []ValType{I32}}},
			Funcs:   []uint32{0},
			Globals: []GlobalDef{{Type: GlobalType{Type: I64, Mutable: true}, Init: i64Init(0)}},
			Code:    []Body{{Locals: []LocalGroup{{Count: 1, Type: I64}}, Expr: append(code, byte(OpEnd))}},
		}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	exporting := func(name string) []byte {
		m := &Module{
			Globals: []GlobalDef{{Type: GlobalType{Type: I64, Mutable: true}, Init: i64Init(0)}},
			Exports: []Export{{Name: name, Kind: KindGlobal, Index: 0}},
		}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"metered twice", metered, ErrReserved},
		{"exports the counter's name", exporting(CounterExport), ErrReserved},
		{"exports the fuel's name", exporting(FuelExport), ErrReserved},
		{"global.set of the counter-to-be", withGlobal(0x42, 5, 0x24, 1), ErrInvalid},
		{"global.get of the fuel-to-be", withGlobal(0x23, 2, 0x1a), ErrInvalid},
		{"global.get in dead code", withGlobal(0x0f, 0x23, 1, 0x1a), ErrInvalid},
		{"local.get of the meter's local-to-be", withGlobal(0x20, 2, 0x1a), ErrInvalid},
		{"local.set of the meter's local-to-be", withGlobal(0x42, 0, 0x21, 2), ErrInvalid},
		{"branch to a missing label", withGlobal(0x0c, 1), ErrInvalid},
		{"else in a block", withGlobal(0x02, 0x40, 0x05, 0x0b), ErrInvalid},
		{"return_call (tail calls)", withGlobal(0x12, 0), ErrMalformed},
		{"return_call_indirect (tail calls)", withGlobal(0x41, 0, 0x13, 0, 0), ErrMalformed},
		{"try (exceptions)", withGlobal(0x06, 0x40, 0x0b), ErrMalformed},
		{"throw (exceptions)", withGlobal(0x08, 0), ErrMalformed},
		{"try_table (exceptions)", withGlobal(0x1f, 0x40, 0, 0x0b), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := PrepareMetered(context.Background(), tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// The same code with in-range indices is metered.
	for _, code := range [][]byte{{0x42, 5, 0x24, 0}, {0x20, 1, 0x1a}, {0x20, 0, 0x1a}} {
		if _, _, _, err := PrepareMetered(context.Background(), withGlobal(code...)); err != nil {
			t.Errorf("code % x: %v", code, err)
		}
	}
}

// TestMeterLocalsLimit checks a body at MaxFunctionLocals: metering needs
// one more local, which is over the limit.
func TestMeterLocalsLimit(t *testing.T) {
	body := func(locals uint32) []byte {
		m := &Module{
			Types: []FuncType{{}},
			Funcs: []uint32{0},
			Code:  []Body{{Locals: []LocalGroup{{Count: locals, Type: I32}}, Expr: []byte{byte(OpNop), byte(OpEnd)}}},
		}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, _, _, err := PrepareMetered(context.Background(), body(MaxFunctionLocals)); !errors.Is(err, ErrLimit) {
		t.Errorf("%d locals: got %v, want ErrLimit", MaxFunctionLocals, err)
	}
	if _, _, _, err := PrepareMetered(context.Background(), body(MaxFunctionLocals-1)); err != nil {
		t.Errorf("%d locals: %v", MaxFunctionLocals-1, err)
	}
}

func TestMeterContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := PrepareMetered(ctx, readFile(t, sha256C)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
