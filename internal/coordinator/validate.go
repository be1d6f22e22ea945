package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
)

// ErrModuleMemory means a module declares more initial memory than its
// manifest allows.
var ErrModuleMemory = errors.New("module memory exceeds the manifest's limit")

// ValidateModule checks that b is a valid WebAssembly module that uses the
// WASI command ABI (exports _start) and whose declared minimum memory fits
// in memoryPages. It compiles with wazero's interpreter, which validates
// fully without generating native code.
func ValidateModule(ctx context.Context, b []byte, memoryPages uint32) error {
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
	for _, m := range cm.ExportedMemories() {
		if m.Min() > memoryPages {
			return fmt.Errorf("%w: it declares %d pages, the limit is %d", ErrModuleMemory, m.Min(), memoryPages)
		}
	}
	for _, m := range cm.ImportedMemories() {
		if m.Min() > memoryPages {
			return fmt.Errorf("%w: it imports %d pages, the limit is %d", ErrModuleMemory, m.Min(), memoryPages)
		}
	}
	return nil
}
