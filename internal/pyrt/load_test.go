package pyrt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// newLoaded makes a function whose snapshot is taken after script loaded.
func newLoaded(t testing.TB, lim sandbox.Limits, script string) *sandbox.Function {
	t.Helper()
	ctx := context.Background()
	m, err := Compile(ctx, testEngine, lim)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFunction(ctx, m, sandbox.FunctionSpec{Name: "py-loaded", MaxSandboxes: 2, IdleTimeout: -1}, []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func invoke(t *testing.T, f *sandbox.Function, params string) (string, sandbox.Result, error) {
	t.Helper()
	out, res, err := Invoke(context.Background(), f, []byte(params))
	return string(out), res, err
}

// TestLoaded: a script loaded at init runs its top level once, before the
// snapshot; every call starts from that snapshot and only calls main.
func TestLoaded(t *testing.T) {
	script := `import json, random, time
loaded_at = time.time()          # the deterministic clock: 2022-01-01
table = {i: i * i for i in range(1000)}
calls = 0
def main(p):
    global calls
    calls += 1
    table[-1] = 1                # a write to what the snapshot holds
    return {"calls": calls, "n": len(table), "sq": table[p.get("x", 3)], "at": int(loaded_at)}
`
	f := newLoaded(t, sandbox.Limits{}, script)
	for i := range 5 {
		got, res, err := invoke(t, f, `{"x":7}`)
		if err != nil || got != `{"calls":1,"n":1001,"sq":49,"at":1640995200}` {
			t.Fatalf("call %d: got %s, %v (log %q)", i, got, err, res.Stderr)
		}
		if i > 0 && res.Generation == 0 {
			t.Fatalf("call %d: sandbox not reset", i)
		}
	}
	// The snapshot is the script's: the same for the same script, another
	// for another script or for the engine alone.
	g := newLoaded(t, sandbox.Limits{}, script)
	h := newLoaded(t, sandbox.Limits{}, script+"\n# another\n")
	plain := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	if f.Snapshot().Hash() != g.Snapshot().Hash() {
		t.Fatal("two loads of one script left different snapshots")
	}
	if f.Snapshot().Hash() == h.Snapshot().Hash() || f.Snapshot().Hash() == plain.Snapshot().Hash() {
		t.Fatal("the snapshot does not depend on the script")
	}
	// The other requests still work on a loaded function.
	if err := Check(context.Background(), f, []byte("def main(p): pass\n")); err != nil {
		t.Fatalf("Check: %v", err)
	}
	mustCall(t, f, "def main(p):\n    import sys\n    return {'loaded': 'action' in sys.modules}\n", `{}`, `{"loaded":true}`)
	// A function without a loaded script refuses Invoke.
	if _, _, err := invoke(t, plain, `{}`); !errors.Is(err, ErrEngine) {
		t.Fatalf("Invoke without a loaded script: got %v, want ErrEngine", err)
	}
	if _, _, err := invoke(t, f, `[1]`); !errors.Is(err, ErrParams) {
		t.Fatalf("Invoke with an array: got %v, want ErrParams", err)
	}
}

// TestLoadErrors: a script that cannot be loaded answers its error to every
// request, and InspectLoaded reports it.
func TestLoadErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, script, wantName, wantMsg string
	}{
		{"syntax", "def main(p)\n    pass\n", "SyntaxError", "expected ':'"},
		{"top-level raise", "import json\nraise ValueError('at load')\n", "ValueError", "at load"},
		{"no main", "x = 1\n", "NameError", "defines no function main"},
		{"blocked import", "import socket\ndef main(p): pass\n", "ModuleNotFoundError", "socket is not available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoaded(t, sandbox.Limits{}, tc.script)
			for _, err := range []error{
				func() error { _, _, err := invoke(t, f, `{}`); return err }(),
				Check(ctx, f, []byte(tc.script)),
				func() error {
					_, err := InspectLoaded(ctx, testEngine, sandbox.Limits{}, sandbox.FunctionSpec{}, []byte(tc.script))
					return err
				}(),
			} {
				var ex *Exception
				if !errors.As(err, &ex) || ex.Name != tc.wantName || !strings.Contains(ex.Message, tc.wantMsg) {
					t.Fatalf("got %v, want %s containing %q", err, tc.wantName, tc.wantMsg)
				}
				if tc.name != "no main" && !strings.Contains(ex.Traceback, "action.py") {
					t.Fatalf("traceback %q does not name action.py", ex.Traceback)
				}
			}
		})
	}
	h, err := InspectLoaded(ctx, testEngine, sandbox.Limits{}, sandbox.FunctionSpec{Name: "py-loaded"}, []byte("def main(p): pass\n"))
	f := newLoaded(t, sandbox.Limits{}, "def main(p): pass\n")
	if err != nil || h != f.Snapshot().Hash() {
		t.Fatalf("InspectLoaded: got %q, %v; want %q", h, err, f.Snapshot().Hash())
	}
}

// TestLoadedHostile: the limits hold for a loaded function's calls.
func TestLoadedHostile(t *testing.T) {
	f := newLoaded(t, sandbox.Limits{Fuel: 200_000_000}, `import os, sys
def f(n):
    return f(n + 1)
def main(p):
    what = p["what"]
    if what == "loop":
        while True:
            pass
    if what == "recursion":
        return f(0)
    if what == "bomb":
        a = []
        while True:
            a.append(bytearray(1 << 20))
    if what == "file":
        seen = os.path.exists("/tmp/x")
        open("/tmp/x", "w").write("x")
        return {"seen": seen}
    return {"ok": True}
`)
	if _, _, err := invoke(t, f, `{"what":"loop"}`); !errors.Is(err, sandbox.ErrFuelExhausted) {
		t.Fatalf("loop: got %v", err)
	}
	var ex *Exception
	if _, _, err := invoke(t, f, `{"what":"recursion"}`); !errors.As(err, &ex) || ex.Name != "RecursionError" {
		t.Fatalf("recursion: got %v", err)
	}
	if _, _, err := invoke(t, f, `{"what":"bomb"}`); !errors.Is(err, ErrOutOfMemory) && !errors.Is(err, sandbox.ErrMemoryLimit) {
		t.Fatalf("bomb: got %v", err)
	}
	for range 3 {
		if got, _, err := invoke(t, f, `{"what":"file"}`); err != nil || got != `{"seen":false}` {
			t.Fatalf("file: got %s, %v", got, err)
		}
	}
	if got, _, err := invoke(t, f, `{"what":"ok"}`); err != nil || got != `{"ok":true}` {
		t.Fatalf("after: got %s, %v", got, err)
	}
}
