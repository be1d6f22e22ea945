package coordinator

import (
	"context"
	"errors"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/jsrt"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// inspectScript is inspectModule for a JavaScript function: the bundle's
// module is its script. The script is compiled (not run) in the shared
// engine, so a syntax error is refused at deploy, and the snapshot every
// invocation starts from is the engine's after its start-up.
func (c *Coordinator) inspectScript(ctx context.Context, ns string, m bundle.Manifest, script []byte) (sandbox.Inspection, error) {
	h, err := jsrt.Inspect(ctx, c.engine, SandboxLimits(m), SandboxSpec(ns, m), script)
	var ex *jsrt.Exception
	switch {
	case err == nil:
		return sandbox.Inspection{ABI: sandbox.ABIReactor, SnapshotHash: h}, nil
	case errors.As(err, &ex):
		return sandbox.Inspection{}, apierr.New(apierr.InvalidModule, "the script does not compile: %v", ex)
	case errors.Is(err, jsrt.ErrScript):
		return sandbox.Inspection{}, apierr.New(apierr.InvalidModule, "%v", err)
	case errors.Is(err, sandbox.ErrMemoryLimit), errors.Is(err, jsrt.ErrOutOfMemory):
		return sandbox.Inspection{}, apierr.New(apierr.MemoryLimit, "the JavaScript engine does not fit in the function's memory limit: %v", err)
	default:
		return sandbox.Inspection{}, apierr.New(apierr.InvalidModule, "checking the script failed: %v", err)
	}
}
