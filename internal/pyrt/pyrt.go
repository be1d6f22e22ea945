// Package pyrt runs Python functions (OpenWhisk-style actions: a .py
// source that defines main(params: dict), which returns a JSON-able value)
// on one shared WebAssembly engine: CPython 3.11 compiled for wasm32-wasi
// as a Cloister reactor, with its standard library frozen into the module
// (engine/engine.c, engine/vfs.c, engine/_cloister.py, built from Debian's
// source package by scripts/pyengine.sh; docs/python.md).
//
// The engine is an ordinary reactor for internal/sandbox, so a Python
// function gets exactly what a WebAssembly function gets: its code is
// instrumented for metering and fuel, its memory, wall time and fuel are
// bounded by the manifest's limits, it has no host access beyond the
// manifest's grants (the engine imports only the reactor ABI, the state
// functions behind cloister.state and seven WASI functions; its files live
// in its own memory), and every call starts from the snapshot taken after
// the interpreter's start-up, restored copy-on-write. The engine is compiled once per process and memory limit
// and shared by every Python function (its code hash is [EngineHash]). A
// function's own code is its source, which either travels with each
// request ([Request], [Call]: its top level runs at every call) or is
// loaded once into a snapshot of its own ([NewFunction], [Invoke]: its top
// level runs at deploy, and a call only calls main).
//
// # What it must never do
//
//   - Run a script anywhere but inside the sandboxed engine.
//   - Trust the engine's answer: [Response] checks its framing and reports
//     anything malformed as [ErrEngine].
package pyrt

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/enginert"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// Runtime and ABI are the manifest values of a Python function.
const (
	Runtime = "python"
	ABI     = "python"
)

// MaxScriptBytes bounds a function's source.
const MaxScriptBytes = 4 << 20

// MinMemoryPages is the smallest memory limit (in 64 KiB pages) the engine
// starts in: its snapshot after start-up is 233 pages (docs/python.md), and
// the default limit, sandbox.DefaultMemoryPages, leaves a call the rest.
const MinMemoryPages = 256

//go:embed engine/python.wasm
var engine []byte

var engineHash = enginert.Hash(engine)

// Engine returns the engine module's bytes. Callers must not modify them.
func Engine() []byte { return engine }

// EngineHash is the hex sha256 of [Engine]: the code hash under which the
// sandbox compiles and caches it.
func EngineHash() string { return engineHash }

// Errors. Test with errors.Is.
var (
	// ErrScript: the source is not acceptable (empty, too large, not
	// UTF-8, or has a NUL byte).
	ErrScript = errors.New("pyrt: invalid script")
	// ErrParams: the input is not a JSON object.
	ErrParams = errors.New("pyrt: parameters must be a JSON object")
	// ErrException: the script raised an exception that nothing caught
	// (python_error); the error is an *Exception.
	ErrException = errors.New("pyrt: uncaught exception")
	// ErrOutOfMemory: the interpreter ran out of memory (the function's
	// memory limit): a MemoryError that nothing caught.
	ErrOutOfMemory = errors.New("pyrt: out of memory")
	// ErrEngine: the engine answered something malformed, or refused the
	// request's framing.
	ErrEngine = errors.New("pyrt: engine failure")
)

// Exception is an uncaught Python exception.
type Exception struct {
	// Name is the exception's class, qualified by its module unless it is
	// a built-in ("ValueError", "json.decoder.JSONDecodeError").
	Name string `json:"name"`
	// Message is str() of the exception.
	Message string `json:"message"`
	// Traceback is the traceback as Python prints it, from the script's
	// first frame ("Traceback (most recent call last): ...").
	Traceback string `json:"traceback,omitempty"`
}

func (e *Exception) Error() string {
	if e.Message == "" {
		return e.Name
	}
	return e.Name + ": " + e.Message
}

// Is makes errors.Is(err, ErrException) true for an *Exception.
func (e *Exception) Is(target error) bool { return target == ErrException }

// CheckScript reports whether b can be a function's source.
func CheckScript(b []byte) error {
	return enginert.CheckSource(b, MaxScriptBytes, ErrScript)
}

// Request frames a call of script with the request body params for the
// engine: "CPY1", the script's length (uint32, little-endian), the script,
// then the parameters. Empty or all-blank params mean {}; otherwise they
// must be a JSON object in UTF-8, as OpenWhisk's are.
func Request(script, params []byte) ([]byte, error) {
	if err := CheckScript(script); err != nil {
		return nil, err
	}
	p, err := checkParams(params)
	if err != nil {
		return nil, err
	}
	return enginert.Frame("CPY1", script, p), nil
}

// checkParams returns the request body as the engine takes it: {} for
// empty or all-blank params, otherwise a JSON object in UTF-8 (Go's
// json.Valid lets invalid UTF-8 through; Python's json does not).
func checkParams(params []byte) ([]byte, error) {
	p := bytes.TrimSpace(params)
	if len(p) == 0 {
		return []byte("{}"), nil
	}
	if p[0] != '{' || !json.Valid(p) || !utf8.Valid(p) {
		return nil, ErrParams
	}
	return p, nil
}

