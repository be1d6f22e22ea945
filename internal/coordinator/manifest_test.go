package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

func signed(t *testing.T, m Manifest, keys ...ed25519.PrivateKey) wire.SignedManifest {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sm := wire.SignedManifest{Manifest: raw}
	for _, k := range keys {
		sm.Signatures = append(sm.Signatures, SignManifest(raw, k))
	}
	return sm
}

// TestManifestChange: a change needs the next version, the current hash as
// previous and an admin signature; the history survives a restart and a
// tampered history is refused.
func TestManifestChange(t *testing.T) {
	_, admin, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	f := setup(t, func(m *Manifest) { m.AdminKeys = []string{hex.EncodeToString(admin.Public().(ed25519.PublicKey))} })
	ctx := context.Background()
	cur, _ := f.c.Manifest()
	next := cur
	next.Version, next.Previous, next.CertTTL = 2, f.c.ManifestHash(), "2h"

	wrongVersion := next
	wrongVersion.Version = 3
	wrongPrev := next
	wrongPrev.Previous = hex.EncodeToString(make([]byte, 32))
	invalid := next
	invalid.Workers.AllowTEE = nil
	for _, c := range []struct {
		name string
		sm   wire.SignedManifest
		want apierr.Code
	}{
		{"unsigned", signed(t, next), apierr.Forbidden},
		{"signed by a stranger", signed(t, next, stranger), apierr.Forbidden},
		{"skips a version", signed(t, wrongVersion, admin), apierr.Conflict},
		{"does not follow the current hash", signed(t, wrongPrev, admin), apierr.Conflict},
		{"invalid policy", signed(t, invalid, admin), apierr.InvalidManifest},
	} {
		var ch wire.ManifestChange
		if err := bus.Call(ctx, f.nc, bus.SubjectManifestSet, c.sm, &ch); codeOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
	}
	var ch wire.ManifestChange
	if err := bus.Call(ctx, f.nc, bus.SubjectManifestSet, signed(t, next, stranger, admin), &ch); err != nil {
		t.Fatal(err)
	}
	if ch.Version != 2 || ch.ManifestHash != f.c.ManifestHash() {
		t.Fatalf("change %+v, coordinator at %s", ch, f.c.ManifestHash())
	}
	doc, _ := f.c.Attestation()
	if doc.ManifestHash != ch.ManifestHash {
		t.Fatal("the attestation does not bind the new manifest")
	}
	var h wire.ManifestHistory
	if err := bus.Call(ctx, f.nc, bus.SubjectManifestHistory, struct{}{}, &h); err != nil || len(h.Manifests) != 2 {
		t.Fatalf("history: %d entries, %v", len(h.Manifests), err)
	}

	// A restart with the same genesis resumes at version 2: the history
	// is in the control journal on NATS, not on the coordinator's disk.
	cfg := Config{Dir: t.TempDir(), TEE: f.backend, Stores: f.st, Manifest: genesisOf(t, f)}
	if err := saveState(cfg.Dir, f.backend, &state{IdentitySeed: f.c.identity.Seed(), Master: f.c.master}); err != nil {
		t.Fatal(err)
	}
	c2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c2.ManifestHash() != ch.ManifestHash || len(c2.History()) != 2 {
		t.Fatalf("after restart: %s with %d manifests, want %s with 2", c2.ManifestHash(), len(c2.History()), ch.ManifestHash)
	}
}

