package instrument

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

const (
	helloGo  = "../../examples/hello-go/hello-go.wasm"
	sha256C  = "../../examples/sha256-c/sha256-c.wasm"
	counter  = "../sandbox/testdata/counter.wasm"
	echoWasm = "../sandbox/testdata/echo.wasm"
)

// fixtures returns every WebAssembly binary the tests round-trip: the
// sandbox's fixtures, this package's, and the real example modules.
func fixtures(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../sandbox/testdata/*.wasm", "testdata/*.wasm"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return append(files, sha256C, helloGo)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func prepare(t testing.TB, wasm []byte) ([]byte, *Info) {
	t.Helper()
	out, info, err := Prepare(context.Background(), wasm)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return out, info
}

// TestPrepareFixtures round-trips every fixture: Prepare succeeds on every
// module wazero accepts, its output validates, and the globals it lists
// and exports are exactly the module's own mutable globals, as wasm2wat
// (an independent decoder) reads them.
func TestPrepareFixtures(t *testing.T) {
	wasm2wat, lookErr := exec.LookPath("wasm2wat")
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			ctx := context.Background()
			in := readFile(t, path)
			if err := validate(ctx, in); err != nil {
				if _, _, perr := Prepare(ctx, in); perr == nil {
					t.Errorf("Prepare accepted a module wazero refuses")
				}
				t.Skipf("wazero itself refuses the module: %v", err)
			}
			out, info := prepare(t, in)
			if err := validate(ctx, out); err != nil {
				t.Fatalf("output does not validate: %v", err)
			}
			var want, exported []Global
			if lookErr == nil {
				want = watMutableGlobals(t, wasm2wat, in)
				exported = watPrefixExports(t, wasm2wat, out)
			} else {
				t.Logf("wasm2wat not found (%v): checking globals with this package's decoder", lookErr)
				want = decodedMutableGlobals(t, in)
				exported = decodedPrefixExports(t, out)
			}
			if !slices.Equal(info.Globals, want) {
				t.Errorf("Info.Globals: got %v, want %v", info.Globals, want)
			}
			if !slices.Equal(exported, want) {
				t.Errorf("exports under %s: got %v, want %v", GlobalPrefix, exported, want)
			}
			if path == counter && !slices.Equal(info.Globals, []Global{{Index: 0, Export: "__cloister_global_0", Type: I32}}) {
				t.Errorf("counter.wasm has one mutable i32 global, index 0; got %v", info.Globals)
			}
			// Every export of the input is kept.
			outExports := exportSet(t, out)
			for name, e := range exportSet(t, in) {
				if outExports[name] != e {
					t.Errorf("export %q: got %v, want %v", name, outExports[name], e)
				}
			}
		})
	}
}

var (
	watGlobal = regexp.MustCompile(`^  \(global \(;(\d+);\) \(mut (\w+)\)`)
	watExport = regexp.MustCompile(`^  \(export "` + GlobalPrefix + `(\d+)" \(global (\d+)\)\)`)
)

// wasm2watLines returns the text format of wasm, line by line.
func wasm2watLines(t *testing.T, wasm2wat string, wasm []byte) []string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.wasm")
	if err := os.WriteFile(f, wasm, 0o600); err != nil {
		t.Fatal(err)
	}
	text, err := exec.Command(wasm2wat, f).Output()
	if err != nil {
		t.Fatalf("wasm2wat: %v", err)
	}
	return strings.Split(string(text), "\n")
}

// watMutableGlobals lists the mutable globals wasm defines, read by wasm2wat.
func watMutableGlobals(t *testing.T, wasm2wat string, wasm []byte) []Global {
	var gs []Global
	types := map[string]ValType{"i32": I32, "i64": I64, "f32": F32, "f64": F64, "v128": V128, "funcref": FuncRef, "externref": ExternRef}
	for _, line := range wasm2watLines(t, wasm2wat, wasm) {
		if m := watGlobal.FindStringSubmatch(line); m != nil {
			idx, _ := strconv.ParseUint(m[1], 10, 32)
			gs = append(gs, Global{Index: uint32(idx), Export: GlobalPrefix + m[1], Type: types[m[2]]})
		}
	}
	return gs
}

// watPrefixExports lists the exports under GlobalPrefix, read by wasm2wat.
// Their types are taken from the module's globals.
func watPrefixExports(t *testing.T, wasm2wat string, wasm []byte) []Global {
	typeOf := make(map[uint32]ValType)
	for _, g := range watMutableGlobals(t, wasm2wat, wasm) {
		typeOf[g.Index] = g.Type
	}
	var gs []Global
	for _, line := range wasm2watLines(t, wasm2wat, wasm) {
		if m := watExport.FindStringSubmatch(line); m != nil {
			if m[1] != m[2] {
				t.Errorf("export %s%s names global %s", GlobalPrefix, m[1], m[2])
			}
			idx, _ := strconv.ParseUint(m[2], 10, 32)
			gs = append(gs, Global{Index: uint32(idx), Export: GlobalPrefix + m[1], Type: typeOf[uint32(idx)]})
		}
	}
	slices.SortFunc(gs, func(a, b Global) int { return int(a.Index) - int(b.Index) })
	return gs
}

func decodedMutableGlobals(t *testing.T, wasm []byte) []Global {
	m, err := Decode(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	var gs []Global
	base := m.NumImported(KindGlobal)
	for i, g := range m.Globals {
		if g.Type.Mutable {
			idx := base + uint32(i)
			gs = append(gs, Global{Index: idx, Export: GlobalExportName(idx), Type: g.Type.Type})
		}
	}
	return gs
}

func decodedPrefixExports(t *testing.T, wasm []byte) []Global {
	m, err := Decode(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	types := m.GlobalTypes()
	var gs []Global
	for _, e := range m.Exports {
		if strings.HasPrefix(e.Name, GlobalPrefix) {
			gs = append(gs, Global{Index: e.Index, Export: e.Name, Type: types[e.Index].Type})
		}
	}
	slices.SortFunc(gs, func(a, b Global) int { return int(a.Index) - int(b.Index) })
	return gs
}

func exportSet(t *testing.T, wasm []byte) map[string]Export {
	m, err := Decode(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	set := make(map[string]Export)
	for _, e := range m.Exports {
		set[e.Name] = e
	}
	return set
}

// runResult is what running a WASI command shows.
type runResult struct {
	Stdout, Stderr string
	ExitCode       uint32
	Err            string // the first line of a non-exit error
}

// runCommand runs wasm as a WASI command with stdin and env, and returns
// what it printed and how it ended.
func runCommand(t *testing.T, wasm []byte, stdin string, env map[string]string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(1024))
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	var stdout, stderr bytes.Buffer
	cfg := wazero.NewModuleConfig().
		WithStdin(strings.NewReader(stdin)).
		WithStdout(&stdout).
		WithStderr(&stderr).
		WithArgs("fn")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		cfg = cfg.WithEnv(k, env[k])
	}
	var res runResult
	mod, err := r.InstantiateWithConfig(ctx, wasm, cfg)
	if mod != nil {
		_ = mod.Close(ctx)
	}
	var exit *sys.ExitError
	switch {
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		res.Err, _, _ = strings.Cut(err.Error(), "\n")
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	return res
}

// TestPrepareBehaviour runs WASI commands before and after Prepare and
// compares what they print and how they end.
func TestPrepareBehaviour(t *testing.T) {
	env := map[string]string{"CLOISTER_FUNCTION": "x"}
	tests := []struct {
		path  string
		stdin string
		want  string // the expected stdout, if known
	}{
		{echoWasm, "hello, echo\n", "hello, echo\n"},
		{counter, "", "1 1\n"},
		{sha256C, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"},
		{helloGo, `{"name":"Ada"}`, `{"greeting":"Hello, Ada!","function":"x","bytes":14}` + "\n"},
		{helloGo, `{"name":`, ""},
		// The sandbox's fixtures that end by themselves: exits, traps,
		// refused imports and a stack overflow must be the same too.
		{"../sandbox/testdata/exit_code.wasm", "", ""},
		{"../sandbox/testdata/trap.wasm", "", ""},
		{"../sandbox/testdata/div_zero.wasm", "", ""},
		{"../sandbox/testdata/out_of_bounds.wasm", "", ""},
		{"../sandbox/testdata/data_out_of_bounds.wasm", "", ""},
		{"../sandbox/testdata/output_then_exit.wasm", "", ""},
		{"../sandbox/testdata/output_then_trap.wasm", "", ""},
		{"../sandbox/testdata/stderr_flood.wasm", "", ""},
		{"../sandbox/testdata/env.wasm", "", ""},
		{"../sandbox/testdata/clock.wasm", "", ""},
		{"../sandbox/testdata/random.wasm", "", ""},
		{"../sandbox/testdata/no_memory.wasm", "", ""},
		{"../sandbox/testdata/stack_overflow.wasm", "", ""},
		{"../sandbox/testdata/bad_import.wasm", "", ""},
		{"../sandbox/testdata/import_global.wasm", "", ""},
		{"../sandbox/testdata/not_command.wasm", "", ""},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path)+"/"+tt.stdin, func(t *testing.T) {
			in, err := os.ReadFile(tt.path)
			if errors.Is(err, os.ErrNotExist) {
				t.Skipf("fixture removed: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			out, _ := prepare(t, in)
			want := runCommand(t, in, tt.stdin, env)
			got := runCommand(t, out, tt.stdin, env)
			if got != want {
				t.Errorf("prepared module: got %+v\noriginal: %+v", got, want)
			}
			if tt.want != "" && got.Stdout != tt.want {
				t.Errorf("stdout: got %q, want %q", got.Stdout, tt.want)
			}
		})
	}
}

// TestCounterGlobalReset runs the prepared counter, sees its global change
// through the export Prepare added, sets it back, and runs it again.
func TestCounterGlobalReset(t *testing.T) {
	ctx := context.Background()
	out, info := prepare(t, readFile(t, counter))
	if len(info.Globals) != 1 {
		t.Fatalf("Info.Globals: got %v, want one", info.Globals)
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	var stdout bytes.Buffer
	mod, err := r.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithStdout(&stdout))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(ctx)
	g, ok := mod.ExportedGlobal(info.Globals[0].Export).(api.MutableGlobal)
	if !ok {
		t.Fatalf("%s is not exported as a mutable global", info.Globals[0].Export)
	}
	if g.Type() != api.ValueTypeI32 {
		t.Errorf("global type: got %v, want i32", api.ValueTypeName(g.Type()))
	}
	if got := g.Get(); got != 1 || stdout.String() != "1 1\n" {
		t.Fatalf("after _start: global %d, stdout %q; want 1, %q", got, stdout.String(), "1 1\n")
	}
	g.Set(0)
	if got := g.Get(); got != 0 {
		t.Fatalf("after Set(0): got %d", got)
	}
	// Run again: the global was reset, the memory cell was not.
	stdout.Reset()
	if _, err := mod.ExportedFunction("_start").Call(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.Get(); got != 1 || stdout.String() != "1 2\n" {
		t.Fatalf("after a second _start: global %d, stdout %q; want 1, %q", got, stdout.String(), "1 2\n")
	}
}

// TestInfo checks Info for the fixtures written for it.
func TestInfo(t *testing.T) {
	g := func(idx uint32, typ ValType) Global {
		return Global{Index: idx, Export: GlobalExportName(idx), Type: typ}
	}
	tests := []struct {
		file string
		want Info
	}{
		{"table_set_grow", Info{MutatesTables: true}},
		{"data_drop", Info{DropsData: true}},
		{"memory_grow", Info{Globals: []Global{g(0, I32)}, MemoryGrows: true}},
		{"no_globals", Info{}},
		{"globals", Info{Globals: []Global{g(3, I32), g(4, I64), g(5, F32), g(6, F64), g(7, V128), g(8, FuncRef), g(9, ExternRef)}}},
		{"simd", Info{Globals: []Global{g(0, V128)}}},
		{"multi_value", Info{}},
		{"br_table", Info{Globals: []Global{g(0, I64)}}},
		{"all_ops", Info{Globals: []Global{g(0, I32)}, MutatesTables: true, DropsData: true, MemoryGrows: true}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, info := prepare(t, readFile(t, "testdata/"+tt.file+".wasm"))
			if !reflect.DeepEqual(*info, tt.want) {
				t.Errorf("got %+v\nwant %+v", *info, tt.want)
			}
		})
	}
}

// TestInfoPerOpcode builds a module around each table, data and memory
// instruction alone and checks which flag it sets.
func TestInfoPerOpcode(t *testing.T) {
	tests := []struct {
		name string
		code []byte // the instruction, between two unreachables
		want Info
	}{
		{"table.get", []byte{0x25, 0}, Info{}},
		{"table.set", []byte{0x26, 0}, Info{MutatesTables: true}},
		{"table.size", []byte{0xfc, 16, 0}, Info{}},
		{"table.grow", []byte{0xfc, 15, 0}, Info{MutatesTables: true}},
		{"table.fill", []byte{0xfc, 17, 0}, Info{MutatesTables: true}},
		{"table.copy", []byte{0xfc, 14, 0, 0}, Info{MutatesTables: true}},
		{"table.init", []byte{0xfc, 12, 0, 0}, Info{MutatesTables: true}},
		{"elem.drop", []byte{0xfc, 13, 0}, Info{MutatesTables: true}},
		{"data.drop", []byte{0xfc, 9, 0}, Info{DropsData: true}},
		{"memory.init", []byte{0xfc, 8, 0, 0}, Info{}},
		{"memory.copy", []byte{0xfc, 10, 0, 0}, Info{}},
		{"memory.fill", []byte{0xfc, 11, 0}, Info{}},
		{"memory.size", []byte{0x3f, 0}, Info{}},
		{"memory.grow", []byte{0x40, 0}, Info{MemoryGrows: true}},
		{"data.drop, sub-opcode in two bytes", []byte{0xfc, 0x89, 0x00, 0}, Info{DropsData: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Module{
				Types:        []FuncType{{}},
				Funcs:        []uint32{0},
				Tables:       []TableType{{Elem: FuncRef, Limits: Limits{Min: 1}}},
				Memories:     []Limits{{Min: 1}},
				Elements:     []byte{1, 0x01, 0x00, 1, 0}, // one passive segment: function 0
				NumElements:  1,
				DataCount:    1,
				HasDataCount: true,
				Code:         []Body{{Expr: append(append([]byte{0x00}, tt.code...), 0x00, 0x0b)}},
				Data:         []byte{1, 0x01, 1, 'x'}, // one passive segment: "x"
				NumData:      1,
			}
			wasm, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			_, info := prepare(t, wasm)
			if !reflect.DeepEqual(*info, tt.want) {
				t.Errorf("got %+v, want %+v", *info, tt.want)
			}
		})
	}
}

// TestFixtureFunctions calls the exported functions of the fixtures before
// and after Prepare with the same arguments, and compares the results.
func TestFixtureFunctions(t *testing.T) {
	type call struct {
		fn   string
		args []uint64
	}
	tests := []struct {
		file  string
		calls []call
	}{
		{"table_set_grow", []call{{"size", nil}, {"grow", []uint64{3}}, {"set", []uint64{3}}, {"set", []uint64{4}}, {"grow", []uint64{100}}, {"size", nil}}},
		{"data_drop", []call{{"load", nil}, {"load", nil}}},
		{"memory_grow", []call{{"size", nil}, {"grow", []uint64{2}}, {"grow", []uint64{2}}, {"size", nil}}},
		{"no_globals", []call{{"apply", []uint64{21}}, {"read", []uint64{65534}}}},
		{"simd", []call{{"dot", []uint64{1, 2, 3, 4}}, {"dot", []uint64{5, 0xffffffff, 7, 8}}, {"lane", nil}}},
		{"multi_value", []call{{"divmod", []uint64{17, 5}}, {"divmod", []uint64{1, 0}}, {"swap_if", []uint64{1, 2, 0}}, {"swap_if", []uint64{1, 2, 1}}, {"sum_to", []uint64{100}}}},
		{"br_table", []call{{"pick", []uint64{0}}, {"pick", []uint64{3}}, {"pick", []uint64{4}}, {"pick", []uint64{0xffffffff}}}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			in := readFile(t, "testdata/"+tt.file+".wasm")
			out, _ := prepare(t, in)
			results := func(wasm []byte) []string {
				r := wazero.NewRuntime(ctx)
				defer r.Close(ctx)
				mod, err := r.Instantiate(ctx, wasm)
				if err != nil {
					t.Fatal(err)
				}
				var res []string
				for _, c := range tt.calls {
					vals, err := mod.ExportedFunction(c.fn).Call(ctx, c.args...)
					if err != nil {
						e, _, _ := strings.Cut(err.Error(), "\n")
						res = append(res, "error: "+e)
						continue
					}
					res = append(res, fmt.Sprint(vals))
				}
				return res
			}
			want, got := results(in), results(out)
			if !slices.Equal(got, want) {
				t.Errorf("prepared: %v\noriginal: %v", got, want)
			}
			t.Logf("%v", got)
		})
	}
}

// TestGlobalsFixture instantiates globals.wasm, prepared, with an env
// module that provides its imports, and reads and writes its globals
// through both the module's own exports and the ones Prepare added.
func TestGlobalsFixture(t *testing.T) {
	ctx := context.Background()
	out, info := prepare(t, readFile(t, "testdata/globals.wasm"))
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	// env exports "base" (i32 7) and "shared" (mutable i64 10).
	env := &Module{
		Globals: []GlobalDef{
			{Type: GlobalType{Type: I32}, Init: []byte{0x41, 7, 0x0b}},
			{Type: GlobalType{Type: I64, Mutable: true}, Init: []byte{0x42, 10, 0x0b}},
		},
		Exports: []Export{{Name: "base", Kind: KindGlobal, Index: 0}, {Name: "shared", Kind: KindGlobal, Index: 1}},
	}
	envWasm, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.InstantiateWithConfig(ctx, envWasm, wazero.NewModuleConfig().WithName("env")); err != nil {
		t.Fatal(err)
	}
	mod, err := r.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) api.Global {
		g := mod.ExportedGlobal(name)
		if g == nil {
			t.Fatalf("no exported global %q", name)
		}
		return g
	}
	for _, g := range info.Globals {
		if _, ok := get(g.Export).(api.MutableGlobal); !ok {
			t.Errorf("%s is not mutable", g.Export)
		}
	}
	b := get(GlobalExportName(3))
	if b.Get() != 7 || get("b").Get() != 7 {
		t.Fatalf("global 3: got %d and %d, want 7 (initialized from the import)", b.Get(), get("b").Get())
	}
	if _, err := mod.ExportedFunction("bump").Call(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Get() != 8 || get("b_too").Get() != 8 {
		t.Errorf("after bump: global 3 is %d, b_too %d; want 8", b.Get(), get("b_too").Get())
	}
	if got := int64(get(GlobalExportName(4)).Get()); got != 9 {
		t.Errorf("after bump: global 4 is %d, want -1+10", got)
	}
	b.(api.MutableGlobal).Set(7)
	if get("b").Get() != 7 {
		t.Errorf("a Set through %s is not seen through b", GlobalExportName(3))
	}
	if mod.ExportedGlobal(GlobalExportName(1)) != nil || mod.ExportedGlobal(GlobalExportName(2)) != nil {
		t.Errorf("Prepare exported an imported or immutable global")
	}
}

// TestDeterministic checks that Prepare gives the same bytes twice, and
// that preparing its output changes nothing.
func TestDeterministic(t *testing.T) {
	for _, path := range []string{counter, sha256C, helloGo, "testdata/globals.wasm", "testdata/all_ops.wasm"} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			in := readFile(t, path)
			out1, info1 := prepare(t, in)
			out2, info2 := prepare(t, in)
			if !bytes.Equal(out1, out2) || !reflect.DeepEqual(info1, info2) {
				t.Fatalf("two runs differ")
			}
			out3, info3 := prepare(t, out1)
			if !bytes.Equal(out1, out3) || !reflect.DeepEqual(info1, info3) {
				t.Fatalf("Prepare of its own output differs: %d bytes, Info %+v; want %d bytes, Info %+v", len(out3), info3, len(out1), info1)
			}
		})
	}
}

func TestReservedExportNames(t *testing.T) {
	// Module with one mutable i32 global (index 0), one immutable
	// (index 1), and a function.
	base := func(exports ...Export) []byte {
		m := &Module{
			Types: []FuncType{{}},
			Funcs: []uint32{0},
			Globals: []GlobalDef{
				{Type: GlobalType{Type: I32, Mutable: true}, Init: []byte{0x41, 0, 0x0b}},
				{Type: GlobalType{Type: I32}, Init: []byte{0x41, 0, 0x0b}},
			},
			Exports: exports,
			Code:    []Body{{Expr: []byte{0x0b}}},
		}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		exports []Export
		want    error
	}{
		{"own name already there", []Export{{Name: "__cloister_global_0", Kind: KindGlobal, Index: 0}}, nil},
		{"other names kept", []Export{{Name: "g", Kind: KindGlobal, Index: 0}, {Name: "f", Kind: KindFunc, Index: 0}}, nil},
		{"function under the prefix", []Export{{Name: "__cloister_global_0", Kind: KindFunc, Index: 0}}, ErrReserved},
		{"wrong index", []Export{{Name: "__cloister_global_1", Kind: KindGlobal, Index: 0}}, ErrReserved},
		{"immutable global", []Export{{Name: "__cloister_global_1", Kind: KindGlobal, Index: 1}}, ErrReserved},
		{"leading zero", []Export{{Name: "__cloister_global_00", Kind: KindGlobal, Index: 0}}, ErrReserved},
		{"bare prefix", []Export{{Name: GlobalPrefix, Kind: KindGlobal, Index: 0}}, ErrReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, info, err := Prepare(context.Background(), base(tt.exports...))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if len(info.Globals) != 1 || info.Globals[0].Index != 0 {
				t.Errorf("Info.Globals: got %v", info.Globals)
			}
			set := exportSet(t, out)
			want := len(tt.exports)
			if !slices.ContainsFunc(tt.exports, func(e Export) bool { return e.Name == GlobalExportName(0) }) {
				want++ // Prepare adds its own
			}
			if len(set) != want || set[GlobalExportName(0)] != (Export{Name: GlobalExportName(0), Kind: KindGlobal, Index: 0}) {
				t.Errorf("exports: got %v, want %d with %s", set, want, GlobalExportName(0))
			}
			for _, e := range tt.exports {
				if set[e.Name] != e {
					t.Errorf("export %q lost", e.Name)
				}
			}
		})
	}
}

func TestPrepareInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"call of a missing function", oneBody(0, 0x10, 5, 0x0b)},
		{"type mismatch", oneBody(0, 0x41, 0, 0x0b)},
		{"missing data count", mod(typeVoid, oneFunc, sec(SectionMemory, 1, 0, 1), codeSec([]byte{0, 0xfc, 9, 0, 0x0b}), sec(SectionData, 1, 1, 0))},
		{"block type index out of range", oneBody(0, 0x02, 0x05, 0x0b, 0x0b)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Prepare(context.Background(), tt.in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPrepareContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Prepare(ctx, readFile(t, sha256C)); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
