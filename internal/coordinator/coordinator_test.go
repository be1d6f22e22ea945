package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/wire"
)

type fixture struct {
	t       *testing.T
	nc      *nats.Conn
	st      *bus.Stores
	c       *Coordinator
	backend *sim.Backend
	root    ed25519.PrivateKey
	now     time.Time
	dir     string
	engine  *sandbox.Engine    // the coordinator's: it must stay unused
	stop    context.CancelFunc // stops the coordinator's Serve
	// forge, if set, alters the fake inspector's answers.
	forge        func(*wire.InspectRequest, *wire.InspectReply)
	inspectorKey ed25519.PrivateKey
	// kex is the key-exchange key of the worker admit admitted last.
	kex hpke.PrivateKey
}

func newRoot(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var measurement = []byte("0123456789abcdef0123456789abcdef")

var echoWasm = testdata("echo.wasm")

func testdata(name string) []byte {
	b, err := os.ReadFile("../sandbox/testdata/" + name)
	if err != nil {
		panic(err)
	}
	return b
}

// setup starts a coordinator and a fake inspecting worker
// (startInspector), so that deploys succeed.
func setup(t *testing.T, edits ...func(*Manifest)) *fixture {
	t.Helper()
	f := setupBare(t, edits...)
	f.startInspector()
	return f
}

// setupBare starts a coordinator with no worker to inspect deploys.
func setupBare(t *testing.T, edits ...func(*Manifest)) *fixture {
	t.Helper()
	nc := bustest.Connect(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := bus.OpenStores(context.Background(), nc, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, nc: nc, st: st, now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return f.now }
	f.root = newRoot(t)
	f.backend = sim.New(f.root, measurement, clock)
	genesis := Manifest{Version: 1, Workers: attest.Policy{
		AllowTEE: []tee.Kind{tee.KindSim}, SimRoots: []string{hex.EncodeToString(f.backend.RootPublicKey())},
		Measurements: []string{hex.EncodeToString(measurement)},
	}}
	for _, e := range edits {
		e(&genesis)
	}
	f.dir = t.TempDir()
	f.engine = newEngine(t)
	f.c, err = New(context.Background(), Config{Dir: f.dir, TEE: f.backend, Stores: st, Logger: log, Now: clock, Engine: f.engine,
		LedgerDir: t.TempDir(), Manifest: genesis, PeerPolicy: peerPolicy(f.backend), Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.c.Close(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.stop = cancel
	go f.c.Serve(ctx, nc)
	// Wait for the subscriptions.
	for i := 0; ; i++ {
		if _, err := f.c.Attestation(); err == nil {
			if err := bus.Call(context.Background(), nc, bus.SubjectAttestation, struct{}{}, &wire.Attestation{}); err == nil {
				break
			}
		}
		if i > 200 {
			t.Fatal("coordinator did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

func (f *fixture) admit(tb tee.TEE, bindTo ed25519.PublicKey) (*wire.AdmitResponse, ed25519.PrivateKey, error) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	kx, _ := seal.NewKeyPair()
	kex := seal.PublicKeyBytes(kx)
	f.kex = kx
	if bindTo == nil {
		bindTo = f.c.IdentityKey()
	}
	ev, err := tb.Evidence(tee.BindReportData(wire.LabelWorker, sk.Public().(ed25519.PublicKey), kex, bindTo))
	if err != nil {
		f.t.Fatal(err)
	}
	var resp wire.AdmitResponse
	err = bus.Call(context.Background(), f.nc, bus.SubjectAdmit,
		wire.AdmitRequest{WorkerID: "w1", Evidence: ev, SigningKey: sk.Public().(ed25519.PublicKey), KeyExchange: kex}, &resp)
	return &resp, sk, err
}

func codeOf(err error) apierr.Code {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestAdmission(t *testing.T) {
	f := setup(t)
	clock := func() time.Time { return f.now }
	otherRoot := sim.New(newRoot(t), measurement, clock)
	otherMeasurement := sim.New(f.root, []byte("another binary"), clock)

	if resp, _, err := f.admit(f.backend, nil); err != nil {
		t.Fatalf("admitting a good worker: %v", err)
	} else if w, err := certs.OpenWorker(resp.Certificate, f.c.IdentityKey()); err != nil || w.TEE != tee.KindSim || w.NotAfter.Sub(f.now) != time.Hour {
		t.Fatalf("certificate: %+v %v", w, err)
	}
	for _, c := range []struct {
		name   string
		tee    tee.TEE
		bindTo ed25519.PublicKey
	}{
		{"evidence from an untrusted sim root", otherRoot, nil},
		{"measurement not in the manifest", otherMeasurement, nil},
		{"report data bound to another coordinator", f.backend, newRoot(t).Public().(ed25519.PublicKey)},
	} {
		if _, _, err := f.admit(c.tee, c.bindTo); codeOf(err) != apierr.Forbidden {
			t.Errorf("%s: got %v, want forbidden", c.name, err)
		}
	}
}

func TestFunctionKeyRelease(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	deploy := func(name string, allow []tee.Kind) {
		m := bundle.DefaultManifest(name)
		m.Version, m.Namespace = 1, "default"
		m.TEE.Allow = allow
		b, err := bundle.Build(m, echoWasm, owner)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.st.Bundles.PutBytes(ctx, "default/"+name, b); err != nil {
			t.Fatal(err)
		}
		if err := bus.Call(ctx, f.nc, bus.SubjectRegister, wire.RegisterRequest{Namespace: "default", Name: name, Object: "default/" + name}, nil); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
	}
	deploy("open", nil)
	deploy("tdx-only", []tee.Kind{tee.KindTDX})
	resp, sk, err := f.admit(f.backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	kex := seal.PublicKeyBytes(f.kex)
	askWith := func(name string, cert certs.Signed, key ed25519.PrivateKey, at time.Time, kex []byte) (*wire.FunctionKeyResponse, error) {
		req := wire.FunctionKeyRequest{Certificate: cert, KeyExchange: kex, Namespace: "default", Name: name, Version: 1, Time: at}
		req.Signature = ed25519.Sign(key, KeyRequestMessage(req))
		var out wire.FunctionKeyResponse
		err := bus.Call(ctx, f.nc, bus.SubjectFunctionKey, req, &out)
		return &out, err
	}
	ask := func(name string, cert certs.Signed, key ed25519.PrivateKey, at time.Time) (*wire.FunctionKeyResponse, error) {
		return askWith(name, cert, key, at, kex)
	}
	w, err := certs.OpenWorker(resp.Certificate, f.c.IdentityKey())
	if err != nil || w.CheckKeyExchange(kex) != nil || w.KeyExchangeHash != seal.SHA256Hex(kex) {
		t.Fatalf("the certificate does not name the worker's key-exchange key by its hash: %+v, %v", w, err)
	}
	good, err := ask("open", resp.Certificate, sk, f.now)
	if err != nil {
		t.Fatalf("good key request: %v", err)
	}
	if _, err := seal.OpenFrom(f.kex, KeyReleaseInfo(w.WorkerID, "default", "open", 1), good.Enc, good.Sealed); err != nil {
		t.Fatalf("the released key is not sealed to the worker's key-exchange key: %v", err)
	}
	// The key-exchange key travels in the signed request; the certificate
	// names it by its hash, so another key (one the gateway or a NATS
	// client would like the function key sealed to) is refused.
	other, _ := seal.NewKeyPair()
	for name, k := range map[string][]byte{"another key-exchange key": seal.PublicKeyBytes(other), "no key-exchange key": nil} {
		if _, err := askWith("open", resp.Certificate, sk, f.now, k); codeOf(err) != apierr.Forbidden || !strings.Contains(err.Error(), "key-exchange") {
			t.Errorf("%s: got %v, want forbidden", name, err)
		}
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := certs.Sign(stranger, certs.DomainWorker, certs.Worker{WorkerID: "w9", SigningKey: stranger.Public().(ed25519.PublicKey),
		TEE: tee.KindSim, NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour)})
	cases := []struct {
		name string
		fn   string
		cert certs.Signed
		key  ed25519.PrivateKey
		at   time.Time
		want apierr.Code
	}{
		{"certificate not issued by the coordinator", "open", forged, stranger, f.now, apierr.Forbidden},
		{"request not signed by the certified key", "open", resp.Certificate, stranger, f.now, apierr.Forbidden},
		{"request time outside the skew", "open", resp.Certificate, sk, f.now.Add(-10 * time.Minute), apierr.Forbidden},
		{"function policy excludes the worker's TEE", "tdx-only", resp.Certificate, sk, f.now, apierr.TEEPolicy},
		{"unknown function", "missing", resp.Certificate, sk, f.now, apierr.NotFound},
	}
	for _, c := range cases {
		if _, err := ask(c.fn, c.cert, c.key, c.at); codeOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
	}
	f.now = f.now.Add(2 * time.Hour) // the certificate has expired
	if _, err := ask("open", resp.Certificate, sk, f.now); codeOf(err) != apierr.Forbidden {
		t.Errorf("expired certificate: got %v, want forbidden", err)
	}
}

// TestRegisterChecksNamespace: the namespace of a registration comes from
// the untrusted gateway; the coordinator registers a bundle only in the
// namespace its owner signed it for, and no longer registers one signed for
// none.
func TestRegisterChecksNamespace(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	put := func(obj, ns string) {
		m := bundle.DefaultManifest("fn")
		m.Version, m.Namespace = 1, ns
		b, err := bundle.Build(m, echoWasm, owner)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.st.Bundles.PutBytes(ctx, obj, b); err != nil {
			t.Fatal(err)
		}
	}
	put("team-a/fn/bound", "team-a")
	put("any/fn/unbound", "")
	register := func(ns, obj string) (*wire.FunctionInfo, error) {
		var fi wire.FunctionInfo
		err := bus.Call(ctx, f.nc, bus.SubjectRegister, wire.RegisterRequest{Namespace: ns, Name: "fn", Object: obj}, &fi)
		return &fi, err
	}
	for _, c := range []struct {
		name, ns, obj string
	}{
		{"signed for team-a, registered in team-b", "team-b", "team-a/fn/bound"},
		{"signed for no namespace", "team-a", "any/fn/unbound"},
	} {
		if _, err := register(c.ns, c.obj); codeOf(err) != apierr.BundleSignature {
			t.Errorf("%s: got %v, want %s", c.name, err, apierr.BundleSignature)
		}
	}
	if _, err := f.c.reg.Latest(ctx, "team-b", "fn"); err == nil {
		t.Errorf("a refused registration left a record in team-b")
	}
	fi, err := register("team-a", "team-a/fn/bound")
	if err != nil {
		t.Fatalf("registering in the signed namespace: %v", err)
	}
	if fc, err := certs.OpenFunction(fi.Certificate, f.c.IdentityKey()); err != nil || fc.Namespace != "team-a" {
		t.Fatalf("certificate: %+v, %v; want one for team-a", fc, err)
	}
}

func TestStatePersistsAndIsSealed(t *testing.T) {
	dir := t.TempDir()
	root := newRoot(t)
	b := sim.New(root, measurement, time.Now)
	st, err := bus.OpenStores(context.Background(), bustest.Connect(t), 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{Version: 1, Workers: attest.Policy{AllowTEE: []tee.Kind{tee.KindSim},
		SimRoots: []string{hex.EncodeToString(b.RootPublicKey())}, Measurements: []string{hex.EncodeToString(measurement)}}}
	eng := newEngine(t)
	c1, err := New(context.Background(), Config{Dir: dir, TEE: b, Stores: st, Manifest: m, Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := New(context.Background(), Config{Dir: dir, TEE: b, Stores: st, Manifest: m, Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	if !c1.IdentityKey().Equal(c2.IdentityKey()) {
		t.Errorf("identity changed across restarts")
	}
	other := sim.New(newRoot(t), measurement, time.Now)
	if _, err := New(context.Background(), Config{Dir: dir, TEE: other, Stores: st, Manifest: m, Engine: eng}); err == nil {
		t.Errorf("state unsealed under another TEE's seal key")
	}
}

func newEngine(t *testing.T) *sandbox.Engine {
	t.Helper()
	e, err := sandbox.New(context.Background(), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

var (
	hugeWasm      = testdata("huge_memory.wasm")
	badImportWasm = testdata("bad_import.wasm")
)

// TestFunctionLimitsCapped: a function may not ask for more than the
// deployment manifest's function_limits (or their defaults).
func TestFunctionLimitsCapped(t *testing.T) {
	f := setup(t, func(m *Manifest) { m.FunctionLimits = &FunctionLimits{MemoryPages: 512, Concurrency: 32} })
	ctx := context.Background()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	register := func(name string, edit func(*bundle.Limits)) error {
		m := bundle.DefaultManifest(name)
		m.Version, m.Namespace = 1, "default"
		m.Limits.MemoryPages = 16
		edit(&m.Limits)
		b, err := bundle.Build(m, echoWasm, owner)
		if err != nil {
			t.Fatal(err)
		}
		obj := "default/" + name + "/b"
		if _, err := f.st.Bundles.PutBytes(ctx, obj, b); err != nil {
			t.Fatal(err)
		}
		return bus.Call(ctx, f.nc, bus.SubjectRegister, wire.RegisterRequest{Namespace: "default", Name: name, Object: obj}, nil)
	}
	for _, c := range []struct {
		name string
		edit func(*bundle.Limits)
		want apierr.Code
	}{
		{"at-the-caps", func(l *bundle.Limits) { l.MemoryPages, l.Concurrency = 512, 32 }, ""},
		{"memory-over", func(l *bundle.Limits) { l.MemoryPages = 513 }, apierr.InvalidManifest},
		{"concurrency-over", func(l *bundle.Limits) { l.Concurrency = 33 }, apierr.InvalidManifest},
		{"timeout-at-the-default-cap", func(l *bundle.Limits) { l.TimeoutMS = bundle.MaxTimeoutMS }, ""},
	} {
		if err := register(c.name, c.edit); codeOf(err) != c.want {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	for _, c := range []FunctionLimits{{MemoryPages: bundle.MaxMemoryPages + 1}, {MemoryPages: 16}, {Concurrency: 4}, {TimeoutMS: -1}} {
		if c.validate() == nil {
			t.Errorf("caps %+v accepted: over the hard ceiling, or under a function's default", c)
		}
	}
	if err := DefaultFunctionLimits.CheckLimits(bundle.Limits{MemoryPages: 16385}); err == nil {
		t.Error("the default caps let a function ask for more than 1 GiB")
	}
}
