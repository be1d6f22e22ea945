package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// DefaultName is the program name (argv[0]) a guest sees when
// Invocation.Name is empty.
const DefaultName = "function"

// Module is a compiled module, ready to run under fixed limits: a command
// through Run (every Run gets its own instance), a reactor through
// NewFunction. It is safe for concurrent use.
type Module struct {
	engine   *Engine
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
	codeHash string
	limits   Limits
	abi      ABI
	// info is what the rewriting pass learned of the module.
	info *instrument.Info
	// instHash is hex sha256 of the instrumented module that actually runs.
	instHash string
	// cmdSnap caches a command's post-instantiation snapshot hash.
	cmdSnap *lazyHash
	// base is the module config every run starts from: anonymous (so that
	// concurrent instances do not collide in the runtime's namespace) and
	// with no start functions (Run calls _start itself, so that it can read
	// the memory size before the instance is closed). wazero configs are
	// immutable, so sharing it between goroutines is safe.
	base wazero.ModuleConfig
	// spares are the zeroed memories of finished runs (spare.go).
	spares *spareMemories
}

// lazyHash is a hash computed once, on first use.
type lazyHash struct {
	once sync.Once
	hash string
	err  error
}

// InstrumentedHash is hex sha256 of the instrumented module that runs: the
// original with its globals exported and metering and fuel added.
func (m *Module) InstrumentedHash() string { return m.instHash }

// ABI reports the module's ABI.
func (m *Module) ABI() ABI { return m.abi }

// CodeHash returns the code hash the module was compiled under.
func (m *Module) CodeHash() string { return m.codeHash }

// Limits returns the limits the module runs under, defaults filled in.
func (m *Module) Limits() Limits { return m.limits }

// Invocation is the input of one run.
type Invocation struct {
	// Name is the program name the guest sees as argv[0]. Empty means
	// DefaultName. No other arguments are passed.
	Name string
	// Stdin is the request, read by the guest on stdin.
	Stdin []byte
	// Meta holds the CLOISTER_* metadata environment variables set by the
	// platform. They are merged over Caps.Env: on a clash Meta wins.
	Meta map[string]string
	// Caps are the capabilities the function's manifest grants.
	Caps Capabilities
}

// Result is the outcome of one run. Run fills it in even when it returns
// an error, as far as the run got.
type Result struct {
	// Stdout is what the guest wrote on stdout: at most Limits.MaxOutput
	// bytes.
	Stdout []byte
	// Stderr is the first Limits.MaxLog bytes the guest wrote on stderr.
	Stderr []byte
	// StderrTruncated is true if the guest wrote more stderr than was kept.
	StderrTruncated bool
	// ExitCode is the guest's exit code: 0 if _start returned, else the
	// code it passed to proc_exit.
	ExitCode uint32
	// Wall is the wall time of the run, instantiation included.
	Wall time.Duration
	// CPU is the CPU time (user plus system) the run's OS thread used,
	// instantiation included. It is measured where CPUMeasured is true:
	// on Linux, with clock_gettime(CLOCK_THREAD_CPUTIME_ID) while the
	// goroutine is locked to its thread, exact to the nanosecond.
	CPU time.Duration
	// CPUMeasured reports whether CPU was measured.
	CPUMeasured bool
	// Instructions is the exact count of instructions the call executed
	// (the instrumentation pass's cost model), where InstructionsMeasured.
	// After a trap other than fuel exhaustion it is a lower bound.
	Instructions         uint64
	InstructionsMeasured bool
	// HostCalls counts the calls the guest made to the cloister host
	// functions (reactors only).
	HostCalls uint64
	// SnapshotHash is the hash of the snapshot the run started from
	// (reactors only; empty for commands).
	SnapshotHash string
	// Generation is how many resets the sandbox had before this run: 0 for
	// a freshly made sandbox. Reused reports whether it came from the pool.
	Generation uint64
	Reused     bool
	// MemoryPages is the size of linear memory at the end of the run, in
	// 64 KiB pages: its peak, as WebAssembly memory never shrinks. It is 0
	// if the module has no memory or did not get as far as instantiating.
	MemoryPages uint32
}

