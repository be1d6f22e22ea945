package worker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TestInspectChecksTheBundle: the inspecting worker reads the bundle
// itself and inspects only the one the coordinator read (its hash), under
// the namespace its owner signed it for and with the requested code, name
// and version; an unadmitted worker inspects nothing.
func TestInspectChecksTheBundle(t *testing.T) {
	ctx := context.Background()
	nc := bustest.Connect(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := bus.OpenStores(ctx, nc, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(context.Background()) })
	w, err := New(Config{Engine: eng, Conn: nc, Stores: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile("../sandbox/testdata/echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	m := bundle.DefaultManifest("fn")
	m.Version, m.Namespace = 1, "team-a"
	raw, err := bundle.Build(m, wasm, owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Bundles.PutBytes(ctx, "team-a/fn/b", raw); err != nil {
		t.Fatal(err)
	}
	bd, err := bundle.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	good := wire.InspectRequest{Namespace: "team-a", Name: "fn", Version: 1, Object: "team-a/fn/b",
		BundleHash: bundle.Hash(raw), CodeHash: bd.CodeHash, Nonce: []byte("n"), TimeoutMS: 10_000}
	for _, c := range []struct {
		what string
		edit func(*wire.InspectRequest)
		want apierr.Code
	}{
		{"the bundle the coordinator read", func(*wire.InspectRequest) {}, ""},
		{"another bundle than the coordinator read", func(r *wire.InspectRequest) { r.BundleHash = bundle.Hash([]byte("x")) }, apierr.BundleIntegrity},
		{"another code hash", func(r *wire.InspectRequest) { r.CodeHash = bundle.Hash([]byte("x")) }, apierr.BundleIntegrity},
		{"another version", func(r *wire.InspectRequest) { r.Version = 2 }, apierr.BundleIntegrity},
		{"another namespace than signed for", func(r *wire.InspectRequest) { r.Namespace = "team-b" }, apierr.BundleSignature},
		{"a missing object", func(r *wire.InspectRequest) { r.Object = "team-a/fn/none" }, apierr.NotFound},
	} {
		req := good
		c.edit(&req)
		_, err := w.readInspected(ctx, &req)
		if got := apierr.CodeOf(err); got != c.want || (c.want == "" && err != nil) {
			t.Errorf("%s: got %v, want %q", c.what, err, c.want)
		}
	}
	// Not admitted (Run was not called): no inspection, and the
	// coordinator hears unavailable, which it answers as no_worker.
	b, _ := json.Marshal(good)
	if _, err := w.handleInspect(ctx, b); apierr.CodeOf(err) != apierr.Unavailable {
		t.Errorf("unadmitted worker: got %v, want %s", err, apierr.Unavailable)
	}
	if _, err := w.handleInspect(ctx, []byte("{}")); apierr.CodeOf(err) != apierr.BadRequest {
		t.Errorf("malformed request: got %v, want %s", err, apierr.BadRequest)
	}
}
