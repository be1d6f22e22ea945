package attest_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
)

// issued is when the fake sim backend signs its evidence.
var issued = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var measurement = func() []byte { m := sha256.Sum256([]byte("worker binary")); return m[:] }()

func rootKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// backend returns a sim backend with a fixed root, measurement and clock.
func backend(at time.Time) *sim.Backend {
	return sim.New(rootKey(1), measurement, func() time.Time { return at })
}

// simPolicy returns a valid policy that trusts backend's root and measurement.
func simPolicy() attest.Policy {
	return attest.Policy{
		AllowTEE:     []tee.Kind{tee.KindSim},
		SimRoots:     []string{hex.EncodeToString(rootKey(1).Public().(ed25519.PublicKey))},
		Measurements: []string{hex.EncodeToString(measurement)},
	}
}

func evidence(t *testing.T, at time.Time, rd [tee.ReportDataSize]byte) tee.Evidence {
	t.Helper()
	ev, err := backend(at).Evidence(rd)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*attest.Policy)
		ok     bool
	}{
		{"valid sim", func(*attest.Policy) {}, true},
		{"valid hardware only, no roots", func(p *attest.Policy) {
			p.AllowTEE = []tee.Kind{tee.KindSEVSNP, tee.KindTDX}
			p.SimRoots = nil
			p.SEVSNP = &attest.SNPPolicy{Measurements: []string{strings.Repeat("ab", 48)}}
			p.TDX = &attest.TDXPolicy{MRTDs: []string{strings.Repeat("cd", 48)}}
		}, true},
		{"sev-snp without reference values", func(p *attest.Policy) { p.AllowTEE = append(p.AllowTEE, tee.KindSEVSNP) }, false},
		{"tdx without reference values", func(p *attest.Policy) { p.AllowTEE = append(p.AllowTEE, tee.KindTDX) }, false},
		{"sev-snp measurement of the wrong size", func(p *attest.Policy) {
			p.AllowTEE = append(p.AllowTEE, tee.KindSEVSNP)
			p.SEVSNP = &attest.SNPPolicy{Measurements: []string{hex.EncodeToString(measurement)}}
		}, false},
		{"sev-snp bad min_tcb", func(p *attest.Policy) {
			p.AllowTEE = append(p.AllowTEE, tee.KindSEVSNP)
			p.SEVSNP = &attest.SNPPolicy{Measurements: []string{strings.Repeat("ab", 48)}, MinTCB: "bl=x"}
		}, false},
		{"tdx bad min_tee_tcb_svn", func(p *attest.Policy) {
			p.AllowTEE = append(p.AllowTEE, tee.KindTDX)
			p.TDX = &attest.TDXPolicy{MRTDs: []string{strings.Repeat("cd", 48)}, MinTEETCBSVN: "00"}
		}, false},
		{"tdx trusted_roots not PEM", func(p *attest.Policy) {
			p.AllowTEE = append(p.AllowTEE, tee.KindTDX)
			p.TDX = &attest.TDXPolicy{MRTDs: []string{strings.Repeat("cd", 48)}, TrustedRoots: "nope"}
		}, false},
		{"max_age 30s", func(p *attest.Policy) { p.MaxAge = "30s" }, true},
		{"empty allow_tee", func(p *attest.Policy) { p.AllowTEE = nil }, false},
		{"no measurements", func(p *attest.Policy) { p.Measurements = nil }, false},
		{"sim without roots", func(p *attest.Policy) { p.SimRoots = nil }, false},
		{"sim among others without roots", func(p *attest.Policy) {
			p.AllowTEE = []tee.Kind{tee.KindSEVSNP, tee.KindSim}
			p.SimRoots = nil
		}, false},
		{"max_age not a duration", func(p *attest.Policy) { p.MaxAge = "ten minutes" }, false},
		{"max_age without unit", func(p *attest.Policy) { p.MaxAge = "600" }, false},
		{"max_age zero", func(p *attest.Policy) { p.MaxAge = "0s" }, false},
		{"max_age negative", func(p *attest.Policy) { p.MaxAge = "-1m" }, false},
		{"unknown kind", func(p *attest.Policy) { p.AllowTEE = append(p.AllowTEE, "sgx") }, false},
		{"kind in the wrong case", func(p *attest.Policy) { p.AllowTEE = []tee.Kind{"SIM"} }, false},
		{"sim root not hex", func(p *attest.Policy) { p.SimRoots = []string{"zz"} }, false},
		{"sim root wrong size", func(p *attest.Policy) { p.SimRoots = []string{"abcd"} }, false},
		{"measurement not hex", func(p *attest.Policy) { p.Measurements = []string{"xyz"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := simPolicy()
			tt.modify(&p)
			err := p.Validate()
			switch {
			case tt.ok && err != nil:
				t.Errorf("got %v, want nil", err)
			case !tt.ok && !errors.Is(err, attest.ErrPolicy):
				t.Errorf("got %v, want %v", err, attest.ErrPolicy)
			}
		})
	}
}

