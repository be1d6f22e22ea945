package instrument

import "fmt"

// ValType is a value type, numbered as in the binary format
// (https://webassembly.github.io/spec/core/binary/types.html#value-types).
type ValType byte

// The value types of WebAssembly 2.0.
const (
	I32       ValType = 0x7f
	I64       ValType = 0x7e
	F32       ValType = 0x7d
	F64       ValType = 0x7c
	V128      ValType = 0x7b
	FuncRef   ValType = 0x70
	ExternRef ValType = 0x6f
)

// String returns the type's name in the text format.
func (t ValType) String() string {
	switch t {
	case I32:
		return "i32"
	case I64:
		return "i64"
	case F32:
		return "f32"
	case F64:
		return "f64"
	case V128:
		return "v128"
	case FuncRef:
		return "funcref"
	case ExternRef:
		return "externref"
	}
	return fmt.Sprintf("valtype(%#x)", byte(t))
}

// IsRef reports whether t is a reference type.
func (t ValType) IsRef() bool { return t == FuncRef || t == ExternRef }

func (t ValType) valid() bool {
	switch t {
	case I32, I64, F32, F64, V128, FuncRef, ExternRef:
		return true
	}
	return false
}

func (r *reader) valType() ValType {
	t := ValType(r.byte())
	if r.err == nil && !t.valid() {
		r.off--
		r.failf("unknown value type %#x", byte(t))
		return 0
	}
	return t
}

func (r *reader) refType() ValType {
	t := ValType(r.byte())
	if r.err == nil && !t.IsRef() {
		r.off--
		r.failf("unknown reference type %#x", byte(t))
		return 0
	}
	return t
}

// valTypes reads a vector of value types.
func (r *reader) valTypes() []ValType {
	n := r.count(1)
	if r.err != nil || n == 0 {
		return nil
	}
	ts := make([]ValType, n)
	for i := range ts {
		ts[i] = r.valType()
	}
	return ts
}

func appendValTypes(b []byte, ts []ValType) []byte {
	b = AppendU32(b, uint32(len(ts)))
	for _, t := range ts {
		b = append(b, byte(t))
	}
	return b
}

// FuncType is a function type: parameters and results.
type FuncType struct {
	Params, Results []ValType
}

// String returns the type in the style of the text format.
func (f FuncType) String() string { return fmt.Sprintf("func %v -> %v", f.Params, f.Results) }

// Limits are the size bounds of a memory (in 64 KiB pages) or a table (in
// entries).
type Limits struct {
	Min    uint32
	Max    uint32 // meaningful only if HasMax
	HasMax bool
}

// limits reads limits. Only the two encodings of WebAssembly 2.0 are
// accepted; the shared flag of the threads proposal is malformed here.
func (r *reader) limits() Limits {
	switch flag := r.byte(); flag {
	case 0x00:
		return Limits{Min: r.u32()}
	case 0x01:
		return Limits{Min: r.u32(), Max: r.u32(), HasMax: true}
	default:
		if r.err == nil {
			r.off--
			r.failf("unknown limits flag %#x", flag)
		}
		return Limits{}
	}
}

func appendLimits(b []byte, l Limits) []byte {
	if !l.HasMax {
		return AppendU32(append(b, 0x00), l.Min)
	}
	b = AppendU32(append(b, 0x01), l.Min)
	return AppendU32(b, l.Max)
}

// TableType is the type of a table: its element reference type and limits.
type TableType struct {
	Elem ValType
	Limits
}

func (r *reader) tableType() TableType {
	elem := r.refType()
	return TableType{Elem: elem, Limits: r.limits()}
}

func appendTableType(b []byte, t TableType) []byte {
	return appendLimits(append(b, byte(t.Elem)), t.Limits)
}

// GlobalType is the type of a global.
type GlobalType struct {
	Type    ValType
	Mutable bool
}

func (r *reader) globalType() GlobalType {
	t := r.valType()
	switch m := r.byte(); m {
	case 0x00:
		return GlobalType{Type: t}
	case 0x01:
		return GlobalType{Type: t, Mutable: true}
	default:
		if r.err == nil {
			r.off--
			r.failf("unknown mutability %#x", m)
		}
		return GlobalType{}
	}
}

func appendGlobalType(b []byte, g GlobalType) []byte {
	b = append(b, byte(g.Type))
	if g.Mutable {
		return append(b, 0x01)
	}
	return append(b, 0x00)
}

// ExternKind is the kind of an import or export.
type ExternKind byte

// The kinds of imports and exports.
const (
	KindFunc   ExternKind = 0x00
	KindTable  ExternKind = 0x01
	KindMemory ExternKind = 0x02
	KindGlobal ExternKind = 0x03
)

// String returns the kind's name in the text format.
func (k ExternKind) String() string {
	switch k {
	case KindFunc:
		return "func"
	case KindTable:
		return "table"
	case KindMemory:
		return "memory"
	case KindGlobal:
		return "global"
	}
	return fmt.Sprintf("kind(%#x)", byte(k))
}

// BlockType is the type of a block, loop or if: empty, a single result, or
// the index of a function type (multi-value)
// (https://webassembly.github.io/spec/core/binary/instructions.html#control-instructions).
type BlockType struct {
	// Result is the single result type, or 0.
	Result ValType
	// TypeIndex indexes the type section if HasTypeIndex.
	TypeIndex    uint32
	HasTypeIndex bool
}

// blockType reads a block type. A value type and the empty type are single
// bytes that read as negative s33 integers; a type index is non-negative.
func (r *reader) blockType() BlockType {
	if r.err != nil {
		return BlockType{}
	}
	if r.off < len(r.b) {
		switch c := r.b[r.off]; {
		case c == 0x40:
			r.off++
			return BlockType{}
		case ValType(c).valid():
			r.off++
			return BlockType{Result: ValType(c)}
		}
	}
	at := r.off
	v := r.sleb(33)
	if r.err == nil && (v < 0 || v > 1<<32-1) {
		r.off = at
		r.failf("unknown block type %d", v)
		return BlockType{}
	}
	return BlockType{TypeIndex: uint32(v), HasTypeIndex: true}
}

// AppendBlockType appends the encoding of t.
func AppendBlockType(b []byte, t BlockType) []byte {
	switch {
	case t.HasTypeIndex:
		return AppendS64(b, int64(t.TypeIndex))
	case t.Result != 0:
		return append(b, byte(t.Result))
	}
	return append(b, 0x40)
}
