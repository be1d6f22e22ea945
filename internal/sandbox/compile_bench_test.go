package sandbox

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// Generated modules for the compile bounds. They are built with the
// instrument package's encoder: function 0 is exported as _start, every
// function has type [] -> [], and each body is given as its instructions,
// final end included.

// genModule returns a module whose functions have the given bodies.
func genModule(bodies ...instrument.Body) []byte {
	m := &instrument.Module{
		Types:   []instrument.FuncType{{}},
		Exports: []instrument.Export{{Name: "_start", Kind: instrument.KindFunc, Index: 0}},
		Funcs:   make([]uint32, len(bodies)),
		Code:    bodies,
	}
	b, err := m.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// genBody returns a body of code repeated n times, then end.
func genBody(n int, code ...byte) instrument.Body {
	b := make([]byte, 0, n*len(code)+1)
	for range n {
		b = append(b, code...)
	}
	return instrument.Body{Expr: append(b, byte(instrument.OpEnd))}
}

// genNested returns a body of n nested blocks, loops or ifs (each if
// with an i32.const 0 condition).
func genNested(op instrument.Opcode, n int) instrument.Body {
	var b []byte
	for range n {
		if op == instrument.OpIf {
			b = append(b, byte(instrument.OpI32Const), 0)
		}
		b = append(b, byte(op), 0x40)
	}
	for range n + 1 {
		b = append(b, byte(instrument.OpEnd))
	}
	return instrument.Body{Expr: b}
}

// genGoLike returns a body shaped as Go's compiler shapes a function of n
// call sites: a loop around n nested blocks, a br_table that jumps into
// the code after any of them, and after each block's end a call.
func genGoLike(n int) instrument.Body {
	b := []byte{byte(instrument.OpLoop), 0x40}
	for range n {
		b = append(b, byte(instrument.OpBlock), 0x40)
	}
	b = append(b, byte(instrument.OpLocalGet), 0, byte(instrument.OpBrTable))
	b = instrument.AppendU32(b, uint32(n))
	for i := range n {
		b = instrument.AppendU32(b, uint32(i))
	}
	b = instrument.AppendU32(b, uint32(n))
	for range n {
		b = append(b, byte(instrument.OpEnd), byte(instrument.OpCall), 0)
	}
	b = append(b, byte(instrument.OpEnd), byte(instrument.OpEnd))
	return instrument.Body{Locals: []instrument.LocalGroup{{Count: 1, Type: instrument.I32}}, Expr: b}
}

// genLiveLocals returns a body that sets n locals, runs a chain of n ifs,
// then reads every local: each local is live across every join, the worst
// case of wazero's phi elimination.
func genLiveLocals(n int) instrument.Body {
	var b []byte
	for i := range n {
		b = append(b, byte(instrument.OpI32Const), 1, byte(instrument.OpLocalSet))
		b = instrument.AppendU32(b, uint32(i))
	}
	for range n {
		b = append(b, byte(instrument.OpI32Const), 0, byte(instrument.OpIf), 0x40, byte(instrument.OpEnd))
	}
	for i := range n {
		b = append(b, byte(instrument.OpLocalGet))
		b = instrument.AppendU32(b, uint32(i))
		b = append(b, byte(instrument.OpDrop))
	}
	b = append(b, byte(instrument.OpEnd))
	return instrument.Body{Locals: []instrument.LocalGroup{{Count: uint32(n), Type: instrument.I32}}, Expr: b}
}

var (
	// drop1 is i32.const 1, drop: straight-line code.
	drop1 = []byte{byte(instrument.OpI32Const), 1, byte(instrument.OpDrop)}
	// call0 calls function 0: metering makes it a branch.
	call0 = []byte{byte(instrument.OpCall), 0}
	// if0 is an empty if: a branch and a join.
	if0 = []byte{byte(instrument.OpI32Const), 0, byte(instrument.OpIf), 0x40, byte(instrument.OpEnd)}
)

// largestAccepted returns the largest n, doubling from start, for which
// prepareModule accepts gen(n), and that module: the most expensive
// module of a shape that the compile bounds let through.
func largestAccepted(gen func(n int) []byte, start int) (int, []byte) {
	accepts := func(n int) bool { _, _, err := prepareModule(gen(n)); return err == nil }
	lo, hi := start, 2*start
	for accepts(hi) {
		lo, hi = hi, 2*hi
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; accepts(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, gen(lo)
}

// BenchmarkCompile measures Engine.Compile, all of it (the structure and
// compile-cost checks, the instrument pass and wazero's compiler), on
// generated modules of growing size, and reports the time per kilobyte of
// module. Compile time should grow in proportion to the size: the "worst"
// modules are the most expensive the compile bounds let through, of the
// shapes on which wazero's compiler is super-linear.
//
//	go test -run '^$' -bench BenchmarkCompile -benchtime 3x ./internal/sandbox/
func BenchmarkCompile(b *testing.B) {
	type bench struct {
		name string
		wasm []byte
	}
	var benches []bench
	add := func(name string, wasm []byte) { benches = append(benches, bench{name, wasm}) }
	for _, n := range []int{1_000, 10_000, 100_000} {
		bodies := make([]instrument.Body, n)
		for i := range bodies {
			bodies[i] = genBody(4, drop1...)
		}
		add("funcs/"+strconv.Itoa(n), genModule(bodies...))
	}
	for _, kb := range []int{16, 256, 1024} {
		add(fmt.Sprintf("flat/%dKB", kb), genModule(genBody(kb<<10/len(drop1), drop1...)))
	}
	for _, n := range []int{1_024, 4_096} {
		add("nested-blocks/"+strconv.Itoa(n), genModule(genNested(instrument.OpBlock, n)))
	}
	// Nested as deep as allowed: the loop and its blocks.
	add("go-like/"+strconv.Itoa(MaxNestingDepth-1), genModule(genGoLike(MaxNestingDepth-1)))
	worst := []struct {
		name string
		gen  func(n int) []byte
	}{
		{"nested-blocks", func(n int) []byte { return genModule(genNested(instrument.OpBlock, n)) }},
		{"nested-loops", func(n int) []byte { return genModule(genNested(instrument.OpLoop, n)) }},
		{"if-chain", func(n int) []byte { return genModule(genBody(n, if0...)) }},
		{"calls", func(n int) []byte { return genModule(genBody(n, call0...)) }},
		{"live-locals", func(n int) []byte { return genModule(genLiveLocals(n)) }},
		// Many functions: the budget that grows with the code's size.
		{"calls-in-1024-funcs", func(n int) []byte {
			bodies := make([]instrument.Body, 1024)
			for i := range bodies {
				bodies[i] = genBody(n, call0...)
			}
			return genModule(bodies...)
		}},
	}
	for _, w := range worst {
		n, wasm := largestAccepted(w.gen, 64)
		add(fmt.Sprintf("worst/%s/%d", w.name, n), wasm)
	}

	e := newEngine(b)
	ctx := context.Background()
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.wasm)))
			for i := range b.N {
				key := fmt.Sprintf("%s/%d", bb.name, i)
				if _, err := e.Compile(ctx, key, bb.wasm, Limits{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				evict(e, key)
				b.StartTimer()
			}
			kb := float64(len(bb.wasm)) / 1024
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/kb, "ns/KB")
		})
	}
}

// evict removes a compiled module from e's cache and releases it, so that
// a benchmark does not hold every module it compiled.
func evict(e *Engine, codeHash string) {
	e.mu.Lock()
	ent := e.modules[cacheKey{codeHash: codeHash, pages: DefaultMemoryPages}]
	delete(e.modules, cacheKey{codeHash: codeHash, pages: DefaultMemoryPages})
	e.mu.Unlock()
	if ent != nil && ent.mod != nil {
		_ = ent.mod.compiled.Close(context.Background())
	}
}
