package registry_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
)

var created = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newStores starts an embedded NATS server (in-process, no listener) with
// its store in a temporary directory and opens the buckets.
func newStores(t *testing.T) *bus.Stores {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("registry-test")
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(nc.Close)
	st, err := bus.OpenStores(t.Context(), nc, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("opening stores: %v", err)
	}
	return st
}

// newRegistryOf returns a registry on st's bucket.
func newRegistryOf(st *bus.Stores) *registry.Registry { return registry.New(st.JS, st.Registry) }

// newRegistry returns a registry on a fresh bucket.
func newRegistry(t *testing.T) *registry.Registry { return newRegistryOf(newStores(t)) }

var coordinator = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))

func record(t *testing.T, ns, name string, version int) *registry.Record {
	t.Helper()
	f := certs.Function{
		Namespace: ns, Name: name, Version: version,
		CodeHash: fmt.Sprintf("code-%s-%d", name, version), HPKEKey: []byte{1, 2, 3},
		IssuedAt: created,
	}
	s, err := certs.Sign(coordinator, certs.DomainFunction, f)
	if err != nil {
		t.Fatal(err)
	}
	return &registry.Record{
		Certificate: s,
		Manifest:    json.RawMessage(fmt.Sprintf(`{"name":%q,"version":%d}`, name, version)),
		Object:      fmt.Sprintf("%s/%s/bundle-%d", ns, name, version),
		Size:        100 + version,
		Created:     created.Add(time.Duration(version) * time.Minute),
	}
}

func put(t *testing.T, r *registry.Registry, ns, name string, version int) *registry.Record {
	t.Helper()
	rec := record(t, ns, name, version)
	if err := r.Put(t.Context(), ns, name, version, rec); err != nil {
		t.Fatalf("Put(%s/%s v%d): %v", ns, name, version, err)
	}
	return rec
}

func checkRecord(t *testing.T, got, want *registry.Record) {
	t.Helper()
	if !bytes.Equal(got.Certificate.Body, want.Certificate.Body) || !bytes.Equal(got.Certificate.Signature, want.Certificate.Signature) {
		t.Errorf("got certificate %s, want %s", got.Certificate.Body, want.Certificate.Body)
	}
	if !bytes.Equal(got.Manifest, want.Manifest) || got.Object != want.Object || got.Size != want.Size || !got.Created.Equal(want.Created) {
		t.Errorf("got record %s %s %d %v, want %s %s %d %v", got.Manifest, got.Object, got.Size, got.Created,
			want.Manifest, want.Object, want.Size, want.Created)
	}
	// The listing copy of the certificate body is decoded, and the real
	// certificate still verifies.
	f, err := certs.OpenFunction(got.Certificate, coordinator.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatalf("stored certificate: %v", err)
	}
	if got.Function.Name != f.Name || got.Function.Version != f.Version || got.Function.CodeHash != f.CodeHash {
		t.Errorf("got listing function %+v, want %+v", got.Function, *f)
	}
}

func TestPutGetLatest(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	v1 := put(t, r, "acme", "hello", 1)

	got, err := r.Get(ctx, "acme", "hello", 1)
	if err != nil {
		t.Fatalf("Get v1: %v", err)
	}
	checkRecord(t, got, v1)
	if l, err := r.Latest(ctx, "acme", "hello"); err != nil || l != 1 {
		t.Errorf("Latest: got %d, %v; want 1", l, err)
	}

	v2 := put(t, r, "acme", "hello", 2)
	if l, err := r.Latest(ctx, "acme", "hello"); err != nil || l != 2 {
		t.Errorf("Latest: got %d, %v; want 2", l, err)
	}
	got, err = r.Get(ctx, "acme", "hello", 0)
	if err != nil {
		t.Fatalf("Get latest: %v", err)
	}
	checkRecord(t, got, v2)
	// Older versions stay readable.
	got, err = r.Get(ctx, "acme", "hello", 1)
	if err != nil {
		t.Fatalf("Get v1 after v2: %v", err)
	}
	checkRecord(t, got, v1)
}

