package sandbox

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// header is the magic number and version 1 of a binary module.
const header = wasmHeader

// section encodes one section for hand-written test modules.
func section(id byte, body string) string {
	return string(appendSection(nil, id, []byte(body)))
}

// leb encodes v as unsigned LEB128.
func leb(v uint32) string { return string(appendLEB(nil, v)) }

// structure returns s without its compile estimates, which the tests of
// compile_cost.go check.
func structure(s moduleShape) moduleShape {
	s.compileWork, s.maxDepth = 0, 0
	return s
}

func TestPrepareModuleFixtures(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string]moduleShape{
		"echo.wasm":          {hasMemory: true, memoryMin: 1},
		"trap.wasm":          {},
		"big_output.wasm":    {hasMemory: true, memoryMin: 2},
		"huge_memory.wasm":   {hasMemory: true, memoryMin: 20000},
		"import_global.wasm": {hasMemory: true, memoryMin: 1, nonFuncImports: 1},
		"no_memory.wasm":     {},
	}
	for _, p := range paths {
		name := filepath.Base(p)
		t.Run(name, func(t *testing.T) {
			in := fixture(t, name)
			out, shape, err := prepareModule(in)
			if name == "table_huge.wasm" {
				if !errors.Is(err, errTableLimit) {
					t.Fatalf("got error %v, want %v", err, errTableLimit)
				}
				return
			}
			if err != nil {
				t.Fatalf("prepareModule: %v", err)
			}
			// The fixtures have no custom sections and only table_bomb and
			// reactor_table have a table without a maximum to bound, so the
			// others come out unchanged.
			if name != "table_bomb.wasm" && name != "reactor_table.wasm" && !bytes.Equal(out, in) {
				t.Errorf("got a changed module, want it unchanged")
			}
			if want, ok := shapes[name]; ok && structure(shape) != want {
				t.Errorf("got shape %+v, want %+v", shape, want)
			}
		})
	}
}

func TestPrepareModule(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  string // the prepared module; empty means the input unchanged
		shape moduleShape
	}{
		{name: "empty module", in: header},
		{name: "memory min 3", in: header + section(sectionMemory, "\x01\x00\x03"), shape: moduleShape{hasMemory: true, memoryMin: 3}},
		{name: "memory min 2 max 5", in: header + section(sectionMemory, "\x01\x01\x02\x05"), shape: moduleShape{hasMemory: true, memoryMin: 2}},
		{name: "memory min as multi-byte LEB", in: header + section(sectionMemory, "\x01\x00"+leb(20000)), shape: moduleShape{hasMemory: true, memoryMin: 20000}},
		{name: "imported memory", in: header + section(sectionImport, "\x01\x01m\x01n\x02\x00\x07"), shape: moduleShape{hasMemory: true, memoryMin: 7, nonFuncImports: 1}},
		{name: "imported function", in: header + section(sectionImport, "\x01\x01m\x01f\x00\x00")},
		{name: "imported table", in: header + section(sectionImport, "\x01\x01m\x01t\x01\x70\x00\x01"), shape: moduleShape{nonFuncImports: 1}},
		{name: "imported global", in: header + section(sectionImport, "\x01\x01m\x01g\x03\x7f\x00"), shape: moduleShape{nonFuncImports: 1}},
		{
			name: "custom sections dropped",
			in:   header + section(sectionCustom, "\x04name\x01\xff\xff\xff\xff\x0f") + section(sectionMemory, "\x01\x00\x01") + section(sectionCustom, "\x03abc"),
			want: header + section(sectionMemory, "\x01\x00\x01"),
			// The name section above asks wazero for a 4-billion-entry map.
			shape: moduleShape{hasMemory: true, memoryMin: 1},
		},
		{
			name: "table without maximum bounded",
			in:   header + section(sectionTable, "\x01\x70\x00\x01"),
			want: header + section(sectionTable, "\x01\x70\x01\x01"+leb(MaxTableEntries)),
		},
		{
			name: "table with large maximum bounded",
			in:   header + section(sectionTable, "\x01\x70\x01\x01"+leb(1<<27)),
			want: header + section(sectionTable, "\x01\x70\x01\x01"+leb(MaxTableEntries)),
		},
		{
			name: "table with small maximum kept",
			in:   header + section(sectionTable, "\x01\x70\x01\x02\x09"),
		},
		{
			name: "table at the limit kept",
			in:   header + section(sectionTable, "\x01\x70\x01"+leb(MaxTableEntries)+leb(MaxTableEntries)),
		},
		{
			name: "table with initializer bounded",
			in:   header + section(sectionTable, "\x01\x40\x00\x64\x70\x00\x01\xd0\x70\x0b"),
			want: header + section(sectionTable, "\x01\x40\x00\x64\x70\x01\x01"+leb(MaxTableEntries)+"\xd0\x70\x0b"),
		},
		{
			name: "globals with constant expressions",
			in: header + section(sectionGlobal, "\x04"+
				"\x7f\x00\x41\x7f\x0b"+ // i32 = -1
				"\x7e\x01\x42\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01\x0b"+ // mut i64, 10-byte LEB
				"\x7c\x00\x44\x00\x00\x00\x00\x00\x00\xf0\x3f\x0b"+ // f64 = 1
				"\x7b\x00\xfd\x0c"+strings.Repeat("\x00", 16)+"\x0b"), // v128
		},
		{
			name: "element segments of every kind",
			in: header + section(sectionElement, "\x08"+
				"\x00\x41\x00\x0b\x02\x00\x01"+
				"\x01\x00\x01\x00"+
				"\x02\x00\x41\x00\x0b\x00\x01\x00"+
				"\x03\x00\x01\x00"+
				"\x04\x41\x00\x0b\x01\xd2\x00\x0b"+
				"\x05\x70\x01\xd0\x70\x0b"+
				"\x06\x00\x41\x00\x0b\x70\x01\xd2\x00\x0b"+
				"\x07\x70\x01\xd2\x00\x0b"),
		},
		{
			name: "data segments of every kind",
			in:   header + section(sectionData, "\x03"+"\x00\x41\x00\x0b\x02hi"+"\x01\x01x"+"\x02\x00\x23\x00\x0b\x00"),
		},
		{
			name: "code with locals",
			in:   header + section(sectionCode, "\x02"+"\x04\x01\x02\x7f\x0b"+"\x02\x00\x0b"),
		},
		{
			name: "types with a recursion group",
			in:   header + section(sectionType, "\x02"+"\x60\x01\x7f\x01\x7e"+"\x4e\x01\x60\x00\x01\x63\x00"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, shape, err := prepareModule([]byte(tt.in))
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if string(out) != want {
				t.Errorf("got module %x, want %x", out, want)
			}
			if structure(shape) != tt.shape {
				t.Errorf("got shape %+v, want %+v", shape, tt.shape)
			}
		})
	}
}

