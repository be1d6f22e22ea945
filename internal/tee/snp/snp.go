// Package snp is the AMD SEV-SNP evidence backend. It asks the AMD secure
// processor, through the guest kernel, for an attestation report that binds
// 64 bytes of REPORT_DATA (SEV-SNP ABI spec 56860, table 22), by Linux
// configfs-tsm (/sys/kernel/config/tsm/report, github.com/google/go-configfs-tsm)
// or, on older kernels, by the /dev/sev-guest ioctls (github.com/google/go-sev-guest/client).
//
// It only produces evidence; it never judges it. Verification (the VCEK
// chain to AMD's roots) and validation (measurement, policy, TCB) live in
// package attest.
package snp

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/cloister-faas/cloister/internal/tee"
)

// Evidence is the Raw encoding of SEV-SNP evidence: the signed attestation
// report (1184 bytes) and, when the host provides it, the certificate table
// of the extended report (VCEK or VLEK, ASK, ARK), which saves the verifier
// a trip to AMD's key distribution service.
type Evidence struct {
	Report []byte `json:"report"`
	Certs  []byte `json:"certs,omitempty"`
}

// Decode parses the Raw field of sev-snp evidence.
func Decode(raw []byte) (*Evidence, error) {
	var e Evidence
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("snp: decoding evidence: %w", err)
	}
	if len(e.Report) < abi.ReportSize {
		return nil, fmt.Errorf("snp: report is %d bytes, want %d", len(e.Report), abi.ReportSize)
	}
	e.Report = e.Report[:abi.ReportSize]
	return &e, nil
}

// tsmProvider is the provider name configfs-tsm reports for SEV-SNP guests.
const tsmProvider = "sev_guest"

// Backend gets SEV-SNP reports. It is safe for concurrent use.
type Backend struct {
	tsm configfsi.Client // configfs-tsm, preferred
	dev client.Device    // /dev/sev-guest (an open device), fallback and seal key

	mu          sync.Mutex // serialises device requests
	measurement []byte
}

// NewTSM returns a backend that reads reports through configfs-tsm. dev is
// optional; when set it derives the sealing key.
func NewTSM(c configfsi.Client, dev client.Device) (*Backend, error) {
	return newBackend(&Backend{tsm: c, dev: dev})
}

// NewDevice returns a backend over an open /dev/sev-guest device.
func NewDevice(dev client.Device) (*Backend, error) {
	return newBackend(&Backend{dev: dev})
}

func newBackend(b *Backend) (*Backend, error) {
	// One report up front: proves the device works and yields the launch
	// measurement, which never changes for the life of the guest.
	ev, err := b.report([tee.ReportDataSize]byte{})
	if err != nil {
		return nil, err
	}
	r, err := abi.ReportToProto(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("snp: parsing own report: %w", err)
	}
	b.measurement = r.GetMeasurement()
	return b, nil
}

// Kind reports tee.KindSEVSNP.
func (b *Backend) Kind() tee.Kind { return tee.KindSEVSNP }

// Measurement returns the launch measurement (48 bytes) from the report.
func (b *Backend) Measurement() []byte { return bytes.Clone(b.measurement) }

// Evidence returns a fresh report whose REPORT_DATA is reportData.
func (b *Backend) Evidence(reportData [tee.ReportDataSize]byte) (tee.Evidence, error) {
	ev, err := b.report(reportData)
	if err != nil {
		return tee.Evidence{}, err
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return tee.Evidence{}, err
	}
	return tee.Evidence{Kind: tee.KindSEVSNP, Raw: raw}, nil
}

func (b *Backend) report(rd [tee.ReportDataSize]byte) (*Evidence, error) {
	var ev Evidence
	if b.tsm != nil {
		resp, err := report.Get(b.tsm, &report.Request{InBlob: rd[:], GetAuxBlob: true})
		if err != nil {
			return nil, fmt.Errorf("snp: configfs-tsm report: %w", err)
		}
		if p := strings.TrimSpace(resp.Provider); p != tsmProvider {
			return nil, fmt.Errorf("snp: configfs-tsm provider is %q, not %q: this is not an SEV-SNP guest", p, tsmProvider)
		}
		ev = Evidence{Report: resp.OutBlob, Certs: resp.AuxBlob}
	} else {
		b.mu.Lock()
		// The device calls are deprecated in favour of QuoteProvider, which
		// opens /dev/sev-guest itself and picks configfs-tsm on its own. This
		// backend makes that choice above, and shares one injected Device
		// (a fake in tests) with SealKey, which QuoteProvider cannot serve.
		//lint:ignore SA1019 the injected Device is the fallback path; see above.
		rep, certs, err := client.GetRawExtendedReport(b.dev, rd)
		if err != nil {
			// Hosts without a certificate table answer only plain reports.
			//lint:ignore SA1019 as for GetRawExtendedReport above.
			rep, err = client.GetRawReport(b.dev, rd)
			certs = nil
		}
		b.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("snp: /dev/sev-guest report: %w", err)
		}
		ev = Evidence{Report: rep, Certs: certs}
	}
	if len(ev.Report) < abi.ReportSize {
		return nil, fmt.Errorf("snp: report is %d bytes, want %d", len(ev.Report), abi.ReportSize)
	}
	ev.Report = ev.Report[:abi.ReportSize]
	if len(ev.Certs) == 0 || allZero(ev.Certs) {
		ev.Certs = nil
	}
	r, err := abi.ReportToProto(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("snp: parsing report: %w", err)
	}
	if !bytes.Equal(r.GetReportData(), rd[:]) {
		return nil, errors.New("snp: the report does not carry the requested REPORT_DATA")
	}
	return &ev, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// SealKey derives a 32-byte key from the chip's VCEK mixed with the guest's
// measurement and policy (MSG_KEY_REQ), so only the same code on the same
// chip can derive it. It needs /dev/sev-guest: configfs-tsm has no key request.
func (b *Backend) SealKey() ([]byte, error) {
	if b.dev == nil {
		return nil, fmt.Errorf("%w: SEV-SNP key derivation needs /dev/sev-guest", tee.ErrNoSealKey)
	}
	b.mu.Lock()
	resp, err := client.GetDerivedKeyAcknowledgingItsLimitations(b.dev, &client.SnpDerivedKeyReq{
		UseVCEK:          true,
		GuestFieldSelect: client.GuestFieldSelect{Measurement: true, GuestPolicy: true},
	})
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("snp: deriving key: %w", err)
	}
	defer clear(resp.Data[:])
	return hkdf.Key(sha256.New, resp.Data[:], nil, "cloister-snp-seal-v1", 32)
}
