package instrument

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// progGen writes random valid modules whose every run ends: nested
// blocks, loops, ifs with and without else, blocks with a result, br,
// br_if and br_table to any label but a loop's (so that only a loop's own
// counted back edge repeats it), return, calls down the function list,
// dead code after branches, and rare traps, both explicit (unreachable)
// and not (a division by zero). Each function takes an i32 and adds into
// the exported global "g" and its local accumulator.
type progGen struct {
	r      *rand.Rand
	b      []byte
	labels []genLabel // the enclosing labels, innermost last; the function's first
	loops  int        // enclosing loops: each has its counter local
	fn     int        // the function being written
	nfuncs int
	stmts  int // statements left to write in this function
}

type genLabel struct {
	loop   bool
	result bool // the label takes an i32
}

const (
	genMaxLoops = 3
	localX      = 0 // the parameter
	localAcc    = 1
	localCount  = 2 // the first loop counter
)

// genModule returns a module of nfuncs functions; function 0 is exported
// as "f".
func genModule(r *rand.Rand, nfuncs int) []byte {
	m := &Module{
		Types:   []FuncType{{Params: []ValType{I32}}},
		Globals: []GlobalDef{{Type: GlobalType{Type: I32, Mutable: true}, Init: []byte{byte(OpI32Const), 0, byte(OpEnd)}}},
		Exports: []Export{{Name: "f", Kind: KindFunc, Index: 0}, {Name: "g", Kind: KindGlobal, Index: 0}},
	}
	for i := range nfuncs {
		g := &progGen{r: r, fn: i, nfuncs: nfuncs, stmts: 10 + r.IntN(40)}
		g.labels = []genLabel{{}}
		g.block()
		g.b = append(g.b, byte(OpEnd))
		m.Funcs = append(m.Funcs, 0)
		m.Code = append(m.Code, Body{Locals: []LocalGroup{{Count: 1 + genMaxLoops, Type: I32}}, Expr: g.b})
	}
	out, err := m.Encode()
	if err != nil {
		panic(err)
	}
	return out
}

func (g *progGen) op(bs ...byte) { g.b = append(g.b, bs...) }

func (g *progGen) i32(v int32) { g.b = AppendS32(append(g.b, byte(OpI32Const)), v) }

// cond pushes an i32 that depends on the input and the accumulator.
func (g *progGen) cond() {
	g.op(byte(OpLocalGet), localAcc, byte(OpLocalGet), localX, 0x73) // i32.xor
	g.i32(int32(1 + g.r.IntN(7)))
	g.op(0x71) // i32.and
}

// block writes statements, which leave the stack as they found it.
func (g *progGen) block() {
	for n := g.r.IntN(5); n > 0 && g.stmts > 0; n-- {
		g.stmt()
	}
}

// target returns a random label that is not a loop's, and whether there
// is one of the given arity.
func (g *progGen) target(result bool) (uint32, bool) {
	var ls []uint32
	for i, l := range g.labels {
		if !l.loop && l.result == result {
			ls = append(ls, uint32(len(g.labels)-1-i))
		}
	}
	if len(ls) == 0 {
		return 0, false
	}
	return ls[g.r.IntN(len(ls))], true
}

