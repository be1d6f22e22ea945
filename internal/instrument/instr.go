package instrument

import "encoding/binary"

// MemArg is the immediate of a memory access: the alignment exponent and
// the constant offset.
type MemArg struct {
	Align  uint32
	Offset uint32
}

// Instr is one decoded instruction. Which immediate fields are set depends
// on Op.Imm(); the others are zero.
type Instr struct {
	Op Opcode
	// Pos is the offset of the instruction's first byte in the expression,
	// End the offset just past its last immediate.
	Pos, End int

	Block  BlockType
	Index  uint32
	Index2 uint32
	Mem    MemArg
	Lane   byte
	Value  uint64
	V128   [16]byte
	// Types and Labels are only valid until the next call of Next.
	Types  []ValType
	Labels []uint32
}

// InstrReader decodes the instructions of one expression: a function body
// or a constant expression. Use it like bufio.Scanner:
//
//	ir := NewInstrReader(body.Expr)
//	for ir.Next() {
//		in := ir.Instr()
//		...
//	}
//	if err := ir.Err(); err != nil { ... }
//
// It tracks the nesting of block, loop and if, and stops after the end that
// closes the expression; Len then tells how many bytes the expression took.
// It checks the encoding only, not types or indices: that is validation,
// which wazero does.
type InstrReader struct {
	r      reader
	in     Instr
	depth  int
	closed bool
	types  []ValType
	labels []uint32
	// allowed, if not nil, restricts the opcodes (constant expressions).
	allowed func(Opcode) bool
}

// NewInstrReader returns a reader of the expression at the start of expr.
func NewInstrReader(expr []byte) *InstrReader {
	return &InstrReader{r: reader{b: expr}}
}

// newInstrReaderAt is NewInstrReader for an expression at module offset
// base, so that errors name module offsets.
func newInstrReaderAt(expr []byte, base int) *InstrReader {
	return &InstrReader{r: reader{b: expr, base: base}}
}

// Instr returns the instruction Next decoded. It is overwritten by the
// next call of Next.
func (ir *InstrReader) Instr() *Instr { return &ir.in }

// Err returns the first decoding error, wrapping ErrMalformed, or nil.
func (ir *InstrReader) Err() error { return ir.r.err }

// Len returns the number of bytes read so far.
func (ir *InstrReader) Len() int { return ir.r.off }

// Depth returns the nesting depth after the last instruction: 0 in the
// function's outermost block, 1 inside one block, loop or if, and so on.
// It is -1 once the final end has been read.
func (ir *InstrReader) Depth() int { return ir.depth }

// Next decodes the next instruction. It returns false after the final end
// or on an error; Err tells which.
func (ir *InstrReader) Next() bool {
	r := &ir.r
	if ir.closed || r.err != nil {
		return false
	}
	if r.done() {
		r.failf("expression ends without its final end")
		return false
	}
	in := &ir.in
	pos := r.off
	op := Opcode(r.byte())
	if op == PrefixMisc || op == PrefixSIMD {
		sub := r.u32()
		if sub > 0xffff {
			sub = 0xffff // no such opcode: reported below
		}
		op = op<<16 | Opcode(sub)
	}
	if r.err != nil {
		return false
	}
	*in = Instr{Op: op, Pos: pos}
	_, imm, ok := op.Info()
	if !ok || (ir.allowed != nil && !ir.allowed(op)) {
		r.off = pos
		if ok {
			r.failf("%s is not allowed in a constant expression", op)
		} else {
			r.failf("unknown opcode %s", op)
		}
		return false
	}
	switch imm {
	case ImmNone:
	case ImmBlock:
		in.Block = r.blockType()
	case ImmIndex:
		in.Index = r.u32()
	case ImmBrTable:
		n := r.count(1)
		if r.err != nil {
			return false
		}
		ir.labels = ir.labels[:0]
		for range n {
			ir.labels = append(ir.labels, r.u32())
		}
		in.Labels = ir.labels
		in.Index = r.u32()
	case ImmCallIndirect, ImmTwoIndices:
		in.Index = r.u32()
		in.Index2 = r.u32()
	case ImmSelectT:
		n := r.count(1)
		if r.err != nil {
			return false
		}
		ir.types = ir.types[:0]
		for range n {
			ir.types = append(ir.types, r.valType())
		}
		in.Types = ir.types
	case ImmMemArg:
		in.Mem = MemArg{Align: r.u32(), Offset: r.u32()}
	case ImmMemArgLane:
		in.Mem = MemArg{Align: r.u32(), Offset: r.u32()}
		in.Lane = r.byte()
	case ImmZeroByte:
		r.zero()
	case ImmZeroBytes2:
		r.zero()
		r.zero()
	case ImmMemoryInit:
		in.Index = r.u32()
		r.zero()
	case ImmI32:
		in.Value = uint64(int64(r.s32()))
	case ImmI64:
		in.Value = uint64(r.s64())
	case ImmF32:
		if b := r.bytes(4); b != nil {
			in.Value = uint64(binary.LittleEndian.Uint32(b))
		}
	case ImmF64:
		if b := r.bytes(8); b != nil {
			in.Value = binary.LittleEndian.Uint64(b)
		}
	case ImmRefType:
		ir.types = append(ir.types[:0], r.refType())
		in.Types = ir.types
	case ImmV128:
		copy(in.V128[:], r.bytes(16))
	case ImmLane:
		in.Lane = r.byte()
	default:
		// Not reached: every shape in the opcode tables is handled above,
		// and TestAllOps decodes every opcode.
		r.failf("opcode %s has no immediate decoder", op)
		return false
	}
	if r.err != nil {
		return false
	}
	in.End = r.off
	switch op {
	case OpBlock, OpLoop, OpIf:
		ir.depth++
	case OpEnd:
		ir.depth--
		if ir.depth < 0 {
			ir.closed = true
		}
	}
	return true
}

// zero reads a byte that WebAssembly 2.0 reserves and requires to be 0x00
// (a memory index, in later versions).
func (r *reader) zero() {
	if c := r.byte(); r.err == nil && c != 0 {
		r.off--
		r.failf("zero byte expected, got %#x", c)
	}
}

// isConstOp reports whether op may appear in a constant expression of
// WebAssembly 2.0
// (https://webassembly.github.io/spec/core/valid/instructions.html#constant-expressions).
func isConstOp(op Opcode) bool {
	switch op {
	case OpI32Const, OpI64Const, OpF32Const, OpF64Const, OpV128Const,
		OpRefNull, OpRefFunc, OpGlobalGet, OpEnd:
		return true
	}
	return false
}

// constExpr reads a constant expression and returns its bytes, the final
// end included.
func (r *reader) constExpr() []byte {
	if r.err != nil {
		return nil
	}
	ir := newInstrReaderAt(r.b[r.off:], r.pos())
	ir.allowed = isConstOp
	for ir.Next() {
	}
	if err := ir.Err(); err != nil {
		r.err = err
		return nil
	}
	return r.bytes(ir.Len())
}
