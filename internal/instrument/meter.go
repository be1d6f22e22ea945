package instrument

import (
	"context"
	"fmt"
	"math"
	"slices"
)

// The export names of the two globals the metering pass adds. Both are
// mutable i64 globals that only the host reads and writes: no instruction
// of the input refers to them (see Meter).
const (
	// CounterExport counts the instructions executed, by the cost model
	// of the package doc. It starts at 0.
	CounterExport = "__cloister_instructions"
	// FuelExport is the fuel left. It starts at InitialFuel. When the
	// guest finds it has run out, it sets it to FuelExhausted and traps.
	FuelExport = "__cloister_fuel"
)

const (
	// FuelExhausted is the value of the fuel global after the guest
	// trapped for lack of fuel. A trap with the fuel global at
	// FuelExhausted is fuel exhaustion (the sandbox's fuel_exhausted);
	// any other trap leaves the fuel at 0 or more, provided the host
	// set it to 0 or more.
	FuelExhausted int64 = -1
	// InitialFuel is the fuel of a fresh instance: no limit. Set the
	// budget before calling an export. A start function (the start
	// section, not WASI's _start) runs during instantiation, before the
	// host can set anything, and so runs with InitialFuel.
	InitialFuel int64 = math.MaxInt64
)

// MeterInfo describes what Meter added.
type MeterInfo struct {
	// Blocks is the number of basic blocks that are charged: blocks of
	// cost 0 and dead code are not.
	Blocks int
	// InstrumentedFuncs is the number of function bodies the pass changed
	// (those with at least one charged block).
	InstrumentedFuncs int
	// CounterGlobal and FuelGlobal are the indices, in the global index
	// space, of the globals exported as CounterExport and FuelExport.
	CounterGlobal, FuelGlobal uint32
}

// PrepareMetered is Prepare followed by Meter: it exports every mutable
// global of the input under GlobalExportName and reports Info as Prepare
// does, then adds instruction metering and fuel, and reports MeterInfo.
// The two metering globals are not in Info.Globals: the host sets them
// itself before every call of an export (the counter to 0, the fuel to
// the budget), and reads them after it.
//
// The output validates, is deterministic, and computes exactly what the
// input computes as long as the fuel lasts. Metering an already metered
// module fails with ErrReserved.
//
// Errors wrap ErrMalformed, ErrLimit, ErrReserved or ErrInvalid (see
// Prepare and Meter), or are ctx's error.
func PrepareMetered(ctx context.Context, wasm []byte) ([]byte, *Info, *MeterInfo, error) {
	return Rewrite(ctx, wasm, Options{Metered: true})
}

// Meter adds to m the two globals exported as CounterExport and
// FuelExport, appended after m's globals so that no index of m changes,
// and rewrites every function body to count its instructions and spend
// fuel, as the package doc describes. It adds one i64 local to each body
// it changes, after the body's own.
//
// Because the globals and the local are new, an index that the input's
// code could only use to reach them would be out of range in the input:
// Meter refuses such code (ErrInvalid), so the guest can neither read nor
// forge its meter. Errors wrap ErrReserved if m already exports
// CounterExport or FuelExport (m is metered already, or pretends to be),
// ErrInvalid for code wazero would refuse (a global or local index out of
// range, a branch to a missing label, else outside an if, a function type
// out of range), ErrMalformed if m has not as many bodies as functions,
// ErrLimit if a body would have more than MaxFunctionLocals locals, or
// are ctx's error. On error m is left unchanged.
func Meter(ctx context.Context, m *Module) (*MeterInfo, error) {
	if len(m.Funcs) != len(m.Code) {
		return nil, fmt.Errorf("%w: %d functions but %d bodies", ErrMalformed, len(m.Funcs), len(m.Code))
	}
	for _, e := range m.Exports {
		if e.Name == CounterExport || e.Name == FuelExport {
			return nil, fmt.Errorf("%w: export %q (%s %d)", ErrReserved, e.Name, e.Kind, e.Index)
		}
	}
	numGlobals := uint64(m.NumImported(KindGlobal)) + uint64(len(m.Globals))
	if numGlobals+2 > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d globals", ErrLimit, numGlobals)
	}
	mt := &meterer{
		numGlobals: uint32(numGlobals),
		counter:    uint32(numGlobals),
		fuel:       uint32(numGlobals + 1),
	}
	mi := &MeterInfo{CounterGlobal: mt.counter, FuelGlobal: mt.fuel}
	importedFuncs := m.NumImported(KindFunc)
	code := make([]Body, len(m.Code))
	for i := range m.Code {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		ft, ok := m.FuncTypeOf(importedFuncs + uint32(i))
		if !ok {
			return nil, fmt.Errorf("%w: function body %d: type %d out of range", ErrInvalid, i, m.Funcs[i])
		}
		b, n, err := mt.body(&m.Code[i], uint64(len(ft.Params)))
		if err != nil {
			return nil, fmt.Errorf("function body %d: %w", i, err)
		}
		code[i] = b
		if n > 0 {
			mi.Blocks += n
			mi.InstrumentedFuncs++
		}
	}
	m.Code = code
	m.Globals = append(m.Globals[:len(m.Globals):len(m.Globals)],
		GlobalDef{Type: GlobalType{Type: I64, Mutable: true}, Init: i64Init(0)},
		GlobalDef{Type: GlobalType{Type: I64, Mutable: true}, Init: i64Init(InitialFuel)},
	)
	m.Exports = append(m.Exports[:len(m.Exports):len(m.Exports)],
		Export{Name: CounterExport, Kind: KindGlobal, Index: mt.counter},
		Export{Name: FuelExport, Kind: KindGlobal, Index: mt.fuel},
	)
	return mi, nil
}

