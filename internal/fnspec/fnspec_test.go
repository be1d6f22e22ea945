package fnspec

import (
	"maps"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
)

// TestFromManifest: the limits and the spec come from the signed manifest
// and the namespace only, so every worker derives the same.
func TestFromManifest(t *testing.T) {
	m := bundle.DefaultManifest("fn")
	m.Limits.MemoryPages, m.Limits.TimeoutMS, m.Limits.MaxOutputBytes, m.Limits.Fuel = 32, 1500, 4096, 7
	m.Capabilities.Clock = true
	lim := Limits(m)
	if lim.MemoryPages != 32 || lim.Timeout != 1500*time.Millisecond || lim.MaxOutput != 4096 || lim.Fuel != 7 {
		t.Errorf("limits: got %+v", lim)
	}
	spec := Spec("team-a", m)
	if spec.Name != "fn" || !spec.Caps.Clock || spec.Caps.Random || !maps.Equal(spec.Env, m.GuestEnv("team-a")) {
		t.Errorf("spec: got %+v", spec)
	}
	if maps.Equal(Spec("team-a", m).Env, Spec("team-b", m).Env) {
		t.Error("the spec does not depend on the namespace")
	}
}
