// Package jsrt runs JavaScript functions (OpenWhisk-style actions: a
// function main(params) that returns a JSON-able value or a promise of one)
// on one shared WebAssembly engine: QuickJS compiled for wasm32-wasi as a
// Cloister reactor (engine/engine.c, built from Debian's source package by
// scripts/jsengine.sh; docs/js.md).
//
// The engine is an ordinary reactor for internal/sandbox, so a JavaScript
// function gets exactly what a WebAssembly function gets: its code is
// instrumented for metering and fuel, its memory, wall time and fuel are
// bounded by the manifest's limits, it has no host access beyond the
// manifest's grants (the engine imports only the reactor ABI and a few WASI
// functions), and every call starts from the snapshot taken after the
// interpreter's start-up, restored copy-on-write. The engine is compiled
// once per process and memory limit and shared by every JavaScript
// function (its code hash is [EngineHash]); a function's own code is its
// script, which travels with each request ([Request]).
//
// # What it must never do
//
//   - Run a script anywhere but inside the sandboxed engine.
//   - Trust the engine's answer: [Response] checks its framing and reports
//     anything malformed as [ErrEngine].
package jsrt

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/internal/enginert"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// Runtime and ABI are the manifest values of a JavaScript function.
const (
	Runtime = "js"
	ABI     = "js"
)

// MaxScriptBytes bounds a function's script.
const MaxScriptBytes = 4 << 20

//go:embed engine/quickjs.wasm
var engine []byte

var engineHash = enginert.Hash(engine)

// Engine returns the engine module's bytes. Callers must not modify them.
func Engine() []byte { return engine }

// EngineHash is the hex sha256 of [Engine]: the code hash under which the
// sandbox compiles and caches it.
func EngineHash() string { return engineHash }

// Errors. Test with errors.Is.
var (
	// ErrScript: the script is not acceptable (empty, too large, not
	// UTF-8, or has a NUL byte).
	ErrScript = errors.New("jsrt: invalid script")
	// ErrParams: the input is not a JSON object.
	ErrParams = errors.New("jsrt: parameters must be a JSON object")
	// ErrException: the script threw (or its promise rejected); the error
	// is an *Exception.
	ErrException = errors.New("jsrt: uncaught exception")
	// ErrOutOfMemory: the engine ran out of memory (the function's memory
	// limit).
	ErrOutOfMemory = errors.New("jsrt: out of memory")
	// ErrEngine: the engine answered something malformed, or refused the
	// request's framing.
	ErrEngine = errors.New("jsrt: engine failure")
)

// Exception is an uncaught JavaScript exception.
type Exception struct {
	Name    string `json:"name"`
	Message string `json:"message"`
	Stack   string `json:"stack,omitempty"`
}

func (e *Exception) Error() string {
	if e.Name == "" {
		return e.Message
	}
	return e.Name + ": " + e.Message
}

// Is makes errors.Is(err, ErrException) true for an *Exception.
func (e *Exception) Is(target error) bool { return target == ErrException }

// CheckScript reports whether b can be a function's script.
func CheckScript(b []byte) error {
	return enginert.CheckSource(b, MaxScriptBytes, ErrScript)
}

// Request frames a call of script with the request body params for the
// engine: "CJS1", the script's length (uint32, little-endian), the script,
// then the parameters. Empty or all-blank params mean {}; otherwise they
// must be a JSON object, as OpenWhisk's are.
func Request(script, params []byte) ([]byte, error) {
	if err := CheckScript(script); err != nil {
		return nil, err
	}
	p := bytes.TrimSpace(params)
	if len(p) == 0 {
		p = []byte("{}")
	} else if p[0] != '{' || !json.Valid(p) {
		return nil, ErrParams
	}
	return enginert.Frame("CJS1", script, p), nil
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
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("%w: exception is not JSON", ErrEngine)
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
// every JavaScript function shares one compilation per memory limit).
func Compile(ctx context.Context, e *sandbox.Engine, limits sandbox.Limits) (*sandbox.Module, error) {
	return enginert.Compile(ctx, e, engineHash, engine, limits, ErrEngine)
}

// Call runs script with params on f, a function made from the engine
// module, and decodes the answer. The sandbox's errors (limits, traps) are
// returned as they are; otherwise the error is one of [Request]'s or
// [Response]'s. The Result is the sandbox's, for metering.
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
	res, err := f.Call(ctx, enginert.Frame("CJSC", script, nil))
	if err != nil {
		return err
	}
	_, err = Response(res.Stdout)
	return err
}

// Inspect is what the worker that inspects a deploy does for a JavaScript
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
