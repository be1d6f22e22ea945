package coordinator

import (
	"context"
	"log/slog"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	fnstate "github.com/cloister-faas/cloister/internal/state"
)

// putGet writes and reads one key of ns/fn through a store over anchor.
func putGet(t *testing.T, f *fixture, anchor fnstate.Transport) {
	t.Helper()
	s, err := fnstate.NewStore(fnstate.Options{KV: f.st.State, Anchor: anchor, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := fnstate.DeriveKey(f.c.master, "ns", "fn")
	fn, err := s.Function("ns", "fn", k)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := fn.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	if v, ok, err := fn.Get(ctx, []byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get = %q, %v, %v; want v", v, ok, err)
	}
}

// TestStateAnchorServed runs a worker's store against the coordinator as
// Serve serves it: in the wire encoding without a JSON envelope, a
// malformed request refused with the code of a malformed request.
func TestStateAnchorServed(t *testing.T) {
	f := setup(t)
	_, err := bus.CallBytes(context.Background(), f.nc, bus.SubjectStateAnchor, []byte("{}"))
	if codeOf(err) != apierr.BadRequest {
		t.Fatalf("malformed request: got %v, want %s", err, apierr.BadRequest)
	}
	putGet(t, f, fnstate.BusTransport{Conn: f.nc})
}
