package attest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"

	"github.com/google/go-tdx-guest/pcs"
	tdxvalidate "github.com/google/go-tdx-guest/validate"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
)

// TDXPolicy holds the reference values and rules for TDX quotes (Intel TDX
// DCAP quote format v4).
type TDXPolicy struct {
	// MRTDs are accepted build-time TD measurements (hex, 48 bytes).
	MRTDs []string `json:"mrtd"`
	// RTMRs, when set, lists the accepted values of each runtime measurement
	// register (index 0-3; hex, 48 bytes each; an empty list accepts any).
	// MRTD covers only the TD firmware: the kernel, initrd and command line
	// (and so the Cloister binary) are measured into RTMR[1] and RTMR[2], so
	// a deployment pins those.
	RTMRs [4][]string `json:"rtmr,omitzero"`
	// MRConfigIDs, when set, lists accepted MRCONFIGID values (hex, 48 bytes).
	MRConfigIDs []string `json:"mrconfigid,omitempty"`
	// MinTEETCBSVN is the component-wise minimum TEE_TCB_SVN (hex, 16 bytes; "" = any).
	MinTEETCBSVN string `json:"min_tee_tcb_svn,omitempty"`
	// AllowDebug accepts TDs with the DEBUG attribute. Never in production.
	AllowDebug bool `json:"allow_debug,omitempty"`
	// PlatformIDs, when set, pins the PPIDs of the PCK certificates (hex, 16 bytes).
	PlatformIDs []string `json:"platform_ids,omitempty"`
	// TrustedRoots is a PEM bundle of roots to trust instead of Intel's SGX
	// root CA (tests and private deployments; "" = Intel's).
	TrustedRoots string `json:"trusted_roots,omitempty"`
	// SkipRevocationCheck skips the PCK and root CRLs. Only for offline
	// verification of old quotes; a deployment must leave it false.
	SkipRevocationCheck bool `json:"skip_revocation_check,omitempty"`
	// SkipCollateral verifies only the PCK chain to the root and the quote's
	// and QE report's signatures, without TCB info, QE identity or CRLs, so
	// without Intel's verdict on the platform's TCB. Only for offline
	// checks of old quotes; a deployment must leave it false.
	SkipCollateral bool `json:"skip_collateral,omitempty"`
}

func (tp *TDXPolicy) validate() error {
	if len(tp.MRTDs) == 0 {
		return fmt.Errorf("%w: tdx lists no mrtd", ErrPolicy)
	}
	for _, set := range []struct {
		name string
		list []string
		size int
	}{{"mrtd", tp.MRTDs, 48}, {"mrconfigid", tp.MRConfigIDs, 48}, {"platform_id", tp.PlatformIDs, 16},
		{"rtmr[0]", tp.RTMRs[0], 48}, {"rtmr[1]", tp.RTMRs[1], 48}, {"rtmr[2]", tp.RTMRs[2], 48}, {"rtmr[3]", tp.RTMRs[3], 48}} {
		for _, h := range set.list {
			if b, err := hex.DecodeString(h); err != nil || len(b) != set.size {
				return fmt.Errorf("%w: tdx %s %q is not %d hex bytes", ErrPolicy, set.name, h, set.size)
			}
		}
	}
	if tp.MinTEETCBSVN != "" {
		if _, err := ParseTDXTCB(tp.MinTEETCBSVN); err != nil {
			return err
		}
	}
	if _, err := tp.roots(); err != nil {
		return err
	}
	return nil
}

// ParseTDXTCB parses a hex TEE_TCB_SVN (16 bytes).
func ParseTDXTCB(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return nil, fmt.Errorf("%w: tdx TCB %q is not 16 hex bytes", ErrPolicy, s)
	}
	return b, nil
}

// TDXTCBAtLeast reports whether have is component-wise at least min.
func TDXTCBAtLeast(have, min []byte) bool {
	if len(have) != len(min) {
		return false
	}
	for i := range min {
		if have[i] < min[i] {
			return false
		}
	}
	return true
}

// IntelSGXRootSHA256 is the SHA-256 fingerprint of Intel's SGX Root CA
// certificate (CN "Intel SGX Root CA", valid to 2049), the root of every PCK
// chain and of the PCS collateral.
const IntelSGXRootSHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

// intelRoot takes the root certificate a quote carries and trusts it only
// if it is Intel's SGX Root CA by fingerprint. (go-tdx-guest would fall back
// to its embedded copy of the same certificate, but logs a warning to
// stdout on every verification when it does.)
func intelRoot(chain []byte) (*x509.CertPool, error) {
	var last *pem.Block
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		last = b
	}
	if last == nil {
		return nil, fmt.Errorf("%w: tdx: the quote carries no PCK certificate chain", ErrAuthenticity)
	}
	if sum := sha256.Sum256(last.Bytes); hex.EncodeToString(sum[:]) != IntelSGXRootSHA256 {
		return nil, fmt.Errorf("%w: tdx: the PCK chain does not end at Intel's SGX Root CA", ErrChain)
	}
	c, err := x509.ParseCertificate(last.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: tdx: root certificate: %v", ErrAuthenticity, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, nil
}

