package hw

import (
	"errors"
	"testing"

	"github.com/cloister-faas/cloister/internal/tee"
)

// TestAutoNeverFallsBackToSim: on a machine without TEE hardware (like CI),
// auto refuses with a message that names --tee sim; sim opens only by name.
func TestAutoNeverFallsBackToSim(t *testing.T) {
	if _, err := Detect(); err == nil {
		t.Skip("this machine has TEE hardware")
	}
	_, err := Open(Auto, t.TempDir())
	if !errors.Is(err, ErrNoHardware) {
		t.Fatalf("auto: got %v, want %v", err, ErrNoHardware)
	}
	for _, k := range []string{"sev-snp", "tdx"} {
		if _, err := Open(k, t.TempDir()); !errors.Is(err, ErrNoHardware) {
			t.Errorf("%s: got %v, want %v", k, err, ErrNoHardware)
		}
	}
	b, err := Open("sim", t.TempDir())
	if err != nil || b.Kind() != tee.KindSim {
		t.Fatalf("sim: %v", err)
	}
	if _, err := Open("sgx", t.TempDir()); !errors.Is(err, tee.ErrUnsupported) {
		t.Fatalf("sgx: got %v", err)
	}
}
