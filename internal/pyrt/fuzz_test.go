package pyrt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// FuzzResponse: the engine's answer is guest output. Response must never
// panic, and it returns either valid JSON or one of its errors.
func FuzzResponse(f *testing.F) {
	for _, s := range []string{"", "R{}", `R{"a":[1,2]}`, "R", "E{}", `E{"name":"ValueError","message":"m","traceback":"t"}`, "E", "O", "Xmsg", "Z", "R\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Response(b)
		if err == nil {
			if len(b) == 0 || b[0] != 'R' || !bytes.Equal(out, b[1:]) {
				t.Fatalf("accepted %q as %q", b, out)
			}
			return
		}
		if !errors.Is(err, ErrException) && !errors.Is(err, ErrOutOfMemory) && !errors.Is(err, ErrEngine) {
			t.Fatalf("%q: unexpected error %v", b, err)
		}
	})
}

// FuzzRequest: framing keeps the script and the parameters apart exactly,
// for calls, loads and calls of a loaded script.
func FuzzRequest(f *testing.F) {
	f.Add([]byte("def main(p): pass"), []byte(`{"a":1}`))
	f.Add([]byte("x"), []byte(""))
	f.Add([]byte("\xff"), []byte("[]"))
	f.Fuzz(func(t *testing.T, script, params []byte) {
		if in, err := Request(script, params); err != nil {
			if !errors.Is(err, ErrScript) && !errors.Is(err, ErrParams) {
				t.Fatalf("unexpected error %v", err)
			}
		} else if string(in[:4]) != "CPY1" || int(binary.LittleEndian.Uint32(in[4:])) != len(script) || !bytes.Equal(in[8:8+len(script)], script) || CheckScript(script) != nil {
			t.Fatalf("bad framing of %q", script)
		}
		if in, err := LoadRequest(script); err != nil {
			if !errors.Is(err, ErrScript) {
				t.Fatalf("unexpected error %v", err)
			}
		} else if string(in[:4]) != "CPYI" || int(binary.LittleEndian.Uint32(in[4:])) != len(script) || !bytes.Equal(in[8:], script) {
			t.Fatalf("bad load framing of %q", script)
		}
		if in, err := InvokeRequest(params); err != nil {
			if !errors.Is(err, ErrParams) {
				t.Fatalf("unexpected error %v", err)
			}
		} else if string(in[:8]) != "CPYP\x00\x00\x00\x00" {
			t.Fatalf("bad invoke framing of %q", params)
		}
	})
}

// FuzzEngine runs arbitrary scripts in the engine: whatever the script,
// the answer is a result, an exception, out of memory or a sandbox limit,
// never a malformed answer, and the next call still works.
func FuzzEngine(f *testing.F) {
	for _, s := range []string{
		"def main(p):\n    return p\n",
		"def main(p):\n    raise SystemExit(1)\n",
		"class X:\n    def __repr__(self): raise ValueError\ndef main(p):\n    return [X()]\n",
		"def main(p):\n    a = []\n    a.append(a)\n    return a\n",
		"def main(p):\n    return float('inf')\n",
		"main = print\n",
		"import sys\ndef main(p):\n    sys.stdout = None\n    return {}\n",
		"import builtins\ndef main(p):\n    builtins.__import__ = None\n    raise ValueError('x')\n",
		"def main(p):\n    return '\\ud800'\n",
		"import gc\ndef main(p):\n    gc.unfreeze(); gc.collect()\n    return {}\n",
	} {
		f.Add([]byte(s), []byte(`{"x":1}`))
	}
	fn := newFunction(f, sandbox.Limits{Fuel: 200_000_000, Timeout: 2 * time.Second}, sandbox.Capabilities{})
	f.Fuzz(func(t *testing.T, script, params []byte) {
		if CheckScript(script) != nil {
			return
		}
		if _, err := Request(script, params); err != nil {
			return
		}
		ctx := context.Background()
		_, _, err := Call(ctx, fn, script, params)
		if errors.Is(err, ErrEngine) {
			t.Fatalf("script %q: %v", script, err)
		}
		if out, _, err := Call(ctx, fn, []byte("def main(p):\n    return {'ok': 1}\n"), nil); err != nil || string(out) != `{"ok":1}` {
			t.Fatalf("after %q: %s, %v", script, out, err)
		}
	})
}
