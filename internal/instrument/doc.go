// Package instrument rewrites WebAssembly modules at deploy time, before the
// sandbox compiles them (docs/architecture.md, "The instrument pass").
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
//     reset of an instance must know (Info). PrepareMetered does the same,
//     then adds instruction metering and fuel (Meter), as below.
//
// A pass must never change the behaviour of the module: its output computes
// exactly what its input computes, traps where it traps, and imports and
// exports what it did, plus the pass's own exports. The only other
// differences are that custom sections are dropped (so wazero's stack
// traces show function indices instead of names), and, for metering, the
// trap when the fuel runs out, and frames one local larger (so a runaway
// recursion overflows the stack a little sooner). A pass must never emit a module
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
// # Metering
//
// Meter (AccTEE's instrumentation, docs/architecture.md) makes a module count the
// instructions it executes and stop when its fuel runs out. It adds two
// mutable i64 globals, after the module's own, exported as CounterExport
// and FuelExport for the host alone: no instruction of the input can name
// them. Before calling an export, the host sets the counter to 0 and the
// fuel to the budget; after the call it reads both.
//
// The cost model. Every instruction costs 1, except block, loop, else and
// end, which cost 0: they mark structure, and do no work of their own. A
// call costs 1 in the caller, whatever the callee does; a host function
// costs nothing more; memory.copy, memory.fill, memory.grow and the table
// instructions cost 1 whatever their operands (their work is bounded by
// the memory and table limits, and by wall time, not by fuel). The
// counter of a run is the number of instructions the run executed,
// exactly, whenever the run returns, exits (proc_exit) or traps at an
// unreachable of the input. The count of such a run depends on nothing
// but the module and what the host gives it: not on the engine (wazero's
// compiler and interpreter agree), the machine, or the time.
//
// How it counts. A basic block starts at the function's entry, at the
// start of a loop's body, of an if's arms, after the end of an if and of
// a block a branch targets, and after br_if, call and call_indirect; it
// ends where the next one starts, or after br, br_table, return and
// unreachable. The code that follows those, up to the next else or end,
// is dead: it is left as it is, and not counted. Each block, on entry,
// subtracts its static cost (the sum of its instructions' costs) from an
// i64 local the pass adds to each function, which holds the fuel left. A
// block of cost 0 adds no code. The local is loaded from the fuel global
// at the function's entry and after every call, and flushed to the
// globals (the counter gains what the fuel lost) before every call and
// every way out of the function: return, a branch to the function's
// label, its final end, and unreachable. Keeping the fuel in a local, not
// in the globals, is what makes metering cheap: a global access is a
// load or a store in wazero's compiler, a local is a register.
//
// Fuel. The fuel is checked in the first basic block of every loop body,
// and at every flush, so before every call and every return: if it is
// below 0, the guest sets the fuel global to FuelExhausted and executes
// unreachable. Every cycle of the control flow passes a check. A run that
// counts n instructions completes with a budget of n, and traps with a
// budget of n-1: the budget is exact. The guest may run a little past its
// budget before it traps (at most one pass through the loop-free code of
// one function between two checks), but it never calls the host, returns,
// or starts another loop iteration with its fuel spent, so nothing the
// host can observe happens on credit. Checking at every basic block
// instead would stop the guest at the very block that overran, but it
// costs a conditional branch per block, which in wazero's compiler about
// doubled the overhead on Go code (38% instead of 20% on reactor-go).
// After fuel exhaustion the counter holds what was counted up to the
// failed check: more than the budget, and no more than the run would have
// counted.
//
// Traps. A trap of an instruction other than unreachable (an
// out-of-bounds access, a division by zero, a failed conversion, a bad
// call_indirect) leaves the globals as the trapping function last flushed
// them: the counter misses what that function executed since its entry or
// its last call, and is a lower bound. The fuel global is then what it
// was at that flush, 0 or more if the host set it so, and the trap is not
// mistaken for fuel exhaustion. A host function's trap and a stack
// overflow come at a call, after the flush: the count is exact.
//
// The host may change the fuel between calls, or from a host function
// the guest calls: the guest reloads it after every call. Metering a
// metered module fails (ErrReserved). The tail-call and exception-handling
// proposals, whose control flow the meter does not know, are not
// WebAssembly 2.0 and do not decode (ErrMalformed).
//
// Info's flags describe the module's code only. State a module changes
// during instantiation (active element and data segments) belongs to the
// snapshot taken after it, and imported globals, tables and memories
// belong to the host, which resets them itself.
package instrument
