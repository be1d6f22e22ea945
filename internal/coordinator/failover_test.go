package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/journal"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/tee/sim"
	"github.com/cloister-faas/cloister/internal/wire"
)

// peerPolicy accepts coordinators on b's sim root running this test's
// measurement.
func peerPolicy(b *sim.Backend) attest.Policy {
	return attest.Policy{AllowTEE: []tee.Kind{tee.KindSim}, SimRoots: []string{hex.EncodeToString(b.RootPublicKey())},
		Measurements: []string{hex.EncodeToString(measurement)}}
}

// standby starts a second coordinator of f's deployment in its own data
// directory, on backend b, with its own NATS connection.
func (f *fixture) standby(b *sim.Backend, genesis Manifest) (*Coordinator, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return New(ctx, Config{Dir: f.t.TempDir(), TEE: b, Stores: f.st, Conn: f.nc, Now: func() time.Time { return f.now },
		LedgerDir: f.t.TempDir(), Manifest: genesis, PeerPolicy: peerPolicy(b)})
}

// TestFailover: a second coordinator gets the secrets from the first only
// after both attested; it follows as a standby; when the first stops, it
// takes over with the same identity, the manifest history and the admitted
// workers; the first cannot write any more.
func TestFailover(t *testing.T) {
	_, admin, _ := ed25519.GenerateKey(rand.Reader)
	f := setup(t, func(m *Manifest) { m.AdminKeys = []string{hex.EncodeToString(admin.Public().(ed25519.PublicKey))} })
	genesis := genesisOf(t, f)
	ctx := context.Background()

	// Peers that may not have the secrets.
	otherRoot := sim.New(newRoot(t), measurement, func() time.Time { return f.now })
	if _, err := f.standby(otherRoot, genesis); err == nil {
		t.Fatal("a coordinator on an untrusted sim root got the secrets")
	}
	otherGenesis := genesis
	otherGenesis.CertTTL = "2h"
	if _, err := f.standby(f.backend, otherGenesis); err == nil {
		t.Fatal("a coordinator configured with another genesis manifest got the secrets")
	}

	// An admitted worker and a manifest change, then the standby.
	if _, _, err := f.admit(f.backend, nil); err != nil {
		t.Fatal(err)
	}
	next := genesis
	next.Version, next.Previous = 2, f.c.ManifestHash()
	var ch wire.ManifestChange
	if err := bus.Call(ctx, f.nc, bus.SubjectManifestSet, signed(t, next, admin), &ch); err != nil {
		t.Fatal(err)
	}
	b, err := f.standby(f.backend, genesis)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if !b.IdentityKey().Equal(f.c.IdentityKey()) {
		t.Fatal("the standby has another identity")
	}
	bctx, stopB := context.WithCancel(ctx)
	t.Cleanup(stopB)
	served := make(chan error, 1)
	go func() { served <- b.Serve(bctx, f.nc) }()
	time.Sleep(3 * followInterval)
	if b.Active() {
		t.Fatal("the standby is active while the first coordinator holds the lease")
	}

	// The first one stops cleanly: the standby takes over at once.
	f.stop()
	start := time.Now()
	for !b.Active() {
		if time.Since(start) > 2*LeaseTTL {
			t.Fatal("the standby did not take over")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("took over %v after the first coordinator stopped", time.Since(start).Round(time.Millisecond))
	if b.ManifestHash() != ch.ManifestHash || len(b.History()) != 2 {
		t.Fatalf("the new active coordinator is at %s with %d manifests, want %s with 2", short(b.ManifestHash()), len(b.History()), short(ch.ManifestHash))
	}
	var doc wire.Attestation
	if err := bus.Call(ctx, f.nc, bus.SubjectAttestation, struct{}{}, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Workers) != 1 || !doc.IdentityKey.Equal(f.c.IdentityKey()) {
		t.Fatalf("after the failover the attestation lists %d workers under %x", len(doc.Workers), doc.IdentityKey[:4])
	}

	// The old coordinator, still running somewhere, cannot change what
	// the new one serves.
	next2 := next
	next2.Version, next2.Previous = 3, b.ManifestHash()
	if _, err := f.c.SetManifest(ctx, signed(t, next2, admin)); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("the old coordinator's write: %v, want fenced", err)
	}
	select {
	case <-f.c.term.Load().fenced:
	default:
		t.Fatal("the old coordinator does not know it was fenced")
	}

	// A dead worker leaves the attestation document after WorkerSilence.
	f.now = f.now.Add(WorkerSilence + time.Second)
	if doc, err := b.Attestation(); err != nil || len(doc.Workers) != 0 {
		t.Fatalf("a silent worker is still listed: %d, %v", len(doc.Workers), err)
	}
	stopB()
	if err := <-served; err != nil {
		t.Fatalf("Serve after a clean stop: %v", err)
	}
}

// noSeal is a TEE that cannot seal, as TDX cannot.
type noSeal struct{ *sim.Backend }

func (noSeal) SealKey() ([]byte, error) { return nil, tee.ErrNoSealKey }

// TestCoordinatorWithoutSealing: a coordinator whose TEE cannot seal keeps
// the secrets in memory only and gets them from a peer at every start.
func TestCoordinatorWithoutSealing(t *testing.T) {
	f := setup(t)
	genesis := genesisOf(t, f)
	dir := t.TempDir()
	open := func() *Coordinator {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := New(ctx, Config{Dir: dir, TEE: noSeal{f.backend}, Stores: f.st, Conn: f.nc, Now: func() time.Time { return f.now },
			Manifest: genesis, PeerPolicy: peerPolicy(f.backend)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	for range 2 {
		c := open()
		if !c.IdentityKey().Equal(f.c.IdentityKey()) {
			t.Fatal("another identity")
		}
		if _, err := os.Stat(filepath.Join(dir, "state.sealed")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("secrets written to disk without a sealing key: %v", err)
		}
	}
}

// TestLostLeaseStandsBy: an active coordinator whose lease is taken from it
// does not exit: it reopens its followers and stands by, and one of the
// coordinators serves again after the lease's TTL.
func TestLostLeaseStandsBy(t *testing.T) {
	f := setup(t)
	b, err := f.standby(f.backend, genesisOf(t, f))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	bctx, stopB := context.WithCancel(context.Background())
	t.Cleanup(stopB)
	go b.Serve(bctx, f.nc)
	time.Sleep(3 * followInterval)
	if !f.c.Active() || b.Active() {
		t.Fatalf("active: first %v, second %v", f.c.Active(), b.Active())
	}
	// Someone else writes the lease, as a standby that took over would.
	if _, err := f.c.kv.Put(context.Background(), leaseKey, []byte(`{"node":"elsewhere"}`)); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); f.c.Active(); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 3*LeaseRenew {
			t.Fatal("the first coordinator did not notice it lost the lease")
		}
	}
	// Nobody renews "elsewhere": after LeaseTTL one of the two takes over.
	for start := time.Now(); !f.c.Active() && !b.Active(); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 2*LeaseTTL {
			t.Fatal("no coordinator took over")
		}
	}
	var doc wire.Attestation
	if err := bus.Call(context.Background(), f.nc, bus.SubjectAttestation, struct{}{}, &doc); err != nil || !doc.IdentityKey.Equal(f.c.IdentityKey()) {
		t.Fatalf("attestation after the takeover: %v", err)
	}
}

// TestRecoveryKey: when no coordinator with the secrets survives, a new one
// asks for recovery, and the owner's Recover, with the private recovery
// key, gives it the secrets once its evidence verifies.
func TestRecoveryKey(t *testing.T) {
	owner, err := seal.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, func(m *Manifest) {})
	// The first coordinator runs with the owner's recovery key: a restart
	// of it in the same directory is what a configured deployment does.
	f.stop()
	ctx := context.Background()
	c, err := New(ctx, Config{Dir: f.dir, TEE: f.backend, Stores: f.st, Conn: f.nc, Now: func() time.Time { return f.now },
		Manifest: genesisOf(t, f), PeerPolicy: peerPolicy(f.backend), RecoveryKey: seal.PublicKeyBytes(owner)})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopC := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- c.Serve(cctx, f.nc) }()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := c.kv.Get(ctx, recoveryKey); err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no recovery record")
		}
	}
	// Every coordinator stops: nobody holds the secrets any more.
	stopC()
	<-served
	_ = c.Close(ctx)

	type result struct {
		c   *Coordinator
		err error
	}
	joined := make(chan result, 1)
	go func() {
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		n, err := New(jctx, Config{Dir: t.TempDir(), TEE: f.backend, Stores: f.st, Conn: f.nc, Now: func() time.Time { return f.now },
			Manifest: genesisOf(t, f), PeerPolicy: peerPolicy(f.backend), RecoveryAfter: 100 * time.Millisecond})
		joined <- result{n, err}
	}()
	verifier := &attest.Verifier{Now: func() time.Time { return f.now }}
	// A stranger's recovery key opens nothing.
	stranger, _ := seal.NewKeyPair()
	strangerKey, _ := stranger.Bytes()
	ownerKey, _ := owner.Bytes()
	if _, err := Recover(ctx, c.kv, strangerKey, peerPolicy(f.backend), verifier, f.now); err == nil {
		t.Fatal("recovered with another key")
	}
	// A policy the requester's evidence does not meet gives nothing.
	other := peerPolicy(sim.New(newRoot(t), measurement, func() time.Time { return f.now }))
	var done []Recovered
	for start := time.Now(); len(done) == 0; time.Sleep(50 * time.Millisecond) {
		if done, err = Recover(ctx, c.kv, ownerKey, other, verifier, f.now); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no recovery request")
		}
	}
	if done[0].Err == nil {
		t.Fatal("answered a request whose evidence the policy refuses")
	}
	if done, err = Recover(ctx, c.kv, ownerKey, peerPolicy(f.backend), verifier, f.now); err != nil || len(done) != 1 || done[0].Err != nil {
		t.Fatalf("recover: %+v, %v", done, err)
	}
	r := <-joined
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close(ctx)
	if !r.c.IdentityKey().Equal(f.c.IdentityKey()) {
		t.Fatal("the recovered coordinator has another identity")
	}
}
