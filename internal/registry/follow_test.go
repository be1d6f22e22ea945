package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/registry"
)

// TestFollow: a following registry (the gateway's) serves Get and Latest
// from memory once it has the entry's current revision decoded, and sees
// what another registry (the coordinator's) writes: a new version asked
// for by number at once, the latest and a delete once the watch delivers
// them; when the follow ends, every read goes to the store again.
func TestFollow(t *testing.T) {
	st := newStores(t)
	writer := registry.New(st.JS, st.Registry)
	kv := &bustest.CountingKV{KeyValue: st.Registry}
	r := registry.New(st.JS, kv)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	want1 := put(t, writer, "acme", "fn", 1)
	if err := r.Follow(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "the first lookup", func() bool {
		rec, err := r.Get(t.Context(), "acme", "fn", 0)
		return err == nil && rec.Function.Version == 1
	})
	// Synced and decoded: lookups make no store read.
	bustest.Eventually(t, "lookups from memory", func() bool {
		before := kv.Gets()
		for range 50 {
			rec, err := r.Get(t.Context(), "acme", "fn", 0)
			if err != nil {
				t.Fatal(err)
			}
			checkRecord(t, rec, want1)
			if v, err := r.Latest(t.Context(), "acme", "fn"); err != nil || v != 1 {
				t.Fatalf("Latest = %d, %v", v, err)
			}
		}
		return kv.Gets() == before
	})
	// An entry not confirmed for 5 s is read from the store again (a watch
	// that stalled must not keep serving it), then served from memory.
	var skew atomic.Int64
	registry.SetFollowClock(r, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	skew.Store(int64(6 * time.Second))
	before := kv.Gets()
	if _, err := r.Get(t.Context(), "acme", "fn", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(t.Context(), "acme", "fn", 0); err != nil {
		t.Fatal(err)
	}
	if got := kv.Gets() - before; got != 1 {
		t.Errorf("%d store reads for two lookups of an entry unconfirmed for 6 s, want 1", got)
	}
	// A served record is a copy: changing it changes nothing cached.
	rec, _ := r.Get(t.Context(), "acme", "fn", 0)
	rec.Object = "changed"
	if again, _ := r.Get(t.Context(), "acme", "fn", 0); again.Object == "changed" {
		t.Fatal("a caller changed the cached record")
	}

	// Another process deploys v2: asked for by number, it is found at
	// once; as the latest, once the watch delivers it.
	want2 := put(t, writer, "acme", "fn", 2)
	rec, err := r.Get(t.Context(), "acme", "fn", 2)
	if err != nil {
		t.Fatalf("v2 right after its deploy: %v", err)
	}
	checkRecord(t, rec, want2)
	bustest.Eventually(t, "the new latest", func() bool {
		rec, err := r.Get(t.Context(), "acme", "fn", 0)
		return err == nil && rec.Function.Version == 2
	})
	// Refresh makes it at once.
	put(t, writer, "acme", "fn", 3)
	if err := r.Refresh(t.Context(), "acme", "fn"); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Latest(t.Context(), "acme", "fn"); err != nil || v != 3 {
		t.Fatalf("Latest after Refresh = %d, %v; want 3", v, err)
	}

	// Another process deletes it.
	if err := writer.Delete(t.Context(), "acme", "fn"); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "the delete", func() bool {
		_, err := r.Get(t.Context(), "acme", "fn", 0)
		return errors.Is(err, registry.ErrNotFound)
	})
	// A write through the following registry is known at once: redeploy
	// and delete again through r itself.
	put(t, r, "acme", "fn", 4)
	if v, err := r.Latest(t.Context(), "acme", "fn"); err != nil || v != 4 {
		t.Fatalf("Latest after its own deploy = %d, %v; want 4", v, err)
	}
	if err := r.Delete(t.Context(), "acme", "fn"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(t.Context(), "acme", "fn", 0); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after its own delete: %v", err)
	}

	// The follow ends: reads go to the store.
	put(t, r, "acme", "other", 1)
	cancel()
	bustest.Eventually(t, "reads from the store once the follow ended", func() bool {
		before := kv.Gets()
		if _, err := r.Get(t.Context(), "acme", "other", 0); err != nil {
			t.Fatal(err)
		}
		return kv.Gets() > before
	})
}
