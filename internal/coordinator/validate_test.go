package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/fnspec"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
	"github.com/cloister-faas/cloister/internal/worker"
)

// startInspector serves bus.SubjectWorkerInspect as a worker would, with
// a certificate the coordinator signed (not listed as admitted, so that
// the tests of admission see only their own workers). It reads and opens
// the bundle, states the manifest's ABI and fakeSnapshot, and runs
// nothing. f.forge may alter its answers.
func (f *fixture) startInspector() {
	t := f.t
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	f.inspectorKey = key
	cert, err := certs.Sign(f.c.identity, certs.DomainWorker, certs.Worker{
		WorkerID: "inspector", SigningKey: key.Public().(ed25519.PublicKey), KeyExchangeHash: certs.KeyExchangeHash([]byte("kex")), TEE: tee.KindSim,
		ManifestHash: f.c.ManifestHash(), NotBefore: f.now.Add(-time.Minute), NotAfter: f.now.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err = bus.Serve(ctx, f.nc, bus.SubjectWorkerInspect, bus.WorkerQueue, 8, log, func(ctx context.Context, b []byte) (any, error) {
		var req wire.InspectRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, err
		}
		raw, err := f.st.Bundles.GetBytes(ctx, req.Object)
		if err != nil {
			return nil, err
		}
		bd, err := bundle.Open(raw)
		if err != nil {
			return nil, err
		}
		abi := bd.Manifest.ABI
		if bd.Manifest.Runtime == bundle.RuntimeJS {
			abi = bundle.ABIReactor
		}
		stmt, err := certs.Sign(key, wire.DomainInspection, wire.Inspection{WorkerID: "inspector", Namespace: req.Namespace,
			Name: req.Name, Version: req.Version, CodeHash: req.CodeHash, BundleHash: req.BundleHash, Nonce: req.Nonce,
			ABI: abi, SnapshotHash: fakeSnapshot(req.CodeHash)})
		if err != nil {
			return nil, err
		}
		rep := wire.InspectReply{Certificate: cert, Statement: stmt}
		if f.forge != nil {
			f.forge(&req, &rep)
		}
		return rep, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fakeSnapshot is the fake inspector's snapshot hash of a code hash.
func fakeSnapshot(codeHash string) string {
	return seal.SHA256Hex([]byte("fake snapshot of " + codeHash))
}

// putBundle stores a bundle of wasm for default/name and returns its object name.
func (f *fixture) putBundle(name string, wasm []byte, edit func(*bundle.Manifest)) string {
	f.t.Helper()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	m := bundle.DefaultManifest(name)
	m.Version, m.Namespace = 1, "default"
	if edit != nil {
		edit(&m)
	}
	b, err := bundle.Build(m, wasm, owner)
	if err != nil {
		f.t.Fatal(err)
	}
	obj := "default/" + name + "/" + bundle.Hash(b)
	if _, err := f.st.Bundles.PutBytes(context.Background(), obj, b); err != nil {
		f.t.Fatal(err)
	}
	return obj
}

func (f *fixture) register(name, obj string, timeout time.Duration) (*wire.FunctionInfo, error) {
	var fi wire.FunctionInfo
	err := bus.Call(context.Background(), f.nc, bus.SubjectRegister,
		wire.RegisterRequest{Namespace: "default", Name: name, Object: obj, TimeoutMS: timeout.Milliseconds()}, &fi)
	return &fi, err
}

// TestRegisterNoWorker: with no worker to inspect the module, a deploy is
// no_worker within seconds (it asks again for 5 s, for a worker that is
// reconnecting), not at its timeout, and registers nothing.
func TestRegisterNoWorker(t *testing.T) {
	f := setupBare(t)
	obj := f.putBundle("fn", echoWasm, nil)
	start := time.Now()
	_, err := f.register("fn", obj, 30*time.Second)
	if codeOf(err) != apierr.NoWorker {
		t.Fatalf("got %v, want %s", err, apierr.NoWorker)
	}
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("no_worker took %s", d)
	}
	if _, err := f.c.reg.Latest(context.Background(), "default", "fn"); err == nil {
		t.Error("a deploy with no worker left a record")
	}
}

// TestRegisterRefusesForgedInspection: the coordinator certifies a
// snapshot hash only from a statement of exactly this deploy, signed by
// the key of a worker it certified whose certificate is valid now.
func TestRegisterRefusesForgedInspection(t *testing.T) {
	f := setup(t)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	resign := func(rep *wire.InspectReply, key ed25519.PrivateKey, edit func(*wire.Inspection)) {
		var ins wire.Inspection
		if err := json.Unmarshal(rep.Statement.Body, &ins); err != nil {
			t.Fatal(err)
		}
		edit(&ins)
		rep.Statement, _ = certs.Sign(key, wire.DomainInspection, ins)
	}
	strangerCert := func(issuer ed25519.PrivateKey, notAfter time.Time) certs.Signed {
		c, _ := certs.Sign(issuer, certs.DomainWorker, certs.Worker{WorkerID: "inspector",
			SigningKey: stranger.Public().(ed25519.PublicKey), TEE: tee.KindSim, ManifestHash: f.c.ManifestHash(),
			NotBefore: f.now.Add(-time.Hour), NotAfter: notAfter})
		return c
	}
	for _, c := range []struct {
		name  string
		forge func(*wire.InspectRequest, *wire.InspectReply)
	}{
		{"statement signed by a key that is not an admitted worker's", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			resign(rep, stranger, func(*wire.Inspection) {})
		}},
		{"worker certificate not issued by the coordinator", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			rep.Certificate = strangerCert(stranger, f.now.Add(time.Hour))
			resign(rep, stranger, func(*wire.Inspection) {})
		}},
		{"worker certificate expired", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			rep.Certificate = strangerCert(f.c.identity, f.now.Add(-time.Minute))
			resign(rep, stranger, func(*wire.Inspection) {})
		}},
		// Signed by the certified inspector's own key, but not about this deploy:
		{"statement for another code hash", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			resign(rep, f.inspectorKey, func(ins *wire.Inspection) { ins.CodeHash = seal.SHA256Hex([]byte("other")) })
		}},
		{"statement for another bundle", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			resign(rep, f.inspectorKey, func(ins *wire.Inspection) { ins.BundleHash = seal.SHA256Hex([]byte("other")) })
		}},
		{"statement for another version", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			resign(rep, f.inspectorKey, func(ins *wire.Inspection) { ins.Version++ })
		}},
		{"statement answering another request (replayed)", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			resign(rep, f.inspectorKey, func(ins *wire.Inspection) { ins.Nonce = []byte("an older request") })
		}},
		{"signature of a flipped statement", func(_ *wire.InspectRequest, rep *wire.InspectReply) {
			rep.Statement.Body = append([]byte(nil), rep.Statement.Body...)
			rep.Statement.Body[len(rep.Statement.Body)-3] ^= 1
		}},
	} {
		f.forge = c.forge
		obj := f.putBundle("fn", echoWasm, nil)
		_, err := f.register("fn", obj, 0)
		t.Logf("%s: %v", c.name, err)
		if codeOf(err) != apierr.BundleIntegrity {
			t.Errorf("%s: got %v, want %s", c.name, err, apierr.BundleIntegrity)
		}
		if _, err := f.c.reg.Latest(context.Background(), "default", "fn"); err == nil {
			t.Fatalf("%s: a refused inspection left a record", c.name)
		}
	}
	f.forge = nil
	obj := f.putBundle("fn", echoWasm, nil)
	fi, err := f.register("fn", obj, 0)
	if err != nil {
		t.Fatalf("an honest inspection: %v", err)
	}
	fc, err := certs.OpenFunction(fi.Certificate, f.c.IdentityKey())
	if err != nil || fc.SnapshotHash != fakeSnapshot(fc.CodeHash) {
		t.Fatalf("certificate %+v, %v: want the inspector's snapshot hash", fc, err)
	}
}

