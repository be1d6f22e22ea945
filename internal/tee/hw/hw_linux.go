package hw

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/client"

	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
)

// tsmProvider returns the configfs-tsm report provider ("sev_guest",
// "tdx_guest") or "" when configfs-tsm is absent.
func tsmProvider() string {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return ""
	}
	r, err := report.Create(c, &report.Request{})
	if err != nil {
		return ""
	}
	defer r.Destroy() // a probe: an entry left in configfs holds no secret and costs little
	p, err := r.ReadOption("provider")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(p))
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Detect reports which hardware TEE this guest runs in.
func Detect() (tee.Kind, error) {
	switch tsmProvider() {
	case "sev_guest":
		return tee.KindSEVSNP, nil
	case "tdx_guest":
		return tee.KindTDX, nil
	}
	if exists("/dev/sev-guest") {
		return tee.KindSEVSNP, nil
	}
	if exists("/dev/tdx_guest") {
		return tee.KindTDX, nil
	}
	return "", ErrNoHardware
}

func openHardware(k tee.Kind) (tee.TEE, error) {
	switch k {
	case tee.KindSEVSNP:
		var dev client.Device
		if exists("/dev/sev-guest") {
			if d, err := client.OpenDevice(); err == nil {
				dev = d
			}
		}
		if tsmProvider() == "sev_guest" {
			c, err := linuxtsm.MakeClient()
			if err != nil {
				return nil, err
			}
			return snp.NewTSM(c, dev)
		}
		if dev == nil {
			return nil, fmt.Errorf("sev-snp: neither configfs-tsm nor /dev/sev-guest is available: %w", ErrNoHardware)
		}
		return snp.NewDevice(dev)
	case tee.KindTDX:
		if tsmProvider() != "tdx_guest" {
			return nil, fmt.Errorf("tdx: configfs-tsm with the tdx_guest provider (Linux 6.7 or later) is required: %w", ErrNoHardware)
		}
		c, err := linuxtsm.MakeClient()
		if err != nil {
			return nil, err
		}
		return tdx.NewTSM(c)
	}
	return nil, fmt.Errorf("%w: %q", tee.ErrUnsupported, k)
}
