package sandbox

import (
	"context"
	"testing"
	"time"
)

// TestReleasedModulesAreFreed: compiled code stays cached while held and
// for IdleModules after its last release, then is freed; the next Compile
// of the same code compiles again.
func TestReleasedModulesAreFreed(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{IdleModules: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	echo := fixture(t, "echo.wasm")
	a, err := e.Compile(ctx, "echo", echo, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Compile(ctx, "echo", echo, Limits{Timeout: time.Second}) // a copy with other limits
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.Release()
	e.evictIdle(now.Add(2 * time.Hour))
	if st := e.Stats(); st.Evictions != 0 || st.Cached != 1 {
		t.Fatalf("with one holder left: %+v, want it kept", st)
	}
	b.Release()
	b.Release() // once too often: no effect
	e.evictIdle(time.Now().Add(30 * time.Minute))
	if st := e.Stats(); st.Evictions != 0 {
		t.Fatalf("released less than IdleModules ago: %+v, want it kept", st)
	}
	e.evictIdle(time.Now().Add(2 * time.Hour))
	if st := e.Stats(); st.Evictions != 1 || st.Cached != 0 {
		t.Fatalf("released over IdleModules ago: %+v, want it freed", st)
	}
	compiles := e.Stats().Compiles
	c, err := e.Compile(ctx, "echo", echo, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Stats().Compiles != compiles+1 {
		t.Fatal("the freed module was not compiled again")
	}
	if res, err := c.Run(ctx, Invocation{Stdin: []byte("hi")}); err != nil || string(res.Stdout) != "hi" {
		t.Fatalf("running the recompiled module: %v", err)
	}
	// A module released by a caller whose code was since recompiled does
	// not touch the new entry.
	a.Release()
	if st := e.Stats(); st.Cached != 1 {
		t.Fatalf("a stale release changed the cache: %+v", st)
	}
	e.evictIdle(time.Now().Add(2 * time.Hour))
	if st := e.Stats(); st.Cached != 1 {
		t.Fatalf("a held module was freed: %+v", st)
	}
}

// TestSweepFreesIdleModules runs the real sweeper with a short idle time.
func TestSweepFreesIdleModules(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{IdleModules: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	m, err := e.Compile(ctx, "echo", fixture(t, "echo.wasm"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	for deadline := time.Now().Add(5 * time.Second); e.Stats().Cached != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper never freed the released module")
		}
	}
}