// startWorker runs a real worker, with its own engine, against the
// fixture's coordinator, and waits until it is admitted.
func (f *fixture) startWorker() *sandbox.Engine {
	t := f.t
	eng := newEngine(t)
	clock := func() time.Time { return f.now }
	w, err := worker.New(worker.Config{
		ID: "w-inspect", TEE: f.backend, Engine: eng, Conn: f.nc, Stores: f.st, Now: clock,
		CoordinatorPolicy: attest.Policy{AllowTEE: []tee.Kind{tee.KindSim},
			SimRoots: []string{hex.EncodeToString(f.backend.RootPublicKey())}, Measurements: []string{hex.EncodeToString(measurement)}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; !w.Ready(); i++ {
		if i > 1000 {
			t.Fatal("the worker was not admitted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return eng
}

// TestDeployInspectedByWorker: a deploy's module is compiled and a
// reactor's initialisation run by an admitted worker, never by the
// coordinator, whose engine compiles (so instantiates) nothing; the
// certificate carries the snapshot hash the worker computed, and the
// worker's refusals keep their stable codes.
func TestDeployInspectedByWorker(t *testing.T) {
	f := setupBare(t)
	weng := f.startWorker()
	reactor := testdata("reactor.wasm")
	asReactor := func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor }
	fi, err := f.register("words", f.putBundle("words", reactor, asReactor), 0)
	if err != nil {
		t.Fatalf("deploying a reactor: %v", err)
	}
	fc, err := certs.OpenFunction(fi.Certificate, f.c.IdentityKey())
	if err != nil {
		t.Fatal(err)
	}
	m := bundle.DefaultManifest("words")
	m.Namespace = "default"
	asReactor(&m)
	// What any worker computes for this module and manifest.
	ins, err := weng.Inspect(context.Background(), fc.CodeHash, reactor, fnspec.Limits(m), fnspec.Spec("default", m))
	if err != nil || fc.SnapshotHash != ins.SnapshotHash {
		t.Fatalf("certified snapshot %s, the worker's %s (%v)", fc.SnapshotHash, ins.SnapshotHash, err)
	}

	for _, c := range []struct {
		name string
		wasm []byte
		edit func(*bundle.Manifest)
		want apierr.Code
	}{
		{"not wasm", []byte("hello"), nil, apierr.InvalidModule},
		{"truncated", echoWasm[:20], nil, apierr.InvalidModule},
		{"empty module without _start", []byte("\x00asm\x01\x00\x00\x00"), nil, apierr.InvalidModule},
		{"memory over the manifest limit", hugeWasm, func(m *bundle.Manifest) { m.Limits.MemoryPages = 256 }, apierr.MemoryLimit},
		{"imports outside WASI", badImportWasm, nil, apierr.InvalidModule},
		{"manifest abi does not match the module", echoWasm, asReactor, apierr.InvalidModule},
		{"initialisation longer than the deploy timeout", testdata("slow_init.wasm"), asReactor, apierr.Timeout},
	} {
		timeout := time.Duration(0)
		if c.want == apierr.Timeout {
			timeout = time.Second
		}
		_, err := f.register("bad", f.putBundle("bad", c.wasm, c.edit), timeout)
		t.Logf("%s: %v", c.name, err)
		if codeOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
	}
	if _, err := f.c.reg.Latest(context.Background(), "default", "bad"); err == nil {
		t.Error("a refused module was registered")
	}
	if st := f.engine.Stats(); st.Compiles != 0 || st.Cached != 0 {
		t.Errorf("the coordinator's engine compiled %d modules (%d cached): it must run no guest code", st.Compiles, st.Cached)
	}
	if st := weng.Stats(); st.Compiles == 0 {
		t.Error("the worker's engine compiled nothing")
	}
}

// TestKeyReleaseFormatsAreWire: the coordinator seals keys under the
// formats that workers, which no longer import it, open them with.
func TestKeyReleaseFormatsAreWire(t *testing.T) {
	if got, want := StateKeyReleaseInfo("w", "ns", "fn"), wire.StateKeyReleaseInfo("w", "ns", "fn"); string(got) != string(want) {
		t.Errorf("state key release info %q, wire's %q", got, want)
	}
	if got, want := KeyReleaseInfo("w", "ns", "fn", 2), wire.KeyReleaseInfo("w", "ns", "fn", 2); string(got) != string(want) {
		t.Errorf("key release info %q, wire's %q", got, want)
	}
}
