package instrument

import "fmt"

// Opcode identifies an instruction. A one-byte opcode is its own value; a
// prefixed opcode (0xFC, 0xFD) is the prefix shifted left by 16 bits, or'ed
// with its sub-opcode: i32.trunc_sat_f32_s is 0xFC0000, v128.load is
// 0xFD0000
// (https://webassembly.github.io/spec/core/binary/instructions.html).
type Opcode uint32

// The prefixes of multi-byte opcodes.
const (
	PrefixMisc = 0xfc // saturating truncation, bulk memory and table instructions
	PrefixSIMD = 0xfd // vector instructions
)

// Opcodes named by the passes of this package. Every other opcode of
// WebAssembly 2.0 is decoded too, and has a name (Opcode.String).
const (
	OpUnreachable  Opcode = 0x00
	OpNop          Opcode = 0x01
	OpBlock        Opcode = 0x02
	OpLoop         Opcode = 0x03
	OpIf           Opcode = 0x04
	OpElse         Opcode = 0x05
	OpEnd          Opcode = 0x0b
	OpBr           Opcode = 0x0c
	OpBrIf         Opcode = 0x0d
	OpBrTable      Opcode = 0x0e
	OpReturn       Opcode = 0x0f
	OpCall         Opcode = 0x10
	OpCallIndirect Opcode = 0x11
	OpDrop         Opcode = 0x1a
	OpSelect       Opcode = 0x1b
	OpSelectT      Opcode = 0x1c
	OpLocalGet     Opcode = 0x20
	OpLocalSet     Opcode = 0x21
	OpLocalTee     Opcode = 0x22
	OpGlobalGet    Opcode = 0x23
	OpGlobalSet    Opcode = 0x24
	OpTableGet     Opcode = 0x25
	OpTableSet     Opcode = 0x26
	OpMemorySize   Opcode = 0x3f
	OpMemoryGrow   Opcode = 0x40
	OpI32Const     Opcode = 0x41
	OpI64Const     Opcode = 0x42
	OpF32Const     Opcode = 0x43
	OpF64Const     Opcode = 0x44
	OpI32Eqz       Opcode = 0x45
	OpI64Eqz       Opcode = 0x50
	OpI64LtS       Opcode = 0x53
	OpI32Add       Opcode = 0x6a
	OpI32Sub       Opcode = 0x6b
	OpI64Add       Opcode = 0x7c
	OpI64Sub       Opcode = 0x7d
	OpRefNull      Opcode = 0xd0
	OpRefIsNull    Opcode = 0xd1
	OpRefFunc      Opcode = 0xd2

	OpMemoryInit Opcode = PrefixMisc<<16 | 8
	OpDataDrop   Opcode = PrefixMisc<<16 | 9
	OpMemoryCopy Opcode = PrefixMisc<<16 | 10
	OpMemoryFill Opcode = PrefixMisc<<16 | 11
	OpTableInit  Opcode = PrefixMisc<<16 | 12
	OpElemDrop   Opcode = PrefixMisc<<16 | 13
	OpTableCopy  Opcode = PrefixMisc<<16 | 14
	OpTableGrow  Opcode = PrefixMisc<<16 | 15
	OpTableSize  Opcode = PrefixMisc<<16 | 16
	OpTableFill  Opcode = PrefixMisc<<16 | 17

	OpV128Const    Opcode = PrefixSIMD<<16 | 12
	OpI8x16Shuffle Opcode = PrefixSIMD<<16 | 13
)

// Imm is the shape of an instruction's immediates.
type Imm uint8

// The shapes of immediates, and the Instr fields each one fills.
const (
	ImmNone         Imm = iota // none
	ImmBlock                   // Block
	ImmIndex                   // Index: a label, function, local, global, table, element or data index
	ImmBrTable                 // Labels (the targets), then Index (the default)
	ImmCallIndirect            // Index (the type), Index2 (the table)
	ImmSelectT                 // Types
	ImmMemArg                  // Mem
	ImmZeroByte                // none: a reserved 0x00 byte (memory.size, memory.grow, memory.fill)
	ImmI32                     // Value: the constant, sign-extended
	ImmI64                     // Value
	ImmF32                     // Value: the IEEE 754 bits
	ImmF64                     // Value
	ImmRefType                 // Types[0]: the reference type of ref.null
	ImmMemoryInit              // Index (the data segment), then a reserved 0x00 byte
	ImmZeroBytes2              // none: two reserved 0x00 bytes (memory.copy)
	ImmTwoIndices              // Index, Index2: table.init (element, table), table.copy (destination, source)
	ImmV128                    // V128: 16 bytes (v128.const, and the lane indices of i8x16.shuffle)
	ImmLane                    // Lane
	ImmMemArgLane              // Mem, then Lane
)