// i64Init returns the constant expression i64.const v.
func i64Init(v int64) []byte {
	return append(AppendS64([]byte{byte(OpI64Const)}, v), byte(OpEnd))
}

// cost is the static cost of an instruction: 1, except for the markers of
// structure, which do no work of their own.
func cost(op Opcode) int64 {
	switch op {
	case OpBlock, OpLoop, OpElse, OpEnd:
		return 0
	}
	return 1
}

// meterer rewrites function bodies. Its slices are reused from one body
// to the next.
type meterer struct {
	numGlobals    uint32 // the globals of the input: indices at or above are refused
	counter, fuel uint32 // the indices of the two new globals
	frames        []frame
	edits         []edit
}

// frame is an open block, loop or if (or the function's own block, kind
// OpEnd) during the scan of a body.
type frame struct {
	kind Opcode
	// live is whether the block, loop or if instruction itself was
	// reachable. Nothing inside a construct entered in dead code is.
	live bool
	// targeted is whether a reachable branch names the frame's label.
	targeted bool
	// hasElse, and thenLive: whether the then arm of an if fell through
	// to its else.
	hasElse, thenLive bool
}

// editKind is a piece of code the pass inserts. The kinds are numbered in
// the order they go in when several are inserted at the same place.
type editKind uint8

const (
	editLoad   editKind = iota // load the fuel into the local: at the entry, and after a call
	editCharge                 // charge a basic block
	editCheck                  // charge a basic block, and check the fuel
	editFlush                  // store the meter into the globals, and check the fuel
)

// edit is code to insert at byte pos of a body's expression.
type edit struct {
	pos  int
	kind editKind
	cost int64 // of a charge
}

// body returns b metered, and the number of blocks charged. A body with
// nothing to charge is returned as it is.
func (mt *meterer) body(b *Body, numParams uint64) (Body, int, error) {
	numLocals := numParams + b.NumLocals()
	blocks, err := mt.scan(b, numLocals)
	if err != nil {
		return Body{}, 0, err
	}
	if blocks == 0 {
		return *b, 0, nil
	}
	if b.NumLocals()+1 > MaxFunctionLocals {
		return Body{}, 0, fmt.Errorf("%w: %d locals, and metering needs one more; at most %d allowed", ErrLimit, b.NumLocals(), MaxFunctionLocals)
	}
	rest := uint32(numLocals) // the local metering adds: the fuel left
	out := make([]byte, 0, len(b.Expr)+32*len(mt.edits))
	prev := 0
	for _, e := range mt.edits {
		out = append(out, b.Expr[prev:e.pos]...)
		prev = e.pos
		switch e.kind {
		case editLoad:
			out = mt.appendLoad(out, rest)
		case editCharge:
			out = mt.appendCharge(out, e.cost, rest)
		case editCheck:
			out = mt.appendCheck(out, e.cost, rest)
		case editFlush:
			out = mt.appendFlush(out, rest)
		}
	}
	out = append(out, b.Expr[prev:]...)
	locals := make([]LocalGroup, len(b.Locals), len(b.Locals)+1)
	copy(locals, b.Locals)
	locals = append(locals, LocalGroup{Count: 1, Type: I64})
	return Body{Locals: locals, Expr: out}, blocks, nil
}