// errWallLimit is the cancellation cause of a run that reached
// Limits.Timeout.
var errWallLimit = errors.New("wall-time limit reached")

// Run runs the module once: it instantiates a fresh instance (no state
// survives between runs), calls _start with inv, and closes the instance,
// whatever happened. The run ends when ctx ends, when it reaches
// Limits.Timeout, or when the guest writes more than Limits.MaxOutput bytes
// of stdout. Memory is bounded by Limits.MemoryPages.
//
// The error is nil if the guest returned from _start or exited with code 0.
// Otherwise it wraps one of ErrTrap, ErrTimeout, ErrMemoryLimit (with
// ErrTrap or ErrExit), ErrOutputTooLarge, ErrExit, ErrInvalidModule (the
// module failed to instantiate), ErrInvalidInvocation or ErrClosed, or, if
// ctx was cancelled, ctx's cancellation cause. The Result is filled in
// either way.
func (m *Module) Run(ctx context.Context, inv Invocation) (Result, error) {
	var res Result
	if m.engine.closed.Load() {
		return res, ErrClosed
	}
	if m.abi == ABIReactor {
		return res, fmt.Errorf("%w: a reactor runs through NewFunction and Function.Call", ErrInvalidInvocation)
	}
	env, err := mergeEnv(inv.Caps.Env, inv.Meta)
	if err != nil {
		return res, err
	}
	name := inv.Name
	if name == "" {
		name = DefaultName
	}
	if strings.IndexByte(name, 0) >= 0 {
		return res, fmt.Errorf("%w: program name contains NUL", ErrInvalidInvocation)
	}

	ctx = isolate(ctx)
	// Linear memory is its own mapping, reserved at the memory limit and
	// opened as the guest grows: growing never copies, and the pages go
	// back to the kernel when the instance closes. (wazero's default is a
	// Go slice, grown by copying: a 1 GiB guest then costs two to three
	// times that in Go heap, which the runtime returns only slowly.)
	var allocErr error
	ctx = experimental.WithMemoryAllocator(ctx, m.commandMemory(&allocErr))
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, m.limits.Timeout, errWallLimit)
	defer cancelTimeout()
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)

	stdout := &boundedBuffer{limit: m.limits.MaxOutput, onOverflow: func() { abort(ErrOutputTooLarge) }}
	// A command reaches only the state host functions (kv_*).
	st := &callState{kv: kvFrom(ctx), abort: abort}
	ctx = context.WithValue(ctx, callStateKey{}, st)
	stderr := &truncatingBuffer{limit: m.limits.MaxLog}
	cfg := m.base.
		WithStdin(bytes.NewReader(inv.Stdin)).
		WithStdout(stdout).
		WithStderr(stderr).
		WithArgs(name)
	// Each key is set once: wazero's WithEnv edits a shared slice in place
	// when it overwrites a key, so never overwrite.
	for _, kv := range env {
		cfg = cfg.WithEnv(kv[0], kv[1])
	}
	if inv.Caps.Clock {
		cfg = cfg.WithSysWalltime().WithSysNanotime().WithNanosleep(sleeper(ctx))
	}
	// Without the capability, the guest reads the same deterministic stream
	// as a reactor does. (Left unset, wazero would seed a math/rand source
	// for every instance, which costs more than the rest of setting up the
	// instance's system context.)
	if inv.Caps.Random {
		cfg = cfg.WithRandSource(rand.Reader)
	} else {
		cfg = cfg.WithRandSource(&detRand{})
	}

	out := m.call(ctx, cfg)
	if allocErr != nil && out.mod == nil {
		return res, fmt.Errorf("%w: reserving the guest's memory: %v", ErrMemoryLimit, allocErr)
	}
	res.Wall, res.CPU, res.CPUMeasured = out.wall, out.cpu, out.cpuMeasured
	res.Instructions, res.InstructionsMeasured = out.instructions, out.metered
	if out.mod != nil {
		res.MemoryPages = memoryPages(out.mod)
		if err := out.mod.Close(context.WithoutCancel(ctx)); err != nil {
			m.engine.log.LogAttrs(ctx, slog.LevelWarn, "closing instance", slog.String("code_hash", m.codeHash), slog.String("error", err.Error()))
		}
	}
	res.Stdout = stdout.buf
	res.Stderr = stderr.buf
	res.StderrTruncated = stderr.truncated
	res.HostCalls = st.calls
	if st.kvErr != nil {
		return res, fmt.Errorf("%w: %w", ErrState, st.kvErr)
	}
	if out.fuelOut && out.err != nil && !stdout.overflowed {
		return res, fmt.Errorf("%w: the budget of %d instructions ran out", ErrFuelExhausted, m.limits.Fuel)
	}
	return res, m.classify(ctx, out.err, out.mod != nil, stdout.overflowed, &res)
}

