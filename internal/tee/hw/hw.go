// Package hw opens the TEE backend a process runs on: it detects SEV-SNP
// or TDX through configfs-tsm (/sys/kernel/config/tsm/report) and the
// guest devices (/dev/sev-guest, /dev/tdx_guest), and opens sim only when
// asked for by name. It never falls back to sim on its own.
package hw

import (
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
)

// Auto asks Open to detect the hardware.
const Auto = "auto"

// ErrNoHardware means no SEV-SNP or TDX guest interface was found.
var ErrNoHardware = errors.New("no TEE hardware found (no configfs-tsm report provider, no /dev/sev-guest, no /dev/tdx_guest)")

// Open returns the backend named by kind: "auto" (detect hardware, never
// sim), "sim" (the software simulation, root key in simDir), "sev-snp" or "tdx".
func Open(kind, simDir string) (tee.TEE, error) {
	switch kind {
	case Auto:
		k, err := Detect()
		if err != nil {
			return nil, fmt.Errorf("%w; to develop without hardware, ask for the simulation explicitly with --tee sim (it has NO hardware protection)", err)
		}
		return openHardware(k)
	case string(tee.KindSim):
		return sim.Open(simDir)
	case string(tee.KindSEVSNP), string(tee.KindTDX):
		return openHardware(tee.Kind(kind))
	default:
		return nil, fmt.Errorf("%w: %q (want auto, sim, sev-snp or tdx)", tee.ErrUnsupported, kind)
	}
}
