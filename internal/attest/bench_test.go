package attest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"maps"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
)

// verifyOnce verifies and validates evidence, failing the benchmark on error.
func verifyOnce(b *testing.B, v *attest.Verifier, ev tee.Evidence, p attest.Policy, rd [64]byte, at time.Time) {
	c, err := v.Verify(ev, p)
	if err == nil {
		err = attest.Validate(c, p, rd, at)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkVerifySNP verifies and validates SEV-SNP evidence "cold": every
// operation runs the whole chain (VCEK → ASK → ARK, the ARK-signed CRL, the
// report signature, the policy), with collateral from the getter's cache:
// in memory, or read from its on-disk cache by a fresh getter. fake is a
// go-sev-guest fake chip (certificates in the evidence, CRL checked);
// real is the real Milan report (VCEK from the cache, no CRL).
func BenchmarkVerifySNP(b *testing.B) {
	chip := snpChip(b, nil)
	rd := tee.BindReportData("bench", []byte("key"))
	be, err := snp.NewTSM(chip.TSM(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ev, err := be.Evidence(rd)
	if err != nil {
		b.Fatal(err)
	}
	p := attest.Policy{AllowTEE: []tee.Kind{tee.KindSEVSNP}, SEVSNP: chip.Policy()}
	bundle, err := chip.Collateral(fakeNow, false)
	if err != nil {
		b.Fatal(err)
	}
	at := func() time.Time { return fakeNow }
	b.Run("fake/collateral-memory", func(b *testing.B) {
		v := &attest.Verifier{Collateral: collateral.Offline(bundle), Now: at}
		for b.Loop() {
			verifyOnce(b, v, ev, p, rd, fakeNow)
		}
	})
	b.Run("fake/collateral-disk", func(b *testing.B) {
		dir := b.TempDir()
		warm := collateral.New(collateral.Options{Dir: dir, Fetcher: bundleFetcher(bundle), Now: at})
		verifyOnce(b, &attest.Verifier{Collateral: warm, Now: at}, ev, p, rd, fakeNow)
		for b.Loop() {
			g := collateral.New(collateral.Options{Dir: dir, Offline: true, Now: at})
			verifyOnce(b, &attest.Verifier{Collateral: g, Now: at}, ev, p, rd, fakeNow)
		}
	})
	b.Run("real/collateral-memory", func(b *testing.B) {
		ev, v, p, rd := realSNP(b)
		c, err := v.Verify(ev, p)
		if err != nil {
			b.Fatal(err)
		}
		p.SEVSNP.AllowDebug = c.Debug
		for b.Loop() {
			verifyOnce(b, v, ev, p, rd, v.Now())
		}
	})
}

// BenchmarkVerifyTDX verifies and validates TDX quotes cold: the PCK chain
// to the root, TCB info and QE identity (both signature-checked), the root
// and PCK CRLs, the QE report and the quote signature. fake is a fake Intel
// platform with full collateral; real is the real quote (chain and
// signatures only: its sample TCB info rates it out of date).
func BenchmarkVerifyTDX(b *testing.B) {
	pl := tdxPlatform(b, nil)
	rd := tee.BindReportData("bench", []byte("key"))
	be, err := tdx.NewTSM(pl.TSM())
	if err != nil {
		b.Fatal(err)
	}
	ev, err := be.Evidence(rd)
	if err != nil {
		b.Fatal(err)
	}
	p := attest.Policy{AllowTEE: []tee.Kind{tee.KindTDX}, TDX: pl.Policy()}
	bundle, err := pl.Collateral(fakeNow, false)
	if err != nil {
		b.Fatal(err)
	}
	at := func() time.Time { return fakeNow }
	b.Run("fake/collateral-memory", func(b *testing.B) {
		v := &attest.Verifier{Collateral: collateral.Offline(bundle), Now: at}
		for b.Loop() {
			verifyOnce(b, v, ev, p, rd, fakeNow)
		}
	})
	b.Run("fake/collateral-disk", func(b *testing.B) {
		dir := b.TempDir()
		warm := collateral.New(collateral.Options{Dir: dir, Fetcher: bundleFetcher(bundle), Now: at})
		verifyOnce(b, &attest.Verifier{Collateral: warm, Now: at}, ev, p, rd, fakeNow)
		for b.Loop() {
			g := collateral.New(collateral.Options{Dir: dir, Offline: true, Now: at})
			verifyOnce(b, &attest.Verifier{Collateral: g, Now: at}, ev, p, rd, fakeNow)
		}
	})
	b.Run("real/chain-only", func(b *testing.B) {
		ev, v, p, rd := realTDX(b)
		p.TDX.SkipCollateral = true
		for b.Loop() {
			verifyOnce(b, v, ev, p, rd, v.Now())
		}
	})
}

// BenchmarkVerifyResultToken verifies a cached attestation-result token
// (EdDSA JWT): what a client does instead of verifying evidence again.
func BenchmarkVerifyResultToken(b *testing.B) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	tok, err := artoken.Issue(key, artoken.Claims{Issuer: artoken.Issuer, Profile: artoken.Profile, Status: "affirming",
		IssuedAt: now.Unix(), Expires: now.Add(time.Minute).Unix(), TEE: tee.KindSEVSNP, ManifestHash: "ab",
		Workers: []artoken.Worker{{ID: "w1", TEE: tee.KindSEVSNP}, {ID: "w2", TEE: tee.KindTDX}}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := artoken.Verify(tok, pub, now); err != nil {
			b.Fatal(err)
		}
	}
}

// bundleFetcher serves a bundle as if it were the network.
type bundleFetcher map[string]collateral.Response

func (f bundleFetcher) Fetch(_ context.Context, url string) (*collateral.Response, error) {
	r, ok := f[url]
	if !ok {
		return nil, collateral.ErrUnavailable
	}
	c := r
	c.Header = maps.Clone(r.Header)
	return &c, nil
}
