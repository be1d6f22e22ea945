package state

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// heldPuts starts a put of "k" whose commit the gate holds, then the puts
// of vals, and returns once they all wait behind it; results gives every
// put's outcome, the held one's first.
func heldPuts(t *testing.T, f *Function, tr *gatedTransport, vals ...string) (release func(), results func() []error) {
	t.Helper()
	gate := make(chan struct{})
	tr.mu.Lock()
	tr.gate = gate
	tr.mu.Unlock()
	errs := make([]chan error, len(vals)+1)
	for i := range errs {
		errs[i] = make(chan error, 1)
	}
	go func() { errs[0] <- f.Put(context.Background(), []byte("k"), []byte("held")) }()
	<-tr.entered // stored, its commit held
	for i, v := range vals {
		go func() { errs[i+1] <- f.Put(context.Background(), []byte("k"), []byte(v)) }()
		for deadline := time.Now().Add(10 * time.Second); ; {
			f.putsMu.Lock()
			g := f.puts["k"].next
			n := 0
			if g != nil {
				n = g.n
			}
			f.putsMu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("put %q did not join the group", v)
			}
			time.Sleep(time.Millisecond)
		}
	}
	release = func() {
		tr.mu.Lock()
		tr.gate = nil
		tr.mu.Unlock()
		close(gate)
	}
	results = func() []error {
		out := make([]error, len(errs))
		for i, c := range errs {
			out[i] = <-c
		}
		return out
	}
	return release, results
}

