//go:build !wasip1

package cloister_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/sandbox/sandboxtest"
	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// TestKVThroughTheSandbox builds testdata/kvguest with the SDK and runs its
// state operations through the platform's sandbox and host functions.
func TestKVThroughTheSandbox(t *testing.T) {
	wasm := buildGuest(t, "./testdata/kvguest")
	ctx := context.Background()
	e, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	m, err := e.Compile(ctx, "kvguest", wasm, sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewFunction(ctx, sandbox.FunctionSpec{MaxSandboxes: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := &sandboxtest.MapKV{}
	call := func(in string) (string, error) {
		res, err := f.Call(sandbox.WithKV(ctx, kv), []byte(in))
		return string(res.Stdout), err
	}
	for _, c := range []struct{ in, want string }{
		{"get a", "absent"},
		{"put a 1", ""},
		{"get a", "1"},
		{"put ab 2", ""},
		{"put b 3", ""},
		{"list a", "a,ab"},
		{"del a", "1"},
		{"del a", "0"},
		{"inc n", "1"},
		{"inc n", "2"},
		{"big k 5000", "5000"},
	} {
		if got, err := call(c.in); err != nil || got != c.want {
			t.Fatalf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	// More keys than one list page holds.
	for i := range 300 {
		kv.Put(context.Background(), []byte("p"+strconv.Itoa(1000+i)), nil)
	}
	if got, err := call("list p"); err != nil || strings.Count(got, ",") != 299 {
		t.Fatalf("list of 300 keys: %d commas, %v", strings.Count(got, ","), err)
	}
	// Concurrent increments from many calls lose no update.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				if _, err := call("inc c"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got, _ := call("get c"); got != "40" {
		t.Fatalf("counter %q, want 40", got)
	}
	// Without state the SDK reports ErrStateDenied (the handler's error).
	res, err := f.Call(ctx, []byte("get a"))
	if !errors.Is(err, sandbox.ErrExit) || !strings.Contains(string(res.Stderr), cloister.ErrStateDenied.Error()) {
		t.Fatalf("without state: %v, stderr %q", err, res.Stderr)
	}
}

func TestKVOnTheHost(t *testing.T) {
	cloister.ResetKV()
	if err := cloister.KVPut([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := cloister.KVGet([]byte("a")); err != nil || !ok || string(v) != "1" {
		t.Fatalf("get: %q %v %v", v, ok, err)
	}
	if ok, _ := cloister.KVCompareAndSwap([]byte("a"), []byte("0"), []byte("2")); ok {
		t.Fatal("cas with a wrong old value")
	}
	if ok, _ := cloister.KVCompareAndSwap([]byte("b"), nil, []byte("x")); !ok {
		t.Fatal("cas create")
	}
	if keys, _ := cloister.KVList(nil); len(keys) != 2 {
		t.Fatalf("list: %q", keys)
	}
	if _, _, err := cloister.KVGet(nil); !errors.Is(err, cloister.ErrStateInvalid) {
		t.Fatalf("empty key: %v", err)
	}
	cloister.ResetKV()
	if _, ok, _ := cloister.KVGet([]byte("a")); ok {
		t.Fatal("ResetKV kept a")
	}
}
