package jsrt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/sandbox/sandboxtest"
)

// callKV runs script with params and kv as the function's state.
func callKV(f *sandbox.Function, kv sandbox.KV, script, params string) (string, error) {
	ctx := context.Background()
	if kv != nil {
		ctx = sandbox.WithKV(ctx, kv)
	}
	out, _, err := Call(ctx, f, []byte(script), []byte(params))
	return string(out), err
}

// TestState: cloister.state reaches the function's state through the
// kv_* host functions, with clear errors for bad arguments and limits.
func TestState(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	kv := &sandboxtest.MapKV{MaxValue: 1 << 20}
	const script = `function main(p) { const s = cloister.state; return {r: eval(p.expr)} }`
	for _, c := range []struct{ expr, want string }{
		{`s.get("a")`, `{"r":null}`},
		{`s.put("a", "héllo €😀")`, `{}`},
		{`s.get("a")`, `{"r":"héllo €😀"}`},
		{`s.put("ab", "")`, `{}`},
		{`s.get("ab")`, `{"r":""}`},
		{`s.put("b", "x".repeat(100000))`, `{}`},
		{`s.get("b").length`, `{"r":100000}`},
		{`s.list("a")`, `{"r":["a","ab"]}`},
		{`s.list()`, `{"r":["a","ab","b"]}`},
		{`s.list("zzz")`, `{"r":[]}`},
		{`s.delete("ab")`, `{"r":true}`},
		{`s.delete("ab")`, `{"r":false}`},
		{`s.cas("n", null, "1")`, `{"r":true}`},
		{`s.cas("n", null, "1")`, `{"r":false}`},
		{`s.cas("n", "0", "2")`, `{"r":false}`},
		{`s.cas("n", "1", "2")`, `{"r":true}`},
		{`s.get("n")`, `{"r":"2"}`},
		{`s.cas("n", "2", null)`, `{"r":true}`},
		{`s.get("n")`, `{"r":null}`},
	} {
		if got, err := callKV(f, kv, script, `{"expr":`+jsonString(c.expr)+`}`); err != nil || got != c.want {
			t.Errorf("%s: got %s %v, want %s", c.expr, got, err, c.want)
		}
	}
	// Many keys: list pages through the host's 64 KiB answers.
	long := strings.Repeat("k", 500)
	if got, err := callKV(f, kv, `function main() {
		for (let i = 0; i < 300; i++) cloister.state.put("`+long+`" + String(i).padStart(3, "0"), "v");
		const l = cloister.state.list("`+long+`");
		return {n: l.length, first: l[0].slice(500), last: l[l.length-1].slice(500)} }`, `{}`); err != nil || got != `{"n":300,"first":"000","last":"299"}` {
		t.Errorf("paged list: %s %v", got, err)
	}

	// Errors are thrown, with their kind and a message that says why.
	for _, c := range []struct{ expr, want string }{
		{`s.get(1)`, `TypeError: cloister.state: the key must be a string`},
		{`s.put("k", {})`, `TypeError: cloister.state: the value must be a string`},
		{`s.put("", "v")`, `RangeError: cloister.state: invalid key`},
		{`s.get("x".repeat(513))`, `RangeError: cloister.state: invalid key`},
		{`s.put("big", "x".repeat(1048577))`, `RangeError: cloister.state: value too large`},
		{`s.cas("k", 5, "v")`, `TypeError: cloister.state: the expected value (or null) must be a string`},
		{`s.list(7)`, `TypeError: cloister.state: the prefix must be a string`},
	} {
		got, err := callKV(f, kv, `function main(p) { const s = cloister.state; try { eval(p.expr); return {r: "no error"} } catch (e) { return {r: e.name + ": " + e.message} } }`, `{"expr":`+jsonString(c.expr)+`}`)
		if err != nil || !strings.HasPrefix(got, `{"r":"`+c.want) {
			t.Errorf("%s: got %s %v, want %s", c.expr, got, err, c.want)
		}
	}
	// Without the grant (no KV), every call throws a TypeError that says so.
	if got, err := callKV(f, nil, `function main() { try { cloister.state.get("a") } catch (e) { return {r: e.name + ": " + e.message} } }`, `{}`); err != nil || !strings.Contains(got, `TypeError: cloister.state: not granted`) {
		t.Errorf("without state: %s %v", got, err)
	}
	// A failing store fails the call, whatever the script does with the error.
	kv.SetFail(errors.New("integrity"))
	if _, err := callKV(f, kv, `function main() { try { cloister.state.get("a") } catch (e) {} return {ok: true} }`, `{}`); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("a failing store: got %v, want ErrState", err)
	}
	kv.SetFail(nil)
	if got, err := callKV(f, kv, `function main() { return {r: cloister.state.get("a")} }`, `{}`); err != nil || got != `{"r":"héllo €😀"}` {
		t.Errorf("after a failure: %s %v", got, err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestStateValueOverMemory: a value bigger than the engine's memory fails
// the call with the memory limit, not as a state failure.
func TestStateValueOverMemory(t *testing.T) {
	f := newFunction(t, sandbox.Limits{MemoryPages: 64}, sandbox.Capabilities{}) // 4 MiB
	kv := &sandboxtest.MapKV{}
	kv.Put(context.Background(), []byte("big"), bytes.Repeat([]byte("x"), 8<<20))
	if _, err := callKV(f, kv, `function main() { cloister.state.get("big"); return {} }`, `{}`); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("uncaught: got %v, want ErrOutOfMemory", err)
	}
	// Caught, it is an out-of-memory error like any other, not a state
	// failure, and the call goes on.
	got, err := callKV(f, kv, `function main() { try { cloister.state.get("big") } catch (e) { return {r: String(e)} } }`, `{}`)
	if err != nil || !strings.Contains(got, "out of memory") {
		t.Fatalf("caught: got %s %v", got, err)
	}
}
