package pyrt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/sandbox/sandboxtest"
)

// callKV runs script with params and kv as the function's state (nil: not
// granted).
func callKV(f *sandbox.Function, kv sandbox.KV, script, params string) (string, error) {
	ctx := context.Background()
	if kv != nil {
		ctx = sandbox.WithKV(ctx, kv)
	}
	out, _, err := Call(ctx, f, []byte(script), []byte(params))
	return string(out), err
}

// invokeKV calls main of f's loaded script with kv as its state.
func invokeKV(f *sandbox.Function, kv sandbox.KV, params string) (string, error) {
	ctx := context.Background()
	if kv != nil {
		ctx = sandbox.WithKV(ctx, kv)
	}
	out, _, err := Invoke(ctx, f, []byte(params))
	return string(out), err
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// evalScript evaluates the expression p["expr"] with s = cloister.state
// and answers {"r": its value}.
const evalScript = `from cloister import state as s
def main(p):
    return {"r": eval(p["expr"])}
`

// TestState: cloister.state reaches the function's state through the
// kv_* host functions: str and bytes values, absent keys, compare-and-set
// on values and absence, listing by prefix.
func TestState(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	kv := &sandboxtest.MapKV{MaxValue: 1 << 20}
	for _, c := range []struct{ expr, want string }{
		{`s.get("a")`, `{"r":null}`},
		{`s.get("a", "default")`, `{"r":"default"}`},
		{`s.put("a", "héllo €😀")`, `{"r":null}`},
		{`s.get("a")`, `{"r":"héllo €😀"}`},
		{`s.get("a", binary=True) == "héllo €😀".encode()`, `{"r":true}`},
		{`s.put("ab", "")`, `{"r":null}`},
		{`s.get("ab")`, `{"r":""}`},
		{`s.put("b", "x" * 100000)`, `{"r":null}`},
		{`len(s.get("b"))`, `{"r":100000}`},
		{`s.put("bin", bytes(range(256)))`, `{"r":null}`},
		{`s.get("bin", binary=True) == bytes(range(256))`, `{"r":true}`},
		{`s.put("ba", bytearray(b"xy")) or s.put("mv", memoryview(b"zw")) or s.get("ba") + s.get("mv")`, `{"r":"xyzw"}`},
		{`s.list("a")`, `{"r":["a","ab"]}`},
		{`s.list()`, `{"r":["a","ab","b","ba","bin","mv"]}`},
		{`s.list("zzz")`, `{"r":[]}`},
		{`s.delete("ab")`, `{"r":true}`},
		{`s.delete("ab")`, `{"r":false}`},
		{`s.cas("n", None, "1")`, `{"r":true}`},
		{`s.cas("n", None, "1")`, `{"r":false}`},
		{`s.cas("n", "0", "2")`, `{"r":false}`},
		{`s.cas("n", "1", "2")`, `{"r":true}`},
		{`s.get("n")`, `{"r":"2"}`},
		{`s.cas("n", b"2", b"3")`, `{"r":true}`},
		{`s.cas("n", "3", None)`, `{"r":true}`},
		{`s.get("n")`, `{"r":null}`},
		{`s.cas("n", "3", None)`, `{"r":false}`},
		{`repr(s)`, `{"r":"<cloister.state>"}`},
	} {
		if got, err := callKV(f, kv, evalScript, `{"expr":`+jsonString(c.expr)+`}`); err != nil || got != c.want {
			t.Errorf("%s: got %s %v, want %s", c.expr, got, err, c.want)
		}
	}
	// import cloister works as well as from cloister import state.
	if got, err := callKV(f, kv, "import cloister\ndef main(p):\n    return {'r': cloister.state.get('a')}\n", `{}`); err != nil || got != `{"r":"héllo €😀"}` {
		t.Errorf("import cloister: %s %v", got, err)
	}
	// Many long keys: list pages through the host's 64 KiB answers.
	long := strings.Repeat("k", 500)
	if got, err := callKV(f, kv, `from cloister import state
def main(p):
    for i in range(300):
        state.put("`+long+`" + str(i).zfill(3), "v")
    keys = state.list("`+long+`")
    return {"n": len(keys), "first": keys[0][500:], "last": keys[-1][500:]}
`, `{}`); err != nil || got != `{"n":300,"first":"000","last":"299"}` {
		t.Errorf("paged list: %s %v", got, err)
	}
}

// quotaKV refuses any put of the key "full" with the quota error.
type quotaKV struct{ sandboxtest.MapKV }

func (q *quotaKV) Put(ctx context.Context, key, value []byte) error {
	if string(key) == "full" {
		return fmt.Errorf("%w: 100000 keys", sandbox.ErrKVQuota)
	}
	return q.MapKV.Put(ctx, key, value)
}

// TestStateErrors: every misuse and every refusal of the host is a Python
// exception with a message that says what went wrong, of a class the
// script can catch.
func TestStateErrors(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	kv := &quotaKV{sandboxtest.MapKV{MaxValue: 1 << 20}}
	if err := kv.Put(context.Background(), []byte("latin1"), []byte{0xe9}); err != nil {
		t.Fatal(err)
	}
	const script = `from cloister import state as s
import cloister
def main(p):
    try:
        eval(p["expr"])
    except Exception as e:
        t = type(e)
        name = t.__qualname__ if t.__module__ == "builtins" else t.__module__ + "." + t.__qualname__
        return {"r": name + ": " + str(e), "value_error": isinstance(e, ValueError),
                "state_error": isinstance(e, cloister.StateError), "code": getattr(e, "code", None)}
    return {"r": "no error"}
`
	for _, c := range []struct {
		expr, want string
		valueError bool
		code       int // 0: not a StateError
	}{
		{`s.get(1)`, `TypeError: cloister.state: the key must be a str, not int`, false, 0},
		{`s.get(b"k")`, `TypeError: cloister.state: the key must be a str, not bytes`, false, 0},
		{`s.put("k", {})`, `TypeError: cloister.state: the value must be a str or bytes, not dict`, false, 0},
		{`s.put("k", None)`, `TypeError: cloister.state: the value must be a str or bytes, not NoneType`, false, 0},
		{`s.put("k", "\ud800")`, `ValueError: cloister.state: the value is not encodable as UTF-8`, true, 0},
		{`s.cas("k", 5, "v")`, `TypeError: cloister.state: the expected value (or None) must be a str or bytes, not int`, false, 0},
		{`s.cas("k", None, 5)`, `TypeError: cloister.state: the new value (or None) must be a str or bytes, not int`, false, 0},
		{`s.list(7)`, `TypeError: cloister.state: the prefix must be a str, not int`, false, 0},
		{`s.put("", "v")`, `cloister.InvalidKey: cloister.state: invalid key: 1 to 512 bytes of UTF-8`, true, -2},
		{`s.get("x" * 513)`, `cloister.InvalidKey: cloister.state: invalid key: 1 to 512 bytes of UTF-8`, true, -2},
		{`s.delete("é" * 257)`, `cloister.InvalidKey: cloister.state: invalid key: 1 to 512 bytes of UTF-8`, true, -2},
		{`s.get("\ud800")`, `cloister.InvalidKey: cloister.state: the key is not encodable as UTF-8`, true, -2},
		{`s.put("big", "x" * ((1 << 20) + 1))`, `cloister.ValueTooLarge: cloister.state: value too large`, true, -3},
		{`s.cas("big", None, b"x" * ((1 << 20) + 1))`, `cloister.ValueTooLarge: cloister.state: value too large`, true, -3},
		{`s.put("full", "v")`, `cloister.QuotaExceeded: cloister.state: the function's state quota (keys or bytes) is exhausted`, false, -4},
		{`s.get("latin1")`, `ValueError: cloister.state: the value of 'latin1' is not UTF-8 text; read it with get(key, binary=True)`, true, 0},
	} {
		got, err := callKV(f, kv, script, `{"expr":`+jsonString(c.expr)+`}`)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var r struct {
			R          string `json:"r"`
			ValueError bool   `json:"value_error"`
			StateError bool   `json:"state_error"`
			Code       int    `json:"code"`
		}
		if err := json.Unmarshal([]byte(got), &r); err != nil {
			t.Fatalf("%s: %s: %v", c.expr, got, err)
		}
		if r.R != c.want || r.ValueError != c.valueError || r.StateError != (c.code != 0) || r.Code != c.code {
			t.Errorf("%s:\n got %s\nwant %q, ValueError %v, code %d", c.expr, got, c.want, c.valueError, c.code)
		}
	}
	// Uncaught, a state error fails the call as the exception it is.
	_, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    state.put('', 'v')\n", `{}`)
	var e *Exception
	if !errors.As(err, &e) || e.Name != "cloister.InvalidKey" || !strings.Contains(e.Traceback, `state.put('', 'v')`) {
		t.Errorf("uncaught: got %v, want cloister.InvalidKey with the script's line", err)
	}
}

// TestStateDenied: without the manifest's grant (no KV for the call) every
// operation raises StateDenied, a PermissionError that says why; and
// while a script's top level is loaded at deploy there is no state either.
func TestStateDenied(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	const want = "cloister.state: not granted to this function (the manifest's capabilities.state), and never available while the script's top level runs at deploy"
	for _, expr := range []string{`s.get("a")`, `s.put("a", "v")`, `s.delete("a")`, `s.cas("a", None, "v")`, `s.list()`} {
		got, err := callKV(f, nil, `from cloister import state as s, StateDenied
def main(p):
    try:
        eval(p["expr"])
    except StateDenied as e:
        return {"r": str(e), "permission": isinstance(e, PermissionError), "code": e.code}
`, `{"expr":`+jsonString(expr)+`}`)
		if wantJSON := `{"r":` + jsonString(want) + `,"permission":true,"code":-5}`; err != nil || got != wantJSON {
			t.Errorf("%s: got %s %v, want %s", expr, got, err, wantJSON)
		}
	}
	_, err := callKV(f, nil, "from cloister import state\ndef main(p):\n    return {'n': state.get('n')}\n", `{}`)
	var e *Exception
	if !errors.As(err, &e) || e.Name != "cloister.StateDenied" || e.Message != want {
		t.Errorf("uncaught: got %v, want cloister.StateDenied", err)
	}
	// A top level that uses the state at deploy: every call answers the
	// load's error.
	g := newLoaded(t, sandbox.Limits{}, "from cloister import state\nN = state.get('n')\ndef main(p):\n    return {}\n")
	kv := &sandboxtest.MapKV{}
	if _, err := invokeKV(g, kv, `{}`); !errors.As(err, &e) || e.Name != "cloister.StateDenied" {
		t.Errorf("state at deploy: got %v, want cloister.StateDenied", err)
	}
}

// TestStateFailure: a state that fails (integrity, availability) fails the
// call with sandbox.ErrState, whatever the script does with the
// exception; the next call goes on.
func TestStateFailure(t *testing.T) {
	f := newFunction(t, sandbox.Limits{}, sandbox.Capabilities{})
	kv := &sandboxtest.MapKV{}
	if _, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    state.put('a', 'v')\n", `{}`); err != nil {
		t.Fatal(err)
	}
	kv.SetFail(errors.New("integrity"))
	if _, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    try:\n        state.get('a')\n    except Exception:\n        pass\n    return {'ok': True}\n", `{}`); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("a failing store: got %v, want ErrState", err)
	}
	kv.SetFail(nil)
	if got, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    return {'r': state.get('a')}\n", `{}`); err != nil || got != `{"r":"v"}` {
		t.Errorf("after a failure: %s %v", got, err)
	}
}