func (g *progGen) stmt() {
	g.stmts--
	depth := len(g.labels)
	switch k := g.r.IntN(20); {
	case k < 5: // arithmetic on the accumulator and the global
		g.op(byte(OpLocalGet), localAcc)
		g.i32(int32(g.r.Uint32()))
		g.op([]byte{0x6a, 0x6c, 0x73, 0x77}[g.r.IntN(4)]) // add, mul, xor, rotl
		g.op(byte(OpLocalTee), localAcc, byte(OpGlobalGet), 0, 0x6a, byte(OpGlobalSet), 0)
	case k < 6:
		g.op(byte(OpNop))
	case k < 8 && depth < 8: // block, with or without a result
		result := g.r.IntN(3) == 0
		if result {
			g.op(byte(OpBlock), byte(I32))
		} else {
			g.op(byte(OpBlock), 0x40)
		}
		g.labels = append(g.labels, genLabel{result: result})
		g.block()
		g.labels = g.labels[:len(g.labels)-1]
		if result {
			g.op(byte(OpLocalGet), localAcc, byte(OpEnd), byte(OpLocalSet), localAcc)
		} else {
			g.op(byte(OpEnd))
		}
	case k < 10 && depth < 8: // if, with or without else
		g.cond()
		g.op(byte(OpIf), 0x40)
		g.labels = append(g.labels, genLabel{})
		g.block()
		if g.r.IntN(2) == 0 {
			g.op(byte(OpElse))
			g.block()
		}
		g.labels = g.labels[:len(g.labels)-1]
		g.op(byte(OpEnd))
	case k < 12 && depth < 8 && g.loops < genMaxLoops: // a loop run 1 to 4 times
		counter := byte(localCount + g.loops)
		g.i32(int32(1 + g.r.IntN(4)))
		g.op(byte(OpLocalSet), counter, byte(OpLoop), 0x40)
		g.labels = append(g.labels, genLabel{loop: true})
		g.loops++
		g.block()
		g.loops--
		g.labels = g.labels[:len(g.labels)-1]
		g.op(byte(OpLocalGet), counter)
		g.i32(1)
		g.op(byte(OpI32Sub), byte(OpLocalTee), counter, byte(OpBrIf), 0, byte(OpEnd))
	case k < 14: // br_if, maybe with a value
		result := g.r.IntN(3) == 0
		l, ok := g.target(result)
		if !ok {
			return
		}
		if result {
			g.op(byte(OpLocalGet), localAcc)
		}
		g.cond()
		g.op(byte(OpBrIf), byte(l))
		if result {
			g.op(byte(OpLocalSet), localAcc)
		}
	case k < 15: // br or br_table, then dead code
		result := g.r.IntN(3) == 0
		l, ok := g.target(result)
		if !ok {
			return
		}
		if result {
			g.op(byte(OpLocalGet), localAcc)
		}
		if g.r.IntN(2) == 0 {
			g.op(byte(OpBr), byte(l))
		} else {
			g.cond()
			n := 1 + g.r.IntN(4)
			g.op(byte(OpBrTable), byte(n))
			for range n + 1 {
				t, _ := g.target(result)
				g.op(byte(t))
			}
		}
		g.block() // dead
	case k < 16:
		g.op(byte(OpReturn))
		g.block() // dead
	case k < 18 && g.fn+1 < g.nfuncs: // call a later function
		g.op(byte(OpLocalGet), localAcc, byte(OpCall), byte(g.fn+1+g.r.IntN(g.nfuncs-g.fn-1)))
	case k < 19: // sometimes traps: unreachable
		g.op(byte(OpLocalGet), localAcc, byte(OpLocalGet), localX, 0x6a) // i32.add
		g.i32(63)
		g.op(0x71, byte(OpI32Eqz), byte(OpIf), 0x40, byte(OpUnreachable), byte(OpEnd))
	default: // sometimes traps: a division by zero
		g.i32(1000)
		g.op(byte(OpLocalGet), localAcc)
		g.i32(63)
		g.op(0x71, 0x6e, byte(OpDrop)) // i32.and, i32.div_u
	}
}

// TestMeterRandomPrograms meters random programs (progGen), runs them
// with several inputs, and checks that the metered module behaves as the
// original, that its count is the naive oracle's (exactly, unless the
// run trapped otherwise than at an unreachable: then at most), and that a
// run completes with exactly its count in fuel and traps with one less.
func TestMeterRandomPrograms(t *testing.T) {
	programs := 150
	if testing.Short() {
		programs = 30
	}
	var completed, traps int
	for seed := range uint64(programs) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		in := genModule(r, 1+r.IntN(4))
		out, _, _, err := PrepareMetered(t.Context(), in)
		if err != nil {
			t.Fatalf("program %d: %v", seed, err)
		}
		naive := meterNaive(t, in)
		var sc scenario
		for x := range uint64(6) {
			sc.steps = append(sc.steps, step{fn: "f", args: []uint64{x * 0x9e3779b9}})
		}
		_, orig := runScenario(t, in, sc, compiler, nil)
		_, got := runScenario(t, out, sc, compiler, nil)
		_, oracle := runScenario(t, naive, sc, compiler, nil)
		for i := range got {
			name := fmt.Sprintf("program %d, input %d", seed, i)
			if got[i].behaviour() != orig[i].behaviour() {
				t.Errorf("%s: metered %s, original %s", name, brief(got[i]), brief(orig[i]))
			}
			switch got[i].Err {
			case "", "wasm error: unreachable":
				if got[i].Count != oracle[i].Count {
					t.Errorf("%s: count %d, the oracle's %d (%s)", name, got[i].Count, oracle[i].Count, brief(got[i]))
				}
			default:
				traps++
				if got[i].Count > oracle[i].Count {
					t.Errorf("%s: count %d, over the oracle's %d (%s)", name, got[i].Count, oracle[i].Count, brief(got[i]))
				}
			}
			if got[i].Err != "" {
				continue
			}
			completed++
			n := got[i].Count
			one := scenario{steps: []step{sc.steps[i]}}
			_, exact := runScenario(t, out, one, compiler, func(int) int64 { return n })
			if exact[0].Err != "" || exact[0].Count != n || exact[0].Fuel != 0 {
				t.Errorf("%s with fuel %d: %s", name, n, brief(exact[0]))
			}
			if n == 0 {
				continue
			}
			_, short := runScenario(t, out, one, compiler, func(int) int64 { return n - 1 })
			if short[0].Err != "wasm error: unreachable" || short[0].Fuel != FuelExhausted || short[0].Count != n {
				t.Errorf("%s with fuel %d: %s; want the trap of exhausted fuel", name, n-1, brief(short[0]))
			}
		}
	}
	t.Logf("%d programs: %d runs completed, %d trapped otherwise than at an unreachable", programs, completed, traps)
}