func gatedFunction(t *testing.T, e *env) (*Function, *gatedTransport) {
	t.Helper()
	tr := &gatedTransport{inner: LocalTransport{e.anchor}, entered: make(chan struct{}, 1)}
	s, err := NewStore(Options{KV: e.kv, Anchor: tr, Metrics: &counts{}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, err := s.Function("ns", "fn", k)
	if err != nil {
		t.Fatal(err)
	}
	return f, tr
}

// storedValues opens every revision the bucket holds of key.
func storedValues(t *testing.T, e *env, f *Function, key string) []string {
	t.Helper()
	hist, err := e.kv.History(context.Background(), f.k.storeKey(f.ns, f.name, []byte(key)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hist {
		_, _, v, err := f.k.open(f.ns, f.name, []byte(key), h.Value())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(v))
	}
	return out
}

// TestPutsCombined: puts of a key that arrive while the handle writes it
// wait as one group, which writes its last value once; every put returns
// success, and the values in between are never stored.
func TestPutsCombined(t *testing.T) {
	e := newEnv(t, Limits{})
	f, tr := gatedFunction(t, e)
	mustPut(t, f, "k", "0")
	release, results := heldPuts(t, f, tr, "a", "b", "c")
	release()
	for i, err := range results() {
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	wantValue(t, f, "k", "c")
	if n := countsOf(f).putsCombined.Load(); n != 2 {
		t.Fatalf("%d puts combined, want 2", n)
	}
	if got, want := storedValues(t, e, f, "k"), []string{"0", "held", "c"}; !slices.Equal(got, want) {
		t.Fatalf("the bucket holds %q, want %q", got, want)
	}
	// Idle again: a put is written on its own.
	mustPut(t, f, "k", "d")
	wantValue(t, f, "k", "d")
	f.putsMu.Lock()
	busy := len(f.puts)
	f.putsMu.Unlock()
	if busy != 0 {
		t.Fatalf("%d keys still marked busy", busy)
	}
}

// TestPutsCombinedQuota: when the group's write fails for its value (the
// function's byte quota), the other puts of the group are written on
// their own, and only the one whose value failed reports the error.
func TestPutsCombinedQuota(t *testing.T) {
	e := newEnv(t, Limits{MaxBytes: 100})
	f, tr := gatedFunction(t, e)
	mustPut(t, f, "k", "0")
	big := string(make([]byte, 200))
	release, results := heldPuts(t, f, tr, "small", big)
	release()
	errs := results()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("held put: %v; small put: %v; want both written", errs[0], errs[1])
	}
	if !errors.Is(errs[2], ErrQuota) {
		t.Fatalf("big put: %v, want ErrQuota", errs[2])
	}
	wantValue(t, f, "k", "small")
	if n := countsOf(f).putsCombined.Load(); n != 0 {
		t.Fatalf("%d puts combined, want 0", n)
	}
}

// TestPutCallerGivesUp: a put that stops waiting for its group returns
// its context's error, and the group is still written.
func TestPutCallerGivesUp(t *testing.T) {
	e := newEnv(t, Limits{})
	f, tr := gatedFunction(t, e)
	mustPut(t, f, "k", "0")
	release, results := heldPuts(t, f, tr, "a")
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- f.Put(ctx, []byte("k"), []byte("b")) }()
	for {
		f.putsMu.Lock()
		n := f.puts["k"].next.n
		f.putsMu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("put that gave up: %v", err)
	}
	release()
	for i, err := range results() {
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	// The last value to join is written, whether or not its caller waited.
	wantValue(t, f, "k", "b")
}

// TestKeyLocks: a handle's writes of one key wait for each other; writes
// of different keys do not, and a key's lock goes when no write holds it.
func TestKeyLocks(t *testing.T) {
	e := newEnv(t, Limits{})
	f := e.fn(t, "ns", "fn")
	unlockA := f.lockKey([]byte("a"))
	f.lockKey([]byte("b"))() // another key: not held up
	second := make(chan func())
	go func() { second <- f.lockKey([]byte("a")) }()
	select {
	case <-second:
		t.Fatal("a second write of a key did not wait for the first")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	(<-second)()
	f.writersMu.Lock()
	n := len(f.writers)
	f.writersMu.Unlock()
	if n != 0 {
		t.Fatalf("%d key locks left", n)
	}
}

// TestDirectReads: with a connection, reads take the value alone in a
// direct get (no headers, so no revision); the committed revision then
// comes from the anchor's entry, so the next write needs no lookup; a
// delete marker on top hides nothing, a purged key reads as missing; an
// unsealed store reads the same way.
func TestDirectReads(t *testing.T) {
	e := newEnv(t, Limits{})
	kv := &countingKV{KeyValue: e.kv, got: make(chan struct{}, 1)}
	s, err := NewStore(Options{KV: kv, Conn: e.nc, Anchor: LocalTransport{e.anchor}, Metrics: &counts{}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, _ := DeriveKey(e.master, "ns", "fn")
	f, _ := s.Function("ns", "fn", k)
	ctx := context.Background()
	if _, ok, err := f.Get(ctx, []byte("k")); ok || err != nil {
		t.Fatalf("never written: %v, %v", ok, err)
	}
	mustPut(t, f, "k", "1") // a new key: the write looks it up
	gets := kv.gets.Load()
	f.forget([]byte("k")) // only the read can tell the next write where to go
	wantValue(t, f, "k", "1")
	mustPut(t, f, "k", "2")
	wantValue(t, f, "k", "2")
	if n := kv.gets.Load() - gets; n != 0 {
		t.Fatalf("%d reads through the KV interface (a write looked its key up)", n)
	}
	if n := countsOf(f).directReads.Load(); n < 3 {
		t.Fatalf("%d direct reads", n)
	}
	// A delete marker the host put on top (an empty value without its
	// headers) hides nothing: the committed revision is read.
	name := f.k.storeKey(f.ns, f.name, []byte("k"))
	if err := e.kv.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	wantValue(t, f, "k", "2")
	if err := e.kv.Purge(ctx, name); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Get(ctx, []byte("k"))
	wantIntegrity(t, err, KindMissing)

	u, err := NewStore(Options{KV: e.kv, Conn: e.nc, Unsealed: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	uf, _ := u.Function("ns", "fn", nil)
	if _, ok, err := uf.Get(ctx, []byte("k")); ok || err != nil {
		t.Fatalf("unsealed, never written: %v, %v", ok, err)
	}
	if err := uf.Put(ctx, []byte("k"), []byte("plain")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := uf.Get(ctx, []byte("k")); string(v) != "plain" || !ok || err != nil {
		t.Fatalf("unsealed read = %q, %v, %v", v, ok, err)
	}
}

// TestDirectReadUnavailable: a direct read that cannot reach the server
// fails with ErrUnavailable, sealed or not, and the stores with a working
// connection keep serving.
func TestDirectReadUnavailable(t *testing.T) {
	e := newEnv(t, Limits{})
	mustPut(t, e.fn(t, "ns", "fn"), "k", "v")
	nc, err := e.srv.Connect("closed")
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	k, _ := DeriveKey(e.master, "ns", "fn")
	for _, unsealed := range []bool{false, true} {
		s, err := NewStore(Options{KV: e.kv, Conn: nc, Unsealed: unsealed, Anchor: LocalTransport{e.anchor}, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		f, _ := s.Function("ns", "fn", k)
		if _, _, err := f.Get(context.Background(), []byte("k")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("unsealed %v: read over a closed connection: %v, want ErrUnavailable", unsealed, err)
		}
		s.Close()
	}
	wantValue(t, e.fn(t, "ns", "fn"), "k", "v")
}