// callOutcome is what call returns.
type callOutcome struct {
	mod api.Module // nil if instantiation failed
	err error
	// instructions is the metered count; fuelOut tells the guest ran out.
	instructions     uint64
	metered, fuelOut bool
	wall, cpu        time.Duration
	cpuMeasured      bool
}

// call instantiates the module and calls _start, on one locked OS thread so
// that its CPU time can be read. The caller must close the instance.
func (m *Module) call(ctx context.Context, cfg wazero.ModuleConfig) callOutcome {
	var out callOutcome
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, ok0 := threadCPU()
	start := time.Now()

	out.mod, out.err = m.runtime.InstantiateModule(ctx, m.compiled, cfg)
	if out.err == nil {
		mt, metered := meterOf(out.mod)
		if metered {
			mt.arm(m.limits.Fuel)
		}
		// Compile checked that _start exists with type [] -> [].
		_, out.err = out.mod.ExportedFunction("_start").Call(ctx)
		if metered {
			out.instructions, out.fuelOut = mt.read()
			out.metered = true
		}
	}

	out.wall = time.Since(start)
	cpu1, ok1 := threadCPU()
	if ok0 && ok1 {
		out.cpu, out.cpuMeasured = cpu1-cpu0, true
	}
	return out
}

// classify turns the outcome of a run into the package's errors. It also
// sets res.ExitCode.
func (m *Module) classify(ctx context.Context, err error, instantiated, overflowed bool, res *Result) error {
	if overflowed {
		return fmt.Errorf("%w: stdout exceeded %d bytes", ErrOutputTooLarge, m.limits.MaxOutput)
	}
	if err == nil {
		return nil
	}
	atLimit := res.MemoryPages >= m.limits.MemoryPages

	var exit *sys.ExitError
	if errors.As(err, &exit) {
		code := exit.ExitCode()
		// wazero reports a context that ended as an exit with a reserved
		// code. A guest can pass the same code to proc_exit, so trust it only
		// if the context really did end.
		if ctx.Err() != nil && (code == sys.ExitCodeDeadlineExceeded || code == sys.ExitCodeContextCanceled) {
			return m.contextError(ctx)
		}
		if m.engine.closed.Load() {
			return ErrClosed // the runtime was closed under the guest
		}
		res.ExitCode = code
		if code == 0 {
			return nil
		}
		if atLimit {
			return &joinedError{
				msg:  fmt.Sprintf("%s: exited with code %d at the %d-page memory limit", ErrMemoryLimit, code, m.limits.MemoryPages),
				errs: []error{ErrMemoryLimit, ErrExit},
			}
		}
		return fmt.Errorf("%w: exit code %d", ErrExit, code)
	}

	if m.engine.closed.Load() {
		return ErrClosed
	}
	kind, isTrap := trapKind(err)
	if !isTrap {
		if !instantiated {
			// Compile vetted the imports, so this is rare: a data or element
			// segment out of bounds, say.
			return fmt.Errorf("%w: instantiating module: %s", ErrInvalidModule, shorten(err.Error()))
		}
		// A failure wazero does not classify, such as a panic recovered from
		// a host function. Log it for the operator; tell the caller little.
		m.engine.log.LogAttrs(ctx, slog.LevelWarn, "guest failed", slog.String("code_hash", m.codeHash), slog.String("error", shorten(err.Error())))
		kind = "guest failed"
	}
	if atLimit {
		return &joinedError{
			msg:  fmt.Sprintf("%s: trapped (%s) at the %d-page memory limit", ErrMemoryLimit, kind, m.limits.MemoryPages),
			errs: []error{ErrMemoryLimit, ErrTrap},
		}
	}
	return fmt.Errorf("%w: %s", ErrTrap, kind)
}

