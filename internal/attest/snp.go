package attest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/snp"
)

// SNPPolicy holds the reference values and rules for SEV-SNP evidence
// (AMD SEV-SNP ABI specification 56860, "ATTESTATION_REPORT").
type SNPPolicy struct {
	// Measurements are accepted launch MEASUREMENTs (hex, 48 bytes).
	Measurements []string `json:"measurements"`
	// HostData, when set, lists accepted HOSTDATA values (hex, 32 bytes).
	HostData []string `json:"host_data,omitempty"`
	// MinTCB is the minimum REPORTED_TCB, "bl=N,tee=N,snp=N,ucode=N" ("" = any).
	MinTCB string `json:"min_tcb,omitempty"`
	// MinGuestSVN is the minimum GUEST_SVN.
	MinGuestSVN uint32 `json:"min_guest_svn,omitempty"`
	// AllowDebug accepts guests whose policy allows debugging. Never in production.
	AllowDebug bool `json:"allow_debug,omitempty"`
	// AllowMigrationAgent accepts guests whose policy allows a migration agent.
	AllowMigrationAgent bool `json:"allow_migration_agent,omitempty"`
	// ChipIDs, when set, pins the accepted CHIP_IDs (hex, 64 bytes): evidence
	// from any other chip is refused, which defeats relaying a request to
	// another genuine machine.
	ChipIDs []string `json:"chip_ids,omitempty"`
	// Product is the AMD product line, "Milan", "Genoa" or "Turin" ("" = from the report).
	Product string `json:"product,omitempty"`
	// TrustedRoots is a PEM bundle of ASK then ARK to trust instead of AMD's
	// published roots (tests and private deployments; "" = AMD's).
	TrustedRoots string `json:"trusted_roots,omitempty"`
	// SkipRevocationCheck skips the ASK CRL. Only for offline verification
	// of old reports; a deployment must leave it false.
	SkipRevocationCheck bool `json:"skip_revocation_check,omitempty"`
}

func (sp *SNPPolicy) validate() error {
	if len(sp.Measurements) == 0 {
		return fmt.Errorf("%w: sev_snp lists no measurements", ErrPolicy)
	}
	for _, set := range []struct {
		name string
		list []string
		size int
	}{{"measurement", sp.Measurements, 48}, {"host_data", sp.HostData, 32}, {"chip_id", sp.ChipIDs, 64}} {
		for _, h := range set.list {
			if b, err := hex.DecodeString(h); err != nil || len(b) != set.size {
				return fmt.Errorf("%w: sev_snp %s %q is not %d hex bytes", ErrPolicy, set.name, h, set.size)
			}
		}
	}
	if sp.MinTCB != "" {
		if _, err := ParseSNPTCB(sp.MinTCB); err != nil {
			return err
		}
	}
	if sp.Product != "" {
		if _, err := kds.ParseProductLine(sp.Product); err != nil {
			return fmt.Errorf("%w: sev_snp product %q", ErrPolicy, sp.Product)
		}
	}
	if sp.TrustedRoots != "" {
		if _, err := sp.roots(); err != nil {
			return err
		}
	}
	return nil
}

func (sp *SNPPolicy) productLine() string {
	if sp.Product != "" {
		return sp.Product
	}
	return "Milan"
}

func (sp *SNPPolicy) roots() (map[string][]*trust.AMDRootCerts, error) {
	if sp.TrustedRoots == "" {
		return nil, nil // go-sev-guest's embedded AMD roots
	}
	r := trust.AMDRootCertsProduct(sp.productLine())
	if err := r.FromKDSCertBytes([]byte(sp.TrustedRoots)); err != nil {
		return nil, fmt.Errorf("%w: sev_snp trusted_roots: %v", ErrPolicy, err)
	}
	return map[string][]*trust.AMDRootCerts{sp.productLine(): {r}}, nil
}

// SNPTCB formats an SEV-SNP TCB_VERSION in Cloister's notation.
func SNPTCB(v uint64) string {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(v))
	return fmt.Sprintf("bl=%d,tee=%d,snp=%d,ucode=%d", p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl)
}

// ParseSNPTCB parses "bl=N,tee=N,snp=N,ucode=N" (any subset; missing parts are 0).
func ParseSNPTCB(s string) (kds.TCBParts, error) {
	var p kds.TCBParts
	for f := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.ParseUint(v, 10, 8)
		if !ok || err != nil {
			return p, fmt.Errorf("%w: sev-snp TCB %q: want bl=N,tee=N,snp=N,ucode=N", ErrPolicy, s)
		}
		switch k {
		case "bl":
			p.BlSpl = uint8(n)
		case "tee":
			p.TeeSpl = uint8(n)
		case "snp":
			p.SnpSpl = uint8(n)
		case "ucode":
			p.UcodeSpl = uint8(n)
		default:
			return p, fmt.Errorf("%w: sev-snp TCB %q: unknown part %q", ErrPolicy, s, k)
		}
	}
	return p, nil
}

