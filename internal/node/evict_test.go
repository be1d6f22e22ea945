package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/node"
)

// hasPool reports whether the worker still holds a pool for function fn.
func (e *env) hasPool(fn string) bool {
	e.t.Helper()
	return strings.Contains(string(e.metrics()), `cloister_pool_sandboxes{function="`+fn+`"`)
}

// waitNoPool waits (bounded) until the worker has dropped fn's pool.
func (e *env) waitNoPool(fn, why string) {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); e.hasPool(fn); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("the worker still holds %s's pool after %s", fn, why)
		}
	}
}

// TestUnusedFunctionsAreFreed: deleting a function frees the worker's pool
// for it at once, and past MaxLoaded the least recently used version is
// dropped; a dropped version that is called again is loaded again.
func TestUnusedFunctionsAreFreed(t *testing.T) {
	e := start(t, func(o *node.Options) { o.MaxLoaded = 2 })
	ctx := context.Background()
	reactor := func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor }
	call := func(fn string) {
		t.Helper()
		if res, err := e.c.Invoke(ctx, fn, []byte("c"), client.InvokeOptions{}); err != nil || string(res.Output) != "11" {
			t.Fatalf("invoking %s: %v", fn, err)
		}
	}
	for _, fn := range []string{"r1", "r2", "r3"} {
		e.deploy(fn, fixture(t, "reactor.wasm"), reactor)
	}
	call("r1")
	if !e.hasPool("r1") {
		t.Fatal("no pool after a call")
	}
	if err := e.c.Delete(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	e.waitNoPool("r1", "its delete")

	call("r2")
	time.Sleep(10 * time.Millisecond) // r2 is the least recently used
	call("r3")
	e.deploy("r4", fixture(t, "reactor.wasm"), reactor)
	call("r4")
	e.waitNoPool("r2", "two more recently used versions were loaded")
	if !e.hasPool("r3") || !e.hasPool("r4") {
		t.Fatal("a recently used version was dropped")
	}
	call("r2") // loaded again
}
