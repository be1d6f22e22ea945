package collateral

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

type countingFetcher struct {
	n    int
	fail bool
}

func (f *countingFetcher) Fetch(_ context.Context, url string) (*Response, error) {
	f.n++
	if f.fail {
		return nil, errors.New("network down")
	}
	return &Response{Header: map[string][]string{"X": {url}}, Body: []byte("body of " + url)}, nil
}

func TestGetterCachesOnDiskAndRefetchesWhenOld(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	f := &countingFetcher{}
	g := New(Options{Dir: dir, Fetcher: f, MaxAge: time.Hour, Now: clock})
	ctx := context.Background()
	for range 3 {
		r, err := g.Get(ctx, "https://kds/a")
		if err != nil || string(r.Body) != "body of https://kds/a" {
			t.Fatalf("get: %v %q", err, r.Body)
		}
	}
	if f.n != 1 {
		t.Fatalf("fetched %d times, want 1", f.n)
	}
	// A new getter on the same directory is served from disk.
	g2 := New(Options{Dir: dir, Fetcher: f, MaxAge: time.Hour, Now: clock})
	if r, err := g2.Get(ctx, "https://kds/a"); err != nil || r.Header["X"][0] != "https://kds/a" {
		t.Fatalf("from disk: %v", err)
	}
	if f.n != 1 {
		t.Fatalf("fetched %d times after a restart, want 1", f.n)
	}
	// Older than MaxAge: fetched again; if that fails, the stale copy is served.
	now = now.Add(2 * time.Hour)
	if _, err := g2.Get(ctx, "https://kds/a"); err != nil || f.n != 2 {
		t.Fatalf("refetch: %v, %d fetches", err, f.n)
	}
	now = now.Add(2 * time.Hour)
	f.fail = true
	if r, err := g2.Get(ctx, "https://kds/a"); err != nil || r == nil {
		t.Fatalf("stale copy when the network fails: %v", err)
	}
	if _, err := g2.Get(ctx, "https://kds/never"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want %v", err, ErrUnavailable)
	}
	// The cache directory becomes an offline bundle.
	rs, err := ReadCache(dir)
	if err != nil || len(rs) != 1 || rs[0].URL != "https://kds/a" {
		t.Fatalf("ReadCache: %d responses, %v", len(rs), err)
	}
}

func TestOfflineBundleRoundTrip(t *testing.T) {
	f := &countingFetcher{}
	g := New(Options{Fetcher: f})
	if _, err := g.Get(context.Background(), "https://pcs/tcb"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.json")
	if err := WriteBundle(path, g.Entries()); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(path)
	if err != nil {
		t.Fatal(err)
	}
	off := Offline(b)
	r, err := off.Get(context.Background(), "https://pcs/tcb")
	if err != nil || string(r.Body) != "body of https://pcs/tcb" || r.Header["X"][0] != "https://pcs/tcb" {
		t.Fatalf("offline: %v", err)
	}
	if _, err := off.Get(context.Background(), "https://pcs/other"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want %v", err, ErrUnavailable)
	}
	if f.n != 1 {
		t.Fatalf("offline getter touched the network: %d fetches", f.n)
	}
	if _, err := LoadBundle(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("loading a missing bundle succeeded")
	}
}
