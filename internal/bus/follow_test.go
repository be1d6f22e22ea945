package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
)

func followBucket(t *testing.T) (other jetstream.KeyValue, kv *bustest.CountingKV, f *bus.Follower) {
	t.Helper()
	js, err := jetstream.New(bustest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	other, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "follow", History: 2})
	if err != nil {
		t.Fatal(err)
	}
	kv = &bustest.CountingKV{KeyValue: other}
	return other, kv, bus.NewFollower(kv)
}

func getValue(t *testing.T, f *bus.Follower, key string) string {
	t.Helper()
	e, err := f.Get(t.Context(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value)
}

// noReads fails unless n Gets of key, all answering want, read nothing
// from the store.
func noReads(t *testing.T, kv *bustest.CountingKV, f *bus.Follower, key, want string) {
	t.Helper()
	before := kv.Gets()
	for range 20 {
		if got := getValue(t, f, key); got != want {
			t.Fatalf("Get(%s) = %s, want %s", key, got, want)
		}
	}
	if n := kv.Gets() - before; n != 0 {
		t.Fatalf("%d store reads for 20 Gets of %s, want 0", n, key)
	}
}

// TestFollower: once synced, a followed key is served from memory, present
// or absent; another writer's put and delete arrive with the watch; the
// follower's own writes at once, and an older delivery never revives what
// it deleted; keys outside the prefix, entries unconfirmed for longer than
// MaxFollowAge, and every read after the follow ended go to the store.
func TestFollower(t *testing.T) {
	other, kv, f := followBucket(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := other.Put(ctx, "a.x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Put(ctx, "t.y", []byte("trigger")); err != nil {
		t.Fatal(err)
	}
	if err := f.Follow(ctx, "a", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a prefix without its dot was accepted")
	}
	// Before Follow, reads go to the store.
	before := kv.Gets()
	if getValue(t, f, "a.x") != "1" || kv.Gets() != before+1 {
		t.Fatal("a read before Follow did not go to the store")
	}
	if err := f.Follow(ctx, "a.", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "synced", f.Following)
	noReads(t, kv, f, "a.x", "1")
	// An absent key: one read, then served as absent from memory.
	if got := getValue(t, f, "a.none"); got != "<none>" {
		t.Fatalf("a.none = %s", got)
	}
	noReads(t, kv, f, "a.none", "<none>")
	// Outside the prefix, every read goes to the store.
	before = kv.Gets()
	for range 3 {
		if got := getValue(t, f, "t.y"); got != "trigger" {
			t.Fatalf("t.y = %s", got)
		}
	}
	if n := kv.Gets() - before; n != 3 {
		t.Fatalf("%d store reads for 3 Gets outside the prefix, want 3", n)
	}

	// Another writer: its put, a create and a delete reach the follower.
	if _, err := other.Put(ctx, "a.x", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Put(ctx, "a.none", []byte("now")); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "another writer's put", func() bool { return getValue(t, f, "a.x") == "2" && getValue(t, f, "a.none") == "now" })
	if err := other.Delete(ctx, "a.none"); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "another writer's delete", func() bool { return getValue(t, f, "a.none") == "<none>" })
	noReads(t, kv, f, "a.none", "<none>")

	// Its own writes are known at once, before the watch delivers them.
	for i, v := range []string{"3", "4", "5"} {
		if _, err := f.Put(ctx, "a.x", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if got := getValue(t, f, "a.x"); got != v {
			t.Fatalf("round %d: Get after its own Put = %s, want %s", i, got, v)
		}
		if err := f.Delete(ctx, "a.x"); err != nil {
			t.Fatal(err)
		}
		if got := getValue(t, f, "a.x"); got != "<none>" {
			t.Fatalf("round %d: Get after its own Delete = %s", i, got)
		}
	}
	// Deleting what is not there is no error.
	if err := f.Delete(ctx, "a.never"); err != nil {
		t.Fatal(err)
	}
	// The watch's late deliveries of those puts do not revive the key.
	time.Sleep(50 * time.Millisecond)
	noReads(t, kv, f, "a.x", "<none>")

	// Unconfirmed for longer than MaxFollowAge: read again, once.
	if _, err := f.Put(ctx, "a.x", []byte("6")); err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	f.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	skew.Store(int64(bus.MaxFollowAge + time.Second))
	before = kv.Gets()
	getValue(t, f, "a.x")
	getValue(t, f, "a.x")
	if n := kv.Gets() - before; n != 1 {
		t.Fatalf("%d store reads for 2 Gets of an entry unconfirmed for too long, want 1", n)
	}

	// The follow ends: reads go to the store.
	cancel()
	bustest.Eventually(t, "reads from the store once the follow ended", func() bool {
		before := kv.Gets()
		getValue(t, f, "a.x")
		return kv.Gets() > before
	})
	if f.Following() {
		t.Fatal("Following after the follow ended")
	}
}

// TestFollowerWatchesAgain: a watch that cannot start, and one that ends,
// are started again; meanwhile reads go to the store, and once the new
// watch has delivered the bucket, to memory again.
func TestFollowerWatchesAgain(t *testing.T) {
	other, kv, _ := followBucket(t)
	flaky := bustest.NewFlakyWatches(kv)
	f := bus.NewFollower(flaky)
	if _, err := other.Put(t.Context(), "a.x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := f.Follow(t.Context(), "a.", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("Follow did not report that its first watch failed")
	}
	w := flaky.NextWatch(t)
	bustest.Eventually(t, "synced after the second watch", f.Following)
	noReads(t, kv, f, "a.x", "1")

	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	// While no watch runs, a change made elsewhere is read from the store.
	if _, err := other.Put(t.Context(), "a.x", []byte("2")); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, "the change, read from the store or delivered by a new watch", func() bool { return getValue(t, f, "a.x") == "2" })
	flaky.NextWatch(t)
	bustest.Eventually(t, "synced after the third watch", f.Following)
	noReads(t, kv, f, "a.x", "2")
}
