package instrument_test

import (
	"context"
	"fmt"
	"os"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// PrepareMetered makes a module count the instructions it executes and
// stop when its fuel runs out. Before each call the host sets the counter
// to 0 and the fuel to the budget; after it, a trap with the fuel at
// FuelExhausted is fuel exhaustion. sum(10) of testdata/meter.wat executes
// 125 instructions: it completes with 125 in fuel, and not with 124.
func ExamplePrepareMetered() {
	ctx := context.Background()
	wasm, err := os.ReadFile("testdata/meter.wasm")
	if err != nil {
		panic(err)
	}
	metered, _, _, err := instrument.PrepareMetered(ctx, wasm)
	if err != nil {
		panic(err)
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod, err := r.Instantiate(ctx, metered)
	if err != nil {
		panic(err)
	}
	counter := mod.ExportedGlobal(instrument.CounterExport).(api.MutableGlobal)
	fuel := mod.ExportedGlobal(instrument.FuelExport).(api.MutableGlobal)
	for _, budget := range []int64{1000, 125, 124} {
		counter.Set(0)
		fuel.Set(uint64(budget))
		res, err := mod.ExportedFunction("sum").Call(ctx, 10)
		exhausted := err != nil && int64(fuel.Get()) == instrument.FuelExhausted
		fmt.Printf("fuel %d: result %v, %d instructions, fuel left %d, exhausted %v\n",
			budget, res, counter.Get(), int64(fuel.Get()), exhausted)
	}
	// Output:
	// fuel 1000: result [55], 125 instructions, fuel left 875, exhausted false
	// fuel 125: result [55], 125 instructions, fuel left 0, exhausted false
	// fuel 124: result [], 125 instructions, fuel left -1, exhausted true
}
