package bus_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openStores starts a server on dir (a restart when dir was used before)
// and opens the stores on it; both end with the test unless stopped.
func openStores(t *testing.T, dir string) (*bus.Stores, *bus.Server) {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := bus.OpenStores(context.Background(), nc, 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return st, srv
}

func digest(i int) []byte {
	d := sha256.Sum256([]byte("request " + strconv.Itoa(i)))
	return d[:]
}

// TestReplayAdd: an id is recorded once; another write of it is a replay,
// unless it carries the first write's token (its answer was lost).
func TestReplayAdd(t *testing.T) {
	ctx := context.Background()
	st, _ := openStores(t, t.TempDir())
	a, b := bus.ReplayID(digest(1)), bus.ReplayID(digest(2))
	if len(a) != 22 || a == b {
		t.Fatalf("ids %q, %q: want 22 characters each, distinct", a, b)
	}
	tok1, tok2 := []byte("token-one-16byte"), []byte("token-two-16byte")
	if err := st.Replay.Add(ctx, a, tok1); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if err := st.Replay.Add(ctx, a, tok2); !errors.Is(err, bus.ErrReplayed) {
		t.Fatalf("the same id with another token: %v, want ErrReplayed", err)
	}
	if err := st.Replay.Add(ctx, a, tok1); err != nil {
		t.Fatalf("the same id with its own token (a lost answer): %v", err)
	}
	if err := st.Replay.Add(ctx, b, tok2); err != nil {
		t.Fatalf("another id: %v", err)
	}
	for _, tok := range [][]byte{nil, make([]byte, 65)} {
		if err := st.Replay.Add(ctx, bus.ReplayID(digest(3)), tok); err == nil {
			t.Fatalf("a token of %d bytes was taken", len(tok))
		}
	}
}

// TestReplaySurvivesRestart: the log is on disk, and a restarted server
// refuses an id recorded before it stopped.
func TestReplaySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, srv := openStores(t, dir)
	id := bus.ReplayID(digest(1))
	if err := st.Replay.Add(ctx, id, []byte("before")); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	st, _ = openStores(t, dir)
	if err := st.Replay.Add(ctx, id, []byte("after")); !errors.Is(err, bus.ErrReplayed) {
		t.Fatalf("after a restart: %v, want ErrReplayed", err)
	}
	if err := st.Replay.Add(ctx, bus.ReplayID(digest(2)), []byte("after")); err != nil {
		t.Fatalf("a new id after a restart: %v", err)
	}
}

// TestReplayMigrates: nonces that an earlier version recorded as keys of
// the replay bucket are refused after an upgrade, and opening the stores
// again (every role does) copies nothing twice.
func TestReplayMigrates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("old")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketReplay, Storage: jetstream.FileStorage, TTL: bus.ReplayWindow})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500 // more than one batch of the copy
	for i := range n {
		if _, err := old.Create(ctx, "n."+hex.EncodeToString(digest(i)), []byte("old-token")); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	srv.Shutdown()

	st, srv := openStores(t, dir)
	// Another role opens the stores: the copy finds every id recorded.
	nc2, err := srv.Connect("another role")
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	if _, err := bus.OpenStores(ctx, nc2, 1, quiet()); err != nil {
		t.Fatal(err)
	}
	js2, _ := jetstream.New(nc2)
	log, err := js2.Stream(ctx, bus.StreamReplay)
	if err != nil {
		t.Fatal(err)
	}
	if got := log.CachedInfo().State.Msgs; got != n {
		t.Fatalf("the replay log holds %d messages after two copies of %d nonces", got, n)
	}
	for _, i := range []int{0, 1234, n - 1} {
		if err := st.Replay.Add(ctx, bus.ReplayID(digest(i)), []byte("new-token")); !errors.Is(err, bus.ErrReplayed) {
			t.Fatalf("nonce %d, recorded before the upgrade: %v, want ErrReplayed", i, err)
		}
	}
	if err := st.Replay.Add(ctx, bus.ReplayID(digest(n)), []byte("new-token")); err != nil {
		t.Fatalf("a nonce the old bucket does not hold: %v", err)
	}
	st2, _ := openStores(t, t.TempDir()) // a server with no old bucket
	if err := st2.Replay.Add(ctx, bus.ReplayID(digest(0)), []byte("new-token")); err != nil {
		t.Fatalf("with no old bucket: %v", err)
	}
}