type opInfo struct {
	name string
	imm  Imm
}

// Opcode tables, indexed by the opcode byte or sub-opcode. An empty name
// marks an opcode WebAssembly 2.0 does not have.
var (
	opsSingle [256]opInfo
	opsMisc   [18]opInfo
	opsSIMD   [256]opInfo
)

// Info returns the opcode's name and immediate shape. ok is false if the
// opcode is not a WebAssembly 2.0 instruction.
func (op Opcode) Info() (name string, imm Imm, ok bool) {
	var in opInfo
	switch prefix, sub := op>>16, op&0xffff; {
	case prefix == 0 && sub < 0x100:
		in = opsSingle[sub]
	case prefix == PrefixMisc && int(sub) < len(opsMisc):
		in = opsMisc[sub]
	case prefix == PrefixSIMD && int(sub) < len(opsSIMD):
		in = opsSIMD[sub]
	}
	return in.name, in.imm, in.name != ""
}

// Imm returns the shape of the opcode's immediates.
func (op Opcode) Imm() Imm {
	_, imm, _ := op.Info()
	return imm
}

// String returns the instruction's name in the text format.
func (op Opcode) String() string {
	if name, _, ok := op.Info(); ok {
		return name
	}
	if op>>16 != 0 {
		return fmt.Sprintf("opcode(%#x %d)", uint32(op>>16), uint32(op&0xffff))
	}
	return fmt.Sprintf("opcode(%#x)", uint32(op))
}

// AppendOpcode appends the encoding of op: one byte, or a prefix byte and
// the sub-opcode in LEB128.
func AppendOpcode(b []byte, op Opcode) []byte {
	if op>>16 == 0 {
		return append(b, byte(op))
	}
	return AppendU32(append(b, byte(op>>16)), uint32(op&0xffff))
}

