package client

import (
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/tee"
)

// Policy is what the client expects of the coordinator's attestation
// evidence: the JSON document a client pins (CLOISTER_POLICY; `cloister up`
// writes one). New refuses a policy that Validate refuses.
type Policy struct {
	// AllowTEE lists the accepted TEE kinds: "sim", "sev-snp", "tdx".
	// "sim", which offers no hardware protection, must be listed explicitly.
	AllowTEE []string `json:"allow_tee"`
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

// SNPPolicy holds the reference values for AMD SEV-SNP evidence.
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
	// ChipIDs, when set, pins the accepted CHIP_IDs (hex, 64 bytes).
	ChipIDs []string `json:"chip_ids,omitempty"`
	// Product is the AMD product line, "Milan", "Genoa" or "Turin" ("" = from the report).
	Product string `json:"product,omitempty"`
	// TrustedRoots is a PEM bundle of ASK then ARK to trust instead of
	// AMD's published roots ("" = AMD's).
	TrustedRoots string `json:"trusted_roots,omitempty"`
	// SkipRevocationCheck skips the ASK CRL. Only for offline verification
	// of old reports; a deployment must leave it false.
	SkipRevocationCheck bool `json:"skip_revocation_check,omitempty"`
}

// TDXPolicy holds the reference values for Intel TDX evidence.
type TDXPolicy struct {
	// MRTDs are accepted build-time TD measurements (hex, 48 bytes).
	MRTDs []string `json:"mrtd"`
	// RTMRs, when set, lists the accepted values of each runtime
	// measurement register (index 0-3; hex, 48 bytes each; an empty list
	// accepts any).
	RTMRs [4][]string `json:"rtmr,omitzero"`
	// MRConfigIDs, when set, lists accepted MRCONFIGID values (hex, 48 bytes).
	MRConfigIDs []string `json:"mrconfigid,omitempty"`
	// MinTEETCBSVN is the component-wise minimum TEE_TCB_SVN (hex, 16 bytes; "" = any).
	MinTEETCBSVN string `json:"min_tee_tcb_svn,omitempty"`
	// AllowDebug accepts TDs with the DEBUG attribute. Never in production.
	AllowDebug bool `json:"allow_debug,omitempty"`
	// PlatformIDs, when set, pins the PPIDs of the PCK certificates (hex, 16 bytes).
	PlatformIDs []string `json:"platform_ids,omitempty"`
	// TrustedRoots is a PEM bundle of roots to trust instead of Intel's
	// SGX root CA ("" = Intel's).
	TrustedRoots string `json:"trusted_roots,omitempty"`
	// SkipRevocationCheck skips the PCK and root CRLs. Only for offline
	// verification of old quotes; a deployment must leave it false.
	SkipRevocationCheck bool `json:"skip_revocation_check,omitempty"`
	// SkipCollateral verifies the quote without TCB info, QE identity or
	// CRLs, so without Intel's verdict on the platform's TCB. Only for
	// offline checks of old quotes; a deployment must leave it false.
	SkipCollateral bool `json:"skip_collateral,omitempty"`
}

// LoadPolicy reads and validates a JSON policy file. Unknown fields are
// refused.
func LoadPolicy(path string) (Policy, error) {
	p, err := attest.LoadPolicy(path)
	if err != nil {
		return Policy{}, err
	}
	return policyFrom(p), nil
}

// Validate checks that the policy is usable: known TEE kinds, reference
// values for each kind it allows, well-formed hex values and max age.
func (p Policy) Validate() error { return p.internal().Validate() }

// AllowsSim reports whether the policy accepts sim evidence.
func (p Policy) AllowsSim() bool { return p.internal().AllowsSim() }

// internal is p as package attest verifies evidence against it. The
// reference values of each kind convert as they are: a field added to
// one side and not the other does not compile.
func (p Policy) internal() attest.Policy {
	ap := attest.Policy{AllowTEE: kinds[tee.Kind](p.AllowTEE), SimRoots: p.SimRoots, Measurements: p.Measurements, ManifestHash: p.ManifestHash, MaxAge: p.MaxAge}
	if p.SEVSNP != nil {
		s := attest.SNPPolicy(*p.SEVSNP)
		ap.SEVSNP = &s
	}
	if p.TDX != nil {
		t := attest.TDXPolicy(*p.TDX)
		ap.TDX = &t
	}
	return ap
}

// policyFrom is an attest.Policy's public form.
func policyFrom(ap attest.Policy) Policy {
	p := Policy{AllowTEE: kinds[string](ap.AllowTEE), SimRoots: ap.SimRoots, Measurements: ap.Measurements, ManifestHash: ap.ManifestHash, MaxAge: ap.MaxAge}
	if ap.SEVSNP != nil {
		s := SNPPolicy(*ap.SEVSNP)
		p.SEVSNP = &s
	}
	if ap.TDX != nil {
		t := TDXPolicy(*ap.TDX)
		p.TDX = &t
	}
	return p
}
