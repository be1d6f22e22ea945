package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// memKV is an in-memory KV for the host-function tests.
type memKV struct {
	mu   sync.Mutex
	m    map[string][]byte
	fail error // returned by every operation when set
	gets int
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) Get(_ context.Context, key []byte) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gets++
	if k.fail != nil {
		return nil, false, k.fail
	}
	v, ok := k.m[string(key)]
	return slices.Clone(v), ok, nil
}

func (k *memKV) Put(_ context.Context, key, value []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(key) == 0 {
		return ErrKVInvalid
	}
	if len(value) > 100 {
		return ErrKVTooLarge
	}
	k.m[string(key)] = slices.Clone(value)
	return nil
}

func (k *memKV) Delete(_ context.Context, key []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.m[string(key)]
	delete(k.m, string(key))
	return ok, nil
}

func (k *memKV) CompareAndSwap(_ context.Context, key, old []byte, oldPresent bool, nw []byte, newPresent bool) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.m[string(key)]
	if ok != oldPresent || (ok && !bytes.Equal(cur, old)) {
		return false, nil
	}
	if newPresent {
		k.m[string(key)] = slices.Clone(nw)
	} else {
		delete(k.m, string(key))
	}
	return true, nil
}

func (k *memKV) List(_ context.Context, prefix, start []byte, limit int) ([][]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var keys [][]byte
	for s := range k.m {
		if bytes.HasPrefix([]byte(s), prefix) && s > string(start) {
			keys = append(keys, []byte(s))
		}
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	return keys, more, nil
}

func req(op byte, key, rest string) []byte {
	return append(append([]byte{op, byte(len(key))}, key...), rest...)
}

func kvCall(t *testing.T, f *Function, kv KV, in []byte) (int32, []byte, error) {
	t.Helper()
	ctx := context.Background()
	if kv != nil {
		ctx = WithKV(ctx, kv)
	}
	res, err := f.Call(ctx, in)
	if err != nil {
		return 0, nil, err
	}
	if len(res.Stdout) < 4 {
		t.Fatalf("short response %q", res.Stdout)
	}
	return int32(binary.LittleEndian.Uint32(res.Stdout)), res.Stdout[4:], nil
}

func TestKVHostFunctions(t *testing.T) {
	_, f := newReactor(t, "testdata/kv.wasm", Limits{}, FunctionSpec{})
	kv := newMemKV()
	check := func(in []byte, wantCode int32, wantData string) {
		t.Helper()
		c, data, err := kvCall(t, f, kv, in)
		if err != nil || c != wantCode || string(data) != wantData {
			t.Fatalf("%q: got %d %q %v, want %d %q", in, c, data, err, wantCode, wantData)
		}
	}
	check(req('g', "a", ""), KVNotFound, "")
	check(req('p', "a", "hello"), 0, "")
	check(req('g', "a", ""), 5, "hello")
	check(req('x', "a", ""), 5, "hello")
	if kv.gets != 3 {
		t.Fatalf("the retried get read the store again: %d reads", kv.gets)
	}
	check(req('p', "ab", "2"), 0, "")
	check(req('p', "b", "3"), 0, "")
	check(req('l', "a", ""), 11, "\x01\x00\x00\x00a\x02\x00\x00\x00ab")
	check(req('l', "a", "a"), 6, "\x02\x00\x00\x00ab")
	check(req('d', "a", ""), 1, "")
	check(req('d', "a", ""), 0, "")
	check(req('p', "", "x"), KVInvalid, "")
	check(req('p', "big", string(make([]byte, 101))), KVTooLarge, "")
	check(req('i', "n", ""), 1, "\x01\x00\x00\x00")
	check(req('i', "n", ""), 1, "\x02\x00\x00\x00")
	// A value longer than the buffer: nothing is copied, the length says
	// how much to ask for (the 'i' op reads with a 4-byte buffer).
	check(req('p', "n", "12345678"), 0, "")
	check(req('i', "n", ""), 8, "")
}

func TestKVDeniedAndFailure(t *testing.T) {
	_, f := newReactor(t, "testdata/kv.wasm", Limits{}, FunctionSpec{})
	c, _, err := kvCall(t, f, nil, req('g', "a", ""))
	if err != nil || c != KVDenied {
		t.Fatalf("without state: %d %v", c, err)
	}
	kv := newMemKV()
	boom := errors.New("integrity")
	kv.fail = boom
	_, _, err = kvCall(t, f, kv, req('g', "a", ""))
	if !errors.Is(err, ErrState) || !errors.Is(err, boom) {
		t.Fatalf("a failing store: %v", err)
	}
	// The next call is served normally, by a new sandbox: the failure
	// stopped the call's context, and wazero may close the module just
	// after the guest returned (a reused sandbox then failed its next call
	// with exit code 0xffffffff, once in a while, under load).
	kv.fail = nil
	res, err := f.Call(WithKV(context.Background(), kv), req('g', "a", ""))
	if err != nil || int32(binary.LittleEndian.Uint32(res.Stdout)) != KVNotFound {
		t.Fatalf("after a failure: %q %v", res.Stdout, err)
	}
	if res.Reused {
		t.Fatal("the sandbox of a call stopped by a state error was reused")
	}
}

func TestKVOutOfBounds(t *testing.T) {
	_, f := newReactor(t, "testdata/kv.wasm", Limits{}, FunctionSpec{})
	kv := newMemKV()
	kv.m["k"] = make([]byte, 10) // kv_get must not write past memory's end
	res, err := f.Call(WithKV(context.Background(), kv), req('o', "k", ""))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+4 <= len(res.Stdout); i += 4 {
		if c := int32(binary.LittleEndian.Uint32(res.Stdout[i:])); c != KVInvalid {
			t.Errorf("call %d: got %d, want %d", i/4, c, KVInvalid)
		}
	}
	if len(res.Stdout) != 24 || len(kv.m) != 1 {
		t.Fatalf("response %d bytes, store %d keys", len(res.Stdout), len(kv.m))
	}
}

func TestCommandUsesKV(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	m := compileFixture(t, e, "kv_command.wasm", Limits{})
	if m.ABI() != ABICommand {
		t.Fatalf("ABI %s", m.ABI())
	}
	kv := newMemKV()
	res, err := m.Run(WithKV(ctx, kv), Invocation{})
	if err != nil || string(kv.m["k"]) != "v" || res.HostCalls != 1 {
		t.Fatalf("run: %v, store %q, host calls %d", err, kv.m, res.HostCalls)
	}
	// Without state the put is denied, and the command exits with the code.
	if _, err := m.Run(ctx, Invocation{}); !errors.Is(err, ErrExit) {
		t.Fatalf("run without state: %v", err)
	}
}

// burnKV spends CPU in Get, measured on its own thread.
type burnKV struct {
	*memKV
	burned time.Duration
}

func (k *burnKV) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0, ok0 := threadCPU()
	h := sha256.Sum256(key)
	for range 200_000 {
		h = sha256.Sum256(h[:])
	}
	c1, ok1 := threadCPU()
	if ok0 && ok1 {
		k.burned = c1 - c0
	}
	return k.memKV.Get(ctx, key)
}