// Response decodes the engine's answer: the result's JSON, or an error
// wrapping ErrException (an *Exception), ErrOutOfMemory or ErrEngine.
func Response(out []byte) ([]byte, error) {
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty answer", ErrEngine)
	}
	body := out[1:]
	switch out[0] {
	case 'R':
		if !json.Valid(body) {
			return nil, fmt.Errorf("%w: result is not JSON", ErrEngine)
		}
		return body, nil
	case 'E':
		var e Exception
		if err := json.Unmarshal(body, &e); err != nil || e.Name == "" {
			return nil, fmt.Errorf("%w: exception is not well-formed JSON", ErrEngine)
		}
		return nil, &e
	case 'O':
		return nil, ErrOutOfMemory
	case 'X':
		return nil, fmt.Errorf("%w: %s", ErrEngine, enginert.Printable(body))
	default:
		return nil, fmt.Errorf("%w: unknown answer tag %#x", ErrEngine, out[0])
	}
}

// Compile compiles the engine with limits on e (cached by [EngineHash], so
// every Python function shares one compilation per memory limit).
func Compile(ctx context.Context, e *sandbox.Engine, limits sandbox.Limits) (*sandbox.Module, error) {
	return enginert.Compile(ctx, e, engineHash, engine, limits, ErrEngine)
}

// Call runs script with params on f, a function made from the engine
// module, and decodes the answer. The sandbox's errors (limits, traps) are
// returned as they are; otherwise the error is one of [Request]'s or
// [Response]'s. The Result is the sandbox's, for metering and the logs
// (the script's stdout and stderr).
func Call(ctx context.Context, f *sandbox.Function, script, params []byte) ([]byte, sandbox.Result, error) {
	in, err := Request(script, params)
	if err != nil {
		return nil, sandbox.Result{}, err
	}
	res, err := f.Call(ctx, in)
	if err != nil {
		return nil, res, err
	}
	out, err := Response(res.Stdout)
	return out, res, err
}

// Check compiles script on f without running it: nil, or an error
// wrapping ErrScript, ErrException (an *Exception, such as a SyntaxError)
// or one of the sandbox's errors.
func Check(ctx context.Context, f *sandbox.Function, script []byte) error {
	if err := CheckScript(script); err != nil {
		return err
	}
	res, err := f.Call(ctx, enginert.Frame("CPYC", script, nil))
	if err != nil {
		return err
	}
	_, err = Response(res.Stdout)
	return err
}

// LoadRequest frames script as the init input that loads it once, before
// the snapshot ([sandbox.FunctionSpec.InitInput]): "CPYI", the script's
// length (uint32, little-endian) and the script.
func LoadRequest(script []byte) ([]byte, error) {
	if err := CheckScript(script); err != nil {
		return nil, err
	}
	return enginert.Frame("CPYI", script, nil), nil
}

// InvokeRequest frames a call of the loaded script's main with params:
// "CPYP", a zero length, then the parameters (as in [Request]).
func InvokeRequest(params []byte) ([]byte, error) {
	p, err := checkParams(params)
	if err != nil {
		return nil, err
	}
	return enginert.Frame("CPYP", nil, p), nil
}

// NewFunction makes a function of m (the engine, from [Compile]) whose
// snapshot is taken after script was loaded: its top level (imports,
// constants) runs once, here, with the deterministic clock and random
// source, and every call made with [Invoke] only calls main from that
// snapshot. A script that cannot be loaded (a syntax error, an exception
// at its top level) still makes a function; every request then answers
// that error ([Check] reports it).
func NewFunction(ctx context.Context, m *sandbox.Module, spec sandbox.FunctionSpec, script []byte) (*sandbox.Function, error) {
	in, err := LoadRequest(script)
	if err != nil {
		return nil, err
	}
	spec.InitInput = in
	return m.NewFunction(ctx, spec)
}

// Invoke calls main with params on f, a function made by [NewFunction],
// and decodes the answer as [Call] does.
func Invoke(ctx context.Context, f *sandbox.Function, params []byte) ([]byte, sandbox.Result, error) {
	in, err := InvokeRequest(params)
	if err != nil {
		return nil, sandbox.Result{}, err
	}
	res, err := f.Call(ctx, in)
	if err != nil {
		return nil, res, err
	}
	out, err := Response(res.Stdout)
	return out, res, err
}

// InspectLoaded is [Inspect] for a function made by [NewFunction]: it
// loads script in a snapshot taken with spec and returns the snapshot's
// hash, or the error that loading the script raised.
func InspectLoaded(ctx context.Context, e *sandbox.Engine, limits sandbox.Limits, spec sandbox.FunctionSpec, script []byte) (snapshotHash string, err error) {
	m, err := Compile(ctx, e, limits)
	if err != nil {
		return "", err
	}
	spec.MaxSandboxes, spec.Prewarm, spec.IdleTimeout = 1, 0, -1
	f, err := NewFunction(ctx, m, spec, script)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := Check(ctx, f, script); err != nil {
		return "", err
	}
	return f.Snapshot().Hash(), nil
}

// Inspect is what the worker that inspects a deploy does for a Python
// function: it compiles the engine with limits, takes its snapshot with
// spec (as every worker serving it will: the same hash), and compiles
// script in it.
func Inspect(ctx context.Context, e *sandbox.Engine, limits sandbox.Limits, spec sandbox.FunctionSpec, script []byte) (snapshotHash string, err error) {
	if err := CheckScript(script); err != nil {
		return "", err
	}
	m, err := Compile(ctx, e, limits)
	if err != nil {
		return "", err
	}
	spec.MaxSandboxes, spec.Prewarm, spec.IdleTimeout = 1, 0, -1
	f, err := m.NewFunction(ctx, spec)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := Check(ctx, f, script); err != nil {
		return "", err
	}
	return f.Snapshot().Hash(), nil
}