func TestAllowsSim(t *testing.T) {
	tests := []struct {
		allow []tee.Kind
		want  bool
	}{
		{nil, false},
		{[]tee.Kind{tee.KindSEVSNP}, false},
		{[]tee.Kind{tee.KindTDX, tee.KindSim}, true},
		{[]tee.Kind{"SIM"}, false},
	}
	for _, tt := range tests {
		if got := (attest.Policy{AllowTEE: tt.allow}).AllowsSim(); got != tt.want {
			t.Errorf("AllowsSim(%q): got %v, want %v", tt.allow, got, tt.want)
		}
	}
}

func TestVerifySim(t *testing.T) {
	rd := tee.BindReportData("test", []byte("worker key"))
	c, err := attest.Verify(evidence(t, issued, rd), simPolicy())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := &attest.Claims{Kind: tee.KindSim, Measurement: measurement, TCB: sim.TCB, ReportData: rd, Time: issued}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got claims %+v, want %+v", c, want)
	}
}

func TestVerifyRefused(t *testing.T) {
	ev := evidence(t, issued, [tee.ReportDataSize]byte{})
	hardware := simPolicy()
	hardware.AllowTEE = []tee.Kind{tee.KindSEVSNP, tee.KindTDX}
	hardware.SimRoots = nil
	hardware.SEVSNP = &attest.SNPPolicy{Measurements: []string{strings.Repeat("ab", 48)}}
	hardware.TDX = &attest.TDXPolicy{MRTDs: []string{strings.Repeat("cd", 48)}}

	tests := []struct {
		name   string
		ev     tee.Evidence
		modify func(*attest.Policy)
		want   []error
		notIs  error
	}{
		{
			name:   "sim not allowed",
			ev:     ev,
			modify: func(p *attest.Policy) { *p = hardware },
			want:   []error{attest.ErrSimNotAllowed, attest.ErrKindNotAllowed},
		},
		{
			name:   "sim not allowed even with its root pinned",
			ev:     ev,
			modify: func(p *attest.Policy) { p.AllowTEE = []tee.Kind{tee.KindTDX} },
			want:   []error{attest.ErrSimNotAllowed, attest.ErrKindNotAllowed},
		},
		{
			name:   "unknown kind not allowed",
			ev:     tee.Evidence{Kind: "sgx", Raw: ev.Raw},
			modify: func(*attest.Policy) {},
			want:   []error{attest.ErrKindNotAllowed},
			notIs:  attest.ErrSimNotAllowed,
		},
		{
			name:   "empty kind",
			ev:     tee.Evidence{Raw: ev.Raw},
			modify: func(*attest.Policy) {},
			want:   []error{attest.ErrKindNotAllowed},
			notIs:  attest.ErrSimNotAllowed,
		},
		{
			name:   "hardware kind not allowed",
			ev:     tee.Evidence{Kind: tee.KindSEVSNP, Raw: []byte("report")},
			modify: func(*attest.Policy) {},
			want:   []error{attest.ErrKindNotAllowed},
			notIs:  attest.ErrSimNotAllowed,
		},
		{
			name:   "sev-snp report that is not one",
			ev:     tee.Evidence{Kind: tee.KindSEVSNP, Raw: []byte("report")},
			modify: func(p *attest.Policy) { *p = hardware },
			want:   []error{attest.ErrAuthenticity},
			notIs:  attest.ErrKindNotAllowed,
		},
		{
			name:   "tdx quote that is not one",
			ev:     tee.Evidence{Kind: tee.KindTDX, Raw: []byte("report")},
			modify: func(p *attest.Policy) { *p = hardware },
			want:   []error{attest.ErrAuthenticity},
			notIs:  attest.ErrKindNotAllowed,
		},
		{
			name:   "unknown kind allowed but unsupported",
			ev:     tee.Evidence{Kind: "sgx", Raw: ev.Raw},
			modify: func(p *attest.Policy) { p.AllowTEE = append(p.AllowTEE, "sgx") },
			want:   []error{attest.ErrUnsupported},
		},
		{
			name: "sim raw labelled sev-snp",
			ev:   tee.Evidence{Kind: tee.KindSEVSNP, Raw: ev.Raw},
			modify: func(p *attest.Policy) {
				p.AllowTEE = []tee.Kind{tee.KindSim, tee.KindSEVSNP}
				p.SEVSNP = hardware.SEVSNP
			},
			want: []error{attest.ErrAuthenticity},
		},
		{
			name: "wrong sim root",
			ev:   ev,
			modify: func(p *attest.Policy) {
				p.SimRoots = []string{hex.EncodeToString(rootKey(2).Public().(ed25519.PublicKey))}
			},
			want: []error{attest.ErrAuthenticity, sim.ErrBadSignature},
		},
		{
			name:   "no sim roots",
			ev:     ev,
			modify: func(p *attest.Policy) { p.SimRoots = nil },
			want:   []error{attest.ErrAuthenticity, sim.ErrBadSignature},
		},
		{
			name:   "malformed sim evidence",
			ev:     tee.Evidence{Kind: tee.KindSim, Raw: []byte("{")},
			modify: func(*attest.Policy) {},
			want:   []error{attest.ErrAuthenticity, sim.ErrMalformed},
		},
		{
			name:   "sim root not hex",
			ev:     ev,
			modify: func(p *attest.Policy) { p.SimRoots = []string{"zz"} },
			want:   []error{attest.ErrPolicy},
		},
		{
			name:   "sim root wrong length",
			ev:     ev,
			modify: func(p *attest.Policy) { p.SimRoots = []string{"abcd"} },
			want:   []error{attest.ErrPolicy},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := simPolicy()
			tt.modify(&p)
			c, err := attest.Verify(tt.ev, p)
			if c != nil {
				t.Errorf("got claims %+v, want nil", *c)
			}
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("got error %v, want one matching %v", err, want)
				}
			}
			if tt.notIs != nil && errors.Is(err, tt.notIs) {
				t.Errorf("got error %v, want one not matching %v", err, tt.notIs)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	rd := tee.BindReportData("test", []byte("worker key"))
	otherRD := tee.BindReportData("test", []byte("other key"))
	c, err := attest.Verify(evidence(t, issued, rd), simPolicy())
	if err != nil {
		t.Fatal(err)
	}
	otherMeasurement := sha256.Sum256([]byte("other binary"))

	tests := []struct {
		name   string
		modify func(*attest.Policy)
		rd     [tee.ReportDataSize]byte
		now    time.Time
		want   error // nil: accepted
	}{
		{"at issuance", nil, rd, issued, nil},
		{"just under max age", nil, rd, issued.Add(10*time.Minute - time.Nanosecond), nil},
		{"exactly max age", nil, rd, issued.Add(10 * time.Minute), nil},
		{"one ns past max age", nil, rd, issued.Add(10*time.Minute + time.Nanosecond), attest.ErrStale},
		{"a day old", nil, rd, issued.Add(24 * time.Hour), attest.ErrStale},
		{"custom max age accepted", func(p *attest.Policy) { p.MaxAge = "30s" }, rd, issued.Add(30 * time.Second), nil},
		{"custom max age stale", func(p *attest.Policy) { p.MaxAge = "30s" }, rd, issued.Add(31 * time.Second), attest.ErrStale},
		{"custom max age longer", func(p *attest.Policy) { p.MaxAge = "1h" }, rd, issued.Add(59 * time.Minute), nil},
		{"future within skew", nil, rd, issued.Add(-59 * time.Second), nil},
		{"future at skew bound", nil, rd, issued.Add(-time.Minute), nil},
		{"future past skew", nil, rd, issued.Add(-time.Minute - time.Nanosecond), attest.ErrStale},
		{"future by an hour", nil, rd, issued.Add(-time.Hour), attest.ErrStale},
		{"wrong measurement", func(p *attest.Policy) {
			p.Measurements = []string{hex.EncodeToString(otherMeasurement[:])}
		}, rd, issued, attest.ErrMeasurement},
		{"measurement prefix", func(p *attest.Policy) {
			p.Measurements = []string{hex.EncodeToString(measurement[:16])}
		}, rd, issued, attest.ErrMeasurement},
		{"unparsable measurement skipped", func(p *attest.Policy) {
			p.Measurements = []string{"not hex", hex.EncodeToString(measurement)}
		}, rd, issued, nil},
		{"uppercase hex measurement", func(p *attest.Policy) {
			p.Measurements = []string{hex.EncodeToString(otherMeasurement[:]), strings.ToUpper(hex.EncodeToString(measurement))}
		}, rd, issued, nil},
		{"wrong report data", nil, otherRD, issued, attest.ErrReportData},
		{"zero report data", nil, [tee.ReportDataSize]byte{}, issued, attest.ErrReportData},
		{"bad max age", func(p *attest.Policy) { p.MaxAge = "soon" }, rd, issued, attest.ErrPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := simPolicy()
			if tt.modify != nil {
				tt.modify(&p)
			}
			err := attest.Validate(c, p, tt.rd, tt.now)
			if tt.want == nil && err != nil {
				t.Errorf("got %v, want nil", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func writePolicy(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadPolicy(t *testing.T) {
	want := simPolicy()
	want.MaxAge = "5m"
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := attest.LoadPolicy(writePolicy(t, string(b)))
	if err != nil {
		t.Fatalf("LoadPolicy: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLoadPolicyRefused(t *testing.T) {
	root := hex.EncodeToString(rootKey(1).Public().(ed25519.PublicKey))
	m := hex.EncodeToString(measurement)
	tests := []struct {
		name string
		body string
	}{
		{"unknown field", `{"allow_tee":["sim"],"sim_roots":["` + root + `"],"measurements":["` + m + `"],"allow_debug":true}`},
		{"misspelled field", `{"allow_tees":["sim"],"sim_roots":["` + root + `"],"measurements":["` + m + `"]}`},
		{"not json", `allow_tee: [sim]`},
		{"empty file", ``},
		{"wrong type", `{"allow_tee":"sim","sim_roots":["` + root + `"],"measurements":["` + m + `"]}`},
		{"empty object", `{}`},
		{"sim without roots", `{"allow_tee":["sim"],"measurements":["` + m + `"]}`},
		{"bad max_age", `{"allow_tee":["sim"],"sim_roots":["` + root + `"],"measurements":["` + m + `"],"max_age":"forever"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := attest.LoadPolicy(writePolicy(t, tt.body))
			if !errors.Is(err, attest.ErrPolicy) {
				t.Errorf("got policy %+v and error %v, want %v", p, err, attest.ErrPolicy)
			}
		})
	}
}

func TestLoadPolicyMissingFile(t *testing.T) {
	_, err := attest.LoadPolicy(filepath.Join(t.TempDir(), "absent.json"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want %v", err, os.ErrNotExist)
	}
}

// TestVerifyThenValidate runs the whole path a client takes: evidence made
// by a sim backend, verified and validated against a pinned policy.
func TestVerifyThenValidate(t *testing.T) {
	key := []byte("coordinator key")
	rd := tee.BindReportData("cloister-coordinator", key)
	ev := evidence(t, issued, rd)
	p := simPolicy()
	c, err := attest.Verify(ev, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := attest.Validate(c, p, tee.BindReportData("cloister-coordinator", key), issued.Add(time.Minute)); err != nil {
		t.Errorf("got %v, want nil", err)
	}
	// The same key under another label is a different binding.
	if err := attest.Validate(c, p, tee.BindReportData("cloister-worker", key), issued); !errors.Is(err, attest.ErrReportData) {
		t.Errorf("got %v, want %v", err, attest.ErrReportData)
	}
}