// TestKVRunsOffTheGuestThread checks that state operations run off the
// guest's locked thread: the CPU they spend is not the call's CPU time
// (and, the point of it, the locked thread blocks once per operation).
func TestKVRunsOffTheGuestThread(t *testing.T) {
	_, f := newReactor(t, "testdata/kv.wasm", Limits{}, FunctionSpec{})
	kv := &burnKV{memKV: newMemKV()}
	res, err := f.Call(WithKV(context.Background(), kv), req('g', "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	if !res.CPUMeasured || kv.burned == 0 {
		t.Skip("per-thread CPU time is not measured on this platform")
	}
	if res.CPU >= kv.burned/2 {
		t.Fatalf("the call's thread spent %v, the state operation %v: the operation ran on the guest's thread", res.CPU, kv.burned)
	}
}

func TestOffThreadPanics(t *testing.T) {
	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the KV's panic", p)
		}
	}()
	offThread{}.run(func() { panic("boom") })
	t.Fatal("no panic")
}

// TestOffThreadReusesWorkers: operations run on kept goroutines, whose
// stacks have grown already, not on a new goroutine each.
func TestOffThreadReusesWorkers(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		var id string
		offThread{}.run(func() {
			buf := make([]byte, 64)
			id = strings.Fields(string(buf[:runtime.Stack(buf, false)]))[1] // "goroutine N [running]:"
		})
		if seen[id] {
			return
		}
		seen[id] = true
		time.Sleep(time.Millisecond) // let the worker wait for the next job
	}
	t.Fatalf("100 operations ran on %d different goroutines", len(seen))
}
