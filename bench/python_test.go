package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
)

// helloPy is the Python example action.
const helloPy = "../examples/hello-py/main.py"

// pyModule is examples/hello-py as a cold-start module: the same input
// and exact output as hello-js.
func pyModule(tb testing.TB) coldModule {
	tb.Helper()
	script, err := os.ReadFile(helloPy)
	if err != nil {
		tb.Fatal(err)
	}
	return coldModule{name: "hello-py", fn: "hpy", wasm: script,
		input: []byte(`{"name":"Ada"}`), want: []byte(`{"greeting":"Hello, Ada!","calls":1}`),
		manifest: func(m *bundle.Manifest) {
			m.Runtime, m.ABI = bundle.RuntimePython, bundle.ABIPython
			m.Limits.MemoryPages = bundle.DefaultPythonMemoryPages
		},
		// New Python code is a new script: a comment with n. Its import,
		// and the snapshot after it, happen at deploy.
		patch: func(script []byte, n uint64) ([]byte, error) {
			return append(append([]byte(nil), script...), fmt.Sprintf("\n# %016x\n", n)...), nil
		}}
}

// BenchmarkPythonCalls measures Python functions end to end through the
// client SDK (per-request HPKE, receipts verified) on the cold-start node,
// with the Python engine already compiled (the warm-up deploy compiles it):
//
//   - deploy-to-first-result/hello-py-new-code: sign, upload and register
//     a new script (the coordinator has a worker import it and certify the
//     snapshot after the import), then invoke it once;
//   - warm/hello-py: one call with the pool warm;
//   - native/python3: the same function run by this machine's CPython, one
//     process per call (`python3 -c`), the baseline of the warm call.
func BenchmarkPythonCalls(b *testing.B) {
	e := coldFixture(b)
	m := pyModule(b)
	b.Run("deploy-to-first-result", func(b *testing.B) {
		b.Run(m.name+"-new-code", func(b *testing.B) { e.benchFirstResult(b, m, true) })
	})
	b.Run("warm", func(b *testing.B) {
		b.Run(m.name, func(b *testing.B) { e.benchInvoke(b, m, false) })
	})
	b.Run("native", func(b *testing.B) {
		b.Run("python3", func(b *testing.B) { benchNativePython(b, m) })
	})
}

// nativePython runs m's script with this machine's python3, calling main
// with m's input once, in a new process as `python3 -c` does.
func nativePython(ctx context.Context, m coldModule) ([]byte, error) {
	prog := string(m.wasm) + "\nimport json, sys\nprint(json.dumps(main(json.loads(sys.argv[1])), separators=(',', ':')), end='')\n"
	return exec.CommandContext(ctx, "python3", "-c", prog, string(m.input)).Output()
}

func benchNativePython(b *testing.B, m coldModule) {
	if _, err := exec.LookPath("python3"); err != nil {
		b.Skip("no python3 on this machine")
	}
	var s coldStats
	for b.Loop() {
		t0 := time.Now()
		out, err := nativePython(b.Context(), m)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(out, m.want) {
			b.Fatalf("python3 answered %s, want %s", out, m.want)
		}
		s.op = append(s.op, time.Since(t0))
	}
	s.report(b)
}

// TestPythonBenchModule checks BenchmarkPythonCalls's harness once: the
// example deploys and answers exactly on the node and natively, and new
// Python code deploys too.
func TestPythonBenchModule(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	e := coldFixture(t)
	m := pyModule(t)
	if _, _, err := e.firstResult(t.Context(), "check-"+m.fn, m, true); err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	if _, err := exec.LookPath("python3"); err == nil {
		if out, err := nativePython(t.Context(), m); err != nil || !bytes.Equal(out, m.want) {
			t.Fatalf("native: %s, %v", out, err)
		}
	}
}