// appendLoad appends the code that loads the fuel into its local, at the
// function's entry and after a call (the callee spent some):
//
//	global.get $fuel
//	local.set $rest
func (mt *meterer) appendLoad(b []byte, rest uint32) []byte {
	b = AppendU32(append(b, byte(OpGlobalGet)), mt.fuel)
	return AppendU32(append(b, byte(OpLocalSet)), rest)
}

// appendCharge appends the code that charges a basic block of cost c:
//
//	local.get $rest
//	i64.const c
//	i64.sub
//	local.set $rest
func (mt *meterer) appendCharge(b []byte, c int64, rest uint32) []byte {
	b = AppendU32(append(b, byte(OpLocalGet)), rest)
	b = AppendS64(append(b, byte(OpI64Const)), c)
	b = append(b, byte(OpI64Sub))
	return AppendU32(append(b, byte(OpLocalSet)), rest)
}

// appendCheck appends the code that charges a basic block of cost c and
// traps if the fuel is spent:
//
//	local.get $rest
//	i64.const c
//	i64.sub
//	local.tee $rest
//	i64.const 0
//	i64.lt_s
//	if
//	  ...                 ;; the code of appendFlush
//	end
func (mt *meterer) appendCheck(b []byte, c int64, rest uint32) []byte {
	b = AppendU32(append(b, byte(OpLocalGet)), rest)
	b = AppendS64(append(b, byte(OpI64Const)), c)
	b = append(b, byte(OpI64Sub))
	b = AppendU32(append(b, byte(OpLocalTee)), rest)
	b = append(b, byte(OpI64Const), 0, byte(OpI64LtS), byte(OpIf), 0x40)
	b = mt.appendFlush(b, rest)
	return append(b, byte(OpEnd))
}

// appendFlush appends the code that stores the meter into the globals,
// the counter gaining what the fuel lost since it was loaded, and traps if
// the fuel is spent:
//
//	global.get $counter
//	global.get $fuel
//	local.get $rest
//	i64.sub
//	i64.add
//	global.set $counter
//	local.get $rest
//	global.set $fuel
//	local.get $rest
//	i64.const 0
//	i64.lt_s
//	if
//	  i64.const -1        ;; FuelExhausted
//	  global.set $fuel
//	  unreachable
//	end
func (mt *meterer) appendFlush(b []byte, rest uint32) []byte {
	b = AppendU32(append(b, byte(OpGlobalGet)), mt.counter)
	b = AppendU32(append(b, byte(OpGlobalGet)), mt.fuel)
	b = AppendU32(append(b, byte(OpLocalGet)), rest)
	b = append(b, byte(OpI64Sub), byte(OpI64Add))
	b = AppendU32(append(b, byte(OpGlobalSet)), mt.counter)
	b = AppendU32(append(b, byte(OpLocalGet)), rest)
	b = AppendU32(append(b, byte(OpGlobalSet)), mt.fuel)
	b = AppendU32(append(b, byte(OpLocalGet)), rest)
	b = append(b, byte(OpI64Const), 0, byte(OpI64LtS), byte(OpIf), 0x40)
	b = AppendS64(append(b, byte(OpI64Const)), FuelExhausted)
	b = AppendU32(append(b, byte(OpGlobalSet)), mt.fuel)
	return append(b, byte(OpUnreachable), byte(OpEnd))
}

