package attest_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
	"github.com/cloister-faas/cloister/internal/tee/teetest"
)

var fakeNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func snpChip(t testing.TB, mod func(*teetest.SNPOptions)) *teetest.SNPChip {
	t.Helper()
	o := teetest.SNPOptions{
		Measurement: bytes.Repeat([]byte{0x5a}, 48),
		HostData:    bytes.Repeat([]byte{0x44}, 32),
		ChipID:      7,
		TCB:         kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115},
		Created:     fakeNow.AddDate(0, -1, 0),
	}
	if mod != nil {
		mod(&o)
	}
	c, err := teetest.NewSNPChip(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func snpVerifier(t *testing.T, c *teetest.SNPChip, revoked bool, at time.Time) *attest.Verifier {
	t.Helper()
	b, err := c.Collateral(fakeNow, revoked)
	if err != nil {
		t.Fatal(err)
	}
	return &attest.Verifier{Collateral: collateral.Offline(b), Now: func() time.Time { return at }}
}

// TestFakeSNP drives the SEV-SNP backend over go-sev-guest's fake device and
// over a fake configfs-tsm, and refuses each kind of bad evidence with its
// own error.
func TestFakeSNP(t *testing.T) {
	key := []byte("worker signing key")
	rd := tee.BindReportData("test", key)
	good := snpChip(t, nil)
	policy := func(c *teetest.SNPChip) attest.Policy {
		return attest.Policy{AllowTEE: []tee.Kind{tee.KindSEVSNP}, SEVSNP: c.Policy()}
	}
	for name, open := range map[string]func(*teetest.SNPChip) (*snp.Backend, error){
		"configfs-tsm":   func(c *teetest.SNPChip) (*snp.Backend, error) { return snp.NewTSM(c.TSM(), nil) },
		"/dev/sev-guest": func(c *teetest.SNPChip) (*snp.Backend, error) { return snp.NewDevice(c.Device()) },
	} {
		t.Run(name, func(t *testing.T) {
			b, err := open(good)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Measurement(), good.Opts.Measurement) || b.Kind() != tee.KindSEVSNP {
				t.Fatalf("backend: kind %s measurement %x", b.Kind(), b.Measurement())
			}
			ev, err := b.Evidence(rd)
			if err != nil {
				t.Fatal(err)
			}
			v := snpVerifier(t, good, false, fakeNow)
			c, err := v.Verify(ev, policy(good))
			if err != nil {
				t.Fatal(err)
			}
			if err := attest.Validate(c, policy(good), rd, fakeNow); err != nil {
				t.Fatal(err)
			}
			if c.TCB != "bl=3,tee=0,snp=8,ucode=115" || !bytes.Equal(c.HostData, good.Opts.HostData) {
				t.Fatalf("claims: TCB %q host data %x", c.TCB, c.HostData)
			}
		})
	}
	t.Run("seal key from /dev/sev-guest", func(t *testing.T) {
		b, err := snp.NewDevice(good.Device())
		if err != nil {
			t.Fatal(err)
		}
		k1, err := b.SealKey()
		if err != nil || len(k1) != 32 {
			t.Fatalf("seal key: %d bytes, %v", len(k1), err)
		}
		other, _ := snp.NewDevice(snpChip(t, func(o *teetest.SNPOptions) { o.Measurement = bytes.Repeat([]byte{1}, 48) }).Device())
		k2, _ := other.SealKey()
		if bytes.Equal(k1, k2) {
			t.Fatal("two chips and measurements derived the same seal key")
		}
		tsmOnly, _ := snp.NewTSM(good.TSM(), nil)
		if _, err := tsmOnly.SealKey(); !errors.Is(err, tee.ErrNoSealKey) {
			t.Fatalf("configfs-tsm only: got %v, want %v", err, tee.ErrNoSealKey)
		}
	})

	evidence := func(t *testing.T, c *teetest.SNPChip, rd [64]byte) tee.Evidence {
		t.Helper()
		b, err := snp.NewTSM(c.TSM(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := b.Evidence(rd)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	simEv, _ := sim.New(rootKey(1), measurement, func() time.Time { return fakeNow }).Evidence(rd)
	cases := []struct {
		name   string
		chip   *teetest.SNPChip
		ev     func(*testing.T, *teetest.SNPChip) tee.Evidence
		policy func(*attest.Policy)
		at     time.Time
		revoke bool
		want   error
	}{
		{name: "wrong measurement", chip: good, policy: func(p *attest.Policy) {
			p.SEVSNP.Measurements = []string{strings.Repeat("00", 48)}
		}, want: attest.ErrMeasurement},
		{name: "debug policy", chip: snpChip(t, func(o *teetest.SNPOptions) { o.Debug = true }), want: attest.ErrDebug},
		{name: "migration agent", chip: snpChip(t, func(o *teetest.SNPOptions) { o.MigrationAgent = true }), want: attest.ErrMigrationAgent},
		{name: "TCB below the minimum", chip: good, policy: func(p *attest.Policy) { p.SEVSNP.MinTCB = "bl=3,tee=0,snp=9,ucode=115" }, want: attest.ErrTCB},
		{name: "REPORT_DATA binds another key", chip: good, ev: func(t *testing.T, c *teetest.SNPChip) tee.Evidence {
			return evidence(t, c, tee.BindReportData("test", []byte("attacker key")))
		}, want: attest.ErrReportData},
		{name: "chain to AMD's real roots", chip: good, policy: func(p *attest.Policy) { p.SEVSNP.TrustedRoots = "" }, want: attest.ErrChain},
		{name: "expired chain", chip: good, at: fakeNow.AddDate(40, 0, 0), want: attest.ErrChain},
		{name: "revoked ASK", chip: good, revoke: true, want: attest.ErrRevoked},
		{name: "chip not pinned", chip: good, policy: func(p *attest.Policy) {
			p.SEVSNP.ChipIDs = []string{hex.EncodeToString(bytes.Repeat([]byte{8}, 64))}
		}, want: attest.ErrHardwareID},
		{name: "HOSTDATA not accepted", chip: good, policy: func(p *attest.Policy) {
			p.SEVSNP.HostData = []string{strings.Repeat("00", 32)}
		}, want: attest.ErrHostData},
		{name: "sim evidence, policy without sim", chip: good, ev: func(*testing.T, *teetest.SNPChip) tee.Evidence { return simEv }, want: attest.ErrSimNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := policy(tc.chip)
			if tc.policy != nil {
				tc.policy(&p)
			}
			at := tc.at
			if at.IsZero() {
				at = fakeNow
			}
			var ev tee.Evidence
			if tc.ev != nil {
				ev = tc.ev(t, tc.chip)
			} else {
				ev = evidence(t, tc.chip, rd)
			}
			v := snpVerifier(t, tc.chip, tc.revoke, at)
			c, err := v.Verify(ev, p)
			if err == nil {
				err = attest.Validate(c, p, rd, at)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("pinned chip accepted", func(t *testing.T) {
		p := policy(good)
		p.SEVSNP.ChipIDs = []string{hex.EncodeToString(bytes.Repeat([]byte{7}, 64))}
		p.SEVSNP.HostData = []string{hex.EncodeToString(good.Opts.HostData)}
		v := snpVerifier(t, good, false, fakeNow)
		c, err := v.Verify(evidence(t, good, rd), p)
		if err == nil {
			err = attest.Validate(c, p, rd, fakeNow)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

func tdxPlatform(t testing.TB, mod func(*teetest.TDXOptions)) *teetest.TDXPlatform {
	t.Helper()
	o := teetest.TDXOptions{
		MRTD:       bytes.Repeat([]byte{0x7d}, 48),
		MRConfigID: bytes.Repeat([]byte{0x33}, 48),
		TEETCBSVN:  []byte{3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		PPID:       9,
		Created:    fakeNow.AddDate(0, -1, 0),
	}
	if mod != nil {
		mod(&o)
	}
	p, err := teetest.NewTDXPlatform(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFakeTDX drives the TDX backend over a fake configfs-tsm whose quotes
// a fake Intel PKI signs, and refuses each kind of bad evidence with its
// own error.
func TestFakeTDX(t *testing.T) {
	rd := tee.BindReportData("test", []byte("worker signing key"))
	good := tdxPlatform(t, nil)
	policy := func(pl *teetest.TDXPlatform) attest.Policy {
		return attest.Policy{AllowTEE: []tee.Kind{tee.KindTDX}, TDX: pl.Policy()}
	}
	verifier := func(t *testing.T, pl *teetest.TDXPlatform, revoke bool, at time.Time) *attest.Verifier {
		b, err := pl.Collateral(fakeNow, revoke)
		if err != nil {
			t.Fatal(err)
		}
		return &attest.Verifier{Collateral: collateral.Offline(b), Now: func() time.Time { return at }}
	}
	evidence := func(t *testing.T, pl *teetest.TDXPlatform, rd [64]byte) tee.Evidence {
		t.Helper()
		b, err := tdx.NewTSM(pl.TSM())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Measurement(), pl.Opts.MRTD) {
			t.Fatalf("MRTD %x", b.Measurement())
		}
		ev, err := b.Evidence(rd)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	t.Run("valid", func(t *testing.T) {
		v := verifier(t, good, false, fakeNow)
		c, err := v.Verify(evidence(t, good, rd), policy(good))
		if err != nil {
			t.Fatal(err)
		}
		if err := attest.Validate(c, policy(good), rd, fakeNow); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.HardwareID, good.PPID()) || c.TCB != "03000500000000000000000000000000" {
			t.Fatalf("claims: PPID %x TCB %s", c.HardwareID, c.TCB)
		}
	})
	other := tdxPlatform(t, nil)
	simEv, _ := sim.New(rootKey(1), measurement, func() time.Time { return fakeNow }).Evidence(rd)
	cases := []struct {
		name   string
		pl     *teetest.TDXPlatform
		ev     func(*testing.T) tee.Evidence
		policy func(*attest.Policy)
		at     time.Time
		revoke bool
		want   error
	}{
		{name: "wrong MRTD", pl: good, policy: func(p *attest.Policy) { p.TDX.MRTDs = []string{strings.Repeat("00", 48)} }, want: attest.ErrMeasurement},
		{name: "debug TD", pl: tdxPlatform(t, func(o *teetest.TDXOptions) { o.Debug = true }), want: attest.ErrDebug},
		{name: "TCB below the minimum", pl: good, policy: func(p *attest.Policy) {
			p.TDX.MinTEETCBSVN = "03000600000000000000000000000000"
		}, want: attest.ErrTCB},
		{name: "REPORT_DATA binds another key", pl: good, ev: func(t *testing.T) tee.Evidence {
			return evidence(t, good, tee.BindReportData("test", []byte("attacker key")))
		}, want: attest.ErrReportData},
		{name: "chain to another root", pl: good, policy: func(p *attest.Policy) { p.TDX.TrustedRoots = other.RootPEM() }, want: attest.ErrChain},
		{name: "chain to Intel's real root", pl: good, policy: func(p *attest.Policy) { p.TDX.TrustedRoots = "" }, want: attest.ErrChain},
		{name: "expired chain", pl: good, at: fakeNow.AddDate(10, 0, 0), want: attest.ErrChain},
		{name: "revoked PCK certificate", pl: good, revoke: true, want: attest.ErrRevoked},
		{name: "platform not pinned", pl: good, policy: func(p *attest.Policy) { p.TDX.PlatformIDs = []string{strings.Repeat("01", 16)} }, want: attest.ErrHardwareID},
		{name: "MRCONFIGID not accepted", pl: good, policy: func(p *attest.Policy) { p.TDX.MRConfigIDs = []string{strings.Repeat("00", 48)} }, want: attest.ErrHostData},
		{name: "sim evidence, policy without sim", pl: good, ev: func(*testing.T) tee.Evidence { return simEv }, want: attest.ErrSimNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := policy(tc.pl)
			if tc.policy != nil {
				tc.policy(&p)
			}
			at := tc.at
			if at.IsZero() {
				at = fakeNow
			}
			var ev tee.Evidence
			if tc.ev != nil {
				ev = tc.ev(t)
			} else {
				ev = evidence(t, tc.pl, rd)
			}
			v := verifier(t, tc.pl, tc.revoke, at)
			c, err := v.Verify(ev, p)
			if err == nil {
				err = attest.Validate(c, p, rd, at)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}
