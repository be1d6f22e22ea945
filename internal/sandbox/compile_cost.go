package sandbox

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// Bounds on what a module may cost to compile. wazero's optimising
// compiler takes time that grows faster than the size of a function for
// some shapes of code (see funcCost): 120 KB of nested blocks took 10 s,
// and 56 KB of branches with locals live across them 45 s. prepareModule
// checks these bounds before anything compiles, so that compiling a
// module costs time in proportion to its size, and refuses a module over
// one of them (ErrCompileLimit, with ErrInvalidModule).
//
// Real programs stay far below them. The largest values seen are given
// with each bound: in a 10 MB Go (wasip1) program built from a dozen
// standard library packages, a Go function of 5,000 calls, the QuickJS
// engine module (internal/jsrt/engine) and the examples.
const (
	// MaxNestingDepth bounds how deeply the blocks, loops and ifs of one
	// function nest. Go's compiler nests one block per call site of a
	// function, so Go code nests deep: 549 in the Go examples, 1,076 in
	// the 10 MB program, 5,003 in the function of 5,000 calls (QuickJS:
	// 288).
	MaxNestingDepth = 16_384

	// MaxModuleLocals bounds the locals and parameters of all the
	// functions of a module together. wazero allocates for each local of
	// each function: 8 KB of functions declaring 50,000 locals each (the
	// limit for one function) took 8 s to compile, 32 KB 36 s, and 128 KB
	// got the process killed, most likely out of memory. The 10 MB
	// program declares 24,000.
	MaxModuleLocals = 1_000_000

	// compileWorkBase, compileWorkPerByte and compileWorkMax bound the
	// compile work of a module, the sum of funcCost over its functions:
	// it may be at most compileWorkBase plus compileWorkPerByte per byte
	// of the code section, and never more than compileWorkMax. A unit is
	// 0.5 to 16 ns of wazero's compiler on a current x86 core, depending
	// on the shape of the code, so the super-linear part of a compile
	// takes at most about 1.6 s plus 2 µs per byte of code, and about a
	// minute in all; compiling real code takes 0.3 to 0.6 µs per byte.
	// Real code needs 3 to 8 units per byte of code (16 in the program
	// with the function of 5,000 calls), and one function at most 2.5e7.
	compileWorkBase    = 1e8
	compileWorkPerByte = 128
	compileWorkMax     = 4e9
)

// errCompileLimit means the module is over MaxNestingDepth,
// MaxModuleLocals or its compile work budget.
var errCompileLimit = errors.New("over a compile limit")

// compileCost is what prepareModule learns, section by section, about
// what a module will cost to compile.
type compileCost struct {
	params    []uint32 // the parameter count of each type, by type index
	funcTypes []uint32 // the type index of each function the module defines
	budget    float64  // the compile work allowed
	bodies    int      // the function bodies checked so far
	locals    uint64   // their locals and parameters
	work      float64  // their compile work
	maxDepth  int      // their deepest nesting
}

// startCode sets the work budget from the size of the code section.
func (c *compileCost) startCode(size int) {
	c.budget = min(compileWorkMax, compileWorkBase+compileWorkPerByte*float64(size))
}

// addBody checks the next function body, given its instructions and the
// number of locals it declares. A read error is returned as it is, for
// the caller to report as malformed; a bound exceeded wraps
// errCompileLimit.
func (c *compileCost) addBody(expr []byte, locals uint64) error {
	i := c.bodies
	c.bodies++
	if i < len(c.funcTypes) && uint64(c.funcTypes[i]) < uint64(len(c.params)) {
		locals += uint64(c.params[c.funcTypes[i]])
	}
	c.locals += locals
	if c.locals > MaxModuleLocals {
		return fmt.Errorf("%w: functions declare over %d locals and parameters in all", errCompileLimit, MaxModuleLocals)
	}
	depth, work, err := funcCost(expr, locals)
	switch {
	case err != nil:
		return fmt.Errorf("function body %d: %s", i, strings.TrimPrefix(err.Error(), instrument.ErrMalformed.Error()+": "))
	case depth > MaxNestingDepth:
		return fmt.Errorf("%w: function body %d nests blocks over %d deep", errCompileLimit, i, MaxNestingDepth)
	}
	c.work += work
	c.maxDepth = max(c.maxDepth, depth)
	if c.work > c.budget {
		return fmt.Errorf("%w: compile work %.2g over budget %.2g at function body %d (nesting, branch chains, locals)", errCompileLimit, c.work, c.budget, i)
	}
	return nil
}

// costFrame is an open block, loop or if (or the function itself) in
// funcCost's walk.
type costFrame struct {
	loop, isIf, hasElse bool
	// live is whether the construct itself was reachable.
	live bool
	// cond is, for an if, the distance of the block that holds the if.
	cond int64
	// in is the least distance of a block that branches or falls
	// through to the code after the construct, or -1 if none does.
	in int64
	// preds counts the edges into the construct's label.
	preds int64
}

