// Package sim is a software stand-in for a TEE. It signs reports with a
// "hardware" root key that is an ordinary Ed25519 key in a file, so it runs
// the same code paths as a real backend on machines without a TEE.
//
// sim offers NO hardware protection: whoever can read the root key file can
// forge evidence, and the host can read all memory. Its evidence always says
// tee "sim", and verifiers refuse it unless their policy allows sim.
package sim

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cloister-faas/cloister/internal/tee"
)

// Warning is the plain statement the CLI and the console show for sim.
const Warning = "TEE backend is SIM: a software simulation with NO hardware protection. " +
	"The host can read every function's code, inputs, outputs and keys. Use it for development only."

// reportDomain separates sim report signatures from every other signature.
const reportDomain = "cloister-sim-report-v1\n"

// Report is the signed body of sim evidence.
type Report struct {
	Version     int       `json:"v"`
	TEE         tee.Kind  `json:"tee"`
	Measurement string    `json:"measurement"` // hex sha256 of the running binary
	TCB         string    `json:"tcb"`
	ReportData  string    `json:"report_data"` // hex, 64 bytes
	Time        time.Time `json:"time"`
}

// signed is the Raw encoding of sim evidence.
type signed struct {
	Report    []byte `json:"report"`
	Signature []byte `json:"signature"`
}

// TCB is the only TCB version sim reports.
const TCB = "sim-1"

// Backend is a sim TEE. It is safe for concurrent use.
type Backend struct {
	root        ed25519.PrivateKey
	measurement []byte
	now         func() time.Time
}

// Open loads the sim root key from dir/root.key, creating it on first use,
// and measures the running executable.
func Open(dir string) (*Backend, error) {
	m, err := MeasureExecutable()
	if err != nil {
		return nil, err
	}
	root, err := loadOrCreateRoot(filepath.Join(dir, "root.key"))
	if err != nil {
		return nil, err
	}
	return New(root, m, time.Now), nil
}

// New returns a backend with an explicit root key, measurement and clock (for tests).
func New(root ed25519.PrivateKey, measurement []byte, now func() time.Time) *Backend {
	return &Backend{root: root, measurement: append([]byte(nil), measurement...), now: now}
}

// MeasureExecutable returns sha256 of the running binary: sim's stand-in for
// a launch measurement.
func MeasureExecutable() ([]byte, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating executable: %w", err)
	}
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("measuring executable: %w", err)
	}
	defer f.Close() // read only: nothing is lost if closing fails
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("measuring executable: %w", err)
	}
	return h.Sum(nil), nil
}

func loadOrCreateRoot(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("sim root key %s: want %d bytes, got %d", path, ed25519.SeedSize, len(b))
		}
		return ed25519.NewKeyFromSeed(b), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading sim root key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating sim dir: %w", err)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		return nil, fmt.Errorf("writing sim root key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// Kind reports tee.KindSim.
func (b *Backend) Kind() tee.Kind { return tee.KindSim }

// Measurement returns the measured binary hash.
func (b *Backend) Measurement() []byte { return append([]byte(nil), b.measurement...) }

// RootPublicKey returns the public half of the sim root key, which a client
// policy must pin to accept this backend's evidence.
func (b *Backend) RootPublicKey() ed25519.PublicKey { return b.root.Public().(ed25519.PublicKey) }

// Evidence signs a report binding reportData to the measurement.
func (b *Backend) Evidence(reportData [tee.ReportDataSize]byte) (tee.Evidence, error) {
	r := Report{
		Version:     1,
		TEE:         tee.KindSim,
		Measurement: hex.EncodeToString(b.measurement),
		TCB:         TCB,
		ReportData:  hex.EncodeToString(reportData[:]),
		Time:        b.now().UTC(),
	}
	body, err := json.Marshal(r)
	if err != nil {
		return tee.Evidence{}, err
	}
	sig := ed25519.Sign(b.root, append([]byte(reportDomain), body...))
	raw, err := json.Marshal(signed{Report: body, Signature: sig})
	if err != nil {
		return tee.Evidence{}, err
	}
	return tee.Evidence{Kind: tee.KindSim, Raw: raw}, nil
}

// SealKey derives a sealing key from the root key. Unlike a real TEE it is
// not bound to the measurement, so state survives rebuilding the binary
// during development.
func (b *Backend) SealKey() ([]byte, error) {
	return hkdf.Key(sha256.New, b.root.Seed(), nil, "cloister-sim-seal-v1", 32)
}

// ErrBadSignature means a sim report was not signed by any trusted root.
var ErrBadSignature = errors.New("sim: report signature does not verify against a trusted sim root")

// ErrMalformed means the evidence could not be decoded.
var ErrMalformed = errors.New("sim: malformed evidence")

// VerifyReport checks that raw sim evidence is signed by one of roots and
// returns the report. It says nothing about whether the report is expected.
func VerifyReport(raw []byte, roots []ed25519.PublicKey) (*Report, error) {
	var s signed
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ok := false
	msg := append([]byte(reportDomain), s.Report...)
	for _, r := range roots {
		if len(r) == ed25519.PublicKeySize && ed25519.Verify(r, msg, s.Signature) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, ErrBadSignature
	}
	var r Report
	if err := json.Unmarshal(s.Report, &r); err != nil {
		return nil, fmt.Errorf("%w: report: %v", ErrMalformed, err)
	}
	if r.Version != 1 || r.TEE != tee.KindSim {
		return nil, fmt.Errorf("%w: version %d, tee %q", ErrMalformed, r.Version, r.TEE)
	}
	return &r, nil
}
