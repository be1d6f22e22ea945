package sandbox

import "errors"

// Sentinel errors. Errors returned by this package wrap one (sometimes two)
// of these with a short, fixed detail; test for them with [errors.Is].
var (
	// ErrInvalidModule means the bytes given to [Engine.Compile] are not a
	// module this package can run: not WebAssembly, malformed or invalid, or
	// not a WASI command (no _start export taking no arguments), or it
	// imports something other than wasi_snapshot_preview1 functions, or a
	// function declares more than 50,000 locals, or it is over a compile
	// bound (then the error also wraps ErrCompileLimit).
	ErrInvalidModule = errors.New("sandbox: invalid module")

	// ErrCompileLimit means [Engine.Compile] refused the module, before
	// compiling it, because compiling it would cost more than the engine
	// allows: a function nests blocks deeper than [MaxNestingDepth], the
	// functions declare more than [MaxModuleLocals] locals and parameters
	// in all, or the module's estimated compile work is over its budget
	// (deep nesting, long chains of branches or calls, and many locals
	// live across them; see compile_cost.go). The error always wraps
	// ErrInvalidModule too, so callers that map ErrInvalidModule need not
	// know it.
	ErrCompileLimit = errors.New("sandbox: module over a compile limit")

	// ErrTrap means the guest trapped: it executed unreachable, accessed
	// memory out of bounds, overflowed its stack, divided by zero, and so on.
	ErrTrap = errors.New("sandbox: guest trapped")

	// ErrTimeout means the run was stopped because it reached its wall-time
	// limit (Limits.Timeout) or the deadline of the caller's context. From
	// [Engine.Compile] it means the caller's deadline passed before the
	// compile was done; the error then also wraps
	// [context.DeadlineExceeded].
	ErrTimeout = errors.New("sandbox: time limit exceeded")

	// ErrMemoryLimit means the guest needs more memory than it is allowed.
	// [Engine.Compile] returns it when the module's declared minimum memory
	// is over Limits.MemoryPages, or a table's declared minimum is over
	// MaxTableEntries; [Module.Run]
	// returns it when the guest failed (trapped or exited non-zero) while
	// its memory was at the limit, as a grow loop does. In the second case
	// the error also wraps [ErrTrap] or [ErrExit], so check ErrMemoryLimit
	// first.
	ErrMemoryLimit = errors.New("sandbox: memory limit exceeded")

	// ErrOutputTooLarge means the guest wrote more than Limits.MaxOutput
	// bytes to stdout. The guest is stopped at the first write over the
	// limit, and this error is reported whatever the guest did next (trap,
	// exit). Result.Stdout then holds the first Limits.MaxOutput bytes.
	ErrOutputTooLarge = errors.New("sandbox: output too large")

	// ErrFuelExhausted means the guest used up its instruction budget
	// (Limits.Fuel) and was stopped.
	ErrFuelExhausted = errors.New("sandbox: fuel exhausted")

	// ErrExit means the guest exited with a non-zero code (proc_exit). The
	// Result is still returned filled in, with the code in Result.ExitCode.
	ErrExit = errors.New("sandbox: guest exited with non-zero code")

	// ErrClosed means the [Engine] was closed, before or during the call.
	ErrClosed = errors.New("sandbox: engine closed")

	// ErrInvalidLimits means a [Limits] field is negative or out of range.
	ErrInvalidLimits = errors.New("sandbox: invalid limits")

	// ErrInvalidInvocation means an [Invocation] cannot be run as given,
	// for example an environment variable name that is empty or contains
	// '=' or NUL.
	ErrInvalidInvocation = errors.New("sandbox: invalid invocation")
)

// joinedError is an error that wraps several sentinels under one message,
// so that a failure can be both, say, ErrMemoryLimit and ErrTrap without
// repeating both sentinel texts.
type joinedError struct {
	msg  string
	errs []error
}

func (e *joinedError) Error() string   { return e.msg }
func (e *joinedError) Unwrap() []error { return e.errs }
