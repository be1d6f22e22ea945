package sim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/tee"
)

// t0 is the fixed clock every test backend reads.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testKey returns a deterministic root key; different seeds give different roots.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func testMeasurement() []byte {
	m := sha256.Sum256([]byte("test binary"))
	return m[:]
}

func newTestBackend(seed byte) *Backend {
	return New(testKey(seed), testMeasurement(), func() time.Time { return t0 })
}

// signReport signs an arbitrary report body as a sim root would.
func signReport(t *testing.T, root ed25519.PrivateKey, body []byte) []byte {
	t.Helper()
	raw, err := json.Marshal(signed{Report: body, Signature: ed25519.Sign(root, append([]byte(reportDomain), body...))})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestEvidenceRoundTrip(t *testing.T) {
	b := newTestBackend(1)
	rd := tee.BindReportData("test", []byte("key"))
	ev, err := b.Evidence(rd)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	if ev.Kind != tee.KindSim {
		t.Errorf("got evidence kind %q, want %q", ev.Kind, tee.KindSim)
	}
	if got := b.Kind(); got != tee.KindSim {
		t.Errorf("got backend kind %q, want %q", got, tee.KindSim)
	}
	r, err := VerifyReport(ev.Raw, []ed25519.PublicKey{b.RootPublicKey()})
	if err != nil {
		t.Fatalf("VerifyReport: %v", err)
	}
	want := Report{
		Version:     1,
		TEE:         tee.KindSim,
		Measurement: hex.EncodeToString(testMeasurement()),
		TCB:         TCB,
		ReportData:  hex.EncodeToString(rd[:]),
		Time:        t0,
	}
	if r.Version != want.Version || r.TEE != want.TEE || r.Measurement != want.Measurement ||
		r.TCB != want.TCB || r.ReportData != want.ReportData || !r.Time.Equal(want.Time) {
		t.Errorf("got report %+v, want %+v", *r, want)
	}
}

func TestVerifyReportAnyTrustedRoot(t *testing.T) {
	b := newTestBackend(1)
	ev, err := b.Evidence([tee.ReportDataSize]byte{})
	if err != nil {
		t.Fatal(err)
	}
	roots := []ed25519.PublicKey{
		ed25519.PublicKey{1, 2, 3}, // wrong length: skipped, not a panic
		testKey(2).Public().(ed25519.PublicKey),
		b.RootPublicKey(),
	}
	if _, err := VerifyReport(ev.Raw, roots); err != nil {
		t.Errorf("got %v, want nil with the signing root listed last", err)
	}
}

func TestVerifyReportRefused(t *testing.T) {
	b := newTestBackend(1)
	root := testKey(1)
	trusted := []ed25519.PublicKey{b.RootPublicKey()}
	ev, err := b.Evidence(tee.BindReportData("test"))
	if err != nil {
		t.Fatal(err)
	}
	var s signed
	if err := json.Unmarshal(ev.Raw, &s); err != nil {
		t.Fatal(err)
	}
	reencode := func(s signed) []byte {
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	flipReport := s
	flipReport.Report = bytes.Clone(s.Report)
	flipReport.Report[len(flipReport.Report)/2] ^= 0x01
	flipSig := s
	flipSig.Signature = bytes.Clone(s.Signature)
	flipSig.Signature[0] ^= 0x80
	noSig := s
	noSig.Signature = nil

	body := func(r Report) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := Report{Version: 1, TEE: tee.KindSim, Measurement: "00", TCB: TCB, ReportData: "00", Time: t0}
	snp := good
	snp.TEE = tee.KindSEVSNP
	v2 := good
	v2.Version = 2

	tests := []struct {
		name  string
		raw   []byte
		roots []ed25519.PublicKey
		want  error
	}{
		{"wrong root", ev.Raw, []ed25519.PublicKey{testKey(2).Public().(ed25519.PublicKey)}, ErrBadSignature},
		{"no roots", ev.Raw, nil, ErrBadSignature},
		{"short root", ev.Raw, []ed25519.PublicKey{b.RootPublicKey()[:16]}, ErrBadSignature},
		{"flipped report byte", reencode(flipReport), trusted, ErrBadSignature},
		{"flipped signature byte", reencode(flipSig), trusted, ErrBadSignature},
		{"missing signature", reencode(noSig), trusted, ErrBadSignature},
		{"signed without domain", reencode(signed{Report: s.Report, Signature: ed25519.Sign(root, s.Report)}), trusted, ErrBadSignature},
		{"empty", nil, trusted, ErrMalformed},
		{"not json", []byte("not json"), trusted, ErrMalformed},
		{"json array", []byte(`[1,2]`), trusted, ErrMalformed},
		{"bad base64", []byte(`{"report":"!!!","signature":""}`), trusted, ErrMalformed},
		{"signed body not json", signReport(t, root, []byte("garbage")), trusted, ErrMalformed},
		{"signed tee sev-snp", signReport(t, root, body(snp)), trusted, ErrMalformed},
		{"signed version 2", signReport(t, root, body(v2)), trusted, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := VerifyReport(tt.raw, tt.roots)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if r != nil {
				t.Errorf("got report %+v, want nil", *r)
			}
		})
	}
	// The same body re-signed correctly verifies: the cases above fail for
	// the reason they name, not for an encoding accident.
	if _, err := VerifyReport(signReport(t, root, body(good)), trusted); err != nil {
		t.Errorf("control: got %v, want nil", err)
	}
}

func TestEvidenceUsesClockInUTC(t *testing.T) {
	loc := time.FixedZone("UTC+5", 5*60*60)
	now := time.Date(2025, 6, 1, 17, 0, 0, 0, loc)
	b := New(testKey(1), testMeasurement(), func() time.Time { return now })
	ev, err := b.Evidence([tee.ReportDataSize]byte{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := VerifyReport(ev.Raw, []ed25519.PublicKey{b.RootPublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Time.Equal(now) || r.Time.Location() != time.UTC {
		t.Errorf("got time %v, want %v in UTC", r.Time, now.UTC())
	}
}

func TestMeasurementIsCopied(t *testing.T) {
	m := testMeasurement()
	b := New(testKey(1), m, time.Now)
	m[0] ^= 0xff
	if got, want := b.Measurement(), testMeasurement(); !bytes.Equal(got, want) {
		t.Fatalf("after mutating New's argument: got %x, want %x", got, want)
	}
	got := b.Measurement()
	got[0] ^= 0xff
	if got, want := b.Measurement(), testMeasurement(); !bytes.Equal(got, want) {
		t.Errorf("after mutating Measurement's result: got %x, want %x", got, want)
	}
}

func TestSealKey(t *testing.T) {
	k1, err := newTestBackend(1).SealKey()
	if err != nil {
		t.Fatal(err)
	}
	k1again, err := New(testKey(1), []byte("other measurement"), time.Now).SealKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := newTestBackend(2).SealKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 {
		t.Errorf("got key length %d, want 32", len(k1))
	}
	if !bytes.Equal(k1, k1again) {
		t.Errorf("same root: got %x and %x, want equal keys", k1, k1again)
	}
	if bytes.Equal(k1, k2) {
		t.Errorf("different roots: got %x for both, want different keys", k1)
	}
	if bytes.Equal(k1, testKey(1).Seed()) {
		t.Error("got the root seed as the seal key, want a derived key")
	}
}

func TestOpenCreatesAndReloadsRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim") // Open must create the directory
	b1, err := Open(dir)
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("got root.key mode %v, want %v", got, os.FileMode(0o600))
	}
	if got := fi.Size(); got != ed25519.SeedSize {
		t.Errorf("got root.key size %d, want %d", got, ed25519.SeedSize)
	}
	if len(b1.Measurement()) != sha256.Size {
		t.Errorf("got measurement length %d, want %d", len(b1.Measurement()), sha256.Size)
	}

	b2, err := Open(dir)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if !b1.RootPublicKey().Equal(b2.RootPublicKey()) {
		t.Errorf("got root %x after reload, want %x", b2.RootPublicKey(), b1.RootPublicKey())
	}
	k1, _ := b1.SealKey()
	k2, _ := b2.SealKey()
	if !bytes.Equal(k1, k2) {
		t.Error("got a different seal key after reload, want the same")
	}
	// Evidence from the reloaded backend verifies under the first root.
	ev, err := b2.Evidence([tee.ReportDataSize]byte{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReport(ev.Raw, []ed25519.PublicKey{b1.RootPublicKey()}); err != nil {
		t.Errorf("got %v, want evidence of the reloaded backend to verify", err)
	}

	other, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other.RootPublicKey().Equal(b1.RootPublicKey()) {
		t.Error("got the same root in two directories, want fresh random roots")
	}
}

func TestOpenRefusesBadRootFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "root.key"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Open(dir); err == nil {
		t.Fatalf("got backend with root %x, want an error for a 5-byte root.key", b.RootPublicKey())
	}
}
