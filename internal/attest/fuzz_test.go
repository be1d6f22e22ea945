package attest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/snp"
)

// FuzzVerifyHardwareEvidence feeds arbitrary bytes as SEV-SNP and TDX
// evidence to the verifier: it must neither panic nor accept anything not
// signed under the policy's roots (here: no collateral, and roots that sign
// nothing real, so nothing may pass).
func FuzzVerifyHardwareEvidence(f *testing.F) {
	realSNPRaw, _ := json.Marshal(snp.Evidence{Report: sevtestdata.AttestationBytes[:abi.ReportSize]})
	f.Add(true, realSNPRaw)
	f.Add(false, tdxtestdata.RawQuote)
	f.Add(true, []byte(`{"report":"AAAA","certs":"AAAA"}`))
	f.Add(false, []byte{4, 0, 2, 0, 0x81})
	chip := snpChip(f, nil)
	pl := tdxPlatform(f, nil)
	p := attest.Policy{AllowTEE: []tee.Kind{tee.KindSEVSNP, tee.KindTDX}, SEVSNP: chip.Policy(), TDX: pl.Policy()}
	v := &attest.Verifier{Collateral: collateral.Offline(nil), Now: func() time.Time { return fakeNow }}
	f.Fuzz(func(t *testing.T, isSNP bool, raw []byte) {
		kind := tee.KindTDX
		if isSNP {
			kind = tee.KindSEVSNP
		}
		if c, err := v.Verify(tee.Evidence{Kind: kind, Raw: raw}, p); err == nil {
			t.Fatalf("accepted %d bytes of %s evidence: %+v", len(raw), kind, c)
		}
	})
}
