package sandbox

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkRunEcho measures one invocation of a small module with a fresh
// instance per run: the baseline that snapshot reset must beat.
func BenchmarkRunEcho(b *testing.B) {
	e := newEngine(b)
	m := compileFixture(b, e, "echo", Limits{})
	inv := Invocation{Stdin: bytes.Repeat([]byte("x"), 64)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := m.Run(ctx, inv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunEchoParallel is BenchmarkRunEcho from GOMAXPROCS goroutines
// at once.
func BenchmarkRunEchoParallel(b *testing.B) {
	e := newEngine(b)
	m := compileFixture(b, e, "echo", Limits{})
	inv := Invocation{Stdin: bytes.Repeat([]byte("x"), 64)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Run(ctx, inv); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCompileCached measures Compile for a module already in the
// cache: the cost the worker pays per request to look its module up.
func BenchmarkCompileCached(b *testing.B) {
	e := newEngine(b)
	wasm := fixture(b, "echo")
	ctx := context.Background()
	if _, err := e.Compile(ctx, "echo", wasm, Limits{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := e.Compile(ctx, "echo", wasm, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