// funcCost walks a function body and returns how deeply it nests, and an
// estimate of the work of wazero's super-linear compiler passes on it.
// locals counts its locals and parameters. It stops at the first nesting
// over MaxNestingDepth, so that its memory stays bounded. An error is the
// instruction reader's: the body is malformed, and the instrument pass
// would refuse it too.
//
// The estimate models the control flow graph that wazero v1.12 builds
// from the body after metering (instrument.Meter adds a conditional
// flush, whose then arm traps, before every call, return, unreachable and
// return branch, and a fuel check at the top of every loop). It tracks
// the distance of every basic block from the entry: the number of edges
// on the shortest path to it, which bounds the block's depth in the
// dominator tree. For structured control flow one forward walk finds it:
// a branch goes forward, or back to a loop's header, which was reached
// first by falling in. Three passes of wazero are super-linear in it:
//
//   - loop detection and the loop nesting forest walk up the dominator
//     tree from every block and every edge: the sum of the distances;
//   - redundant phi elimination resolves a chain of aliases, one per
//     join on the way, for every variable live across the joins: the sum
//     of the distances again, for each local (measured at about a
//     sixteenth of the cost of the first);
//   - adding a predecessor to a block scans its predecessors: the square
//     of the number of edges into each label.
//
// So the work is sum(distances) * (1 + locals/16) + sum(edges²). Real
// code keeps the distances short: Go and C compilers branch to shared
// dispatch blocks near the entry. A chain of sequential ifs, branches,
// calls or nested loops makes them as long as the chain.
func funcCost(expr []byte, locals uint64) (depth int, work float64, err error) {
	var (
		frames = []costFrame{{live: true, in: -1}}
		live   = true
		cur    int64   // the distance of the current block
		dist   float64 // the sum of the distances of blocks and edge sources
		preds  float64 // the sum of the squares of each label's edges
	)
	newBlock := func(d int64) { dist += float64(d) }
	// edge adds a branch from the current block to label l's target.
	edge := func(l uint32) {
		if !live || uint64(l) >= uint64(len(frames)) {
			return // an unknown label: wazero refuses the module
		}
		f := &frames[len(frames)-1-int(l)]
		f.preds++
		dist += float64(cur)
		if !f.loop && (f.in < 0 || cur < f.in) {
			f.in = cur
		}
	}
	// meterIf is a conditional the instrument pass adds: a then block,
	// which traps, an else block, and the join after the else.
	meterIf := func() {
		if live {
			newBlock(cur + 1)
			newBlock(cur + 1)
			newBlock(cur + 2)
			cur += 2
			preds += 3
		}
	}
	closeLabel := func(f *costFrame) {
		preds += float64(f.preds) * float64(f.preds)
	}
	push := func(f costFrame) bool {
		frames = append(frames, f)
		depth = max(depth, len(frames)-1)
		return depth <= MaxNestingDepth
	}

	ir := instrument.NewInstrReader(expr)
	for ir.Next() {
		in := ir.Instr()
		switch in.Op {
		case instrument.OpBlock:
			if !push(costFrame{live: live, in: -1}) {
				return depth, 0, nil
			}
		case instrument.OpLoop:
			if !push(costFrame{loop: true, live: live, in: -1}) {
				return depth, 0, nil
			}
			if live {
				frames[len(frames)-1].preds++ // falling in
				cur++
				newBlock(cur)
				meterIf() // the fuel check, and the flush inside it
				meterIf()
			}
		case instrument.OpIf:
			if !push(costFrame{isIf: true, live: live, cond: cur, in: -1}) {
				return depth, 0, nil
			}
			if live {
				newBlock(cur + 1) // then
				newBlock(cur + 1) // else, even if absent
				cur++
			}
		case instrument.OpElse:
			if live {
				edge(0)
			}
			f := &frames[len(frames)-1]
			f.hasElse = true
			live, cur = f.live, f.cond+1
		case instrument.OpEnd:
			if len(frames) == 1 { // the function's end: it returns
				meterIf()
				closeLabel(&frames[0])
				frames = frames[:0]
				break
			}
			if live && !frames[len(frames)-1].loop {
				edge(0) // falling through
			}
			f := frames[len(frames)-1]
			frames = frames[:len(frames)-1]
			if f.isIf && !f.hasElse && f.live { // the condition was false
				f.preds++
				if f.in < 0 || f.cond+1 < f.in {
					f.in = f.cond + 1
				}
			}
			closeLabel(&f)
			switch {
			case f.loop:
				if live {
					cur++
					newBlock(cur)
				}
			case f.in >= 0:
				live, cur = true, f.in+1
				newBlock(cur)
			default:
				live = false
			}
		case instrument.OpBr, instrument.OpBrIf:
			if in.Index == uint32(len(frames)-1) {
				meterIf() // a branch to the function's label returns
			}
			edge(in.Index)
			if in.Op == instrument.OpBr {
				live = false
			} else if live {
				cur++
				newBlock(cur)
			}
		case instrument.OpBrTable:
			meterIf()
			for _, l := range in.Labels {
				edge(l)
			}
			edge(in.Index)
			live = false
		case instrument.OpReturn, instrument.OpUnreachable:
			meterIf()
			live = false
		case instrument.OpCall, instrument.OpCallIndirect:
			meterIf()
		}
	}
	if err := ir.Err(); err != nil {
		return depth, 0, err
	}
	if ir.Len() != len(expr) {
		return depth, 0, fmt.Errorf("%d bytes after the final end", len(expr)-ir.Len())
	}
	return depth, dist*(1+float64(locals)/16) + preds, nil
}
