// Package tee defines the small interface every trusted-execution backend
// implements: which kind of TEE it is, evidence that binds 64 bytes of report
// data to the hardware's measurement of the running code, and a sealing key.
//
// A backend must never claim to be a kind it is not. The sim backend
// (package tee/sim) is a software stand-in that offers no hardware
// protection; its evidence always says "sim".
package tee

import (
	"crypto/sha256"
	"errors"
)

// Kind names a TEE technology as it appears in evidence, policies and receipts.
type Kind string

// The TEE kinds Cloister knows. KindSim is a software stand-in (package
// tee/sim); KindSEVSNP (tee/snp) and KindTDX (tee/tdx) are hardware backends.
const (
	KindSim    Kind = "sim"
	KindSEVSNP Kind = "sev-snp"
	KindTDX    Kind = "tdx"
)

// ErrUnsupported is returned for a TEE kind this build has no backend for.
var ErrUnsupported = errors.New("tee: unsupported kind")

// ErrNoSealKey is returned by SealKey on a TEE that cannot derive a sealing
// key (TDX has no such primitive; SEV-SNP needs /dev/sev-guest for it).
var ErrNoSealKey = errors.New("tee: this TEE cannot derive a sealing key")

// Kinds lists every kind, strongest first as far as scheduling prefers.
var Kinds = []Kind{KindSEVSNP, KindTDX, KindSim}

// Hardware reports whether k is a hardware TEE (not sim).
func (k Kind) Hardware() bool { return k == KindSEVSNP || k == KindTDX }

// Valid reports whether k is a kind Cloister knows.
func (k Kind) Valid() bool { return k == KindSim || k.Hardware() }

// ReportDataSize is the number of caller-chosen bytes bound into evidence
// (REPORT_DATA in SEV-SNP and TDX).
const ReportDataSize = 64

// Evidence is an attestation report as produced by a backend. Raw is
// kind-specific; only a verifier for Kind can interpret it.
type Evidence struct {
	Kind Kind   `json:"tee"`
	Raw  []byte `json:"raw"`
}

// TEE is a trusted execution environment as seen from the code running in it.
type TEE interface {
	// Kind reports the technology. It never changes.
	Kind() Kind
	// Evidence returns a fresh report binding reportData to this TEE's
	// measurement of the running code.
	Evidence(reportData [ReportDataSize]byte) (Evidence, error)
	// Measurement returns the launch measurement of the running code.
	Measurement() []byte
	// SealKey returns a 32-byte key that only this TEE can derive, used to
	// seal state at rest. Callers must never log or export it.
	SealKey() ([]byte, error)
}

// BindReportData hashes a domain label and parts into the 64-byte report data
// field: sha256(label ‖ 0 ‖ part...) in the first 32 bytes, zero after.
// Each part is length-prefixed so that different splits never collide.
func BindReportData(label string, parts ...[]byte) [ReportDataSize]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	for _, p := range parts {
		var n [8]byte
		l := uint64(len(p))
		for i := 7; i >= 0; i-- {
			n[i] = byte(l)
			l >>= 8
		}
		h.Write(n[:])
		h.Write(p)
	}
	var rd [ReportDataSize]byte
	copy(rd[:], h.Sum(nil))
	return rd
}
