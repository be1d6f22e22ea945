// Package attest verifies TEE evidence (is it authentic?) and validates it
// against a policy (is it what we expect?), the split go-sev-guest makes
// between verify/ and validate/.
//
// Hardware evidence is verified with github.com/google/go-sev-guest
// (SEV-SNP: the VCEK/VLEK chain to AMD's ARK, the ASK CRL) and
// github.com/google/go-tdx-guest (TDX: the PCK chain to Intel's SGX root,
// CRLs, TCB info and QE identity), with collateral from a Getter that
// caches on disk or serves an offline bundle (package attest/collateral).
// Each refusal wraps one of the exported sentinel errors, so callers and
// tests can tell a wrong measurement from a debug policy from a revoked chip.
//
// It must never accept evidence of a kind the policy does not list; in
// particular sim evidence is refused unless the policy allows "sim".
package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
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

	// ErrChain: the certificate chain does not lead to a trusted vendor
	// root, or a certificate or collateral in it has expired.
	ErrChain = fmt.Errorf("%w: certificate chain is not trusted or has expired", ErrAuthenticity)
	// ErrRevoked: a certificate in the chain is on the vendor's CRL.
	ErrRevoked = fmt.Errorf("%w: a certificate in the chain is revoked", ErrAuthenticity)
	// ErrCollateral: the vendor collateral needed to verify is unavailable.
	ErrCollateral = errors.New("attest: verification collateral unavailable")
	// ErrDebug: the guest runs with debugging enabled (the host can read its memory).
	ErrDebug = errors.New("attest: guest policy allows debugging")
	// ErrMigrationAgent: an SEV-SNP migration agent is allowed and the policy does not accept one.
	ErrMigrationAgent = errors.New("attest: guest policy allows a migration agent")
	// ErrTCB: the platform's TCB is below the policy's minimum.
	ErrTCB = errors.New("attest: TCB is below the policy minimum")
	// ErrHardwareID: the chip or platform is not one the policy pins.
	ErrHardwareID = errors.New("attest: hardware ID is not one the policy pins")
	// ErrHostData: HOSTDATA (SEV-SNP) or MRCONFIGID (TDX) is not an accepted value.
	ErrHostData = errors.New("attest: HOSTDATA/MRCONFIGID not in the policy's reference values")
	// ErrGuestPolicy: another field fails the vendor library's validation.
	ErrGuestPolicy = errors.New("attest: evidence fails the policy")
)

// Policy is what a verifier expects of evidence. It is a plain JSON document;
// clients pin one (CLOISTER_POLICY), and the coordinator derives one from its
// deployment manifest to admit workers.
type Policy struct {
	// AllowTEE lists the accepted kinds. "sim" must be listed explicitly.
	AllowTEE []tee.Kind `json:"allow_tee"`
	// SimRoots are hex Ed25519 public keys of trusted sim roots.
	SimRoots []string `json:"sim_roots,omitempty"`
	// Measurements are the accepted sim measurements (sha256 of the binary), hex.
	Measurements []string `json:"measurements,omitempty"`
	// SEVSNP holds the reference values for sev-snp evidence.
	SEVSNP *SNPPolicy `json:"sev_snp,omitempty"`
	// TDX holds the reference values for tdx evidence.
	TDX *TDXPolicy `json:"tdx,omitempty"`
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
	for _, k := range p.AllowTEE {
		if !k.Valid() {
			return fmt.Errorf("%w: unknown TEE kind %q in allow_tee", ErrPolicy, k)
		}
	}
	if p.AllowsSim() && len(p.Measurements) == 0 {
		return fmt.Errorf("%w: allows sim but lists no measurements", ErrPolicy)
	}
	if slices.Contains(p.AllowTEE, tee.KindSEVSNP) {
		if p.SEVSNP == nil {
			return fmt.Errorf("%w: allows sev-snp but has no sev_snp reference values", ErrPolicy)
		}
		if err := p.SEVSNP.validate(); err != nil {
			return err
		}
	}
	if slices.Contains(p.AllowTEE, tee.KindTDX) {
		if p.TDX == nil {
			return fmt.Errorf("%w: allows tdx but has no tdx reference values", ErrPolicy)
		}
		if err := p.TDX.validate(); err != nil {
			return err
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
	// TCB is the platform's security version in the kind's notation
	// (sev-snp "bl=3,tee=0,snp=8,ucode=115"; tdx hex TEE_TCB_SVN; sim "sim-1").
	TCB        string
	ReportData [tee.ReportDataSize]byte
	// Time is when the evidence was made (sim) or verified (hardware
	// reports carry no time: their freshness is the key they bind).
	Time time.Time
	// HostData is SEV-SNP HOSTDATA or TDX MRCONFIGID.
	HostData []byte
	// HardwareID is the SEV-SNP CHIP_ID or the TDX PCK certificate's PPID.
	HardwareID []byte
	// Debug and MigrationAgent are the guest policy bits.
	Debug, MigrationAgent bool

	snp *spb.Attestation
	tdx *tdxpb.QuoteV4
}

// Verifier verifies hardware evidence with collateral from a getter.
type Verifier struct {
	// Collateral serves vendor certificates, CRLs, TCB info and QE identity.
	// nil: fetched over the network with a memory cache.
	Collateral *collateral.Getter
	// Now is the clock for certificate and collateral validity (nil: time.Now).
	Now func() time.Time
}

var defaultVerifier = &Verifier{Collateral: collateral.New(collateral.Options{})}

// Verify checks evidence with the default verifier (collateral from the
// network, cached in memory).
func Verify(ev tee.Evidence, p Policy) (*Claims, error) { return defaultVerifier.Verify(ev, p) }

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) getter() *collateral.Getter {
	if v.Collateral != nil {
		return v.Collateral
	}
	return defaultVerifier.Collateral
}

// Verify checks that evidence is authentic under the roots the policy trusts
// and returns its claims. Kinds the policy does not allow are refused before
// any parsing.
func (v *Verifier) Verify(ev tee.Evidence, p Policy) (*Claims, error) {
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
	case tee.KindSEVSNP:
		return v.verifySNP(ev.Raw, p.SEVSNP)
	case tee.KindTDX:
		return v.verifyTDX(ev.Raw, p.TDX)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, ev.Kind)
	}
}