func init() {
	single := func(op byte, imm Imm, name string) { opsSingle[op] = opInfo{name, imm} }
	// A run of opcodes without immediates, named in order from first.
	run := func(table []opInfo, first int, names ...string) {
		for i, n := range names {
			if n != "" {
				table[first+i] = opInfo{n, ImmNone}
			}
		}
	}

	// Control instructions.
	single(0x00, ImmNone, "unreachable")
	single(0x01, ImmNone, "nop")
	single(0x02, ImmBlock, "block")
	single(0x03, ImmBlock, "loop")
	single(0x04, ImmBlock, "if")
	single(0x05, ImmNone, "else")
	single(0x0b, ImmNone, "end")
	single(0x0c, ImmIndex, "br")
	single(0x0d, ImmIndex, "br_if")
	single(0x0e, ImmBrTable, "br_table")
	single(0x0f, ImmNone, "return")
	single(0x10, ImmIndex, "call")
	single(0x11, ImmCallIndirect, "call_indirect")
	// Reference instructions.
	single(0xd0, ImmRefType, "ref.null")
	single(0xd1, ImmNone, "ref.is_null")
	single(0xd2, ImmIndex, "ref.func")
	// Parametric instructions.
	single(0x1a, ImmNone, "drop")
	single(0x1b, ImmNone, "select")
	single(0x1c, ImmSelectT, "select")
	// Variable and table instructions.
	single(0x20, ImmIndex, "local.get")
	single(0x21, ImmIndex, "local.set")
	single(0x22, ImmIndex, "local.tee")
	single(0x23, ImmIndex, "global.get")
	single(0x24, ImmIndex, "global.set")
	single(0x25, ImmIndex, "table.get")
	single(0x26, ImmIndex, "table.set")
	// Memory instructions.
	for i, n := range []string{
		"i32.load", "i64.load", "f32.load", "f64.load",
		"i32.load8_s", "i32.load8_u", "i32.load16_s", "i32.load16_u",
		"i64.load8_s", "i64.load8_u", "i64.load16_s", "i64.load16_u", "i64.load32_s", "i64.load32_u",
		"i32.store", "i64.store", "f32.store", "f64.store",
		"i32.store8", "i32.store16", "i64.store8", "i64.store16", "i64.store32",
	} {
		single(byte(0x28+i), ImmMemArg, n)
	}
	single(0x3f, ImmZeroByte, "memory.size")
	single(0x40, ImmZeroByte, "memory.grow")
	// Numeric instructions.
	single(0x41, ImmI32, "i32.const")
	single(0x42, ImmI64, "i64.const")
	single(0x43, ImmF32, "f32.const")
	single(0x44, ImmF64, "f64.const")
	run(opsSingle[:], 0x45,
		"i32.eqz", "i32.eq", "i32.ne", "i32.lt_s", "i32.lt_u", "i32.gt_s", "i32.gt_u",
		"i32.le_s", "i32.le_u", "i32.ge_s", "i32.ge_u",
		"i64.eqz", "i64.eq", "i64.ne", "i64.lt_s", "i64.lt_u", "i64.gt_s", "i64.gt_u",
		"i64.le_s", "i64.le_u", "i64.ge_s", "i64.ge_u",
		"f32.eq", "f32.ne", "f32.lt", "f32.gt", "f32.le", "f32.ge",
		"f64.eq", "f64.ne", "f64.lt", "f64.gt", "f64.le", "f64.ge",
		"i32.clz", "i32.ctz", "i32.popcnt", "i32.add", "i32.sub", "i32.mul",
		"i32.div_s", "i32.div_u", "i32.rem_s", "i32.rem_u", "i32.and", "i32.or", "i32.xor",
		"i32.shl", "i32.shr_s", "i32.shr_u", "i32.rotl", "i32.rotr",
		"i64.clz", "i64.ctz", "i64.popcnt", "i64.add", "i64.sub", "i64.mul",
		"i64.div_s", "i64.div_u", "i64.rem_s", "i64.rem_u", "i64.and", "i64.or", "i64.xor",
		"i64.shl", "i64.shr_s", "i64.shr_u", "i64.rotl", "i64.rotr",
		"f32.abs", "f32.neg", "f32.ceil", "f32.floor", "f32.trunc", "f32.nearest", "f32.sqrt",
		"f32.add", "f32.sub", "f32.mul", "f32.div", "f32.min", "f32.max", "f32.copysign",
		"f64.abs", "f64.neg", "f64.ceil", "f64.floor", "f64.trunc", "f64.nearest", "f64.sqrt",
		"f64.add", "f64.sub", "f64.mul", "f64.div", "f64.min", "f64.max", "f64.copysign",
		"i32.wrap_i64", "i32.trunc_f32_s", "i32.trunc_f32_u", "i32.trunc_f64_s", "i32.trunc_f64_u",
		"i64.extend_i32_s", "i64.extend_i32_u",
		"i64.trunc_f32_s", "i64.trunc_f32_u", "i64.trunc_f64_s", "i64.trunc_f64_u",
		"f32.convert_i32_s", "f32.convert_i32_u", "f32.convert_i64_s", "f32.convert_i64_u", "f32.demote_f64",
		"f64.convert_i32_s", "f64.convert_i32_u", "f64.convert_i64_s", "f64.convert_i64_u", "f64.promote_f32",
		"i32.reinterpret_f32", "i64.reinterpret_f64", "f32.reinterpret_i32", "f64.reinterpret_i64",
		"i32.extend8_s", "i32.extend16_s", "i64.extend8_s", "i64.extend16_s", "i64.extend32_s",
	)

	// 0xFC: saturating truncation, bulk memory and table instructions.
	run(opsMisc[:], 0,
		"i32.trunc_sat_f32_s", "i32.trunc_sat_f32_u", "i32.trunc_sat_f64_s", "i32.trunc_sat_f64_u",
		"i64.trunc_sat_f32_s", "i64.trunc_sat_f32_u", "i64.trunc_sat_f64_s", "i64.trunc_sat_f64_u",
	)
	opsMisc[8] = opInfo{"memory.init", ImmMemoryInit}
	opsMisc[9] = opInfo{"data.drop", ImmIndex}
	opsMisc[10] = opInfo{"memory.copy", ImmZeroBytes2}
	opsMisc[11] = opInfo{"memory.fill", ImmZeroByte}
	opsMisc[12] = opInfo{"table.init", ImmTwoIndices}
	opsMisc[13] = opInfo{"elem.drop", ImmIndex}
	opsMisc[14] = opInfo{"table.copy", ImmTwoIndices}
	opsMisc[15] = opInfo{"table.grow", ImmIndex}
	opsMisc[16] = opInfo{"table.size", ImmIndex}
	opsMisc[17] = opInfo{"table.fill", ImmIndex}

	// 0xFD: vector instructions.
	simd := func(sub int, imm Imm, name string) { opsSIMD[sub] = opInfo{name, imm} }
	for i, n := range []string{
		"v128.load", "v128.load8x8_s", "v128.load8x8_u", "v128.load16x4_s", "v128.load16x4_u",
		"v128.load32x2_s", "v128.load32x2_u", "v128.load8_splat", "v128.load16_splat",
		"v128.load32_splat", "v128.load64_splat", "v128.store",
	} {
		simd(i, ImmMemArg, n)
	}
	simd(12, ImmV128, "v128.const")
	simd(13, ImmV128, "i8x16.shuffle")
	run(opsSIMD[:], 14, "i8x16.swizzle", "i8x16.splat", "i16x8.splat", "i32x4.splat",
		"i64x2.splat", "f32x4.splat", "f64x2.splat")
	for i, n := range []string{
		"i8x16.extract_lane_s", "i8x16.extract_lane_u", "i8x16.replace_lane",
		"i16x8.extract_lane_s", "i16x8.extract_lane_u", "i16x8.replace_lane",
		"i32x4.extract_lane", "i32x4.replace_lane", "i64x2.extract_lane", "i64x2.replace_lane",
		"f32x4.extract_lane", "f32x4.replace_lane", "f64x2.extract_lane", "f64x2.replace_lane",
	} {
		simd(21+i, ImmLane, n)
	}
	run(opsSIMD[:], 35,
		"i8x16.eq", "i8x16.ne", "i8x16.lt_s", "i8x16.lt_u", "i8x16.gt_s", "i8x16.gt_u",
		"i8x16.le_s", "i8x16.le_u", "i8x16.ge_s", "i8x16.ge_u",
		"i16x8.eq", "i16x8.ne", "i16x8.lt_s", "i16x8.lt_u", "i16x8.gt_s", "i16x8.gt_u",
		"i16x8.le_s", "i16x8.le_u", "i16x8.ge_s", "i16x8.ge_u",
		"i32x4.eq", "i32x4.ne", "i32x4.lt_s", "i32x4.lt_u", "i32x4.gt_s", "i32x4.gt_u",
		"i32x4.le_s", "i32x4.le_u", "i32x4.ge_s", "i32x4.ge_u",
		"f32x4.eq", "f32x4.ne", "f32x4.lt", "f32x4.gt", "f32x4.le", "f32x4.ge",
		"f64x2.eq", "f64x2.ne", "f64x2.lt", "f64x2.gt", "f64x2.le", "f64x2.ge",
		"v128.not", "v128.and", "v128.andnot", "v128.or", "v128.xor", "v128.bitselect", "v128.any_true",
	)
	for i, n := range []string{
		"v128.load8_lane", "v128.load16_lane", "v128.load32_lane", "v128.load64_lane",
		"v128.store8_lane", "v128.store16_lane", "v128.store32_lane", "v128.store64_lane",
	} {
		simd(84+i, ImmMemArgLane, n)
	}
	simd(92, ImmMemArg, "v128.load32_zero")
	simd(93, ImmMemArg, "v128.load64_zero")
	run(opsSIMD[:], 94,
		"f32x4.demote_f64x2_zero", "f64x2.promote_low_f32x4", // 94
		"i8x16.abs", "i8x16.neg", "i8x16.popcnt", "i8x16.all_true", "i8x16.bitmask", // 96
		"i8x16.narrow_i16x8_s", "i8x16.narrow_i16x8_u", // 101
		"f32x4.ceil", "f32x4.floor", "f32x4.trunc", "f32x4.nearest", // 103
		"i8x16.shl", "i8x16.shr_s", "i8x16.shr_u", // 107
		"i8x16.add", "i8x16.add_sat_s", "i8x16.add_sat_u", // 110
		"i8x16.sub", "i8x16.sub_sat_s", "i8x16.sub_sat_u", // 113
		"f64x2.ceil", "f64x2.floor", // 116
		"i8x16.min_s", "i8x16.min_u", "i8x16.max_s", "i8x16.max_u", // 118
		"f64x2.trunc", "i8x16.avgr_u", // 122
		"i16x8.extadd_pairwise_i8x16_s", "i16x8.extadd_pairwise_i8x16_u", // 124
		"i32x4.extadd_pairwise_i16x8_s", "i32x4.extadd_pairwise_i16x8_u", // 126
		"i16x8.abs", "i16x8.neg", "i16x8.q15mulr_sat_s", "i16x8.all_true", "i16x8.bitmask", // 128
		"i16x8.narrow_i32x4_s", "i16x8.narrow_i32x4_u", // 133
		"i16x8.extend_low_i8x16_s", "i16x8.extend_high_i8x16_s", // 135
		"i16x8.extend_low_i8x16_u", "i16x8.extend_high_i8x16_u", // 137
		"i16x8.shl", "i16x8.shr_s", "i16x8.shr_u", // 139
		"i16x8.add", "i16x8.add_sat_s", "i16x8.add_sat_u", // 142
		"i16x8.sub", "i16x8.sub_sat_s", "i16x8.sub_sat_u", // 145
		"f64x2.nearest",                                                         // 148
		"i16x8.mul", "i16x8.min_s", "i16x8.min_u", "i16x8.max_s", "i16x8.max_u", // 149
		"", "i16x8.avgr_u", // 154
		"i16x8.extmul_low_i8x16_s", "i16x8.extmul_high_i8x16_s", // 156
		"i16x8.extmul_low_i8x16_u", "i16x8.extmul_high_i8x16_u", // 158
		"i32x4.abs", "i32x4.neg", "", "i32x4.all_true", "i32x4.bitmask", "", "", // 160
		"i32x4.extend_low_i16x8_s", "i32x4.extend_high_i16x8_s", // 167
		"i32x4.extend_low_i16x8_u", "i32x4.extend_high_i16x8_u", // 169
		"i32x4.shl", "i32x4.shr_s", "i32x4.shr_u", "i32x4.add", "", "", // 171
		"i32x4.sub", "", "", "", // 177
		"i32x4.mul", "i32x4.min_s", "i32x4.min_u", "i32x4.max_s", "i32x4.max_u", // 181
		"i32x4.dot_i16x8_s", "", // 186
		"i32x4.extmul_low_i16x8_s", "i32x4.extmul_high_i16x8_s", // 188
		"i32x4.extmul_low_i16x8_u", "i32x4.extmul_high_i16x8_u", // 190
		"i64x2.abs", "i64x2.neg", "", "i64x2.all_true", "i64x2.bitmask", "", "", // 192
		"i64x2.extend_low_i32x4_s", "i64x2.extend_high_i32x4_s", // 199
		"i64x2.extend_low_i32x4_u", "i64x2.extend_high_i32x4_u", // 201
		"i64x2.shl", "i64x2.shr_s", "i64x2.shr_u", "i64x2.add", "", "", // 203
		"i64x2.sub", "", "", "", // 209
		"i64x2.mul", "i64x2.eq", "i64x2.ne", "i64x2.lt_s", "i64x2.gt_s", "i64x2.le_s", "i64x2.ge_s", // 213
		"i64x2.extmul_low_i32x4_s", "i64x2.extmul_high_i32x4_s", // 220
		"i64x2.extmul_low_i32x4_u", "i64x2.extmul_high_i32x4_u", // 222
		"f32x4.abs", "f32x4.neg", "", "f32x4.sqrt", "f32x4.add", "f32x4.sub", // 224
		"f32x4.mul", "f32x4.div", "f32x4.min", "f32x4.max", "f32x4.pmin", "f32x4.pmax", // 230
		"f64x2.abs", "f64x2.neg", "", "f64x2.sqrt", "f64x2.add", "f64x2.sub", // 236
		"f64x2.mul", "f64x2.div", "f64x2.min", "f64x2.max", "f64x2.pmin", "f64x2.pmax", // 242
		"i32x4.trunc_sat_f32x4_s", "i32x4.trunc_sat_f32x4_u", // 248
		"f32x4.convert_i32x4_s", "f32x4.convert_i32x4_u", // 250
		"i32x4.trunc_sat_f64x2_s_zero", "i32x4.trunc_sat_f64x2_u_zero", // 252
		"f64x2.convert_low_i32x4_s", "f64x2.convert_low_i32x4_u", // 254
	)
}
