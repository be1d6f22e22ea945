package instrument

import (
	"bufio"
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// sec encodes a section.
func sec(id byte, payload ...byte) []byte {
	b := append([]byte{id}, AppendU32(nil, uint32(len(payload)))...)
	return append(b, payload...)
}

// mod encodes a module from sections.
func mod(sections ...[]byte) []byte {
	b := []byte(header)
	for _, s := range sections {
		b = append(b, s...)
	}
	return b
}

// codeSec encodes a code section of bodies, each given as its locals
// declaration and instructions.
func codeSec(bodies ...[]byte) []byte {
	p := AppendU32(nil, uint32(len(bodies)))
	for _, b := range bodies {
		p = AppendU32(p, uint32(len(b)))
		p = append(p, b...)
	}
	return sec(SectionCode, p...)
}

var (
	typeVoid = sec(SectionType, 1, 0x60, 0, 0) // type 0: [] -> []
	oneFunc  = sec(SectionFunction, 1, 0)      // function 0 of type 0
)

// oneBody is a module with one function whose body is body (locals
// declaration included).
func oneBody(body ...byte) []byte { return mod(typeVoid, oneFunc, codeSec(body)) }

func TestDecodeNegative(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error // nil: decodes
	}{
		{"empty", nil, ErrMalformed},
		{"bad magic", []byte("\x00asn\x01\x00\x00\x00"), ErrMalformed},
		{"version 2", []byte("\x00asm\x02\x00\x00\x00"), ErrMalformed},
		{"header only", []byte(header), nil},
		{"minimal function", oneBody(0, 0x0b), nil},
		{"section size past the end", append([]byte(header), 1, 10, 0), ErrMalformed},
		{"section size truncated", append([]byte(header), 1, 0x80), ErrMalformed},
		{"huge section size", append([]byte(header), 1, 0xff, 0xff, 0xff, 0xff, 0x0f), ErrMalformed},
		{"unknown section 13", mod(sec(13, 0)), ErrMalformed},
		{"unknown section 255", mod(sec(255)), ErrMalformed},
		{"sections out of order", mod(oneFunc, typeVoid, codeSec([]byte{0, 0x0b})), ErrMalformed},
		{"section repeated", mod(typeVoid, typeVoid), ErrMalformed},
		{"data count after code", mod(sec(SectionCode, 0), sec(SectionDataCount, 0)), ErrMalformed},
		{"custom sections anywhere", mod(sec(0, 1, 'a'), typeVoid, sec(0, 0), oneFunc, codeSec([]byte{0, 0x0b}), sec(0, 1, 'z', 9, 9)), nil},
		{"custom section name not UTF-8", mod(sec(0, 1, 0xff)), ErrMalformed},
		{"custom section name past its end", mod(sec(0, 5, 'a')), ErrMalformed},
		{"bytes left in a section", mod(sec(SectionType, 1, 0x60, 0, 0, 0)), ErrMalformed},
		{"huge type count", mod(sec(SectionType, 0xff, 0xff, 0xff, 0xff, 0x0f)), ErrMalformed},
		{"type count one over", mod(sec(SectionType, 2, 0x60, 0, 0)), ErrMalformed},
		{"type form not func", mod(sec(SectionType, 1, 0x5f, 0, 0)), ErrMalformed},
		{"recursion group", mod(sec(SectionType, 1, 0x4e, 1, 0x60, 0, 0)), ErrMalformed},
		{"unknown value type", mod(sec(SectionType, 1, 0x60, 1, 0x7a, 0)), ErrMalformed},
		{"huge param count", mod(sec(SectionType, 1, 0x60, 0xff, 0xff, 0xff, 0xff, 0x0f, 0)), ErrMalformed},
		{"u32 over 32 bits", mod(sec(SectionFunction, 1, 0xff, 0xff, 0xff, 0xff, 0x7f)), ErrMalformed},
		{"LEB128 too long", mod(sec(SectionFunction, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)), ErrMalformed},
		{"function without body", mod(typeVoid, oneFunc), ErrMalformed},
		{"body without function", mod(typeVoid, codeSec([]byte{0, 0x0b})), ErrMalformed},
		{"import name not UTF-8", mod(sec(SectionImport, 1, 1, 0xc0, 1, 'f', 0, 0)), ErrMalformed},
		{"unknown import kind", mod(sec(SectionImport, 1, 1, 'm', 1, 'f', 4, 0)), ErrMalformed},
		{"shared memory", mod(sec(SectionMemory, 1, 0x03, 1, 1)), ErrMalformed},
		{"memory64", mod(sec(SectionMemory, 1, 0x04, 1)), ErrMalformed},
		{"table of i32", mod(sec(SectionTable, 1, 0x7f, 0, 1)), ErrMalformed},
		{"global mutability 2", mod(sec(SectionGlobal, 1, 0x7f, 2, 0x41, 0, 0x0b)), ErrMalformed},
		{"global init not constant", mod(sec(SectionGlobal, 1, 0x7f, 0, 0x41, 1, 0x41, 2, 0x6a, 0x0b)), ErrMalformed},
		{"global init without end", mod(sec(SectionGlobal, 1, 0x7f, 0, 0x41, 0)), ErrMalformed},
		{"export kind 4", mod(sec(SectionExport, 1, 1, 'x', 4, 0)), ErrMalformed},
		{"element flags 8", mod(sec(SectionElement, 1, 8)), ErrMalformed},
		{"element kind 1", mod(sec(SectionElement, 1, 1, 1, 0)), ErrMalformed},
		{"huge element count", mod(sec(SectionElement, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f)), ErrMalformed},
		{"data flags 3", mod(sec(SectionData, 1, 3, 0)), ErrMalformed},
		{"data past its section", mod(sec(SectionData, 1, 1, 5, 'a')), ErrMalformed},
		{"data count mismatch", mod(sec(SectionDataCount, 2), sec(SectionData, 1, 1, 0)), ErrMalformed},
		{"data count matches", mod(sec(SectionDataCount, 1), sec(SectionData, 1, 1, 0)), nil},
		{"body without end", oneBody(0, 0x01), ErrMalformed},
		{"body empty", oneBody(0), ErrMalformed},
		{"bytes after the final end", oneBody(0, 0x0b, 0x01), ErrMalformed},
		{"end inside a block only", oneBody(0, 0x02, 0x40, 0x0b), ErrMalformed},
		{"block closed", oneBody(0, 0x02, 0x40, 0x0b, 0x0b), nil},
		{"unknown opcode", oneBody(0, 0xff, 0x0b), ErrMalformed},
		{"atomics prefix", oneBody(0, 0xfe, 0x03, 0x00, 0x0b), ErrMalformed},
		{"tail call", oneBody(0, 0x12, 0x00, 0x0b), ErrMalformed},
		{"unknown 0xFC opcode", oneBody(0, 0xfc, 18, 0x0b), ErrMalformed},
		{"0xFC sub-opcode over 16 bits", oneBody(0, 0xfc, 0x88, 0x80, 0x04, 0x0b), ErrMalformed},
		{"relaxed SIMD", oneBody(0, 0xfd, 0x80, 0x02, 0x0b), ErrMalformed},
		{"reserved SIMD opcode", oneBody(0, 0xfd, 0x9a, 0x01, 0x0b), ErrMalformed},
		{"memory.grow with memory index 1", oneBody(0, 0x40, 0x01, 0x0b), ErrMalformed},
		{"memory.copy second byte", oneBody(0, 0xfc, 10, 0, 1, 0x0b), ErrMalformed},
		{"block type negative", oneBody(0, 0x02, 0x7a, 0x0b, 0x0b), ErrMalformed},
		{"block type index", oneBody(0, 0x02, 0x00, 0x0b, 0x0b), nil},
		{"br_table huge count", oneBody(0, 0x0e, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b), ErrMalformed},
		{"select huge type count", oneBody(0, 0x1c, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b), ErrMalformed},
		{"ref.null of i32", oneBody(0, 0xd0, 0x7f, 0x0b), ErrMalformed},
		{"truncated i64.const", oneBody(0, 0x42, 0x80), ErrMalformed},
		{"truncated f64.const", oneBody(0, 0x44, 0, 0, 0, 0x0b), ErrMalformed},
		{"truncated v128.const", oneBody(0, 0xfd, 12, 1, 2, 3, 0x0b), ErrMalformed},
		{"locals at the limit", oneBody(2, 0xd0, 0x84, 0x03, 0x7f, 0x80, 0x02, 0x7e, 0x0b), nil},
		{"locals over the limit", oneBody(2, 0xd0, 0x84, 0x03, 0x7f, 0x81, 0x02, 0x7e, 0x0b), ErrLimit},
		{"four billion locals", oneBody(1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x7f, 0x0b), ErrLimit},
		{"huge local group count", oneBody(0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b), ErrMalformed},
		{"body size past the section", mod(typeVoid, oneFunc, sec(SectionCode, 1, 9, 0, 0x0b)), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(context.Background(), tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Decode: %v; want success", err)
				}
				if _, err := m.Encode(); err != nil {
					t.Fatalf("Encode: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode: got %v; want %v", err, tt.want)
			}
			if _, _, err := Prepare(context.Background(), tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("Prepare: got %v; want %v", err, tt.want)
			}
		})
	}
}

