package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
)

// env is an embedded NATS server with the state bucket and an anchor.
type env struct {
	dir    string
	srv    *bus.Server
	kv     jetstream.KeyValue
	nc     *nats.Conn
	master []byte
	anchor *Anchor
	store  *Store
	lease  time.Duration
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newEnv(t testing.TB, limits Limits) *env {
	return newEnvLease(t, limits, 0)
}

// newEnvLease starts an env whose anchor grants read leases of the given
// length (0: the default; negative: none).
func newEnvLease(t testing.TB, limits Limits, lease time.Duration) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), master: make([]byte, 32), lease: lease}
	rand.Read(e.master)
	e.start(t, limits)
	t.Cleanup(e.stop)
	return e
}

func (e *env) start(t testing.TB, limits Limits) {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: filepath.Join(e.dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	st, err := bus.OpenStores(context.Background(), nc, 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	e.kv, e.nc = st.State, nc
	if e.anchor, err = OpenAnchor(AnchorConfig{Dir: filepath.Join(e.dir, "anchor"), Master: e.master, Limits: limits, Lease: e.lease, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	// The main store reads with direct gets, as the worker's does; the
	// other stores of the tests read through the KV interface.
	if e.store, err = NewStore(Options{KV: e.kv, Conn: nc, Anchor: LocalTransport{e.anchor}, Metrics: &counts{}, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) stop() {
	if e.store != nil {
		e.store.Close()
		e.store = nil
	}
	if e.anchor != nil {
		e.anchor.Close()
		e.anchor = nil
	}
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv = nil
	}
}

func (e *env) fn(t testing.TB, ns, name string) *Function {
	t.Helper()
	k, err := DeriveKey(e.master, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.store.Function(ns, name, k)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// otherWorker returns a handle on ns/name in a store of its own, as
// another worker has; the store closes with the test.
func (e *env) otherWorker(t testing.TB, ns, name string) *Function {
	t.Helper()
	s, err := NewStore(Options{KV: e.kv, Anchor: LocalTransport{e.anchor}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	k, err := DeriveKey(e.master, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Function(ns, name, k)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// raw returns the envelope the bucket holds for key (latest revision).
func (e *env) raw(t *testing.T, f *Function, key string) []byte {
	t.Helper()
	en, err := e.kv.Get(context.Background(), f.k.storeKey(f.ns, f.name, []byte(key)))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(en.Value())
}

// tamper writes b as the newest revision of key, as a host would.
func (e *env) tamper(t *testing.T, f *Function, key string, b []byte) {
	t.Helper()
	if _, err := e.kv.Put(context.Background(), f.k.storeKey(f.ns, f.name, []byte(key)), b); err != nil {
		t.Fatal(err)
	}
}

func mustPut(t *testing.T, f *Function, k, v string) {
	t.Helper()
	if err := f.Put(context.Background(), []byte(k), []byte(v)); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func wantValue(t *testing.T, f *Function, k, want string) {
	t.Helper()
	v, ok, err := f.Get(context.Background(), []byte(k))
	if err != nil || !ok || string(v) != want {
		t.Fatalf("get %s = %q, %v, %v; want %q", k, v, ok, err, want)
	}
}

func wantIntegrity(t *testing.T, err error, kind string) {
	t.Helper()
	var ie *IntegrityError
	if !errors.As(err, &ie) || !errors.Is(err, ErrIntegrity) {
		t.Fatalf("got error %v, want a %s integrity error", err, kind)
	}
	if ie.Kind != kind {
		t.Fatalf("got kind %q (%v), want %q", ie.Kind, err, kind)
	}
}

func TestOperations(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	ctx := context.Background()
	if _, ok, err := f.Get(ctx, []byte("a")); ok || err != nil {
		t.Fatalf("get of a missing key: %v %v", ok, err)
	}
	mustPut(t, f, "a", "1")
	wantValue(t, f, "a", "1")
	mustPut(t, f, "a", "2")
	wantValue(t, f, "a", "2")
	mustPut(t, f, "p/x", "x")
	mustPut(t, f, "p/y", "y")
	mustPut(t, f, "q", "q-secret-value")
	keys, more, err := f.List(ctx, []byte("p/"), nil, 0)
	if err != nil || more || len(keys) != 2 || string(keys[0]) != "p/x" || string(keys[1]) != "p/y" {
		t.Fatalf("list p/ = %q %v %v", keys, more, err)
	}
	keys, more, _ = f.List(ctx, nil, nil, 2)
	if len(keys) != 2 || !more || string(keys[0]) != "a" {
		t.Fatalf("list limit 2 = %q %v", keys, more)
	}
	keys, _, _ = f.List(ctx, nil, []byte("p/y"), 0)
	if len(keys) != 1 || string(keys[0]) != "q" {
		t.Fatalf("list after p/y = %q", keys)
	}
	if ok, err := f.Delete(ctx, []byte("a")); !ok || err != nil {
		t.Fatalf("delete a: %v %v", ok, err)
	}
	if ok, err := f.Delete(ctx, []byte("a")); ok || err != nil {
		t.Fatalf("second delete a: %v %v", ok, err)
	}
	if _, ok, err := f.Get(ctx, []byte("a")); ok || err != nil {
		t.Fatalf("get of a deleted key: %v %v", ok, err)
	}
	// Compare-and-set.
	if ok, err := f.CompareAndSwap(ctx, []byte("c"), nil, false, []byte("1"), true); !ok || err != nil {
		t.Fatalf("cas create: %v %v", ok, err)
	}
	if ok, err := f.CompareAndSwap(ctx, []byte("c"), nil, false, []byte("1"), true); ok || err != nil {
		t.Fatalf("cas create over an existing key: %v %v", ok, err)
	}
	if ok, err := f.CompareAndSwap(ctx, []byte("c"), []byte("0"), true, []byte("2"), true); ok || err != nil {
		t.Fatalf("cas with a wrong old value: %v %v", ok, err)
	}
	if ok, err := f.CompareAndSwap(ctx, []byte("c"), []byte("1"), true, []byte("2"), true); !ok || err != nil {
		t.Fatalf("cas: %v %v", ok, err)
	}
	wantValue(t, f, "c", "2")
	if ok, err := f.CompareAndSwap(ctx, []byte("c"), []byte("2"), true, nil, false); !ok || err != nil {
		t.Fatalf("cas delete: %v %v", ok, err)
	}
	if _, ok, _ := f.Get(ctx, []byte("c")); ok {
		t.Fatal("cas delete left the key")
	}
	// Another function sees none of it.
	g := e.fn(t, "ns", "other")
	if _, ok, err := g.Get(ctx, []byte("q")); ok || err != nil {
		t.Fatalf("another function read q: %v %v", ok, err)
	}
	if keys, _, _ := g.List(ctx, nil, nil, 0); len(keys) != 0 {
		t.Fatalf("another function lists %q", keys)
	}
	// Nothing in the bucket is plaintext.
	if bytes.Contains(e.raw(t, f, "q"), []byte("q-secret-value")) {
		t.Fatal("the bucket holds a value in the clear")
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, Limits{MaxKeys: 2, MaxBytes: 10})
	f := e.fn(t, "ns", "fn")
	ctx := context.Background()
	if err := f.Put(ctx, nil, []byte("x")); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
	if err := f.Put(ctx, bytes.Repeat([]byte("k"), MaxKeyBytes+1), []byte("x")); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("long key: %v", err)
	}
	if err := f.Put(ctx, []byte("k"), make([]byte, DefaultMaxValueBytes+1)); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("large value: %v", err)
	}
	mustPut(t, f, "a", "12345")
	mustPut(t, f, "b", "12345")
	if err := f.Put(ctx, []byte("c"), []byte("1")); !errors.Is(err, ErrQuota) {
		t.Fatalf("third key: %v", err)
	}
	if err := f.Put(ctx, []byte("a"), []byte("123456")); !errors.Is(err, ErrQuota) {
		t.Fatalf("11 bytes: %v", err)
	}
	mustPut(t, f, "a", "1") // shrinking is fine
	if _, err := f.Delete(ctx, []byte("b")); err != nil {
		t.Fatal(err)
	}
	mustPut(t, f, "c", "123456789") // b's key and bytes were freed
	wantValue(t, f, "a", "1")
}

func TestRollbackDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "balance", "100")
	old := e.raw(t, f, "balance")
	mustPut(t, f, "balance", "5")
	e.tamper(t, f, "balance", old)
	_, _, err := f.Get(context.Background(), []byte("balance"))
	wantIntegrity(t, err, KindRollback)
	if !errors.Is(err, ErrIntegrity) {
		t.Fatal("not ErrIntegrity")
	}
}

func TestSwapDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "alice", "admin")
	mustPut(t, f, "bob", "guest")
	e.tamper(t, f, "bob", e.raw(t, f, "alice"))
	_, _, err := f.Get(context.Background(), []byte("bob"))
	wantIntegrity(t, err, KindSwap)

	// From another function: same key, other function's value.
	g := e.fn(t, "ns", "other")
	mustPut(t, g, "role", "admin")
	mustPut(t, f, "role", "guest")
	e.tamper(t, f, "role", e.raw(t, g, "role"))
	_, _, err = f.Get(context.Background(), []byte("role"))
	wantIntegrity(t, err, KindSwap)

	// From another namespace's function of the same name.
	h := e.fn(t, "other", "fn")
	mustPut(t, h, "role2", "admin")
	mustPut(t, f, "role2", "guest")
	e.tamper(t, f, "role2", e.raw(t, h, "role2"))
	_, _, err = f.Get(context.Background(), []byte("role2"))
	wantIntegrity(t, err, KindSwap)
	// A write over a tampered key reports it too.
	err = f.Put(context.Background(), []byte("role2"), []byte("x"))
	wantIntegrity(t, err, KindSwap)
}

func TestReplayDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	ctx := context.Background()
	mustPut(t, f, "session", "token")
	old := e.raw(t, f, "session")
	if ok, err := f.Delete(ctx, []byte("session")); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	e.tamper(t, f, "session", old)
	_, _, err := f.Get(ctx, []byte("session"))
	wantIntegrity(t, err, KindReplay)
	// A CAS that expects the key absent sees the same.
	_, err = f.CompareAndSwap(ctx, []byte("session"), nil, false, []byte("x"), true)
	wantIntegrity(t, err, KindReplay)
}

func TestMissingDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "k", "v")
	if err := e.kv.Purge(context.Background(), f.k.storeKey(f.ns, f.name, []byte("k"))); err != nil {
		t.Fatal(err)
	}
	_, _, err := f.Get(context.Background(), []byte("k"))
	wantIntegrity(t, err, KindMissing)
}

// The host removes the committed revision and leaves a newer, uncommitted
// write on top, as if writers had pushed the committed one out of the
// history: the read retries, then reports it missing.
func TestMissingUnderNewerWriteDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "k", "v")
	name := f.k.storeKey(f.ns, f.name, []byte("k"))
	if err := e.kv.Purge(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	e.tamper(t, f, "k", f.k.seal(f.ns, f.name, []byte("k"), f.nextVersion(0), 0, []byte("orphan")))
	_, _, err := f.Get(context.Background(), []byte("k"))
	wantIntegrity(t, err, KindMissing)
}

// A write stored but never committed (its worker crashed) hides nothing.
func TestUncommittedWriteIgnored(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "k", "committed")
	e.tamper(t, f, "k", f.k.seal(f.ns, f.name, []byte("k"), f.nextVersion(0), 0, []byte("orphan")))
	wantValue(t, f, "k", "committed")
	e.tamper(t, f, "new", f.k.seal(f.ns, f.name, []byte("new"), f.nextVersion(0), 0, []byte("orphan")))
	if _, ok, err := f.Get(context.Background(), []byte("new")); ok || err != nil {
		t.Fatalf("an uncommitted create is visible: %v %v", ok, err)
	}
	mustPut(t, f, "k", "next")
	wantValue(t, f, "k", "next")
}

// forgingTransport replays the first reply it saw for every later request.
type forgingTransport struct {
	inner Transport
	mu    sync.Mutex
	first *AnchorReply
}

func (t *forgingTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	rep, err := t.inner.Exchange(ctx, req)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.first == nil {
		t.first = rep
		return rep, err
	}
	return t.first, nil
}

func TestAnchorReplyReplayDetected(t *testing.T) {
	e := newEnv(t, Limits{})
	s, err := NewStore(Options{KV: e.kv, Anchor: &forgingTransport{inner: LocalTransport{e.anchor}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	if _, _, err := f.Get(context.Background(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Get(context.Background(), []byte("k"))
	wantIntegrity(t, err, KindAnchor)
}

func TestAnchorRefusesWrongKey(t *testing.T) {
	e := newEnv(t, Limits{})
	s, _ := NewStore(Options{KV: e.kv, Anchor: LocalTransport{e.anchor}, Logger: quiet()})
	defer s.Close()
	wrong := make([]byte, KeySize)
	f, _ := s.Function("ns", "fn", wrong)
	err := f.Put(context.Background(), []byte("k"), []byte("v"))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(e.anchorErr(wrong), ErrBadRequest) {
		t.Fatalf("put with a wrong state key: %v", err)
	}
}

// anchorErr sends a request sealed with key straight to the anchor.
func (e *env) anchorErr(key []byte) error {
	k, _ := newKeys(key)
	pt, _ := appendOps(nil, []op{{Kind: opGet, Key: []byte("k")}})
	nonce, sealed := k.sealMessage(requestAAD("ns", "fn"), pt)
	_, err := e.anchor.Handle(&AnchorRequest{Namespace: "ns", Name: "fn", Nonce: nonce, Sealed: sealed})
	return err
}

func TestAnchorSurvivesRestart(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "a", "1")
	mustPut(t, f, "b", "2")
	if _, err := f.Delete(context.Background(), []byte("b")); err != nil {
		t.Fatal(err)
	}
	oldB := e.raw(t, f, "b")
	_ = oldB
	e.stop()
	// A torn record at the end of the log is cut off.
	lf, err := os.OpenFile(filepath.Join(e.dir, "anchor", "anchor.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	lf.Write([]byte{0, 0, 1, 0, 1, 2, 3})
	lf.Close()
	e.start(t, Limits{})
	f = e.fn(t, "ns", "fn")
	wantValue(t, f, "a", "1")
	if _, ok, err := f.Get(context.Background(), []byte("b")); ok || err != nil {
		t.Fatalf("b after restart: %v %v", ok, err)
	}
	mustPut(t, f, "c", "3")
	e.stop()
	e.start(t, Limits{})
	f = e.fn(t, "ns", "fn")
	wantValue(t, f, "c", "3")
	keys, _, _ := f.List(context.Background(), nil, nil, 0)
	if len(keys) != 2 {
		t.Fatalf("keys after two restarts: %q", keys)
	}
}

// The anchor's log is on the host's disk. A record that does not
// authenticate ends the log: the anchor comes back with the state before it.
// This is the documented limit (docs/state.md): a host that rolls back the
// coordinator's disk across a restart rolls the state back with it.
func TestAnchorLogTamperedTailCut(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "a", "1")
	mustPut(t, f, "a", "2")
	e.stop()
	path := filepath.Join(e.dir, "anchor", "anchor.log")
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 1 // the last record no longer authenticates
	os.WriteFile(path, b, 0o600)
	e.start(t, Limits{})
	f = e.fn(t, "ns", "fn")
	// The newer value in the bucket is not trusted: it is not committed.
	wantValue(t, f, "a", "1")
	// Writes go on from there.
	mustPut(t, f, "a", "3")
	wantValue(t, f, "a", "3")
}

func TestConcurrentCASIncrements(t *testing.T) {
	e := newEnv(t, Limits{})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine has its own store, as separate workers would.
			s, _ := NewStore(Options{KV: e.kv, Anchor: LocalTransport{e.anchor}, Logger: quiet()})
			defer s.Close()
			k, _ := DeriveKey(e.master, "ns", "counter")
			f, _ := s.Function("ns", "counter", k)
			for range each {
				for {
					cur, ok, err := f.Get(context.Background(), []byte("n"))
					if err != nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
						return
					}
					n := 0
					if ok {
						n, _ = strconv.Atoi(string(cur))
					}
					swapped, err := f.CompareAndSwap(context.Background(), []byte("n"), cur, ok, []byte(strconv.Itoa(n+1)), true)
					if err != nil {
						errs <- err
						return
					}
					if swapped {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantValue(t, e.fn(t, "ns", "counter"), "n", strconv.Itoa(workers*each))
}

func TestUnsealedBaseline(t *testing.T) {
	e := newEnv(t, Limits{})
	s, err := NewStore(Options{KV: e.kv, Unsealed: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, _ := s.Function("ns", "fn", nil)
	ctx := context.Background()
	mustPut(t, f, "a", "1")
	wantValue(t, f, "a", "1")
	if ok, _ := f.CompareAndSwap(ctx, []byte("a"), []byte("1"), true, []byte("2"), true); !ok {
		t.Fatal("cas failed")
	}
	if ok, _ := f.CompareAndSwap(ctx, []byte("a"), []byte("1"), true, []byte("3"), true); ok {
		t.Fatal("stale cas succeeded")
	}
	mustPut(t, f, "b", "1")
	keys, _, _ := f.List(ctx, nil, nil, 0)
	if len(keys) != 2 {
		t.Fatalf("list: %q", keys)
	}
	if ok, _ := f.Delete(ctx, []byte("a")); !ok {
		t.Fatal("delete")
	}
}

// TestLeaseServesReads: under its read lease a worker reads without asking
// the anchor, and still detects a rollback.
func TestLeaseServesReads(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "k", "1") // asks for the lease
	mustPut(t, f, "k", "2") // commits under it: the entry is cached
	before := countsOf(f).anchorRequests.Load()
	for range 10 {
		wantValue(t, f, "k", "2")
	}
	if n := countsOf(f).anchorRequests.Load() - before; n > 1 {
		t.Fatalf("10 reads under the lease sent %d anchor requests", n)
	}
	old := e.raw(t, f, "k")
	mustPut(t, f, "k", "3")
	e.tamper(t, f, "k", old)
	_, _, err := f.Get(context.Background(), []byte("k"))
	wantIntegrity(t, err, KindRollback)
}

// TestLeaseHoldsOffOtherWriters: while one worker's lease runs, another
// worker's write waits for it to end, so the first never serves a value
// that was overwritten: after the second worker's write returns, the first
// reads the new value.
func TestLeaseHoldsOffOtherWriters(t *testing.T) {
	e := newEnvLease(t, Limits{}, 300*time.Millisecond)
	a := e.fn(t, "ns", "fn")
	mustPut(t, a, "k", "old")
	mustPut(t, a, "k", "old2")
	wantValue(t, a, "k", "old2")
	if _, ok := a.lease.lookup([]byte("k")); !ok {
		t.Fatal("the entry is not cached under the lease")
	}
	b := e.otherWorker(t, "ns", "fn")
	if err := b.Put(context.Background(), []byte("k"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	wantValue(t, a, "k", "new")
	mustPut(t, b, "k", "newer")
	wantValue(t, a, "k", "newer")
}

// TestLeaseRenewedByReads: a worker whose reads all come from its lease
// keeps the lease (and its entries) beyond the lease's length: the lease
// never lapses (a renewal is due a quarter of the way in and must arrive
// within the next half, 500 ms here).
func TestLeaseRenewedByReads(t *testing.T) {
	e := newEnvLease(t, Limits{}, time.Second)
	f := e.fn(t, "ns", "fn")
	mustPut(t, f, "k", "1")
	mustPut(t, f, "k", "2")
	gen, running := f.lease.generation()
	if !running {
		t.Fatal("no lease after two writes")
	}
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; {
		wantValue(t, f, "k", "2")
		time.Sleep(5 * time.Millisecond)
	}
	if g, running := f.lease.generation(); g != gen || !running {
		t.Fatalf("the lease lapsed (generation %d, then %d, running %v): reads did not renew it", gen, g, running)
	}
}

// gatedTransport holds every exchange while gate is closed, and reports on
// entered that one arrived.
type gatedTransport struct {
	inner   Transport
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
}

func (t *gatedTransport) Exchange(ctx context.Context, req *AnchorRequest) (*AnchorReply, error) {
	t.mu.Lock()
	gate := t.gate
	t.mu.Unlock()
	if gate != nil {
		select {
		case t.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	return t.inner.Exchange(ctx, req)
}

// counts is a Metrics that counts.
type counts struct{ anchorRequests, putsCombined, directReads atomic.Uint64 }

func (c *counts) AnchorRequest() { c.anchorRequests.Add(1) }
func (c *counts) PutCombined()   { c.putsCombined.Add(1) }
func (c *counts) DirectRead()    { c.directReads.Add(1) }

// countsOf returns the counts of f's store, made with a *counts as its
// Options.Metrics.
func countsOf(f *Function) *counts { return f.s.o.Metrics.(*counts) }

// countingKV counts revision reads and reports the latest-value reads.
type countingKV struct {
	jetstream.KeyValue
	revReads atomic.Int64
	gets     atomic.Int64
	got      chan struct{}
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.gets.Add(1)
	en, err := k.KeyValue.Get(ctx, key)
	select {
	case k.got <- struct{}{}:
	default:
	}
	return en, err
}

func (k *countingKV) GetRevision(ctx context.Context, key string, rev uint64) (jetstream.KeyValueEntry, error) {
	k.revReads.Add(1)
	return k.KeyValue.GetRevision(ctx, key, rev)
}

// TestReadAfterOwnWrite: a read under the lease that finds on top of the
// key this handle's own write, stored and being committed, waits for the
// commit and returns the value it read, without reading the committed
// revision from the bucket again.
func TestReadAfterOwnWrite(t *testing.T) {
	e := newEnv(t, Limits{})
	kv := &countingKV{KeyValue: e.kv, got: make(chan struct{}, 1)}
	tr := &gatedTransport{inner: LocalTransport{e.anchor}, entered: make(chan struct{}, 1)}
	s, err := NewStore(Options{KV: kv, Anchor: tr, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	mustPut(t, f, "k", "1") // asks for the lease
	mustPut(t, f, "k", "2") // commits under it: the entry is cached
	wantValue(t, f, "k", "2")

	gate := make(chan struct{})
	tr.mu.Lock()
	tr.gate = gate
	tr.mu.Unlock()
	putErr := make(chan error, 1)
	go func() { putErr <- f.Put(context.Background(), []byte("k"), []byte("3")) }()
	<-tr.entered // "3" is in the bucket, its commit held
	select {     // forget the reads before
	case <-kv.got:
	default:
	}
	type got struct {
		v   string
		err error
	}
	read := make(chan got, 1)
	go func() {
		v, _, err := f.Get(context.Background(), []byte("k"))
		read <- got{string(v), err}
	}()
	<-kv.got // the read found "3" on top, with "2" as the cached entry
	tr.mu.Lock()
	tr.gate = nil
	tr.mu.Unlock()
	close(gate)
	if err := <-putErr; err != nil {
		t.Fatal(err)
	}
	r := <-read
	if r.err != nil || r.v != "3" {
		t.Fatalf("read during the commit = %q, %v; want the committed write's value", r.v, r.err)
	}
	if n := kv.revReads.Load(); n != 0 {
		t.Fatalf("the read read %d revisions from the bucket again", n)
	}
	// Integrity is checked as before: a rollback under the lease is caught.
	old := e.raw(t, f, "k")
	mustPut(t, f, "k", "4")
	e.tamper(t, f, "k", old)
	_, _, err = f.Get(context.Background(), []byte("k"))
	wantIntegrity(t, err, KindRollback)
}

// TestReadDoesNotWaitForHeldWrite: a read that finds on top its handle's
// own write, which the anchor holds back for another worker's lease, does
// not wait for it: it returns the committed value at once.
func TestReadDoesNotWaitForHeldWrite(t *testing.T) {
	e := newEnv(t, Limits{})
	a := e.fn(t, "ns", "fn")
	mustPut(t, a, "k", "1")
	mustPut(t, a, "k", "2") // a's lease runs, the entry is cached
	b := e.otherWorker(t, "ns", "fn")
	wantValue(t, b, "k", "2") // b takes a lease too
	putErr := make(chan error, 1)
	go func() { putErr <- a.Put(context.Background(), []byte("k"), []byte("3")) }()
	for { // until the anchor has told a's write to wait for b's lease
		if w, ok := a.writing.Load("k"); ok {
			select {
			case <-w.(*writing).waits:
			default:
				time.Sleep(time.Millisecond)
				continue
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, ok := a.lease.lookup([]byte("k")); !ok {
		t.Skip("a's lease ended before the read (a very slow machine)")
	}
	wantValue(t, a, "k", "2")
	select {
	case err := <-putErr:
		t.Fatalf("the write returned (%v) before the read: it was not held", err)
	default:
	}
	if err := <-putErr; err != nil {
		t.Fatal(err)
	}
}

// TestOneHandleConcurrently reads and writes the same keys from many
// goroutines through one handle, as a worker's concurrent invocations do
// (its key cache and hints are shared; CI runs this with -race).
func TestOneHandleConcurrently(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				k := []byte(strconv.Itoa(i % 4))
				if (g+i)%2 == 0 {
					if err := f.Put(ctx, k, []byte(strconv.Itoa(g))); err != nil {
						t.Error(err)
						return
					}
				} else if _, _, err := f.Get(ctx, k); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