func genesisOf(t *testing.T, f *fixture) Manifest {
	t.Helper()
	h := f.c.History()
	var m Manifest
	if err := json.Unmarshal(h[0].Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestManifestChangeRevokesWorker: a change that drops the measurement a
// worker was admitted with revokes it: it leaves the attestation and gets
// no keys; a worker the new manifest still accepts keeps getting keys.
func TestManifestChangeRevokesWorker(t *testing.T) {
	_, admin, _ := ed25519.GenerateKey(rand.Reader)
	f := setup(t, func(m *Manifest) {
		m.AdminKeys = []string{hex.EncodeToString(admin.Public().(ed25519.PublicKey))}
		m.Workers.Measurements = append(m.Workers.Measurements, hex.EncodeToString([]byte("another binary")))
	})
	ctx := context.Background()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	bm := bundle.DefaultManifest("fn")
	bm.Version, bm.Namespace = 1, "default"
	bm.TEE.MinTCB = map[tee.Kind]string{tee.KindSim: "sim-1"}
	b, _ := bundle.Build(bm, echoWasm, owner)
	f.st.Bundles.PutBytes(ctx, "default/fn", b)
	if err := bus.Call(ctx, f.nc, bus.SubjectRegister, wire.RegisterRequest{Namespace: "default", Name: "fn", Object: "default/fn"}, nil); err != nil {
		t.Fatal(err)
	}
	resp, sk, err := f.admit(f.backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	ask := func() error {
		req := wire.FunctionKeyRequest{Certificate: resp.Certificate, KeyExchange: seal.PublicKeyBytes(f.kex), Namespace: "default", Name: "fn", Version: 1, Time: f.now}
		req.Signature = ed25519.Sign(sk, KeyRequestMessage(req))
		return bus.Call(ctx, f.nc, bus.SubjectFunctionKey, req, &wire.FunctionKeyResponse{})
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}
	// Keep the worker's measurement, drop the other: the worker stays.
	cur, _ := f.c.Manifest()
	keep := cur
	keep.Version, keep.Previous = 2, f.c.ManifestHash()
	keep.Workers.Measurements = []string{hex.EncodeToString(measurement)}
	ch, err := f.c.SetManifest(ctx, signed(t, keep, admin))
	if err != nil || len(ch.Revoked) != 0 {
		t.Fatalf("keeping the worker's measurement: %+v %v", ch, err)
	}
	if err := ask(); err != nil {
		t.Fatalf("a worker the new manifest accepts: %v", err)
	}
	// Drop it: revoked.
	drop := keep
	drop.Version, drop.Previous = 3, f.c.ManifestHash()
	drop.Workers.Measurements = []string{hex.EncodeToString([]byte("another binary"))}
	if ch, err = f.c.SetManifest(ctx, signed(t, drop, admin)); err != nil || len(ch.Revoked) != 1 || ch.Revoked[0] != "w1" {
		t.Fatalf("dropping the worker's measurement: %+v %v", ch, err)
	}
	if err := ask(); codeOf(err) != apierr.Forbidden {
		t.Fatalf("key request of a revoked worker: got %v, want forbidden", err)
	}
	doc, _ := f.c.Attestation()
	if len(doc.Workers) != 0 {
		t.Fatalf("the attestation still lists %d workers", len(doc.Workers))
	}
	if _, _, err := f.admit(f.backend, nil); codeOf(err) != apierr.Forbidden {
		t.Fatalf("re-admission under the new manifest: got %v, want forbidden", err)
	}
}

// TestResultToken: the token names the coordinator's TEE, manifest and
// admitted workers and verifies under its identity key for 60 s.
func TestResultToken(t *testing.T) {
	f := setup(t)
	if _, _, err := f.admit(f.backend, nil); err != nil {
		t.Fatal(err)
	}
	var rt wire.ResultToken
	if err := bus.Call(context.Background(), f.nc, bus.SubjectResultToken, struct{}{}, &rt); err != nil {
		t.Fatal(err)
	}
	cl, err := artoken.Verify(rt.Token, f.c.IdentityKey(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	if cl.TEE != tee.KindSim || cl.ManifestHash != f.c.ManifestHash() || len(cl.Workers) != 1 || cl.Workers[0].ID != "w1" ||
		cl.Expires-cl.IssuedAt != int64(TokenTTL/time.Second) || cl.TCB != "sim-1" {
		t.Fatalf("claims: %+v", cl)
	}
	if _, err := artoken.Verify(rt.Token, f.c.IdentityKey(), f.now.Add(2*time.Minute)); err == nil {
		t.Fatal("the token is valid after its TTL")
	}
}
