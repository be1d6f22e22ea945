// Package attest verifies TEE evidence (is it authentic?) and validates it
// against a policy (is it what we expect?), the split go-sev-guest makes
// between verify/ and validate/.
//
// It must never accept evidence of a kind the policy does not list; in
// particular sim evidence is refused unless the policy allows "sim".
package attest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
)

// Errors returned by Verify and Validate. Test with errors.Is.
var (
	ErrKindNotAllowed = errors.New("attest: TEE kind not allowed by policy")
	ErrSimNotAllowed  = fmt.Errorf("%w: sim evidence offers no hardware protection and the policy does not allow sim", ErrKindNotAllowed)
	ErrUnsupported    = errors.New("attest: no verifier for this TEE kind in this build")
	ErrAuthenticity   = errors.New("attest: evidence is not authentic")
	ErrMeasurement    = errors.New("attest: measurement not in the policy's reference values")
	ErrReportData     = errors.New("attest: report data does not bind the expected key")
	ErrStale          = errors.New("attest: evidence is too old")
	ErrPolicy         = errors.New("attest: invalid policy")
)

// Policy is what a verifier expects of evidence. It is a plain JSON document;
// clients pin one (CLOISTER_POLICY), and the coordinator derives one from its
// deployment manifest to admit workers.
type Policy struct {
	// AllowTEE lists the accepted kinds. "sim" must be listed explicitly.
	AllowTEE []tee.Kind `json:"allow_tee"`
	// SimRoots are hex Ed25519 public keys of trusted sim roots.
	SimRoots []string `json:"sim_roots,omitempty"`
	// Measurements are the accepted launch measurements, hex.
	Measurements []string `json:"measurements"`
	// ManifestHash, when set, pins the coordinator's deployment manifest (hex sha256).
	ManifestHash string `json:"manifest_hash,omitempty"`
	// MaxAge bounds the age of evidence, as a Go duration string ("" = 10m).
	MaxAge string `json:"max_age,omitempty"`
}

// Validate checks that the policy is usable.
func (p Policy) Validate() error {
	if len(p.AllowTEE) == 0 {
		return fmt.Errorf("%w: allow_tee is empty", ErrPolicy)
	}
	if len(p.Measurements) == 0 {
		return fmt.Errorf("%w: no measurements", ErrPolicy)
	}
	for _, k := range p.AllowTEE {
		if !slices.Contains([]tee.Kind{tee.KindSim, tee.KindSEVSNP, tee.KindTDX}, k) {
			return fmt.Errorf("%w: unknown TEE kind %q in allow_tee", ErrPolicy, k)
		}
	}
	if slices.Contains(p.AllowTEE, tee.KindSim) && len(p.SimRoots) == 0 {
		return fmt.Errorf("%w: allows sim but pins no sim_roots", ErrPolicy)
	}
	for _, r := range p.SimRoots {
		if k, err := hex.DecodeString(r); err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: sim root %q is not a hex Ed25519 public key", ErrPolicy, r)
		}
	}
	for _, m := range p.Measurements {
		if b, err := hex.DecodeString(m); err != nil || len(b) == 0 {
			return fmt.Errorf("%w: measurement %q is not hex", ErrPolicy, m)
		}
	}
	if _, err := p.maxAge(); err != nil {
		return err
	}
	return nil
}

func (p Policy) maxAge() (time.Duration, error) {
	if p.MaxAge == "" {
		return 10 * time.Minute, nil
	}
	d, err := time.ParseDuration(p.MaxAge)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: max_age %q", ErrPolicy, p.MaxAge)
	}
	return d, nil
}

// AllowsSim reports whether the policy accepts sim evidence.
func (p Policy) AllowsSim() bool { return slices.Contains(p.AllowTEE, tee.KindSim) }

// LoadPolicy reads and validates a JSON policy file.
func LoadPolicy(path string) (Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("reading policy: %w", err)
	}
	var p Policy
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return Policy{}, fmt.Errorf("%w: parsing %s: %v", ErrPolicy, path, err)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Claims are what authentic evidence says.
type Claims struct {
	Kind        tee.Kind
	Measurement []byte
	TCB         string
	ReportData  [tee.ReportDataSize]byte
	Time        time.Time
}

// Verify checks that evidence is authentic under the roots the policy trusts
// and returns its claims. Kinds the policy does not allow are refused before
// any parsing.
func Verify(ev tee.Evidence, p Policy) (*Claims, error) {
	if !slices.Contains(p.AllowTEE, ev.Kind) {
		if ev.Kind == tee.KindSim {
			return nil, ErrSimNotAllowed
		}
		return nil, fmt.Errorf("%w: %q", ErrKindNotAllowed, ev.Kind)
	}
	switch ev.Kind {
	case tee.KindSim:
		roots := make([]ed25519.PublicKey, 0, len(p.SimRoots))
		for _, h := range p.SimRoots {
			k, err := hex.DecodeString(h)
			if err != nil || len(k) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("%w: sim root %q", ErrPolicy, h)
			}
			roots = append(roots, k)
		}
		r, err := sim.VerifyReport(ev.Raw, roots)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuthenticity, err)
		}
		m, err1 := hex.DecodeString(r.Measurement)
		rd, err2 := hex.DecodeString(r.ReportData)
		if err1 != nil || err2 != nil || len(rd) != tee.ReportDataSize {
			return nil, fmt.Errorf("%w: sim report fields", ErrAuthenticity)
		}
		c := &Claims{Kind: tee.KindSim, Measurement: m, TCB: r.TCB, Time: r.Time}
		copy(c.ReportData[:], rd)
		return c, nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, ev.Kind)
	}
}

// Validate checks authentic claims against the policy's reference values and
// the report data the caller expects (which binds a key to the evidence).
func Validate(c *Claims, p Policy, reportData [tee.ReportDataSize]byte, now time.Time) error {
	ok := false
	for _, m := range p.Measurements {
		want, err := hex.DecodeString(m)
		if err == nil && bytes.Equal(want, c.Measurement) {
			ok = true
			break
		}
	}
	if !ok {
		return fmt.Errorf("%w: got %x", ErrMeasurement, c.Measurement)
	}
	if !bytes.Equal(c.ReportData[:], reportData[:]) {
		return ErrReportData
	}
	maxAge, err := p.maxAge()
	if err != nil {
		return err
	}
	if age := now.Sub(c.Time); age > maxAge || age < -time.Minute {
		return fmt.Errorf("%w: issued %s, now %s", ErrStale, c.Time.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}
