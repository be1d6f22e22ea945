package instrument

import "errors"

// Errors of this package. Every error it returns wraps one of them, with
// detail (an offset in the module, a section, a function body).
var (
	// ErrMalformed means the input does not decode as a WebAssembly 2.0
	// binary module.
	ErrMalformed = errors.New("malformed WebAssembly module")
	// ErrLimit means the module is well-formed but over a limit of this
	// package (MaxFunctionLocals).
	ErrLimit = errors.New("WebAssembly module over an instrumentation limit")
	// ErrReserved means the module already exports a name under
	// GlobalPrefix that is not the export Prepare itself would add.
	ErrReserved = errors.New("WebAssembly module uses a reserved export name")
	// ErrInvalid means wazero refused the rewritten module. The input was
	// invalid: a pass never turns a valid module into an invalid one.
	ErrInvalid = errors.New("invalid WebAssembly module")
)