func (tp *TDXPolicy) roots() (*x509.CertPool, error) {
	if tp.TrustedRoots == "" {
		return nil, nil // Intel's SGX Root CA, see intelRoot
	}
	pool := x509.NewCertPool()
	rest := []byte(tp.TrustedRoots)
	n := 0
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: tdx trusted_roots: %v", ErrPolicy, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: tdx trusted_roots holds no PEM certificate", ErrPolicy)
	}
	return pool, nil
}

func (v *Verifier) verifyTDX(raw []byte, tp *TDXPolicy) (*Claims, error) {
	if tp == nil {
		return nil, fmt.Errorf("%w: no tdx reference values", ErrPolicy)
	}
	q, err := tdx.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAuthenticity, err)
	}
	roots, err := tp.roots()
	if err != nil {
		return nil, err
	}
	if roots == nil {
		chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
		if roots, err = intelRoot(chain); err != nil {
			return nil, err
		}
	}
	opts := &tdxverify.Options{
		CheckRevocations: !tp.SkipRevocationCheck && !tp.SkipCollateral,
		GetCollateral:    !tp.SkipCollateral,
		Getter:           v.getter().TDX(),
		Now:              v.now(),
		TrustedRoots:     roots,
	}
	if err := tdxverify.TdxQuote(q, opts); err != nil {
		return nil, classifyVerifyError("tdx", err)
	}
	body := q.GetTdQuoteBody()
	c := &Claims{
		Kind:        tee.KindTDX,
		Measurement: body.GetMrTd(),
		TCB:         hex.EncodeToString(body.GetTeeTcbSvn()),
		Time:        v.now(),
		HostData:    body.GetMrConfigId(),
		Debug:       len(body.GetTdAttributes()) > 0 && body.GetTdAttributes()[0]&1 != 0,
		tdx:         q,
	}
	copy(c.ReportData[:], body.GetReportData())
	// The PPID identifies the platform; the chain it sits in was verified above.
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	if blk, _ := pem.Decode(chain); blk != nil {
		if leaf, err := x509.ParseCertificate(blk.Bytes); err == nil {
			if ext, err := pcs.PckCertificateExtensions(leaf); err == nil {
				// A PPID that is not hex leaves a prefix or nothing, which no
				// pinned platform ID matches: refused when IDs are pinned.
				c.HardwareID, _ = hex.DecodeString(ext.PPID)
			}
		}
	}
	return c, nil
}

func validateTDX(c *Claims, tp *TDXPolicy, rd [tee.ReportDataSize]byte) error {
	if c.Debug && !tp.AllowDebug {
		return ErrDebug
	}
	body := c.tdx.GetTdQuoteBody()
	for i, accepted := range tp.RTMRs {
		if len(accepted) == 0 {
			continue
		}
		if rt := body.GetRtmrs(); len(rt) <= i || !hexListContains(accepted, rt[i]) {
			return fmt.Errorf("%w: RTMR[%d] not among the accepted values", ErrMeasurement, i)
		}
	}
	var minTCB []byte
	if tp.MinTEETCBSVN != "" {
		var err error
		if minTCB, err = ParseTDXTCB(tp.MinTEETCBSVN); err != nil {
			return err
		}
		if !TDXTCBAtLeast(body.GetTeeTcbSvn(), minTCB) {
			return fmt.Errorf("%w: TEE_TCB_SVN %s, minimum %s", ErrTCB, c.TCB, tp.MinTEETCBSVN)
		}
	}
	if len(tp.PlatformIDs) > 0 && !hexListContains(tp.PlatformIDs, c.HardwareID) {
		return fmt.Errorf("%w: PPID %x", ErrHardwareID, c.HardwareID)
	}
	if len(tp.MRConfigIDs) > 0 && !hexListContains(tp.MRConfigIDs, c.HostData) {
		return fmt.Errorf("%w: MRCONFIGID %x", ErrHostData, c.HostData)
	}
	opts := &tdxvalidate.Options{TdQuoteBodyOptions: tdxvalidate.TdQuoteBodyOptions{
		MinimumTeeTcbSvn: minTCB,
		MrTd:             c.Measurement,
		ReportData:       rd[:],
	}}
	if err := tdxvalidate.TdxQuote(c.tdx, opts); err != nil {
		return fmt.Errorf("%w: tdx: %v", ErrGuestPolicy, err)
	}
	return nil
}
