package instrument

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
)

// validate compiles wasm with wazero's interpreter and the WebAssembly 2.0
// features (wazero's defaults), and returns an error wrapping ErrInvalid if
// wazero refuses it. It is the last step of every pass: no pass returns a
// module wazero has not accepted.
//
// wazero v1.12 sizes allocations from counts it reads without checking
// them (locals, and the name section's maps), so only hand it modules that
// Module.Encode produced from a Decode: never raw input. That is why it is
// not exported.
func validate(ctx context.Context, wasm []byte) (err error) {
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer func() {
		// wazero is not ours to trust on hostile input: a panic in its
		// compiler is an invalid module here, not a crash.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: wazero panicked compiling the module: %v", ErrInvalid, p)
		}
		_ = r.Close(ctx) // a throwaway runtime: the validation result is what counts
	}()
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return cm.Close(ctx)
}