// TestStatePersists: values written through cloister.state outlive the
// call, in every sandbox of the function, while its globals start again
// from the snapshot at every call.
func TestStatePersists(t *testing.T) {
	const script = `from cloister import state
calls = 0
def main(p):
    global calls
    calls += 1
    n = int(state.get("n", "0")) + 1
    state.put("n", str(n))
    return {"calls": calls, "n": n}
`
	kv := &sandboxtest.MapKV{}
	f := newLoaded(t, sandbox.Limits{}, script)
	for i := 1; i <= 5; i++ {
		if got, err := invokeKV(f, kv, `{}`); err != nil || got != fmt.Sprintf(`{"calls":1,"n":%d}`, i) {
			t.Fatalf("call %d: got %s %v", i, got, err)
		}
	}
	// Another function (another worker) of the same state sees it too.
	g := newLoaded(t, sandbox.Limits{}, script)
	if got, err := invokeKV(g, kv, `{}`); err != nil || got != `{"calls":1,"n":6}` {
		t.Fatalf("another function: got %s %v", got, err)
	}
	if v, ok, _ := kv.Get(context.Background(), []byte("n")); !ok || string(v) != "6" {
		t.Fatalf("the store holds %q %v, want 6", v, ok)
	}
}

// TestStateValueOverMemory: a value bigger than the engine's memory fails
// the call with the memory limit, not as a state failure; caught, it is a
// MemoryError like any other.
func TestStateValueOverMemory(t *testing.T) {
	f := newFunction(t, sandbox.Limits{MemoryPages: MinMemoryPages}, sandbox.Capabilities{})
	kv := &sandboxtest.MapKV{}
	if err := kv.Put(context.Background(), []byte("big"), bytes.Repeat([]byte("x"), 8<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    state.get('big')\n", `{}`); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("uncaught: got %v, want ErrOutOfMemory", err)
	}
	got, err := callKV(f, kv, "from cloister import state\ndef main(p):\n    try:\n        state.get('big')\n    except MemoryError:\n        return {'r': 'MemoryError'}\n", `{}`)
	if err != nil || got != `{"r":"MemoryError"}` {
		t.Fatalf("caught: got %s %v", got, err)
	}
}
