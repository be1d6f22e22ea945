package jsrt

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// testEngine is shared by the package's tests, so that the engine module
// is compiled once per memory limit, as on a worker.
var testEngine *sandbox.Engine

func TestMain(m *testing.M) {
	ctx := context.Background()
	e, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		panic(err)
	}
	testEngine = e
	code := m.Run()
	_ = e.Close(ctx)
	os.Exit(code)
}

// newFunction compiles the engine with lim and makes a pooled function.
func newFunction(t testing.TB, lim sandbox.Limits, caps sandbox.Capabilities) *sandbox.Function {
	t.Helper()
	ctx := context.Background()
	m, err := Compile(ctx, testEngine, lim)
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewFunction(ctx, sandbox.FunctionSpec{Name: "js-test", MaxSandboxes: 2, IdleTimeout: -1, Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func call(t *testing.T, f *sandbox.Function, script, params string) (string, sandbox.Result, error) {
	t.Helper()
	out, res, err := Call(context.Background(), f, []byte(script), []byte(params))
	return string(out), res, err
}

func TestResults(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	tests := []struct {
		name, script, params, want string
	}{
		{"object", `function main(p) { return {greeting: "Hello, " + p.name + "!"} }`, `{"name":"Ada"}`, `{"greeting":"Hello, Ada!"}`},
		{"no params", `function main(p) { return {keys: Object.keys(p).length} }`, ``, `{"keys":0}`},
		{"undefined result", `function main() {}`, `{}`, `{}`},
		{"array", `function main(p) { return p.xs.map(x => x * 2) }`, `{"xs":[1,2,3]}`, `[2,4,6]`},
		{"module.exports.main", `module.exports.main = p => ({n: p.n + 1})`, `{"n":41}`, `{"n":42}`},
		{"exports.main", `exports.main = function(p) { return {ok: true} }`, `{}`, `{"ok":true}`},
		{"module.exports function", `module.exports = p => ({v: p.v})`, `{"v":"x"}`, `{"v":"x"}`},
		{"promise", `function main(p) { return new Promise(r => r({v: p.v * 3})) }`, `{"v":5}`, `{"v":15}`},
		{"async chain", `async function main(p) { const a = await Promise.resolve(1); const b = await (async () => 2)(); return {sum: a + b + p.c} }`, `{"c":3}`, `{"sum":6}`},
		{"thenable", `function main() { return {then(r) { r({t: 1}) }} }`, `{}`, `{"t":1}`},
		{"unicode", `function main(p) { return {s: p.s.toUpperCase(), n: [...p.s].length} }`, `{"s":"héllo €😀"}`, `{"s":"HÉLLO €😀","n":8}`},
		{"nested json", `function main(p) { return {echo: p} }`, `{"a":{"b":[null,true,1.5,"c"]}}`, `{"echo":{"a":{"b":[null,true,1.5,"c"]}}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := call(t, f, tc.script, tc.params)
			if err != nil {
				t.Fatalf("got error %v, want %s", err, tc.want)
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestExceptions(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	tests := []struct {
		name, script, wantName, wantMsg string
	}{
		{"throw", `function main() { throw new Error("boom") }`, "Error", "boom"},
		{"type error", `function main(p) { return p.missing.field }`, "TypeError", "cannot read property 'field' of undefined"},
		{"rejected promise", `async function main() { await null; throw new RangeError("later") }`, "RangeError", "later"},
		{"throw string", `function main() { throw "plain" }`, "Error", "plain"},
		{"syntax error", `function main( { return 1 }`, "SyntaxError", ""},
		{"no main", `var x = 1`, "ReferenceError", "the script defines no function main"},
		{"top level throw", `throw new Error("at load")`, "Error", "at load"},
		{"never settles", `function main() { return new Promise(() => {}) }`, "TypeError", "never settles"},
		{"deep recursion", `function f(n) { return f(n + 1) + 1 } function main() { return f(0) }`, "InternalError", "stack overflow"},
		{"unserialisable", `function main() { return {n: 1n} }`, "TypeError", "BigInt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := call(t, f, tc.script, `{}`)
			var ex *Exception
			if !errors.As(err, &ex) || !errors.Is(err, ErrException) {
				t.Fatalf("got %v, want an exception", err)
			}
			if ex.Name != tc.wantName || !strings.Contains(ex.Message, tc.wantMsg) {
				t.Fatalf("got %s: %q, want %s containing %q", ex.Name, ex.Message, tc.wantName, tc.wantMsg)
			}
		})
	}
	// The sandbox is still good after every exception.
	if got, _, err := call(t, f, `function main() { return {ok: 1} }`, `{}`); err != nil || got != `{"ok":1}` {
		t.Fatalf("after exceptions: got %s, %v", got, err)
	}
}

func TestExceptionStack(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	_, _, err := call(t, f, "function inner() { throw new Error('x') }\nfunction main() { inner() }", `{}`)
	var ex *Exception
	if !errors.As(err, &ex) || !strings.Contains(ex.Stack, "inner") || !strings.Contains(ex.Stack, "action.js") {
		t.Fatalf("got %v (stack %q), want a stack naming inner in action.js", err, ex.Stack)
	}
}

func TestFreshStateEveryCall(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	script := `var counter = (globalThis.counter || 0) + 1;
globalThis.counter = counter;
Object.prototype.polluted = (Object.prototype.polluted || 0) + 1;
function main() { return {counter: counter, polluted: ({}).polluted} }`
	for i := range 5 {
		got, res, err := call(t, f, script, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		if got != `{"counter":1,"polluted":1}` {
			t.Fatalf("call %d: got %s, want counter and polluted at 1", i, got)
		}
		if i > 0 && (!res.Reused || res.Generation == 0) {
			t.Fatalf("call %d: sandbox not reused from the pool (reused %v, generation %d)", i, res.Reused, res.Generation)
		}
	}
	// A function defined by one call is gone in the next.
	if _, _, err := call(t, f, `globalThis.leak = 1; function main() { return {} }`, `{}`); err != nil {
		t.Fatal(err)
	}
	if got, _, err := call(t, f, `function main() { return {leak: typeof leak} }`, `{}`); err != nil || got != `{"leak":"undefined"}` {
		t.Fatalf("got %s, %v, want leak undefined", got, err)
	}
}

func TestInfiniteLoopStopped(t *testing.T) {
	t.Run("fuel", func(t *testing.T) {
		f := newFunction(t, sandbox.Limits{Fuel: 200_000_000, Timeout: time.Minute}, sandbox.Capabilities{})
		_, res, err := call(t, f, `function main() { for (;;) {} }`, `{}`)
		if !errors.Is(err, sandbox.ErrFuelExhausted) {
			t.Fatalf("got %v, want fuel exhausted", err)
		}
		if !res.InstructionsMeasured || res.Instructions < 200_000_000 {
			t.Fatalf("instructions %d (measured %v), want at least the fuel", res.Instructions, res.InstructionsMeasured)
		}
		if got, _, err := call(t, f, `function main() { return {after: true} }`, `{}`); err != nil || got != `{"after":true}` {
			t.Fatalf("after the loop: got %s, %v", got, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFunction(t, sandbox.Limits{Timeout: 200 * time.Millisecond}, sandbox.Capabilities{})
		_, _, err := call(t, f, `async function main() { await null; while (true) {} }`, `{}`)
		if !errors.Is(err, sandbox.ErrTimeout) {
			t.Fatalf("got %v, want timeout", err)
		}
	})
}

func TestMemoryBombStopped(t *testing.T) {
	f := newFunction(t, sandbox.Limits{MemoryPages: 512}, sandbox.Capabilities{}) // 32 MiB
	bombs := map[string]string{
		"arrays":  `function main() { const a = []; for (;;) a.push(new Array(100000).fill(1.5)) }`,
		"strings": `function main() { const a = []; for (let i = 0; ; i++) a.push("x".repeat(1 << 20) + i) }`,
		"buffers": `function main() { const a = []; for (;;) a.push(new ArrayBuffer(1 << 20)) }`,
	}
	for name, script := range bombs {
		t.Run(name, func(t *testing.T) {
			_, res, err := call(t, f, script, `{}`)
			if !errors.Is(err, ErrOutOfMemory) && !errors.Is(err, sandbox.ErrMemoryLimit) {
				t.Fatalf("got %v, want out of memory", err)
			}
			if res.MemoryPages > 512 {
				t.Fatalf("memory reached %d pages, over the limit of 512", res.MemoryPages)
			}
		})
	}
	if got, _, err := call(t, f, `function main() { return {ok: true} }`, `{}`); err != nil || got != `{"ok":true}` {
		t.Fatalf("after the bombs: got %s, %v", got, err)
	}
}

func TestNoHostAccess(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	got, _, err := call(t, f, `function main() { return {
		require: typeof require, process: typeof process, std: typeof std, os: typeof os,
		fetch: typeof fetch, XMLHttpRequest: typeof XMLHttpRequest, date: new Date().toISOString() } }`, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]string
	if err := json.Unmarshal([]byte(got), &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"require", "process", "std", "os", "fetch", "XMLHttpRequest"} {
		if r[k] != "undefined" {
			t.Errorf("%s is %s, want undefined", k, r[k])
		}
	}
	// Without the clock capability the guest sees the sandbox's fake clock.
	if !strings.HasPrefix(r["date"], "2022-01-01T00:00:00") {
		t.Errorf("date %s, want the deterministic clock's 2022-01-01", r["date"])
	}
}

func TestCapabilities(t *testing.T) {
	script := `function main() { return {r: Math.random(), y: new Date().getUTCFullYear()} }`
	denied := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	a, _, err1 := call(t, denied, script, `{}`)
	b, _, err2 := call(t, denied, script, `{}`)
	if err1 != nil || err2 != nil || a != b {
		t.Fatalf("without capabilities two calls differ: %s vs %s (%v, %v)", a, b, err1, err2)
	}
	granted := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{Clock: true, Random: true})
	c, _, err1 := call(t, granted, script, `{}`)
	d, _, err2 := call(t, granted, script, `{}`)
	if err1 != nil || err2 != nil || c == d {
		t.Fatalf("with random granted two calls agree: %s vs %s (%v, %v)", c, d, err1, err2)
	}
	var r struct{ Y int }
	if err := json.Unmarshal([]byte(c), &r); err != nil || r.Y < 2025 {
		t.Fatalf("with clock granted: %s, want the real year", c)
	}
}

func TestConsoleGoesToLog(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	got, res, err := call(t, f, `function main() { console.log("hello", 42, {a: 1}); console.error("oops"); return {} }`, `{}`)
	if err != nil || got != `{}` {
		t.Fatalf("got %s, %v", got, err)
	}
	if s := string(res.Stderr); s != "hello 42 [object Object]\noops\n" {
		t.Fatalf("log %q", s)
	}
}

func TestMetering(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	_, small, err := call(t, f, `function main() { return {} }`, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	_, big, err := call(t, f, `function main() { let s = 0; for (let i = 0; i < 100000; i++) s += i; return {s} }`, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if !small.InstructionsMeasured || !big.InstructionsMeasured || big.Instructions <= small.Instructions*2 {
		t.Fatalf("instructions: small %d, loop %d; want the loop to cost more", small.Instructions, big.Instructions)
	}
	if small.SnapshotHash == "" || small.HostCalls == 0 {
		t.Fatalf("snapshot %q, host calls %d", small.SnapshotHash, small.HostCalls)
	}
}

func TestRequestValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		script, params string
		want           error
	}{
		"empty script": {"", "{}", ErrScript},
		"nul":          {"function main(){}\x00", "{}", ErrScript},
		"not utf8":     {"function main(){}\xff", "{}", ErrScript},
		"array params": {"function main(){}", "[1]", ErrParams},
		"bad json":     {"function main(){}", "{", ErrParams},
		"string":       {"function main(){}", `"x"`, ErrParams},
	} {
		if _, err := Request([]byte(tc.script), []byte(tc.params)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func TestResponseDecoding(t *testing.T) {
	for name, tc := range map[string]struct {
		out  string
		want error
	}{
		"empty":      {"", ErrEngine},
		"bad tag":    {"Z{}", ErrEngine},
		"bad result": {"R{", ErrEngine},
		"bad exc":    {"E[", ErrEngine},
		"oom":        {"O", ErrOutOfMemory},
		"engine":     {"Xnope", ErrEngine},
		"exception":  {`E{"name":"Error","message":"m"}`, ErrException},
	} {
		if _, err := Response([]byte(tc.out)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if got, err := Response([]byte(`R{"a":1}`)); err != nil || string(got) != `{"a":1}` {
		t.Errorf("result: got %s, %v", got, err)
	}
}

func TestCheck(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	ctx := context.Background()
	if err := Check(ctx, f, []byte(`function main() { throw new Error("not run") }`)); err != nil {
		t.Fatalf("valid script: %v", err)
	}
	err := Check(ctx, f, []byte("function main() {\n  return {\n}}}"))
	var ex *Exception
	if !errors.As(err, &ex) || ex.Name != "SyntaxError" {
		t.Fatalf("got %v, want a SyntaxError", err)
	}
	if err := Check(ctx, f, nil); !errors.Is(err, ErrScript) {
		t.Fatalf("empty script: got %v", err)
	}
	h, err := Inspect(ctx, testEngine, sandbox.Limits{}, sandbox.FunctionSpec{Name: "js-test"}, []byte(`function main() {}`))
	if err != nil || h != f.Snapshot().Hash() {
		t.Fatalf("Inspect: got %q, %v; want the snapshot %q", h, err, f.Snapshot().Hash())
	}
}