// Validate checks authentic claims against the policy's reference values and
// the report data the caller expects (which binds a key to the evidence).
//
// The checks run in a fixed order (kind, measurement, report data, then
// the kind's guest policy, TCB, hardware ID and host data, then freshness),
// and the first failure is returned.
func Validate(c *Claims, p Policy, reportData [tee.ReportDataSize]byte, now time.Time) error {
	if !slices.Contains(p.AllowTEE, c.Kind) {
		if c.Kind == tee.KindSim {
			return ErrSimNotAllowed
		}
		return fmt.Errorf("%w: %q", ErrKindNotAllowed, c.Kind)
	}
	var refs []string
	switch c.Kind {
	case tee.KindSim:
		refs = p.Measurements
	case tee.KindSEVSNP:
		if p.SEVSNP == nil || c.snp == nil {
			return fmt.Errorf("%w: no sev_snp reference values", ErrPolicy)
		}
		refs = p.SEVSNP.Measurements
	case tee.KindTDX:
		if p.TDX == nil || c.tdx == nil {
			return fmt.Errorf("%w: no tdx reference values", ErrPolicy)
		}
		refs = p.TDX.MRTDs
	}
	if !hexListContains(refs, c.Measurement) {
		return fmt.Errorf("%w: got %x", ErrMeasurement, c.Measurement)
	}
	if subtle.ConstantTimeCompare(c.ReportData[:], reportData[:]) != 1 {
		return ErrReportData
	}
	switch c.Kind {
	case tee.KindSEVSNP:
		if err := validateSNP(c, p.SEVSNP, reportData); err != nil {
			return err
		}
	case tee.KindTDX:
		if err := validateTDX(c, p.TDX, reportData); err != nil {
			return err
		}
	}
	maxAge, err := p.maxAge()
	if err != nil {
		return err
	}
	if c.Kind.Hardware() {
		// Hardware reports carry no time; what they bind is fresh.
		return nil
	}
	if age := now.Sub(c.Time); age > maxAge || age < -time.Minute {
		return fmt.Errorf("%w: issued %s, now %s", ErrStale, c.Time.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}

func hexListContains(list []string, b []byte) bool {
	for _, m := range list {
		want, err := hex.DecodeString(m)
		if err == nil && len(b) > 0 && bytes.Equal(want, b) {
			return true
		}
	}
	return false
}

// TCBAtLeast reports whether the TCB have (in kind's notation, as in
// Claims.TCB) is at or above min, component-wise. An unparsable min is an
// error; an unparsable have is simply not enough.
func TCBAtLeast(kind tee.Kind, have, min string) (bool, error) {
	switch kind {
	case tee.KindSEVSNP:
		m, err := ParseSNPTCB(min)
		if err != nil {
			return false, err
		}
		h, err := ParseSNPTCB(have)
		if err != nil {
			return false, nil
		}
		return kds.TCBPartsLE(m, h), nil
	case tee.KindTDX:
		m, err := ParseTDXTCB(min)
		if err != nil {
			return false, err
		}
		h, err := ParseTDXTCB(have)
		if err != nil {
			return false, nil
		}
		return TDXTCBAtLeast(h, m), nil
	case tee.KindSim:
		if min != sim.TCB {
			return false, fmt.Errorf("%w: sim TCB %q: the only sim TCB is %q", ErrPolicy, min, sim.TCB)
		}
		return have == sim.TCB, nil
	default:
		return false, fmt.Errorf("%w: unknown TEE kind %q", ErrPolicy, kind)
	}
}

// EvidenceTCB reads the TCB that evidence reports, WITHOUT verifying it (for
// describing one's own evidence); "" if it cannot be read.
func EvidenceTCB(ev tee.Evidence) string {
	switch ev.Kind {
	case tee.KindSim:
		return sim.TCB
	case tee.KindSEVSNP:
		if e, err := snp.Decode(ev.Raw); err == nil {
			if r, err := abi.ReportToProto(e.Report); err == nil {
				return SNPTCB(r.GetReportedTcb())
			}
		}
	case tee.KindTDX:
		if q, err := tdx.Parse(ev.Raw); err == nil {
			return hex.EncodeToString(q.GetTdQuoteBody().GetTeeTcbSvn())
		}
	}
	return ""
}
