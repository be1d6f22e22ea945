package worker

import (
	"context"
	"errors"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/fnspec"
	"github.com/cloister-faas/cloister/internal/jsrt"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// maxExceptionText bounds the exception text a plain-mode caller receives.
const maxExceptionText = 2048

// compileBundle compiles a verified bundle's module. A JavaScript
// function's module is its script: what is compiled is the shared engine
// (cached under its own hash, so every JavaScript function shares it), and
// the script is returned to travel with each request.
func (w *Worker) compileBundle(ctx context.Context, bd *bundle.Bundle) (*sandbox.Module, []byte, error) {
	lim := fnspec.Limits(bd.Manifest)
	if bd.Manifest.Runtime != bundle.RuntimeJS {
		mod, err := w.cfg.Engine.Compile(ctx, bd.CodeHash, bd.Module, lim)
		return mod, nil, err
	}
	if err := jsrt.CheckScript(bd.Module); err != nil {
		return nil, nil, apierr.Wrap(apierr.InvalidModule, err)
	}
	mod, err := jsrt.Compile(ctx, w.cfg.Engine, lim)
	return mod, bd.Module, err
}

// jsInput frames a JavaScript function's request for the engine.
func jsInput(script, input []byte) ([]byte, error) {
	in, err := jsrt.Request(script, input)
	switch {
	case errors.Is(err, jsrt.ErrParams):
		return nil, apierr.New(apierr.BadRequest, "a JavaScript function takes a JSON object (its params) as input")
	case err != nil:
		return nil, apierr.New(apierr.Internal, "framing the script: %v", err)
	}
	return in, nil
}

// jsOutcome turns the engine's answer into the call's output (res.Stdout
// becomes the result's JSON) or an error. A thrown exception's text is
// shown only to plain-mode callers: for a sealed request it is derived from
// confidential data, and the error travels in the clear.
func jsOutcome(res *sandbox.Result, runErr error, plain bool) error {
	if runErr != nil {
		return runErr
	}
	out, err := jsrt.Response(res.Stdout)
	var ex *jsrt.Exception
	switch {
	case err == nil:
		res.Stdout = out
		return nil
	case errors.As(err, &ex):
		res.Stdout = nil
		msg := ex.Error()
		if ex.Stack != "" {
			msg += "\n" + ex.Stack
		}
		if len(msg) > maxExceptionText {
			cut := maxExceptionText
			for cut > 0 && !utf8.RuneStart(msg[cut]) {
				cut--
			}
			msg = msg[:cut] + "..."
		}
		if !plain {
			// The text may hold the caller's data: it goes only to the
			// function's logs, which are sealed to the caller.
			res.Stderr = append(res.Stderr, "uncaught exception: "+msg+"\n"...)
			return apierr.New(apierr.JSError, "the function threw an uncaught exception; its text is in the function's logs, sealed to the caller (cloister invoke --logs)")
		}
		return apierr.New(apierr.JSError, "%s", msg)
	case errors.Is(err, jsrt.ErrOutOfMemory):
		res.Stdout = nil
		return apierr.New(apierr.MemoryLimit, "the function ran out of memory (%d pages used)", res.MemoryPages)
	default:
		res.Stdout = nil
		return apierr.Wrap(apierr.Internal, err)
	}
}