// TestAllOps decodes all_ops.wasm, built by wat2wasm from a text file that
// uses every WebAssembly 2.0 instruction, and checks that the decoder
// names the instructions in the order the text lists them. A wrong opcode
// in the tables, or a wrong immediate shape (which would put the decoder
// out of step), fails it.
func TestAllOps(t *testing.T) {
	want := watMnemonics(t, "testdata/all_ops.wat")
	m := decodeFile(t, "testdata/all_ops.wasm")
	body := m.Code[len(m.Code)-1]
	var got []string
	seen := make(map[Opcode]bool)
	ir := NewInstrReader(body.Expr)
	for ir.Next() {
		in := ir.Instr()
		got = append(got, in.Op.String())
		seen[in.Op] = true
		if in.End <= in.Pos || in.End > len(body.Expr) {
			t.Fatalf("%s: byte range [%d, %d) outside the body of %d bytes", in.Op, in.Pos, in.End, len(body.Expr))
		}
	}
	if err := ir.Err(); err != nil {
		t.Fatal(err)
	}
	got = got[:len(got)-1] // the function's final end
	if !reflect.DeepEqual(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("instruction %d: got %s, want %s (got %d instructions, want %d)", i, got[i], want[i], len(got), len(want))
			}
		}
		t.Fatalf("got %d instructions, want %d", len(got), len(want))
	}
	// Every opcode in the tables occurs.
	for _, prefix := range []Opcode{0, PrefixMisc, PrefixSIMD} {
		for sub := Opcode(0); sub < 256; sub++ {
			op := prefix<<16 | sub
			if _, _, ok := op.Info(); ok && !seen[op] {
				t.Errorf("opcode %s (%#x) is not in all_ops.wat", op, uint32(op))
			}
		}
	}
}

