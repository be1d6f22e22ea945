// Package fnspec derives, from a function's signed manifest, the sandbox
// limits and the reactor spec that every role must agree on: a worker
// inspecting a bundle at deploy and every worker loading it later compute
// the snapshot hash with the same limits, environment and capabilities,
// or the certified hash would not match.
//
// It owns that derivation only. It must never read keys, state or the
// network, and no role's package may need another's to use it.
package fnspec

import (
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

// Limits are the sandbox limits of a function version.
func Limits(m bundle.Manifest) sandbox.Limits {
	return sandbox.Limits{
		MemoryPages: m.Limits.MemoryPages,
		Timeout:     time.Duration(m.Limits.TimeoutMS) * time.Millisecond,
		MaxOutput:   m.Limits.MaxOutputBytes,
		Fuel:        m.Limits.Fuel,
	}
}

// Spec is the reactor spec of a function version in namespace ns: its
// name, environment and capabilities. The snapshot depends on it. Pool
// settings (MaxSandboxes, IdleTimeout, Prewarm) are left zero for the
// caller.
func Spec(ns string, m bundle.Manifest) sandbox.FunctionSpec {
	return sandbox.FunctionSpec{
		Name: m.Name,
		Env:  m.GuestEnv(ns),
		Caps: sandbox.Capabilities{Clock: m.Capabilities.Clock, Random: m.Capabilities.Random},
	}
}
