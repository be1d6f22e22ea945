package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/seal"
)

func jsManifest(m *bundle.Manifest) { m.Runtime, m.ABI = bundle.RuntimeJS, bundle.ABIJS }

func clientCode(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return apierrCode(err)
}

// TestJavaScriptEndToEnd deploys examples/hello-js through the node and
// invokes it sealed: the result, the receipt (script hash, engine snapshot,
// metering) and the fresh state of every call.
func TestJavaScriptEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	script, err := os.ReadFile(filepath.Join("..", "..", "examples", "hello-js", "main.js"))
	if err != nil {
		t.Fatal(err)
	}
	fi := e.deploy("hello", script, jsManifest)
	if fi.CodeHash != seal.SHA256Hex(script) {
		t.Fatalf("code hash %s, want the script's sha256", fi.CodeHash)
	}
	fn, err := e.c.Function(ctx, "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	if fn.SnapshotHash == "" {
		t.Fatal("the function certificate has no snapshot hash")
	}
	s, err := e.c.OpenSession(ctx, "hello", 0)
	if err != nil {
		t.Fatal(err)
	}
	var gens []uint64
	for range 4 {
		res, err := s.Invoke(ctx, []byte(`{"name":"Ada"}`))
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"greeting":"Hello, Ada!","calls":1}`; string(res.Output) != want {
			t.Fatalf("output %s, want %s", res.Output, want)
		}
		r := res.Receipt
		if r.Status != "ok" || r.CodeHash != fi.CodeHash || r.SnapshotHash != fn.SnapshotHash || r.ResetGeneration == nil {
			t.Fatalf("receipt status %q code %s snapshot %s generation %v", r.Status, r.CodeHash, r.SnapshotHash, r.ResetGeneration)
		}
		m := r.Metering
		if m.Instructions == nil || *m.Instructions == 0 || m.FuelLimit == nil || m.WallNanos == nil || m.PeakMemoryPages == nil {
			t.Fatalf("metering %+v: want instructions, fuel limit, wall time and memory", m)
		}
		if m.OutputBytes == nil || *m.OutputBytes != int64(len(res.Output)) {
			t.Fatalf("metering output bytes %v, want %d", m.OutputBytes, len(res.Output))
		}
		gens = append(gens, *r.ResetGeneration)
	}
	if gens[len(gens)-1] == 0 {
		t.Errorf("generations %v: the engine's sandbox was never reused", gens)
	}
	// Plain HPKE (no session) works the same.
	res, err := e.c.Invoke(ctx, "hello", []byte(`{}`), client.InvokeOptions{})
	if err != nil || string(res.Output) != `{"greeting":"Hello, stranger!","calls":1}` {
		t.Fatalf("invoke: %s, %v", res.Output, err)
	}
}

// TestJavaScriptErrors: exceptions, limits, bad input and syntax errors
// each give their stable code, and a sealed exception's text never crosses
// the gateway in the clear.
func TestJavaScriptErrors(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	optional := func(m *bundle.Manifest) { jsManifest(m); openToAll(m) }
	e.deploy("thrower", []byte(`function main(p) { throw new Error("boom: " + p.secret) }`), optional)

	_, err := e.c.Invoke(ctx, "thrower", []byte(`{"secret":"visible"}`), client.InvokeOptions{Plaintext: true})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "js_error" || !strings.Contains(ce.Message, "Error: boom: visible") {
		t.Fatalf("plain exception: got %v, want js_error with the message", err)
	}
	marker := randomMarker()
	_, err = e.c.Invoke(ctx, "thrower", []byte(`{"secret":"`+string(marker)+`"}`), client.InvokeOptions{})
	if !errors.As(err, &ce) || ce.Code != "js_error" || ce.Receipt == nil || ce.Receipt.Status != "js_error" {
		t.Fatalf("sealed exception: got %v, want js_error with a verified receipt", err)
	}
	if leaks(e.http.bytes(), marker) || leaks(e.bus.bytes(), marker) {
		t.Fatal("a sealed request's exception text crossed the gateway or the bus in the clear")
	}

	e.deploy("loop", []byte(`function main() { for (;;) {} }`), func(m *bundle.Manifest) { optional(m); m.Limits.Fuel = 100_000_000 })
	if _, err := e.c.Invoke(ctx, "loop", nil, client.InvokeOptions{Plaintext: true}); clientCode(err) != "fuel_exhausted" {
		t.Fatalf("infinite loop: got %v, want fuel_exhausted", err)
	}
	// The default memory limit (256 pages), so that the engine compiled
	// for it serves this function too (a test under -race compiles slowly).
	e.deploy("bomb", []byte(`function main() { const a = []; for (;;) a.push(new Array(1e5).fill(0.5)) }`), optional)
	if _, err := e.c.Invoke(ctx, "bomb", nil, client.InvokeOptions{Plaintext: true}); clientCode(err) != "memory_limit" {
		t.Fatalf("memory bomb: got %v, want memory_limit", err)
	}
	if _, err := e.c.Invoke(ctx, "thrower", []byte(`[1,2]`), client.InvokeOptions{Plaintext: true}); clientCode(err) != "bad_request" {
		t.Fatalf("array input: got %v, want bad_request", err)
	}

	// A script that does not compile is refused at deploy.
	v, err := e.c.NextVersion(ctx, "broken")
	if err != nil {
		t.Fatal(err)
	}
	m := bundle.DefaultManifest("broken")
	m.Version, m.Namespace = v, "default"
	jsManifest(&m)
	b, err := bundle.Build(m, []byte("function main( {"), e.owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Deploy(ctx, "broken", b); clientCode(err) != "invalid_module" || !strings.Contains(err.Error(), "SyntaxError") {
		t.Fatalf("syntax error: got %v, want invalid_module naming the SyntaxError", err)
	}
	// So is a wasm module declared as JavaScript.
	m.Version = v
	b, _ = bundle.Build(m, fixture(t, "echo.wasm"), e.owner)
	if _, err := e.c.Deploy(ctx, "broken", b); clientCode(err) != "invalid_module" {
		t.Fatalf("wasm as js: got %v, want invalid_module", err)
	}
}

// TestJavaScriptState: a JavaScript function with the state grant keeps
// sealed state through cloister.state, concurrent increments by
// compare-and-set lose no update, and one without the grant is refused.
func TestJavaScriptState(t *testing.T) {
	e := start(t)
	script, err := os.ReadFile(filepath.Join("..", "..", "examples", "notes-js", "main.js"))
	if err != nil {
		t.Fatal(err)
	}
	e.deploy("notes", script, func(m *bundle.Manifest) { jsManifest(m); m.Capabilities.State = true })
	e.deploy("nostate", script, jsManifest)
	marker := "secret-" + strings.Repeat("x", 8)
	for _, c := range []struct{ in, want string }{
		{`{"op":"put","key":"note/1","value":"` + marker + `"}`, `{"ok":true}`},
		{`{"op":"get","key":"note/1"}`, `{"value":"` + marker + `"}`},
		{`{"op":"get","key":"note/2"}`, `{"value":null}`},
		{`{"op":"list","key":"note/"}`, `{"keys":["note/1"]}`},
	} {
		if got, err := invokeBusy(e.c, "notes", c.in); err != nil || got != c.want {
			t.Fatalf("%s: got %s %v, want %s", c.in, got, err, c.want)
		}
	}
	const goroutines, each = 4, 8
	concurrently(t, goroutines, each, func() error {
		_, err := invokeBusy(e.c, "notes", `{"op":"incr","key":"n"}`)
		return err
	})
	if got, err := invokeBusy(e.c, "notes", `{"op":"get","key":"n"}`); err != nil || got != `{"value":"32"}` {
		t.Fatalf("after %d concurrent increments: %s %v", goroutines*each, got, err)
	}
	// Without the grant: a TypeError, whose text only the caller reads, in
	// the function's logs.
	_, err = e.c.Invoke(context.Background(), "nostate", []byte(`{"op":"get","key":"note/1"}`), client.InvokeOptions{Logs: true})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "js_error" || strings.Contains(ce.Message, "not granted") ||
		!strings.Contains(string(ce.Logs), "uncaught exception: TypeError: cloister.state: not granted") {
		t.Fatalf("without the grant: %v, logs %q", err, ce.Logs)
	}
	// The function's state is its own: another function's view is empty
	// even with the grant.
	e.deploy("other", script, func(m *bundle.Manifest) { jsManifest(m); m.Capabilities.State = true })
	if got, err := invokeBusy(e.c, "other", `{"op":"get","key":"note/1"}`); err != nil || got != `{"value":null}` {
		t.Fatalf("another function: %s %v", got, err)
	}
}
