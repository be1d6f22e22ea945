package instrument_test

import (
	"context"
	"fmt"
	"os"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// Prepare exports the one mutable global of the sandbox's counter fixture,
// so that the sandbox can read it after a run and set it back.
func ExamplePrepare() {
	wasm, err := os.ReadFile("../sandbox/testdata/counter.wasm")
	if err != nil {
		panic(err)
	}
	_, info, err := instrument.Prepare(context.Background(), wasm)
	if err != nil {
		panic(err)
	}
	for _, g := range info.Globals {
		fmt.Printf("global %d (%s) exported as %s\n", g.Index, g.Type, g.Export)
	}
	fmt.Println("grows memory:", info.MemoryGrows)
	// Output:
	// global 0 (i32) exported as __cloister_global_0
	// grows memory: false
}

// An InstrReader walks a function body instruction by instruction, with
// each instruction's byte range: the base of a pass that inserts code.
func ExampleInstrReader() {
	wasm, err := os.ReadFile("testdata/br_table.wasm")
	if err != nil {
		panic(err)
	}
	m, err := instrument.Decode(context.Background(), wasm)
	if err != nil {
		panic(err)
	}
	ir := instrument.NewInstrReader(m.Code[0].Expr)
	for ir.Next() {
		if in := ir.Instr(); in.Op == instrument.OpBrTable {
			fmt.Printf("%s at [%d, %d): targets %v, default %d\n", in.Op, in.Pos, in.End, in.Labels, in.Index)
		}
	}
	if err := ir.Err(); err != nil {
		panic(err)
	}
	// Output:
	// br_table at [19, 26): targets [0 1 2 3], default 4
}