func TestGetNotFound(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	put(t, r, "acme", "hello", 1)
	tests := []struct {
		name    string
		ns, fn  string
		version int
	}{
		{"unknown function, latest", "acme", "nope", 0},
		{"unknown function, version", "acme", "nope", 1},
		{"unknown namespace", "other", "hello", 0},
		{"version not yet deployed", "acme", "hello", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := r.Get(ctx, tt.ns, tt.fn, tt.version)
			if !errors.Is(err, registry.ErrNotFound) {
				t.Errorf("got %+v, %v; want %v", rec, err, registry.ErrNotFound)
			}
		})
	}
	if l, err := r.Latest(ctx, "acme", "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Latest of unknown function: got %d, %v; want %v", l, err, registry.ErrNotFound)
	}
}

func TestPutConflict(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	tests := []struct {
		name    string
		setup   []int // versions put first
		version int
	}{
		{"first version is not 1", nil, 2},
		{"version 0", nil, 0},
		{"negative version", nil, -1},
		{"same version twice", []int{1}, 1},
		{"skipping a version", []int{1}, 3},
		{"going back", []int{1, 2}, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("fn%d", i)
			for _, v := range tt.setup {
				put(t, r, "acme", name, v)
			}
			err := r.Put(ctx, "acme", name, tt.version, record(t, "acme", name, tt.version))
			if !errors.Is(err, registry.ErrConflict) {
				t.Errorf("got %v, want %v", err, registry.ErrConflict)
			}
			// A refused Put changes nothing.
			want := len(tt.setup)
			l, err := r.Latest(ctx, "acme", name)
			if want == 0 {
				if !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("Latest: got %d, %v; want %v", l, err, registry.ErrNotFound)
				}
			} else if err != nil || l != want {
				t.Errorf("Latest: got %d, %v; want %d", l, err, want)
			}
		})
	}
}

func TestConcurrentPutOneWins(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	put(t, r, "acme", "hello", 1)
	const n = 8
	recs := make([]*registry.Record, n)
	for i := range recs {
		recs[i] = record(t, "acme", "hello", 2)
		recs[i].Object = fmt.Sprintf("writer-%d", i)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = r.Put(ctx, "acme", "hello", 2, recs[i]) })
	}
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, registry.ErrConflict):
			t.Errorf("writer %d: got %v, want nil or %v", i, err, registry.ErrConflict)
		}
	}
	if winners != 1 {
		t.Errorf("got %d successful Puts of version 2, want exactly 1", winners)
	}
	if l, err := r.Latest(ctx, "acme", "hello"); err != nil || l != 2 {
		t.Errorf("Latest: got %d, %v; want 2", l, err)
	}
}

func TestDelete(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	put(t, r, "acme", "hello", 1)
	put(t, r, "acme", "hello", 2)
	if err := r.Delete(ctx, "acme", "hello"); err != nil {
		t.Fatalf("Delete: %v", err)
	}

	if l, err := r.Latest(ctx, "acme", "hello"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Latest after delete: got %d, %v; want %v", l, err, registry.ErrNotFound)
	}
	for _, v := range []int{0, 1, 2} {
		if rec, err := r.Get(ctx, "acme", "hello", v); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Get v%d after delete: got %+v, %v; want %v", v, rec, err, registry.ErrNotFound)
		}
	}
	if err := r.Delete(ctx, "acme", "hello"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("second Delete: got %v, want %v", err, registry.ErrNotFound)
	}
	if err := r.Delete(ctx, "acme", "never"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Delete of unknown function: got %v, want %v", err, registry.ErrNotFound)
	}
}

func TestVersionsNotReusedAfterDelete(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	next := func(want int) {
		t.Helper()
		if got, err := r.NextVersion(ctx, "acme", "hello"); err != nil || got != want {
			t.Errorf("NextVersion: got %d, %v; want %d", got, err, want)
		}
	}
	next(1)
	put(t, r, "acme", "hello", 1)
	next(2)
	put(t, r, "acme", "hello", 2)
	next(3)
	if err := r.Delete(ctx, "acme", "hello"); err != nil {
		t.Fatal(err)
	}
	next(3)

	// Redeploying after a delete cannot take an old number.
	for _, v := range []int{1, 2} {
		if err := r.Put(ctx, "acme", "hello", v, record(t, "acme", "hello", v)); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Put v%d after delete: got %v, want %v", v, err, registry.ErrConflict)
		}
	}
	v3 := put(t, r, "acme", "hello", 3)
	next(4)
	if l, err := r.Latest(ctx, "acme", "hello"); err != nil || l != 3 {
		t.Errorf("Latest after redeploy: got %d, %v; want 3", l, err)
	}
	got, err := r.Get(ctx, "acme", "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, got, v3)
}

