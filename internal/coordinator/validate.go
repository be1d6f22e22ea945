package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// inspectModule checks a bundle's module with the same sandbox checks the
// workers apply, so that a module they would refuse is refused at deploy,
// and computes the hash of the snapshot every invocation starts from, which
// the function certificate then binds.
func (c *Coordinator) inspectModule(ctx context.Context, ns string, m bundle.Manifest, codeHash string, wasm []byte) (sandbox.Inspection, error) {
	if m.Runtime == bundle.RuntimeJS {
		return c.inspectScript(ctx, ns, m, wasm)
	}
	ins, err := c.engine.Inspect(ctx, codeHash, wasm, SandboxLimits(m), SandboxSpec(ns, m))
	switch {
	case err != nil && ctx.Err() != nil:
		return ins, apierr.New(apierr.Timeout, "compiling and initialising the module did not finish within the deploy timeout; nothing was registered")
	case err == nil:
		if (m.ABI == bundle.ABIReactor) != (ins.ABI == sandbox.ABIReactor) {
			return ins, apierr.New(apierr.InvalidModule, "manifest says abi %q but the module is a %s", m.ABI, ins.ABI)
		}
		return ins, nil
	case errors.Is(err, sandbox.ErrMemoryLimit):
		return ins, apierr.New(apierr.MemoryLimit, "%v", err)
	case errors.Is(err, sandbox.ErrInvalidModule), errors.Is(err, sandbox.ErrInvalidLimits), errors.Is(err, sandbox.ErrInvalidInvocation):
		return ins, apierr.New(apierr.InvalidModule, "%v", err)
	default:
		return ins, apierr.New(apierr.InvalidModule, "initialising the function failed: %v", err)
	}
}

// SandboxLimits are the sandbox limits of a function version. Workers and
// the coordinator must use the same.
func SandboxLimits(m bundle.Manifest) sandbox.Limits {
	return sandbox.Limits{
		MemoryPages: m.Limits.MemoryPages,
		Timeout:     time.Duration(m.Limits.TimeoutMS) * time.Millisecond,
		MaxOutput:   m.Limits.MaxOutputBytes,
		Fuel:        m.Limits.Fuel,
	}
}

// SandboxSpec is the reactor spec of a function version: its environment
// and capabilities. The snapshot depends on it, so workers and the
// coordinator must use the same.
func SandboxSpec(ns string, m bundle.Manifest) sandbox.FunctionSpec {
	return sandbox.FunctionSpec{
		Name: m.Name,
		Env:  m.GuestEnv(ns),
		Caps: sandbox.Capabilities{Clock: m.Capabilities.Clock, Random: m.Capabilities.Random},
	}
}