// scan walks the body, sets mt.edits to the code to insert, in order, and
// returns the number of basic blocks to charge. It checks the indices that
// the rewrite could make valid.
//
// A basic block starts at the function's entry, after loop, if and else
// (their bodies), after the end of an if (where its arms join) and of a
// block that a branch targets, and after br_if, call and call_indirect
// (where control continues if the branch is not taken, or the callee
// returns). It ends where the next one starts, or after br, br_table,
// return or unreachable: what follows them up to the next else or end is
// dead, and not charged. A block instruction and the end of a loop or of
// a block no branch targets do not start a basic block: control only
// falls through them.
//
// The block that starts a loop's body checks the fuel. The meter is
// flushed to the globals, and the fuel checked, before every call and
// every way out of the function: return, a branch that may target the
// function's own label, its final end, and unreachable.
func (mt *meterer) scan(b *Body, numLocals uint64) (int, error) {
	mt.edits = append(mt.edits[:0], edit{pos: 0, kind: editLoad})
	mt.frames = append(mt.frames[:0], frame{kind: OpEnd, live: true})
	blocks := 0
	live := true
	runPos, runCost, runCheck := 0, int64(0), false
	// end closes the basic block being counted. start opens one at pos.
	end := func() {
		if runCost > 0 {
			kind := editCharge
			if runCheck {
				kind = editCheck
			}
			mt.edits = append(mt.edits, edit{pos: runPos, kind: kind, cost: runCost})
			blocks++
		}
		runCost = 0
	}
	start := func(pos int) {
		live, runPos, runCost, runCheck = true, pos, 0, false
	}
	insert := func(pos int, kind editKind) {
		mt.edits = append(mt.edits, edit{pos: pos, kind: kind})
	}
	// target marks the frame a branch names, and reports whether it is
	// the function's own: the branch returns.
	target := func(label uint32) (bool, error) {
		if uint64(label) >= uint64(len(mt.frames)) {
			return false, fmt.Errorf("%w: branch to label %d at depth %d", ErrInvalid, label, len(mt.frames)-1)
		}
		if live {
			mt.frames[len(mt.frames)-1-int(label)].targeted = true
		}
		return int(label) == len(mt.frames)-1, nil
	}
	ir := newInstrReaderAt(b.Expr, b.Offset)
	for ir.Next() {
		in := ir.Instr()
		if live {
			runCost += cost(in.Op)
		}
		switch in.Op {
		case OpGlobalGet, OpGlobalSet:
			if in.Index >= mt.numGlobals {
				return 0, fmt.Errorf("%w: at offset %d: %s %d, but the module has %d globals", ErrInvalid, b.Offset+in.Pos, in.Op, in.Index, mt.numGlobals)
			}
		case OpLocalGet, OpLocalSet, OpLocalTee:
			if uint64(in.Index) >= numLocals {
				return 0, fmt.Errorf("%w: at offset %d: %s %d, but the function has %d locals", ErrInvalid, b.Offset+in.Pos, in.Op, in.Index, numLocals)
			}
		case OpBlock:
			mt.frames = append(mt.frames, frame{kind: OpBlock, live: live})
		case OpLoop, OpIf:
			mt.frames = append(mt.frames, frame{kind: in.Op, live: live})
			if live {
				end()
				start(in.End)
				runCheck = in.Op == OpLoop
			}
		case OpElse:
			f := &mt.frames[len(mt.frames)-1]
			if f.kind != OpIf || f.hasElse {
				return 0, fmt.Errorf("%w: at offset %d: else without its if", ErrInvalid, b.Offset+in.Pos)
			}
			f.hasElse, f.thenLive = true, live
			end()
			live = false
			if f.live {
				start(in.End)
			}
		case OpEnd:
			f := mt.frames[len(mt.frames)-1]
			mt.frames = mt.frames[:len(mt.frames)-1]
			wasLive := live
			switch f.kind {
			case OpEnd: // the function's end: it returns
				if live {
					insert(in.Pos, editFlush)
				}
				end()
			case OpBlock:
				// A block's end joins the fall-through and the branches out.
				if f.targeted {
					end()
					live = false
					if f.live {
						start(in.End)
					}
				}
			case OpLoop:
				// Branches go to a loop's start: its end only falls through.
			case OpIf:
				// An if's end joins the arms, or the then arm and the
				// condition false.
				end()
				live = false
				if f.live && (wasLive || f.targeted || !f.hasElse || f.thenLive) {
					start(in.End)
				}
			}
		case OpBr, OpBrIf:
			returns, err := target(in.Index)
			if err != nil {
				return 0, err
			}
			if live {
				if returns {
					insert(in.Pos, editFlush)
				}
				end()
				if in.Op == OpBr {
					live = false
				} else {
					start(in.End)
				}
			}
		case OpBrTable:
			returns, err := target(in.Index)
			if err != nil {
				return 0, err
			}
			for _, l := range in.Labels {
				r, err := target(l)
				if err != nil {
					return 0, err
				}
				returns = returns || r
			}
			if live {
				if returns {
					insert(in.Pos, editFlush)
				}
				end()
				live = false
			}
		case OpReturn, OpUnreachable:
			if live {
				insert(in.Pos, editFlush)
				end()
				live = false
			}
		case OpCall, OpCallIndirect:
			if live {
				insert(in.Pos, editFlush)
				end()
				insert(in.End, editLoad)
				start(in.End)
			}
		}
	}
	if err := ir.Err(); err != nil {
		return 0, err
	}
	// Edits were recorded as the scan found them: a charge at the end of
	// its block, after the flushes inside it.
	slices.SortStableFunc(mt.edits, func(a, b edit) int {
		if a.pos != b.pos {
			return a.pos - b.pos
		}
		return int(a.kind) - int(b.kind)
	})
	return blocks, nil
}