// contextError is the error for a run stopped because ctx ended.
func (m *Module) contextError(ctx context.Context) error {
	cause := context.Cause(ctx)
	if c, ok := ctx.(interface{ Cause() error }); ok {
		cause = c.Cause()
	}
	switch {
	case errors.Is(cause, ErrOutputTooLarge):
		// Not reached (classify checks the overflow first), kept for safety.
		return fmt.Errorf("%w: stdout exceeded %d bytes", ErrOutputTooLarge, m.limits.MaxOutput)
	case errors.Is(cause, errWallLimit):
		return fmt.Errorf("%w: wall-time limit of %s reached", ErrTimeout, m.limits.Timeout)
	case errors.Is(cause, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrTimeout, cause)
	default:
		return fmt.Errorf("sandbox: run cancelled: %w", cause)
	}
}

// trapKind reports whether err is a WebAssembly trap, and which. wazero
// reports traps with an error type of its internal wasmruntime package
// whose message is a fixed string ("unreachable", "out of bounds memory
// access", ...), wrapped in a message that includes the guest's stack trace.
// Only the fixed string is kept: the stack trace names guest functions.
func trapKind(err error) (string, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		t := reflect.TypeOf(e)
		if t.Kind() == reflect.Pointer && t.Elem().Name() == "Error" &&
			t.Elem().PkgPath() == wazeroPkgPrefix+"/internal/wasmruntime" {
			return e.Error(), true
		}
	}
	return "", false
}

// memoryPages returns the size of mod's memory in pages, or 0 if it has
// none. wazero returns a typed nil pointer, not a nil interface, for a
// module without memory, hence the reflection.
func memoryPages(mod api.Module) uint32 {
	if mem := memoryOf(mod); mem != nil {
		return mem.Size() / pageSize
	}
	return 0
}

// memoryOf returns the instance's memory, or nil if it has none (wazero
// returns a typed nil then).
func memoryOf(mod api.Module) api.Memory {
	mem := mod.Memory()
	if mem == nil || reflect.ValueOf(mem).IsNil() {
		return nil
	}
	return mem
}

// mergeEnv merges meta over env and returns the pairs sorted by key, after
// checking every name and value can be passed to the guest.
func mergeEnv(env, meta map[string]string) ([][2]string, error) {
	merged := make(map[string]string, len(env)+len(meta))
	for k, v := range env {
		merged[k] = v
	}
	for k, v := range meta {
		merged[k] = v
	}
	pairs := make([][2]string, 0, len(merged))
	for k, v := range merged {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("%w: environment variable name %q is not valid", ErrInvalidInvocation, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: environment variable %q contains NUL", ErrInvalidInvocation, k)
		}
		pairs = append(pairs, [2]string{k, v})
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return pairs, nil
}

// sleeper returns a real sleep that ends early when ctx ends, so that a
// guest granted the clock cannot outsleep its time limit.
func sleeper(ctx context.Context) sys.Nanosleep {
	return func(ns int64) {
		if ns <= 0 {
			return
		}
		t := time.NewTimer(time.Duration(ns))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// maxDetail bounds the guest-influenced text (wazero's messages, import
// names) that goes into an error.
const maxDetail = 120

// shorten returns the first line of s, cut to maxDetail bytes, so that an
// error stays one short line whatever the guest put in its module.
func shorten(s string) string {
	s = firstLine(s)
	if len(s) > maxDetail {
		s = strings.ToValidUTF8(s[:maxDetail], "") + "..."
	}
	return s
}

// quoteName quotes a name taken from a module, cut to a printable length.
func quoteName(s string) string {
	if len(s) > maxDetail/2 {
		return fmt.Sprintf("%q...", strings.ToValidUTF8(s[:maxDetail/2], ""))
	}
	return fmt.Sprintf("%q", s)
}
