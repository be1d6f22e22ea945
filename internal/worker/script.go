package worker

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/fnspec"
	"github.com/cloister-faas/cloister/internal/jsrt"
	"github.com/cloister-faas/cloister/internal/pyrt"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// Functions written in JavaScript or Python: their module is source code,
// run by a language engine that is an ordinary reactor (docs/js.md,
// docs/python.md). A JavaScript function's script travels with each
// request; a Python function's script is imported once, before the
// snapshot, so that calls start after its imports.

// maxExceptionText bounds the exception text a plain-mode caller receives.
const maxExceptionText = 2048

// compileBundle compiles a verified bundle's module. A script's module is
// its source: what is compiled is the shared engine (cached under its own
// hash, so every function of the language shares it), and the script is
// returned: to travel with each request (JavaScript) or to be imported
// before the snapshot (Python, initInput).
func (w *Worker) compileBundle(ctx context.Context, bd *bundle.Bundle) (*sandbox.Module, []byte, error) {
	lim := fnspec.Limits(bd.Manifest)
	switch bd.Manifest.Runtime {
	case bundle.RuntimeJS:
		if err := jsrt.CheckScript(bd.Module); err != nil {
			return nil, nil, apierr.Wrap(apierr.InvalidModule, err)
		}
		mod, err := jsrt.Compile(ctx, w.cfg.Engine, lim)
		return mod, bd.Module, err
	case bundle.RuntimePython:
		if err := pyrt.CheckScript(bd.Module); err != nil {
			return nil, nil, apierr.Wrap(apierr.InvalidModule, err)
		}
		mod, err := pyrt.Compile(ctx, w.cfg.Engine, lim)
		return mod, bd.Module, err
	}
	mod, err := w.cfg.Engine.Compile(ctx, bd.CodeHash, bd.Module, lim)
	return mod, nil, err
}

// initInput is what a function's cloister_init reads: a Python function's
// script, framed to be imported; nothing for other functions.
func initInput(bd *bundle.Bundle) ([]byte, error) {
	if bd.Manifest.Runtime != bundle.RuntimePython {
		return nil, nil
	}
	in, err := pyrt.LoadRequest(bd.Module)
	if err != nil {
		return nil, apierr.Wrap(apierr.InvalidModule, err)
	}
	return in, nil
}

// scriptInput frames a script function's request for its engine.
func scriptInput(fn *loaded, input []byte) ([]byte, error) {
	var in []byte
	var err error
	if fn.manifest.Runtime == bundle.RuntimePython {
		in, err = pyrt.InvokeRequest(input)
	} else {
		in, err = jsrt.Request(fn.script, input)
	}
	switch {
	case errors.Is(err, jsrt.ErrParams), errors.Is(err, pyrt.ErrParams):
		return nil, apierr.New(apierr.BadRequest, "a %s function takes a JSON object (its params) as input", language(fn.manifest.Runtime))
	case err != nil:
		return nil, apierr.New(apierr.Internal, "framing the request: %v", err)
	}
	return in, nil
}

func language(runtime string) string {
	if runtime == bundle.RuntimePython {
		return "Python"
	}
	return "JavaScript"
}

// scriptOutcome turns the engine's answer into the call's output
// (res.Stdout becomes the result's JSON) or an error. An uncaught
// exception's text is shown only to plain-mode callers: for a sealed
// request it is derived from confidential data, and the error travels in
// the clear.
func scriptOutcome(runtime string, res *sandbox.Result, runErr error, plain bool) error {
	if runErr != nil {
		return runErr
	}
	var out []byte
	var err error
	var jsEx *jsrt.Exception
	var pyEx *pyrt.Exception
	code, msg := apierr.JSError, ""
	if runtime == bundle.RuntimePython {
		out, err = pyrt.Response(res.Stdout)
		if errors.As(err, &pyEx) {
			code, msg = apierr.PythonError, pyEx.Error()
			if tb := strings.TrimRight(pyEx.Traceback, "\n"); tb != "" {
				// Python prints the exception last, after the frames.
				if !strings.HasSuffix(tb, msg) {
					tb += "\n" + msg
				}
				msg = tb
			}
		}
	} else {
		out, err = jsrt.Response(res.Stdout)
		if errors.As(err, &jsEx) {
			msg = jsEx.Error()
			if jsEx.Stack != "" {
				msg += "\n" + jsEx.Stack
			}
		}
	}
	switch {
	case err == nil:
		res.Stdout = out
		return nil
	case pyEx != nil || jsEx != nil:
		res.Stdout = nil
		msg = truncateText(msg, maxExceptionText)
		if !plain {
			// The text may hold the caller's data: it goes only to the
			// function's logs, which are sealed to the caller.
			res.Stderr = append(res.Stderr, "uncaught exception: "+msg+"\n"...)
			return apierr.New(code, "the function raised an uncaught exception; its text is in the function's logs, sealed to the caller (cloister invoke --logs)")
		}
		return apierr.New(code, "%s", msg)
	case errors.Is(err, jsrt.ErrOutOfMemory), errors.Is(err, pyrt.ErrOutOfMemory):
		res.Stdout = nil
		return apierr.New(apierr.MemoryLimit, "the function ran out of memory (%d pages used)", res.MemoryPages)
	default:
		res.Stdout = nil
		return apierr.Wrap(apierr.Internal, err)
	}
}

// truncateText cuts s to at most n bytes on a rune boundary, marking the cut.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
