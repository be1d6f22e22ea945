//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
)

// TestFunctionsShareImage: functions of one module whose snapshots differ
// (here by their environment, which Go's runtime copies into memory at
// init) share the pages they have in common: the second image holds only
// its own, and each function serves from exactly its own snapshot, also
// once the first function is closed.
func TestFunctionsShareImage(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	const file = "../../examples/reactor-go/reactor-go.wasm"
	wasm, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, file, wasm, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	spec := func(v string) FunctionSpec {
		return FunctionSpec{MaxSandboxes: 1, IdleTimeout: -1, Env: map[string]string{"CLOISTER_FUNCTION": v}}
	}
	f1, err := m.NewFunction(ctx, spec("first"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := m.NewFunction(ctx, spec("second, with a longer value"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if f1.Snapshot().Hash() == f2.Snapshot().Hash() {
		t.Fatal("the snapshots do not differ")
	}
	img1, img2 := f1.snap.img, f2.snap.img
	if img1.base != nil || img2.base != img1 {
		t.Fatal("the second function's image is not stored against the first's")
	}
	if img2.own*8 > img2.size || img2.own >= img1.own {
		t.Errorf("the second image holds %d of %d bytes (the first %d)", img2.own, img2.size, img1.own)
	}
	callBoth := func(fs ...*Function) {
		for _, f := range fs {
			for range 3 {
				out, res, err := call(t, f, `{"text":"two words"}`)
				if err != nil || !bytes.Contains([]byte(out), []byte(`"words":2`)) || !bytes.Contains([]byte(out), []byte(`"calls":1`)) {
					t.Fatalf("got %q %v (generation %d)", out, err, res.Generation)
				}
			}
		}
	}
	callBoth(f1, f2)
	f1.Close()
	// A new sandbox of the second function still maps the first's pages.
	f3, err := m.NewFunction(ctx, spec("third"))
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if f3.snap.img.base != img1 {
		t.Error("the module's base changed while it was in use")
	}
	callBoth(f2, f3)
	if s := f2.Stats(); s.Discards != 0 || s.Resets == 0 {
		t.Errorf("stats %+v: want every call reset", s)
	}
}

// TestImagesConcurrent: functions of one module made, called and closed
// concurrently share and release their images safely (run with -race),
// and leave no image behind.
func TestImagesConcurrent(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	wasm, err := os.ReadFile("testdata/reactor.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, "reactor", wasm, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 5 {
				f, err := m.NewFunction(ctx, FunctionSpec{MaxSandboxes: 2, IdleTimeout: -1, Prewarm: 1, Env: map[string]string{"N": fmt.Sprint(i)}})
				if err != nil {
					t.Error(err)
					return
				}
				if out, _, err := call(t, f, "c"); err != nil || out != "11" {
					t.Errorf("got %q %v, want 11", out, err)
				}
				f.Close()
			}
		})
	}
	wg.Wait()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	if len(e.images.m) != 0 {
		t.Errorf("%d base images left after every function closed", len(e.images.m))
	}
}
