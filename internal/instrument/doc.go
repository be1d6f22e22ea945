// Package instrument rewrites WebAssembly modules at deploy time, before the
// sandbox compiles them (DESIGN.md §4, "Instrumentation at deploy").
//
// It has three layers:
//
//   - A decoder and an encoder of the WebAssembly 2.0 binary format
//     (https://webassembly.github.io/spec/core/binary/). Decode turns a
//     binary into a Module, whose sections a pass may change, and
//     Module.Encode turns it back into bytes. The element and data
//     sections, which no pass changes, are checked and kept as raw bytes,
//     and so are constant expressions and function bodies.
//   - An instruction decoder, InstrReader, which walks a function body (or
//     a constant expression) and yields each instruction with its opcode,
//     byte range and immediates. A pass that rewrites code copies the bytes
//     between the instructions it cares about and inserts its own with
//     AppendOpcode, AppendBlockType and the LEB128 appenders.
//   - Passes. Prepare exports every mutable global a module defines, so
//     that the sandbox can restore them, and reports what else an exact
//     reset of an instance must know (Info). Instruction metering (a
//     counter per basic block, and fuel) is to be built on the same layers.
//
// A pass must never change the behaviour of the module: its output computes
// exactly what its input computes, traps where it traps, and imports and
// exports what it did, plus the pass's own exports. The only other
// difference is that custom sections are dropped (so wazero's stack traces
// show function indices instead of names). A pass must never emit a module
// wazero refuses: every pass ends by compiling its output with wazero's
// interpreter, and returns ErrInvalid rather than a module wazero would
// not run. A pass is deterministic: the same input gives the same bytes.
//
// The input is hostile. Decoding never panics, and allocates in proportion
// to the input: every count and length is checked against the bytes left
// before anything is allocated from it, and a function may declare at most
// MaxFunctionLocals locals (wazero allocates for each one). The decoder
// accepts WebAssembly 2.0 only, and is stricter than wazero where wazero is
// lenient (shared memory limits, non-zero memory index bytes, overlong
// block types, the opcodes of later proposals): whatever it accepts,
// wazero parses the same way, so the instructions a pass sees are the ones
// wazero runs. Types and indices are not checked here: that is wazero's
// validation, which every pass runs on its output.
//
// Info's flags describe the module's code only. State a module changes
// during instantiation (active element and data segments) belongs to the
// snapshot taken after it, and imported globals, tables and memories
// belong to the host, which resets them itself.
package instrument
