package bench

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/cloister-faas/cloister/internal/bundle"
)

const (
	// helloJS is the JavaScript example action; helloC is the same
	// function in C, a reactor.
	helloJS = "../examples/hello-js/main.js"
	helloC  = "../examples/reactor-hello-c/reactor-hello-c.wasm"
)

// jsModules are examples/hello-js and examples/reactor-hello-c as cold-start
// modules: same input, same exact output.
func jsModules(tb testing.TB) []coldModule {
	tb.Helper()
	script, err := os.ReadFile(helloJS)
	if err != nil {
		tb.Fatal(err)
	}
	cwasm, err := os.ReadFile(helloC)
	if err != nil {
		tb.Fatal(err)
	}
	in, want := []byte(`{"name":"Ada"}`), []byte(`{"greeting":"Hello, Ada!","calls":1}`)
	return []coldModule{
		{name: "hello-js", fn: "hjs", wasm: script, input: in, want: want,
			manifest: func(m *bundle.Manifest) { m.Runtime, m.ABI = bundle.RuntimeJS, bundle.ABIJS },
			// New JavaScript code is a new script: a comment with n.
			patch: func(script []byte, n uint64) ([]byte, error) {
				return append(append([]byte(nil), script...), fmt.Sprintf("\n// %016x\n", n)...), nil
			}},
		{name: "hello-c", fn: "hc", wasm: cwasm, input: in, want: want},
	}
}

// BenchmarkJS measures JavaScript functions end to end through the client
// SDK (per-request HPKE, receipts verified), beside the same function in C,
// on the cold-start node (pools shrink to zero after 100 ms idle):
//
//   - deploy-to-first-result/M: sign, upload and register a new version,
//     then invoke it once (hello-js-new-code: a different script each time;
//     the JavaScript engine's compiled code is shared whatever the script);
//   - after-scale-to-zero/M: one call after the version's pool shrank to
//     zero (a new sandbox from the snapshot);
//   - warm/M: one call with the pool warm.
func BenchmarkJS(b *testing.B) {
	e := coldFixture(b)
	mods := jsModules(b)
	b.Run("deploy-to-first-result", func(b *testing.B) {
		for _, m := range mods {
			b.Run(m.name, func(b *testing.B) { e.benchFirstResult(b, m, false) })
			if m.patch != nil {
				b.Run(m.name+"-new-code", func(b *testing.B) { e.benchFirstResult(b, m, true) })
			}
		}
	})
	b.Run("after-scale-to-zero", func(b *testing.B) {
		for _, m := range mods {
			b.Run(m.name, func(b *testing.B) { e.benchInvoke(b, m, true) })
		}
	})
	b.Run("warm", func(b *testing.B) {
		for _, m := range mods {
			b.Run(m.name, func(b *testing.B) { e.benchInvoke(b, m, false) })
		}
	})
}

// TestJSBenchModules checks BenchmarkJS's harness once: each module
// deploys and answers exactly, and new JavaScript code deploys too.
func TestJSBenchModules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	e := coldFixture(t)
	ctx := context.Background()
	for _, m := range jsModules(t) {
		if _, _, err := e.firstResult(ctx, "check-"+m.fn, m, m.patch != nil); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
}
