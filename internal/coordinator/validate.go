package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
)

// ValidateModule checks that b is a valid WebAssembly module that uses the
// WASI command ABI (exports _start). It compiles with wazero's interpreter,
// which validates fully without generating native code.
func ValidateModule(ctx context.Context, b []byte) error {
	if !isWasm(b) {
		return errors.New("module is not WebAssembly (missing \\0asm magic)")
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, b)
	if err != nil {
		return fmt.Errorf("module does not validate: %w", err)
	}
	defer cm.Close(ctx)
	if _, ok := cm.ExportedFunctions()["_start"]; !ok {
		return errors.New("module does not export _start (the WASI command ABI needs it)")
	}
	return nil
}
