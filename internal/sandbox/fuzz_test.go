package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addFixtureSeeds adds every checked-in fixture to f's seed corpus.
func addFixtureSeeds(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.wasm"))
	if err != nil {
		f.Fatal(err)
	}
	paths = append(paths, filepath.Join("testdata", "not_wasm.bin"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte(header))
}

// FuzzCompile feeds arbitrary bytes to Compile. It must never panic, and
// must either compile the module or reject it with ErrInvalidModule or
// ErrMemoryLimit and a short message.
func FuzzCompile(f *testing.F) {
	addFixtureSeeds(f)
	e, err := New(context.Background(), Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close(context.Background()) })
	f.Fuzz(func(t *testing.T, wasm []byte) {
		sum := sha256.Sum256(wasm)
		hash := hex.EncodeToString(sum[:])
		m, err := e.Compile(context.Background(), hash, wasm, Limits{MemoryPages: 64})
		if err != nil {
			if !errors.Is(err, ErrInvalidModule) && !errors.Is(err, ErrMemoryLimit) {
				t.Fatalf("got error %v, want one matching %v or %v", err, ErrInvalidModule, ErrMemoryLimit)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || len(msg) > 300 {
				t.Fatalf("got error message %q, want one short line", msg)
			}
			return
		}
		if m.CodeHash() != hash {
			t.Fatalf("got code hash %q, want %q", m.CodeHash(), hash)
		}
	})
}

// FuzzPrepareModule feeds arbitrary bytes to the structure check, which
// must never panic, and whose output must be stable: preparing a prepared
// module changes nothing.
func FuzzPrepareModule(f *testing.F) {
	addFixtureSeeds(f)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, shape, err := prepareModule(wasm)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errTableLimit) && !errors.Is(err, errCompileLimit) {
				t.Fatalf("got error %v, want one matching %v, %v or %v", err, errMalformed, errTableLimit, errCompileLimit)
			}
			return
		}
		again, shape2, err := prepareModule(out)
		if err != nil {
			t.Fatalf("preparing a prepared module: %v", err)
		}
		if !bytes.Equal(again, out) || shape2 != shape {
			t.Fatalf("preparing a prepared module changed it: %x (%+v) then %x (%+v)", out, shape, again, shape2)
		}
		// Only bounding a table adds bytes: at most a 3-byte maximum to an
		// entry of at least 3, and 4 to the section size.
		if len(out) > 2*len(wasm)+8 {
			t.Fatalf("got %d bytes out of %d in", len(out), len(wasm))
		}
	})
}
