package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/coordinator"
	"github.com/cloister-faas/cloister/internal/node"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/tee/snp"
	"github.com/cloister-faas/cloister/internal/tee/tdx"
	"github.com/cloister-faas/cloister/internal/tee/teetest"
)

// mixedPool is a node whose coordinator admits sim, fake SEV-SNP and fake
// TDX workers, in this process, each on its own connection: sim, SEV-SNP
// through configfs-tsm, SEV-SNP through /dev/sev-guest, and TDX.
type mixedPool struct {
	*env
	chip *teetest.SNPChip
	plat *teetest.TDXPlatform
}

func startMixed(t *testing.T) *mixedPool {
	t.Helper()
	now := time.Now()
	chip, err := teetest.NewSNPChip(teetest.SNPOptions{
		Measurement: bytes.Repeat([]byte{0x5a}, 48), ChipID: 7,
		TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}, Created: now.AddDate(0, -1, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	plat, err := teetest.NewTDXPlatform(teetest.TDXOptions{
		MRTD: bytes.Repeat([]byte{0x7d}, 48), TEETCBSVN: []byte{3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		PPID: 9, Created: now.AddDate(0, -1, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := chip.Collateral(now, false)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := plat.Collateral(now, false)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(sc, tc)
	verifier := &attest.Verifier{Collateral: collateral.Offline(sc)}

	e := &env{t: t, http: &recorder{}, bus: &recorder{}, dir: t.TempDir()}
	n, err := node.Start(context.Background(), node.Options{Dir: e.dir, Addr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Verifier: verifier,
		Manifest: func(m *coordinator.Manifest) {
			m.Workers.AllowTEE = []tee.Kind{tee.KindSim, tee.KindSEVSNP, tee.KindTDX}
			m.Workers.SEVSNP = chip.Policy()
			m.Workers.TDX = plat.Policy()
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e.n = n
	_, e.owner, _ = ed25519.GenerateKey(rand.Reader)
	if e.c, err = client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCallerKey(e.owner)); err != nil {
		t.Fatal(err)
	}

	snpTEE, err := snp.NewTSM(chip.TSM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tdxTEE, err := tdx.NewTSM(plat.TSM())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := n.AddWorker(ctx, "w-snp", snpTEE); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddWorker(ctx, "w-tdx", tdxTEE); err != nil {
		t.Fatal(err)
	}
	// A second SEV-SNP worker on go-sev-guest's fake /dev/sev-guest device.
	devTEE, err := snp.NewDevice(chip.Device())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddWorker(ctx, "w-snp-dev", devTEE); err != nil {
		t.Fatal(err)
	}
	return &mixedPool{env: e, chip: chip, plat: plat}
}

// waitPool waits until the gateway routes to every kind (the workers'
// first advertisements have arrived).
func (m *mixedPool) waitPool(name string, want tee.Kind) {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := m.c.Invoke(context.Background(), name, []byte("x"), client.InvokeOptions{})
		if err == nil && tee.Kind(r.Worker.TEE) == want {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s never reached a %s worker: %v", name, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMixedPoolSchedulesByTEEPolicy: functions pinned to sev-snp, to tdx and
// to either land only on workers of those kinds; a function no admitted
// worker satisfies gets tee_policy and never runs on a weaker TEE; a
// manifest change that drops TDX revokes the TDX worker.
func TestMixedPoolSchedulesByTEEPolicy(t *testing.T) {
	m := startMixed(t)
	ctx := context.Background()
	echo := fixture(t, "echo.wasm")
	allow := func(kinds ...tee.Kind) func(*bundle.Manifest) {
		return func(bm *bundle.Manifest) { bm.TEE.Allow = kinds }
	}
	m.deploy("on-snp", echo, allow(tee.KindSEVSNP))
	m.deploy("on-tdx", echo, allow(tee.KindTDX))
	m.deploy("either", echo, allow(tee.KindSEVSNP, tee.KindTDX))
	m.deploy("anywhere", echo, nil)
	m.deploy("snp-newer-tcb", echo, func(bm *bundle.Manifest) {
		bm.TEE.Allow = []tee.Kind{tee.KindSEVSNP}
		bm.TEE.MinTCB = map[tee.Kind]string{tee.KindSEVSNP: "bl=3,tee=0,snp=9,ucode=115"}
	})
	m.deploy("tdx-ok-tcb", echo, func(bm *bundle.Manifest) {
		bm.TEE.Allow = []tee.Kind{tee.KindTDX}
		bm.TEE.MinTCB = map[tee.Kind]string{tee.KindTDX: "03000500000000000000000000000000"}
	})
	m.waitPool("on-snp", tee.KindSEVSNP)
	m.waitPool("on-tdx", tee.KindTDX)

	landed := func(name string, n int) map[tee.Kind]int {
		got := map[tee.Kind]int{}
		for range n {
			r, err := m.c.Invoke(ctx, name, []byte("hello"), client.InvokeOptions{})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if string(r.Output) != "hello" {
				t.Fatalf("%s: output %q", name, r.Output)
			}
			got[tee.Kind(r.Worker.TEE)]++
		}
		return got
	}
	check := func(name string, allowed ...tee.Kind) {
		got := landed(name, 12)
		for k, c := range got {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s ran %d times on %s, allowed only %v", name, c, k, allowed)
			}
		}
		t.Logf("%s landed on %v", name, got)
	}
	check("on-snp", tee.KindSEVSNP)
	bySNP := map[string]int{}
	for range 12 {
		r, err := m.c.Invoke(ctx, "on-snp", []byte("x"), client.InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bySNP[r.Worker.WorkerID]++
	}
	t.Logf("on-snp by worker: %v", bySNP)
	check("on-tdx", tee.KindTDX)
	check("either", tee.KindSEVSNP, tee.KindTDX)
	check("tdx-ok-tcb", tee.KindTDX)
	check("anywhere", tee.KindSim, tee.KindSEVSNP, tee.KindTDX)

	// The only SEV-SNP worker is below the function's minimum TCB.
	_, err := m.c.Invoke(ctx, "snp-newer-tcb", []byte("x"), client.InvokeOptions{})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != string(apierr.TEEPolicy) {
		t.Fatalf("snp-newer-tcb: got %v, want %s", err, apierr.TEEPolicy)
	}
	t.Logf("snp-newer-tcb refused: %v", err)

	// Drop TDX from the manifest, signed by the admin key of `cloister up`.
	cur, _ := m.n.Coordinator().Manifest()
	next := cur
	next.Version++
	next.Previous = m.n.Coordinator().ManifestHash()
	next.Workers.AllowTEE = []tee.Kind{tee.KindSim, tee.KindSEVSNP}
	next.Workers.TDX = nil
	raw, _ := json.Marshal(next)
	seed, err := os.ReadFile(filepath.Join(m.dir, node.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sm := client.SignedManifest{Manifest: raw, Signatures: []client.ManifestSignature{client.ManifestSignature(coordinator.SignManifest(raw, ed25519.NewKeyFromSeed(seed)))}}
	ch, err := m.c.SetManifest(ctx, sm)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Revoked, []string{"w-tdx"}) {
		t.Fatalf("revoked %v, want [w-tdx]", ch.Revoked)
	}
	pol := m.n.Policy
	pol.ManifestHash = ch.ManifestHash
	c2, err := client.New(m.n.URL, m.n.Token, clientPolicy(pol), client.WithCallerKey(m.owner))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c2.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range a.Workers {
		if w.WorkerID == "w-tdx" {
			t.Fatal("the revoked TDX worker is still in the attestation")
		}
	}
	_, err = c2.Invoke(ctx, "on-tdx", []byte("x"), client.InvokeOptions{})
	if !errors.As(err, &ce) || ce.Code != string(apierr.TEEPolicy) {
		t.Fatalf("on-tdx after the manifest dropped TDX: got %v, want %s", err, apierr.TEEPolicy)
	}
	got := map[tee.Kind]int{}
	for range 8 {
		r, err := c2.Invoke(ctx, "either", []byte("x"), client.InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got[tee.Kind(r.Worker.TEE)]++
	}
	if got[tee.KindTDX] > 0 || got[tee.KindSim] > 0 {
		t.Fatalf("either ran on %v after TDX was dropped", got)
	}
}

// TestStoppedWorkerIsRoutedAround: a worker that stops between two
// advertisements is forgotten at the first request that finds it gone, and
// the request goes to another worker.
func TestStoppedWorkerIsRoutedAround(t *testing.T) {
	// Not start(t): its observer subscribes to every subject, so a stopped
	// worker's subject would still have a listener.
	e := &env{t: t, http: &recorder{}, bus: &recorder{}, dir: t.TempDir()}
	n, err := node.Start(context.Background(), node.Options{Dir: e.dir, Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e.n = n
	_, e.owner, _ = ed25519.GenerateKey(rand.Reader)
	if e.c, err = client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCallerKey(e.owner)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	second, err := sim.Open(filepath.Join(e.dir, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.n.AddWorker(ctx, "w-second", second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
		if err == nil && r.Worker.WorkerID == "w-second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second worker never served: %v", err)
		}
	}
	e.n.StopWorker("w-second")
	for i := range 20 {
		r, err := e.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
		if err != nil {
			t.Fatalf("invocation %d after the worker stopped: %v", i, err)
		}
		if r.Worker.WorkerID == "w-second" {
			t.Fatalf("invocation %d served by the stopped worker", i)
		}
	}
}

// TestCoordinatorOnFakeSNP: the coordinator and the worker run on a fake
// SEV-SNP chip (go-sev-guest's mock /dev/sev-guest, which also derives the
// sealing key); the client verifies the coordinator's SNP evidence against
// the pinned fake roots and the manifest hash, and invocations run there.
// A client that pins another measurement refuses the coordinator.
func TestCoordinatorOnFakeSNP(t *testing.T) {
	now := time.Now()
	chip, err := teetest.NewSNPChip(teetest.SNPOptions{
		Measurement: bytes.Repeat([]byte{0x3c}, 48), ChipID: 3,
		TCB: kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}, Created: now.AddDate(0, -1, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	coll, err := chip.Collateral(now, false)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := snp.NewDevice(chip.Device())
	if err != nil {
		t.Fatal(err)
	}
	policy := attest.Policy{AllowTEE: []tee.Kind{tee.KindSEVSNP}, SEVSNP: chip.Policy()}
	e := &env{t: t, http: &recorder{}, bus: &recorder{}, dir: t.TempDir()}
	verifier := &attest.Verifier{Collateral: collateral.Offline(coll)}
	n, err := node.Start(context.Background(), node.Options{Dir: e.dir, Addr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TEE: backend, Policy: &policy, Verifier: verifier})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e.n = n
	// The client verifies hardware evidence with the same offline collateral.
	bundlePath := filepath.Join(e.dir, "collateral.json")
	rs := make([]collateral.Response, 0, len(coll))
	for _, r := range coll {
		rs = append(rs, r)
	}
	if err := collateral.WriteBundle(bundlePath, rs); err != nil {
		t.Fatal(err)
	}
	_, e.owner, _ = ed25519.GenerateKey(rand.Reader)
	if e.c, err = client.New(n.URL, n.Token, clientPolicy(n.Policy), client.WithCollateral("", bundlePath), client.WithCallerKey(e.owner)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := e.c.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tee.Kind(a.TEE) != tee.KindSEVSNP || a.ManifestHash != n.Policy.ManifestHash || a.Warning != "" {
		t.Fatalf("attestation: %+v", a)
	}
	e.deploy("echo", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.TEE.Allow = []tee.Kind{tee.KindSEVSNP} })
	r, err := e.c.Invoke(ctx, "echo", []byte("on snp"), client.InvokeOptions{})
	if err != nil || string(r.Output) != "on snp" || tee.Kind(r.Worker.TEE) != tee.KindSEVSNP {
		t.Fatalf("invoke: %v %+v", err, r)
	}
	other := n.Policy
	sp := *other.SEVSNP
	sp.Measurements = []string{strings.Repeat("00", 48)}
	other.SEVSNP = &sp
	c2, _ := client.New(n.URL, n.Token, clientPolicy(other), client.WithCollateral("", bundlePath), client.WithCallerKey(e.owner))
	if _, err := c2.Attest(ctx); !errors.Is(err, client.ErrVerification) || !errors.Is(err, attest.ErrMeasurement) {
		t.Fatalf("a client pinning another measurement: got %v", err)
	}
}