func TestList(t *testing.T) {
	ctx := t.Context()
	r := newRegistry(t)
	if recs, err := r.List(ctx, "acme"); err != nil || len(recs) != 0 {
		t.Errorf("empty registry: got %d records, %v; want none", len(recs), err)
	}

	put(t, r, "acme", "zeta", 1)
	put(t, r, "acme", "alpha", 1)
	put(t, r, "acme", "alpha", 2)
	put(t, r, "acme", "gone", 1)
	put(t, r, "other", "beta", 1)
	put(t, r, "acme-2", "delta", 1) // a namespace with acme as a prefix
	if err := r.Delete(ctx, "acme", "gone"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		ns   string
		want []string
	}{
		{"acme", []string{"alpha v2", "zeta v1"}},
		{"other", []string{"beta v1"}},
		{"acme-2", []string{"delta v1"}},
		{"empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			recs, err := r.List(ctx, tt.ns)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var got []string
			for _, rec := range recs {
				got = append(got, fmt.Sprintf("%s v%d", rec.Function.Name, rec.Function.Version))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPersistsAcrossConnections(t *testing.T) {
	// Two registries on one bucket (two coordinators) see each other's writes.
	srv, err := bus.StartServer(bus.ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	open := func(name string) *registry.Registry {
		nc, err := srv.Connect(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		st, err := bus.OpenStores(t.Context(), nc, 1, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return newRegistryOf(st)
	}
	a, b := open("a"), open("b")
	put(t, a, "acme", "hello", 1)
	if err := b.Put(t.Context(), "acme", "hello", 1, record(t, "acme", "hello", 1)); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("second coordinator, same version: got %v, want %v", err, registry.ErrConflict)
	}
	if l, err := b.Latest(t.Context(), "acme", "hello"); err != nil || l != 1 {
		t.Errorf("Latest via other connection: got %d, %v; want 1", l, err)
	}
}

// TestInterruptedHistoryCopyIsRepaired: a deploy commits with one CAS on the
// latest entry; if the process dies before the version's history copy is
// written, the next deploy writes it, and every version stays readable.
func TestInterruptedHistoryCopyIsRepaired(t *testing.T) {
	st := newStores(t)
	r := newRegistryOf(st)
	v1 := put(t, r, "ns", "f", 1)
	// Simulate the crash: the history copy of v1 is missing.
	if err := st.Registry.Purge(t.Context(), bus.FunctionKey("ns", "f", 1)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Get(t.Context(), "ns", "f", 1); err != nil {
		t.Fatalf("Get(v1) while it is latest: %v", err)
	} else {
		checkRecord(t, got, v1)
	}
	put(t, r, "ns", "f", 2)
	got, err := r.Get(t.Context(), "ns", "f", 1)
	if err != nil {
		t.Fatalf("Get(v1) after the next deploy: %v", err)
	}
	checkRecord(t, got, v1)
	if _, err := r.Get(t.Context(), "ns", "f", 3); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Get(v3) before it exists: got %v, want ErrNotFound", err)
	}
}

// TestRedeployAfterDeleteHidesOldVersions: a function deleted and deployed
// again starts a new lineage; the deleted versions are not served.
func TestRedeployAfterDeleteHidesOldVersions(t *testing.T) {
	r := newRegistry(t)
	put(t, r, "ns", "f", 1)
	put(t, r, "ns", "f", 2)
	if err := r.Delete(t.Context(), "ns", "f"); err != nil {
		t.Fatal(err)
	}
	put(t, r, "ns", "f", 3)
	for _, v := range []int{1, 2} {
		if _, err := r.Get(t.Context(), "ns", "f", v); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Get(v%d) after delete and redeploy: got %v, want ErrNotFound", v, err)
		}
	}
	put(t, r, "ns", "f", 4)
	if _, err := r.Get(t.Context(), "ns", "f", 3); err != nil {
		t.Errorf("Get(v3) of the new lineage: %v", err)
	}
}

// TestUsage counts live functions, their live versions and bundle bytes,
// for quotas; a delete frees them, and other namespaces do not count.
func TestUsage(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	sized := func(ns, name string, v, size int) {
		t.Helper()
		rec := record(t, ns, name, v)
		rec.Size = size
		if err := r.Put(ctx, ns, name, v, rec); err != nil {
			t.Fatal(err)
		}
	}
	sized("a", "f", 1, 100)
	sized("a", "f", 2, 200)
	sized("a", "g", 1, 50)
	sized("b", "f", 1, 1000)
	if u, err := r.Usage(ctx, "a"); err != nil || u != (registry.Usage{Functions: 2, Bytes: 350}) {
		t.Fatalf("usage of a: %+v, %v; want 2 functions, 350 bytes", u, err)
	}
	if n, err := r.LiveVersions(ctx, "a", "f"); err != nil || n != 2 {
		t.Fatalf("live versions of a/f: %d, %v; want 2", n, err)
	}
	if err := r.Delete(ctx, "a", "f"); err != nil {
		t.Fatal(err)
	}
	if n, err := r.LiveVersions(ctx, "a", "f"); err != nil || n != 0 {
		t.Fatalf("live versions of a deleted function: %d, %v; want 0", n, err)
	}
	sized("a", "f", 3, 10) // redeployed: only the new version is live
	if u, err := r.Usage(ctx, "a"); err != nil || u != (registry.Usage{Functions: 2, Bytes: 60}) {
		t.Fatalf("usage after delete and redeploy: %+v, %v; want 2 functions, 60 bytes", u, err)
	}
	if n, _ := r.LiveVersions(ctx, "a", "f"); n != 1 {
		t.Fatalf("live versions after redeploy: %d, want 1", n)
	}
}

// TestDecodedCacheSeesEveryChange: a registry decodes each latest entry
// once per revision, and still sees every change another process makes,
// and a caller that changes a returned record changes nothing cached.
func TestDecodedCacheSeesEveryChange(t *testing.T) {
	ctx := t.Context()
	st := newStores(t)
	reader, writer := newRegistryOf(st), newRegistryOf(st)
	v1 := put(t, writer, "acme", "hello", 1)
	got, err := reader.Get(ctx, "acme", "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, got, v1)
	got.Object, got.Function.Name = "changed", "changed"

	again, err := reader.Get(ctx, "acme", "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, again, v1)

	v2 := put(t, writer, "acme", "hello", 2)
	got, err = reader.Get(ctx, "acme", "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, got, v2)

	if err := writer.Delete(ctx, "acme", "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Get(ctx, "acme", "hello", 0); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after another registry deleted it: %v, want ErrNotFound", err)
	}
}

// TestListWhileDeploying: listings and usage name every function while
// other functions of the namespace get new versions. A listing that
// follows a watch (ListKeys) misses one whenever a key changes during it.
func TestListWhileDeploying(t *testing.T) {
	r := newRegistry(t)
	const n = 40
	for i := range n {
		put(t, r, "acme", fmt.Sprintf("fn-%02d", i), 1)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for v := 2; ctx.Err() == nil; v++ {
				for i := g; i < n && ctx.Err() == nil; i += 2 {
					rec := record(t, "acme", fmt.Sprintf("fn-%02d", i), v)
					if err := r.Put(ctx, "acme", fmt.Sprintf("fn-%02d", i), v, rec); err != nil && ctx.Err() == nil {
						t.Errorf("Put: %v", err)
						return
					}
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	for round := range 30 {
		list, err := r.List(t.Context(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != n {
			t.Fatalf("round %d: listed %d functions, want %d", round, len(list), n)
		}
		u, err := r.Usage(t.Context(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		if u.Functions != n {
			t.Fatalf("round %d: usage counts %d functions, want %d", round, u.Functions, n)
		}
	}
}