// watMnemonics returns the first word of each line between ";; BEGIN" and
// ";; END" in a text-format file.
func watMnemonics(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == ";; BEGIN":
			in = true
		case line == ";; END":
			in = false
		case in && line != "":
			names = append(names, strings.Fields(line)[0])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("%s: no instructions between BEGIN and END", path)
	}
	return names
}

func decodeFile(t testing.TB, path string) *Module {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(context.Background(), b)
	if err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	return m
}

// TestImmediates checks decoded immediates against the text of all_ops.wat
// and simd.wat.
func TestImmediates(t *testing.T) {
	find := func(path string, op Opcode, nth int) Instr {
		t.Helper()
		m := decodeFile(t, path)
		for _, b := range m.Code {
			ir := NewInstrReader(b.Expr)
			for ir.Next() {
				if ir.Instr().Op == op {
					if nth == 0 {
						in := *ir.Instr()
						in.Labels = append([]uint32(nil), in.Labels...)
						in.Types = append([]ValType(nil), in.Types...)
						return in
					}
					nth--
				}
			}
			if err := ir.Err(); err != nil {
				t.Fatal(err)
			}
		}
		t.Fatalf("%s: no %s", path, op)
		return Instr{}
	}
	const all, simd, br = "testdata/all_ops.wasm", "testdata/simd.wasm", "testdata/br_table.wasm"
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"br_table labels", find(all, OpBrTable, 0).Labels, []uint32{0, 0}},
		{"br_table of br_table.wat", find(br, OpBrTable, 0).Labels, []uint32{0, 1, 2, 3}},
		{"br_table default", find(br, OpBrTable, 0).Index, uint32(4)},
		{"i32.const", int32(find(all, OpI32Const, 0).Value), int32(-123456)},
		{"i64.const", find(all, OpI64Const, 0).Value, uint64(0x7fffffffffffffff)},
		{"f32.const", find(all, OpF32Const, 0).Value, uint64(0x3fc00000)},         // 1.5
		{"f64.const", find(all, OpF64Const, 0).Value, uint64(0xbfd0000000000000)}, // -0.25
		{"i32.load offset", find(all, 0x28, 0).Mem, MemArg{Align: 2, Offset: 16}},
		{"v128.load align=4", find(simd, PrefixSIMD<<16, 1).Mem, MemArg{Align: 2, Offset: 16}},
		{"select type", find(all, OpSelectT, 0).Types, []ValType{I64}},
		{"ref.null extern", find(all, OpRefNull, 1).Types, []ValType{ExternRef}},
		{"call_indirect", [2]uint32{find(all, OpCallIndirect, 0).Index, find(all, OpCallIndirect, 0).Index2}, [2]uint32{0, 0}},
		{"lane", find(simd, PrefixSIMD<<16|21+1, 0).Lane, byte(5)}, // i8x16.extract_lane_u 5
		{"load lane", find(simd, PrefixSIMD<<16|84, 0).Lane, byte(5)},
		{"shuffle", find(simd, OpI8x16Shuffle, 0).V128, [16]byte{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}},
		{"v128.const", find(all, OpV128Const, 0).V128, [16]byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	mv := decodeFile(t, "testdata/multi_value.wasm")
	ir := NewInstrReader(mv.Code[1].Expr)
	for ir.Next() {
		if in := ir.Instr(); in.Op == OpIf {
			if want := (BlockType{TypeIndex: 0, HasTypeIndex: true}); in.Block != want {
				t.Errorf("if block type: got %+v, want %+v", in.Block, want)
			}
		}
	}
}

