package jsrt

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
	for _, s := range []string{"", "R{}", `R{"a":[1,2]}`, "R", "E{}", `E{"name":"Error","message":"m","stack":"s"}`, "E", "O", "Xmsg", "Z", "R\xff"} {
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

// FuzzRequest: framing keeps the script and the parameters apart exactly.
func FuzzRequest(f *testing.F) {
	f.Add([]byte("function main(){}"), []byte(`{"a":1}`))
	f.Add([]byte("x"), []byte(""))
	f.Add([]byte("\xff"), []byte("[]"))
	f.Fuzz(func(t *testing.T, script, params []byte) {
		in, err := Request(script, params)
		if err != nil {
			if !errors.Is(err, ErrScript) && !errors.Is(err, ErrParams) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if string(in[:4]) != "CJS1" || int(binary.LittleEndian.Uint32(in[4:])) != len(script) || !bytes.Equal(in[8:8+len(script)], script) {
			t.Fatalf("bad framing of %q", script)
		}
		if CheckScript(script) != nil {
			t.Fatalf("framed an invalid script %q", script)
		}
	})
}

// FuzzEngine runs arbitrary scripts in the engine: whatever the script,
// the answer is a result, an exception, out of memory or a sandbox limit,
// never a malformed answer, and the next call still works.
func FuzzEngine(f *testing.F) {
	for _, s := range []string{
		`function main(p) { return p }`,
		`async function main() { throw 1 }`,
		`function main() { return new Proxy({}, {get() { throw 2 }}) }`,
		`function main() { const o = {}; o.o = o; return o }`,
		`function main() { return Symbol() }`,
		`module.exports = 5`,
		`function main() { return {toJSON() { return undefined }} }`,
		`function main() { Promise.reject(1); return 1 }`,
		`function main() { return [function(){}, undefined, NaN, -0, 1e400] }`,
		"function main() { return '\\ud800' }",
	} {
		f.Add([]byte(s), []byte(`{"x":1}`))
	}
	fn := newFunction(f, sandbox.Limits{Fuel: 50_000_000, Timeout: 2 * time.Second, MemoryPages: 256}, sandbox.Capabilities{})
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
		if out, _, err := Call(ctx, fn, []byte(`function main() { return {ok: 1} }`), nil); err != nil || string(out) != `{"ok":1}` {
			t.Fatalf("after %q: %s, %v", script, out, err)
		}
	})
}