// manyLocals returns n bodies declaring maxFunctionLocals locals each.
func manyLocals(n int) []instrument.Body {
	bodies := make([]instrument.Body, n)
	for i := range bodies {
		bodies[i] = instrument.Body{Locals: []instrument.LocalGroup{{Count: maxFunctionLocals, Type: instrument.I64}}, Expr: []byte{byte(instrument.OpEnd)}}
	}
	return bodies
}

// manyParams returns a module of n functions of params i32 parameters,
// exporting none: prepareModule does not check exports.
func manyParams(params, n int) []byte {
	m := &instrument.Module{
		Types: []instrument.FuncType{{Params: make([]instrument.ValType, params)}},
		Funcs: make([]uint32, n),
		Code:  make([]instrument.Body, n),
	}
	for i := range m.Types[0].Params {
		m.Types[0].Params[i] = instrument.I32
	}
	for i := range m.Code {
		m.Code[i] = instrument.Body{Expr: []byte{byte(instrument.OpEnd)}}
	}
	b, err := m.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// brTable returns a body with one br_table of n entries, all to the same
// block: n edges into one label.
func brTable(n int) instrument.Body {
	b := []byte{byte(instrument.OpBlock), 0x40, byte(instrument.OpI32Const), 0, byte(instrument.OpBrTable)}
	b = instrument.AppendU32(b, uint32(n))
	for range n + 1 {
		b = append(b, 0)
	}
	return instrument.Body{Expr: append(b, byte(instrument.OpEnd), byte(instrument.OpEnd))}
}

func TestPrepareModuleRejects(t *testing.T) {
	huge := "\xff\xff\xff\xff\x0f" // 2^32 - 1
	tests := []struct {
		name string
		in   string
		want error
	}{
		{name: "no header", in: "", want: errMalformed},
		{name: "bad magic", in: "\x00wasm\x01\x00\x00", want: errMalformed},
		{name: "version 2", in: "\x00asm\x02\x00\x00\x00", want: errMalformed},
		{name: "truncated section size", in: header + "\x05", want: errMalformed},
		{name: "section overruns the module", in: header + "\x05\x10\x01", want: errMalformed},
		{name: "section size over 32 bits", in: header + "\x05\x80\x80\x80\x80\x10", want: errMalformed},
		{name: "unknown section", in: header + section(14, ""), want: errMalformed},
		{name: "bytes left over in a section", in: header + section(sectionMemory, "\x01\x00\x01\x00"), want: errMalformed},
		// Found by FuzzCompile: wazero allocated 90 GB for this import count.
		{name: "import count over the section", in: header + "\x02x\xff\xff\xff\x80\x03\x02\x01\x02\x05\x03\x01\x00\x01\a\x13\x02\x06memory\x02\x00\x06r", want: errMalformed},
		{name: "huge import count", in: header + section(sectionImport, huge), want: errMalformed},
		{name: "huge import name", in: header + section(sectionImport, "\x01"+huge+"m"), want: errMalformed},
		{name: "huge function count", in: header + section(sectionFunction, huge), want: errMalformed},
		{name: "huge table count", in: header + section(sectionTable, huge), want: errMalformed},
		{name: "huge global count", in: header + section(sectionGlobal, huge), want: errMalformed},
		{name: "huge export count", in: header + section(sectionExport, huge), want: errMalformed},
		{name: "huge export name", in: header + section(sectionExport, "\x01"+huge+"x"), want: errMalformed},
		{name: "huge element count", in: header + section(sectionElement, huge), want: errMalformed},
		{name: "huge element vector", in: header + section(sectionElement, "\x01\x00\x41\x00\x0b"+huge), want: errMalformed},
		{name: "huge element expression vector", in: header + section(sectionElement, "\x01\x05\x70"+huge), want: errMalformed},
		{name: "huge code count", in: header + section(sectionCode, huge), want: errMalformed},
		{name: "huge code body", in: header + section(sectionCode, "\x01"+huge), want: errMalformed},
		{name: "huge local count", in: header + section(sectionCode, "\x01\x07\x01"+huge+"\x7f"), want: errMalformed},
		{name: "locals over the limit in two runs", in: header + section(sectionCode, "\x01\x08\x02"+leb(30000)+"\x7f"+leb(30000)+"\x7e"), want: errMalformed},
		{name: "huge data count", in: header + section(sectionData, huge), want: errMalformed},
		{name: "huge data segment", in: header + section(sectionData, "\x01\x01"+huge), want: errMalformed},
		{name: "huge type count", in: header + section(sectionType, huge), want: errMalformed},
		{name: "huge parameter count", in: header + section(sectionType, "\x01\x60"+huge), want: errMalformed},
		{name: "huge result count", in: header + section(sectionType, "\x01\x60\x00"+huge), want: errMalformed},
		{name: "huge recursion group", in: header + section(sectionType, "\x01\x4e"+huge), want: errMalformed},
		{name: "huge tag count", in: header + section(sectionTag, huge), want: errMalformed},
		{name: "not a function type", in: header + section(sectionType, "\x01\x5f\x00"), want: errMalformed},
		{name: "unknown import kind", in: header + section(sectionImport, "\x01\x01m\x01f\x09\x00"), want: errMalformed},
		{name: "memory64 limits", in: header + section(sectionMemory, "\x01\x04\x01"), want: errMalformed},
		{name: "unknown element flags", in: header + section(sectionElement, "\x01\x08"), want: errMalformed},
		{name: "unknown data flags", in: header + section(sectionData, "\x01\x03"), want: errMalformed},
		{name: "unknown constant opcode", in: header + section(sectionGlobal, "\x01\x7f\x00\x20\x00\x0b"), want: errMalformed},
		{name: "unterminated constant", in: header + section(sectionGlobal, "\x01\x7f\x00\x41\x00"), want: errMalformed},
		{name: "LEB too long", in: header + section(sectionStart, "\x80\x80\x80\x80\x80\x00"), want: errMalformed},
		{name: "table over the limit", in: header + section(sectionTable, "\x01\x70\x00"+leb(MaxTableEntries+1)), want: errTableLimit},
		{name: "unknown opcode", in: header + section(sectionCode, "\x01\x03\x00\xff\x0b"), want: errMalformed},
		{name: "code after the final end", in: header + section(sectionCode, "\x01\x03\x00\x0b\x01"), want: errMalformed},
		{name: "unterminated body", in: header + section(sectionCode, "\x01\x03\x00\x02\x40"), want: errMalformed},
		// The compile bounds (compile_cost.go).
		{name: "blocks nested past the limit", in: string(genModule(genNested(instrument.OpBlock, MaxNestingDepth+1))), want: errCompileLimit},
		{name: "loops nested past the limit", in: string(genModule(genNested(instrument.OpLoop, MaxNestingDepth+1))), want: errCompileLimit},
		{name: "Go-like nesting past the limit", in: string(genModule(genGoLike(MaxNestingDepth))), want: errCompileLimit},
		{name: "the finding: 40,000 nested blocks", in: string(genModule(genNested(instrument.OpBlock, 40_000))), want: errCompileLimit},
		{name: "locals over the module limit", in: string(genModule(manyLocals(MaxModuleLocals/maxFunctionLocals + 1)...)), want: errCompileLimit},
		{name: "parameters count as locals", in: string(manyParams(1000, MaxModuleLocals/1000+1)), want: errCompileLimit},
		{name: "nested blocks over the work budget", in: string(genModule(genNested(instrument.OpBlock, 12_000))), want: errCompileLimit},
		{name: "nested loops over the work budget", in: string(genModule(genNested(instrument.OpLoop, 3_000))), want: errCompileLimit},
		{name: "if chain over the work budget", in: string(genModule(genBody(6_000, if0...))), want: errCompileLimit},
		{name: "br_if chain over the work budget", in: string(genModule(genBody(6_000, byte(instrument.OpI32Const), 0, byte(instrument.OpBrIf), 0))), want: errCompileLimit},
		{name: "call chain over the work budget", in: string(genModule(genBody(7_000, call0...))), want: errCompileLimit},
		{name: "locals live across an if chain over the work budget", in: string(genModule(genLiveLocals(1_000))), want: errCompileLimit},
		{name: "br_table of many entries over the work budget", in: string(genModule(brTable(20_000))), want: errCompileLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := prepareModule([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %x, %v, want an error matching %v", out, err, tt.want)
			}
		})
	}
}