// TestDecodeEncodeIdentity checks that decoding and encoding a module
// without custom sections, built by wat2wasm (which encodes LEB128 at its
// shortest), gives back the same bytes.
func TestDecodeEncodeIdentity(t *testing.T) {
	for _, path := range []string{
		"testdata/all_ops.wasm", "testdata/globals.wasm", "testdata/multi_value.wasm",
		"testdata/simd.wasm", "testdata/data_drop.wasm", "testdata/no_globals.wasm",
	} {
		in, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := decodeFile(t, path)
		out, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != string(in) {
			t.Errorf("%s: re-encoded module differs (%d bytes, want %d)", path, len(out), len(in))
		}
	}
}

func TestModuleHelpers(t *testing.T) {
	m := decodeFile(t, "testdata/globals.wasm")
	if got := m.NumImported(KindGlobal); got != 2 {
		t.Errorf("NumImported(global): got %d, want 2", got)
	}
	gt := m.GlobalTypes()
	if len(gt) != 10 || gt[1] != (GlobalType{Type: I64, Mutable: true}) || gt[2] != (GlobalType{Type: I32}) {
		t.Errorf("GlobalTypes: got %v", gt)
	}
	ft, ok := m.FuncTypeOf(0)
	if !ok || len(ft.Params) != 0 || len(ft.Results) != 0 {
		t.Errorf("FuncTypeOf(0): got %v, %v", ft, ok)
	}
	if _, ok := m.FuncTypeOf(1); ok {
		t.Errorf("FuncTypeOf(1): found a function that does not exist")
	}
}

func TestEncodeChecksConsistency(t *testing.T) {
	m := decodeFile(t, "testdata/no_globals.wasm")
	m.Code = m.Code[:1]
	if _, err := m.Encode(); err == nil {
		t.Error("Encode with fewer bodies than functions: no error")
	}
}

// TestInstrRangesTile checks, on every function of every fixture, that the
// instructions' byte ranges cover the body without gaps or overlaps, that
// Depth follows the nesting, and that the last instruction is the final
// end: a pass that copies the bytes between instructions relies on it.
func TestInstrRangesTile(t *testing.T) {
	for _, path := range fixtures(t) {
		m := decodeFile(t, path)
		for i, b := range m.Code {
			ir := NewInstrReader(b.Expr)
			pos, depth := 0, 0
			var last Opcode
			for ir.Next() {
				in := ir.Instr()
				if in.Pos != pos || in.End <= in.Pos {
					t.Fatalf("%s: body %d: %s at [%d, %d), want it to start at %d", path, i, in.Op, in.Pos, in.End, pos)
				}
				switch in.Op {
				case OpBlock, OpLoop, OpIf:
					depth++
				case OpEnd:
					depth--
				}
				if ir.Depth() != depth {
					t.Fatalf("%s: body %d: depth %d after %s, want %d", path, i, ir.Depth(), in.Op, depth)
				}
				pos, last = in.End, in.Op
			}
			if err := ir.Err(); err != nil {
				t.Fatalf("%s: body %d: %v", path, i, err)
			}
			if pos != len(b.Expr) || last != OpEnd || depth != -1 || ir.Next() {
				t.Fatalf("%s: body %d: ends at %d of %d with %s at depth %d", path, i, pos, len(b.Expr), last, depth)
			}
		}
	}
}