func (v *Verifier) verifySNP(raw []byte, sp *SNPPolicy) (*Claims, error) {
	if sp == nil {
		return nil, fmt.Errorf("%w: no sev_snp reference values", ErrPolicy)
	}
	ev, err := snp.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAuthenticity, err)
	}
	report, err := abi.ReportToProto(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing the report: %v", ErrAuthenticity, err)
	}
	att := &spb.Attestation{Report: report, CertificateChain: &spb.CertificateChain{Extras: map[string][]byte{}}}
	if len(ev.Certs) > 0 {
		var t abi.CertTable
		if err := t.Unmarshal(ev.Certs); err != nil {
			return nil, fmt.Errorf("%w: certificate table: %v", ErrAuthenticity, err)
		}
		att.CertificateChain = t.Proto()
	}
	roots, err := sp.roots()
	if err != nil {
		return nil, err
	}
	opts := &verify.Options{
		Getter:           v.getter().SNP(),
		Now:              v.now(),
		CheckRevocations: !sp.SkipRevocationCheck,
		TrustedRoots:     roots,
	}
	if report.GetCpuid1EaxFms() == 0 {
		// Version 2 reports do not name the product; without a product the
		// library guesses Milan and logs a warning (to stdout).
		opts.Product, _ = kds.ParseProductLine(sp.productLine()) // validate checked the name; "Milan" parses
	}
	if err := verify.SnpAttestationContext(context.Background(), att, opts); err != nil {
		return nil, classifyVerifyError("sev-snp", err)
	}
	pol, err := abi.ParseSnpPolicy(report.GetPolicy())
	if err != nil {
		return nil, fmt.Errorf("%w: guest policy: %v", ErrAuthenticity, err)
	}
	c := &Claims{
		Kind:           tee.KindSEVSNP,
		Measurement:    report.GetMeasurement(),
		TCB:            SNPTCB(report.GetReportedTcb()),
		Time:           v.now(),
		HostData:       report.GetHostData(),
		HardwareID:     report.GetChipId(),
		Debug:          pol.Debug,
		MigrationAgent: pol.MigrateMA,
		snp:            att,
	}
	copy(c.ReportData[:], report.GetReportData())
	return c, nil
}

// classifyVerifyError maps a vendor library's verification error to a
// sentinel. The libraries return formatted errors, so revocation and chain
// failures are told apart by what they say.
func classifyVerifyError(kind string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, collateral.ErrUnavailable) || strings.Contains(msg, collateral.ErrUnavailable.Error()):
		return fmt.Errorf("%w: %s: %v", ErrCollateral, kind, err)
	case strings.Contains(msg, "TCB Status"), strings.Contains(msg, "TCB level"), strings.Contains(msg, "TCB status"):
		return fmt.Errorf("%w: %s: the vendor's TCB info does not rate this platform up to date: %v", ErrTCB, kind, err)
	case strings.Contains(msg, "revoked"):
		return fmt.Errorf("%w: %s: %v", ErrRevoked, kind, err)
	case strings.Contains(msg, "expired"), strings.Contains(msg, "x509:"), strings.Contains(msg, "trusted root"),
		strings.Contains(msg, "issuer"), strings.Contains(msg, "certificate signature"), strings.Contains(msg, "not signed by"),
		strings.Contains(msg, "root"):
		return fmt.Errorf("%w: %s: %v", ErrChain, kind, err)
	default:
		return fmt.Errorf("%w: %s: %v", ErrAuthenticity, kind, err)
	}
}

func validateSNP(c *Claims, sp *SNPPolicy, rd [tee.ReportDataSize]byte) error {
	if c.Debug && !sp.AllowDebug {
		return ErrDebug
	}
	if c.MigrationAgent && !sp.AllowMigrationAgent {
		return ErrMigrationAgent
	}
	var minTCB kds.TCBParts
	if sp.MinTCB != "" {
		var err error
		if minTCB, err = ParseSNPTCB(sp.MinTCB); err != nil {
			return err
		}
		have := kds.DecomposeTCBVersion(kds.TCBVersion(c.snp.GetReport().GetReportedTcb()))
		if !kds.TCBPartsLE(minTCB, have) {
			return fmt.Errorf("%w: reported %s, minimum %s", ErrTCB, c.TCB, sp.MinTCB)
		}
	}
	if len(sp.ChipIDs) > 0 && !hexListContains(sp.ChipIDs, c.HardwareID) {
		return fmt.Errorf("%w: chip %x", ErrHardwareID, c.HardwareID)
	}
	if len(sp.HostData) > 0 && !hexListContains(sp.HostData, c.HostData) {
		return fmt.Errorf("%w: HOSTDATA %x", ErrHostData, c.HostData)
	}
	opts := &validate.Options{
		GuestPolicy: abi.SnpPolicy{
			Debug: sp.AllowDebug, MigrateMA: sp.AllowMigrationAgent,
			SMT: true, CXLAllowed: true,
		},
		MinimumGuestSvn:           sp.MinGuestSVN,
		ReportData:                rd[:],
		Measurement:               c.Measurement,
		MinimumTCB:                minTCB,
		PermitProvisionalFirmware: true,
	}
	if err := validate.SnpAttestation(c.snp, opts); err != nil {
		return fmt.Errorf("%w: sev-snp: %v", ErrGuestPolicy, err)
	}
	return nil
}
