//go:build !wasip1

package cloister_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// buildGuest builds pkg (./testdata/guest or ./testdata/kvguest) as a
// wasip1 reactor, the way scripts/fixtures.sh builds examples/reactor-go,
// and returns the module.
func buildGuest(t *testing.T, pkg string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a wasip1 module with the go command")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	out := filepath.Join(t.TempDir(), "guest.wasm")
	cmd := exec.Command(goCmd, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false",
		"-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// guest is one initialised instance of the guest with a minimal host side
// of the reactor ABI v1. It is not reset between calls.
type guest struct {
	mod    api.Module
	input  []byte
	output bytes.Buffer
	limit  int
	stderr bytes.Buffer
}

// guestCache keeps the compiled guest across the tests' runtimes.
var guestCache = wazero.NewCompilationCache()

func newGuest(t *testing.T, wasm []byte, env map[string]string) *guest {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithCompilationCache(guestCache))
	t.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)

	g := &guest{limit: 1 << 20}
	inBounds := func(m api.Module, ptr, n uint32) bool { // unsigned, as in docs/reactor-abi.md
		return uint64(ptr)+uint64(n) <= uint64(m.Memory().Size())
	}
	_, err := r.NewHostModuleBuilder("cloister").
		NewFunctionBuilder().WithFunc(func() uint32 { return uint32(len(g.input)) }).Export("input_len").
		NewFunctionBuilder().WithFunc(func(_ context.Context, m api.Module, ptr, n uint32) int32 {
		n = min(n, uint32(len(g.input)))
		if !inBounds(m, ptr, n) {
			return -1
		}
		m.Memory().Write(ptr, g.input[:n])
		return int32(n)
	}).Export("input_read").
		NewFunctionBuilder().WithFunc(func(_ context.Context, m api.Module, ptr, n uint32) int32 {
		if !inBounds(m, ptr, n) || uint64(g.output.Len())+uint64(n) > uint64(g.limit) {
			return -1
		}
		b, _ := m.Memory().Read(ptr, n)
		g.output.Write(b)
		return 0
	}).Export("output_write").
		Instantiate(ctx)
	if err != nil {
		t.Fatalf("instantiating the cloister host module: %v", err)
	}

	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().WithStderr(&g.stderr)
	for k, v := range env {
		cfg = cfg.WithEnv(k, v)
	}
	g.mod, err = r.InstantiateWithConfig(ctx, wasm, cfg)
	if err != nil {
		t.Fatalf("instantiating the guest: %v", err)
	}
	if fn := g.mod.ExportedFunction("cloister_init"); fn != nil {
		t.Error("the guest exports cloister_init; the Go SDK does not define it")
	}
	if _, err := g.mod.ExportedFunction("_initialize").Call(ctx); err != nil {
		t.Fatalf("calling _initialize: %v (stderr %q)", err, g.stderr.Bytes())
	}
	return g
}

func (g *guest) handle(t *testing.T, input []byte) (output []byte, code int32, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g.input = input
	g.output.Reset()
	g.stderr.Reset()
	res, err := g.mod.ExportedFunction("cloister_handle").Call(ctx)
	if err != nil {
		t.Fatalf("calling cloister_handle: %v (stderr %q)", err, g.stderr.Bytes())
	}
	return bytes.Clone(g.output.Bytes()), api.DecodeI32(res[0]), g.stderr.String()
}

// TestABI runs the SDK's cloister_handle in wazero through each of its
// outcomes. The cases share one instance, in order: a panic must not break
// the calls after it.
func TestABI(t *testing.T) {
	wasm := buildGuest(t, "./testdata/guest")
	g := newGuest(t, wasm, nil)

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name   string
		input  []byte
		limit  int
		code   int32
		output []byte
		stderr string // a substring of stderr; "" means stderr must be empty
	}{
		{"echo", []byte("hello"), 0, 0, []byte("hello"), ""},
		{"empty", nil, 0, 0, nil, ""},
		{"1 MiB", big, 0, 0, big, ""},
		{"handler error", []byte("error"), 0, 1, nil, "guest: bad request"},
		{"panic", []byte("panic"), 0, 2, nil, "handler panicked: guest: boom"},
		{"after panic", []byte("still here"), 0, 0, []byte("still here"), ""},
		{"output limit", []byte("0123456789"), 9, 3, nil, "output limit"},
		{"exactly the limit", []byte("0123456789"), 10, 0, []byte("0123456789"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.limit = 1 << 20
			if tt.limit > 0 {
				g.limit = tt.limit
			}
			out, code, stderr := g.handle(t, tt.input)
			if code != tt.code {
				t.Errorf("code %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if !bytes.Equal(out, tt.output) {
				t.Errorf("output %.40q (%d bytes), want %.40q (%d bytes)", out, len(out), tt.output, len(tt.output))
			}
			if tt.stderr == "" && stderr != "" || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q, want %q", stderr, tt.stderr)
			}
		})
	}

	t.Run("no handler", func(t *testing.T) {
		g := newGuest(t, wasm, map[string]string{"NO_HANDLER": "1"})
		out, code, stderr := g.handle(t, []byte("hello"))
		if code != 4 || len(out) != 0 || !strings.Contains(stderr, "no handler registered") {
			t.Errorf("got code %d, output %q, stderr %q; want code 4, no output, \"no handler registered\"", code, out, stderr)
		}
	})
}
