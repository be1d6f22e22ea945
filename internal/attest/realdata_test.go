package attest_test

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
	tdxtest "github.com/google/go-tdx-guest/testing"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
)

// realSNP returns the real SEV-SNP report from go-sev-guest's test data (a
// Milan machine, no certificate table), an offline bundle with the VCEK that
// AMD's KDS issued for it and the Milan ASK/ARK, and a fixed clock inside
// the VCEK's validity.
func realSNP(t testing.TB) (tee.Evidence, *attest.Verifier, attest.Policy, [64]byte) {
	t.Helper()
	report := sevtestdata.AttestationBytes[:abi.ReportSize]
	r, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := x509.ParseCertificate(sevtestdata.VcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	bundle := map[string]collateral.Response{}
	add := func(url string, body []byte) { bundle[url] = collateral.Response{URL: url, Body: body} }
	add(kds.ProductCertChainURL(abi.VcekReportSigner, "Milan"), trust.AskArkMilanVcekBytes)
	add(kds.VCEKCertURL("Milan", r.GetChipId(), kds.TCBVersion(r.GetReportedTcb())), sevtestdata.VcekBytes)
	raw, _ := json.Marshal(snp.Evidence{Report: report})
	at := vcek.NotBefore.Add(30 * 24 * time.Hour)
	v := &attest.Verifier{Collateral: collateral.Offline(bundle), Now: func() time.Time { return at }}
	p := attest.Policy{
		AllowTEE: []tee.Kind{tee.KindSEVSNP},
		SEVSNP: &attest.SNPPolicy{
			Measurements: []string{hex.EncodeToString(r.GetMeasurement())},
			Product:      "Milan",
			// AMD's CRL for this chip is not in go-sev-guest's test data, and
			// tests never touch the network.
			SkipRevocationCheck: true,
		},
	}
	var rd [64]byte
	copy(rd[:], r.GetReportData())
	return tee.Evidence{Kind: tee.KindSEVSNP, Raw: raw}, v, p, rd
}

func TestRealSNPReportVerifiesOffline(t *testing.T) {
	ev, v, p, rd := realSNP(t)
	c, err := v.Verify(ev, p)
	if err != nil {
		t.Fatalf("verifying the real SEV-SNP report: %v", err)
	}
	if c.Kind != tee.KindSEVSNP || len(c.Measurement) != 48 || len(c.HardwareID) != 64 {
		t.Fatalf("claims: kind %s, measurement %d bytes, chip id %d bytes", c.Kind, len(c.Measurement), len(c.HardwareID))
	}
	t.Logf("real report: measurement %x, TCB %s, debug %v, migration agent %v", c.Measurement, c.TCB, c.Debug, c.MigrationAgent)
	// The test VM was launched with debugging allowed; a policy that says
	// so accepts it, the default refuses it.
	p.SEVSNP.AllowDebug = c.Debug
	if err := attest.Validate(c, p, rd, v.Now()); err != nil {
		t.Fatalf("validating the real report against its own reference values: %v", err)
	}

	cases := []struct {
		name   string
		modify func(*attest.Policy, *[64]byte)
		want   error
	}{
		{"wrong measurement", func(p *attest.Policy, _ *[64]byte) {
			p.SEVSNP.Measurements = []string{strings.Repeat("00", 48)}
		}, attest.ErrMeasurement},
		{"report data binds another key", func(_ *attest.Policy, rd *[64]byte) { rd[0] ^= 1 }, attest.ErrReportData},
		{"TCB below the minimum", func(p *attest.Policy, _ *[64]byte) { p.SEVSNP.MinTCB = "ucode=255" }, attest.ErrTCB},
		{"chip not pinned", func(p *attest.Policy, _ *[64]byte) {
			p.SEVSNP.ChipIDs = []string{strings.Repeat("11", 64)}
		}, attest.ErrHardwareID},
		{"host data not accepted", func(p *attest.Policy, _ *[64]byte) {
			p.SEVSNP.HostData = []string{strings.Repeat("22", 32)}
		}, attest.ErrHostData},
		{"sim-only policy", func(p *attest.Policy, _ *[64]byte) { p.AllowTEE = []tee.Kind{tee.KindSim} }, attest.ErrKindNotAllowed},
	}
	if c.Debug {
		cases = append(cases, struct {
			name   string
			modify func(*attest.Policy, *[64]byte)
			want   error
		}{"debug not allowed", func(p *attest.Policy, _ *[64]byte) { p.SEVSNP.AllowDebug = false }, attest.ErrDebug})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := p
			sp := *p.SEVSNP
			q.SEVSNP = &sp
			want := rd
			tc.modify(&q, &want)
			if err := attest.Validate(c, q, want, v.Now()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("pinned chip accepted", func(t *testing.T) {
		q := p
		sp := *p.SEVSNP
		sp.ChipIDs = []string{hex.EncodeToString(c.HardwareID)}
		q.SEVSNP = &sp
		if err := attest.Validate(c, q, rd, v.Now()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("after the VCEK expired", func(t *testing.T) {
		late := &attest.Verifier{Collateral: v.Collateral, Now: func() time.Time { return v.Now().AddDate(20, 0, 0) }}
		if _, err := late.Verify(ev, p); !errors.Is(err, attest.ErrChain) {
			t.Fatalf("got %v, want %v", err, attest.ErrChain)
		}
	})
	t.Run("roots that did not sign it", func(t *testing.T) {
		q := p
		sp := *p.SEVSNP
		sp.TrustedRoots = string(trust.AskArkGenoaVcekBytes)
		q.SEVSNP = &sp
		if _, err := v.Verify(ev, q); !errors.Is(err, attest.ErrChain) {
			t.Fatalf("got %v, want %v", err, attest.ErrChain)
		}
	})
	t.Run("VCEK not in the offline bundle", func(t *testing.T) {
		empty := &attest.Verifier{Collateral: collateral.Offline(nil), Now: v.Now}
		if _, err := empty.Verify(ev, p); !errors.Is(err, attest.ErrCollateral) {
			t.Fatalf("got %v, want %v", err, attest.ErrCollateral)
		}
	})
	t.Run("a flipped bit in the report", func(t *testing.T) {
		var e snp.Evidence
		_ = json.Unmarshal(ev.Raw, &e)
		e.Report[0x90] ^= 1 // inside MEASUREMENT, under the signature
		raw, _ := json.Marshal(e)
		if _, err := v.Verify(tee.Evidence{Kind: tee.KindSEVSNP, Raw: raw}, p); !errors.Is(err, attest.ErrAuthenticity) {
			t.Fatalf("got %v, want %v", err, attest.ErrAuthenticity)
		}
	})
}

// realTDX returns the real TDX quote from go-tdx-guest's test data (a
// Sapphire Rapids machine), an offline bundle with the Intel PCS responses
// the library ships for it (TCB info, QE identity, PCK CRL, root CRL) and a
// clock inside their validity.
func realTDX(t testing.TB) (tee.Evidence, *attest.Verifier, attest.Policy, [64]byte) {
	t.Helper()
	q, err := tdx.Parse(tdxtestdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	bundle := map[string]collateral.Response{}
	for url, r := range tdxtest.TestGetter.Responses {
		bundle[url] = collateral.Response{URL: url, Header: r.Header, Body: r.Body}
	}
	at := time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)
	v := &attest.Verifier{Collateral: collateral.Offline(bundle), Now: func() time.Time { return at }}
	p := attest.Policy{
		AllowTEE: []tee.Kind{tee.KindTDX},
		TDX:      &attest.TDXPolicy{MRTDs: []string{hex.EncodeToString(q.GetTdQuoteBody().GetMrTd())}},
	}
	var rd [64]byte
	copy(rd[:], q.GetTdQuoteBody().GetReportData())
	return tee.Evidence{Kind: tee.KindTDX, Raw: tdxtestdata.RawQuote}, v, p, rd
}

func TestRealTDXQuoteVerifiesOffline(t *testing.T) {
	ev, v, p, rd := realTDX(t)
	// With Intel's collateral the quote is authentic but its platform TCB
	// is older than every level of the sample TCB info (which Intel issued
	// later), so Intel's own verdict refuses it: a real TCB-below-minimum.
	if _, err := v.Verify(ev, p); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("with Intel's TCB info: got %v, want %v", err, attest.ErrTCB)
	}
	// The PCK chain to Intel's root, the QE report and the quote signature.
	p.TDX.SkipCollateral = true
	c, err := v.Verify(ev, p)
	if err != nil {
		t.Fatalf("verifying the real TDX quote: %v", err)
	}
	t.Logf("real quote: MRTD %x, TEE_TCB_SVN %s, debug %v, PPID %x", c.Measurement, c.TCB, c.Debug, c.HardwareID)
	p.TDX.AllowDebug = c.Debug
	q, _ := tdx.Parse(tdxtestdata.RawQuote)
	for i, r := range q.GetTdQuoteBody().GetRtmrs() {
		p.TDX.RTMRs[i] = []string{hex.EncodeToString(r)}
	}
	if err := attest.Validate(c, p, rd, v.Now()); err != nil {
		t.Fatalf("validating the real quote against its own reference values (MRTD and RTMRs): %v", err)
	}
	cases := []struct {
		name   string
		modify func(*attest.TDXPolicy, *[64]byte)
		want   error
	}{
		{"wrong MRTD", func(p *attest.TDXPolicy, _ *[64]byte) { p.MRTDs = []string{strings.Repeat("00", 48)} }, attest.ErrMeasurement},
		{"wrong RTMR[2] (another kernel command line)", func(p *attest.TDXPolicy, _ *[64]byte) {
			p.RTMRs[2] = []string{strings.Repeat("00", 48)}
		}, attest.ErrMeasurement},
		{"report data binds another key", func(_ *attest.TDXPolicy, rd *[64]byte) { rd[63] ^= 1 }, attest.ErrReportData},
		{"TCB below the minimum", func(p *attest.TDXPolicy, _ *[64]byte) { p.MinTEETCBSVN = strings.Repeat("ff", 16) }, attest.ErrTCB},
		{"platform not pinned", func(p *attest.TDXPolicy, _ *[64]byte) { p.PlatformIDs = []string{strings.Repeat("11", 16)} }, attest.ErrHardwareID},
		{"MRCONFIGID not accepted", func(p *attest.TDXPolicy, _ *[64]byte) { p.MRConfigIDs = []string{strings.Repeat("22", 48)} }, attest.ErrHostData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := p
			tp := *p.TDX
			q.TDX = &tp
			want := rd
			tc.modify(&tp, &want)
			if err := attest.Validate(c, q, want, v.Now()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("PCK leaf expired", func(t *testing.T) {
		late := &attest.Verifier{Collateral: v.Collateral, Now: func() time.Time { return v.Now().AddDate(30, 0, 0) }}
		if _, err := late.Verify(ev, p); !errors.Is(err, attest.ErrChain) {
			t.Fatalf("got %v, want %v", err, attest.ErrChain)
		}
	})
	t.Run("collateral expired", func(t *testing.T) {
		q := p
		tp := *p.TDX
		tp.SkipCollateral = false
		q.TDX = &tp
		late := &attest.Verifier{Collateral: v.Collateral, Now: func() time.Time { return v.Now().AddDate(1, 0, 0) }}
		if _, err := late.Verify(ev, q); !errors.Is(err, attest.ErrChain) {
			t.Fatalf("got %v, want %v", err, attest.ErrChain)
		}
	})
	t.Run("no collateral offline", func(t *testing.T) {
		q := p
		tp := *p.TDX
		tp.SkipCollateral = false
		q.TDX = &tp
		empty := &attest.Verifier{Collateral: collateral.Offline(nil), Now: v.Now}
		if _, err := empty.Verify(ev, q); !errors.Is(err, attest.ErrCollateral) {
			t.Fatalf("got %v, want %v", err, attest.ErrCollateral)
		}
	})
	t.Run("roots that did not sign it", func(t *testing.T) {
		q := p
		tp := *p.TDX
		tp.TrustedRoots = string(sevRootPEM(t))
		q.TDX = &tp
		if _, err := v.Verify(ev, q); !errors.Is(err, attest.ErrChain) {
			t.Fatalf("got %v, want %v", err, attest.ErrChain)
		}
	})
	t.Run("sim-only policy", func(t *testing.T) {
		if _, err := v.Verify(ev, attest.Policy{AllowTEE: []tee.Kind{tee.KindSim}}); !errors.Is(err, attest.ErrKindNotAllowed) {
			t.Fatalf("got %v, want %v", err, attest.ErrKindNotAllowed)
		}
	})
}

// sevRootPEM is a genuine root that did not sign anything of Intel's.
func sevRootPEM(t testing.TB) []byte {
	r := trust.AMDRootCertsProduct("Milan")
	if err := r.FromKDSCertBytes(trust.AskArkMilanVcekBytes); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.ProductCerts.Ark.Raw})
}
