// Package enginert holds what the language runtimes (internal/jsrt for
// JavaScript, internal/pyrt for Python) share: each runs a language engine
// that is an ordinary Cloister reactor, compiled once under the hash of its
// bytes, and takes a function's source, which must pass the same checks.
//
// It must never hold anything language-specific: framing, answers and
// exceptions stay in each runtime.
package enginert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// Hash is the hex sha256 of an engine module: the code hash under which
// the sandbox compiles and caches it.
func Hash(engine []byte) string {
	s := sha256.Sum256(engine)
	return hex.EncodeToString(s[:])
}

// CheckSource reports whether b can be a function's source: not empty, at
// most max bytes, UTF-8, no NUL byte. Its errors wrap errScript.
func CheckSource(b []byte, max int, errScript error) error {
	switch {
	case len(b) == 0:
		return fmt.Errorf("%w: empty", errScript)
	case len(b) > max:
		return fmt.Errorf("%w: %d bytes, at most %d", errScript, len(b), max)
	case !utf8.Valid(b):
		return fmt.Errorf("%w: not UTF-8", errScript)
	case bytes.IndexByte(b, 0) >= 0:
		return fmt.Errorf("%w: contains a NUL byte", errScript)
	}
	return nil
}

// Compile compiles engine (whose Hash is hash) with limits on e, cached by
// its hash, so that every function of the language shares one compilation
// per memory limit. An engine that is not a reactor is an error wrapping
// errEngine.
func Compile(ctx context.Context, e *sandbox.Engine, hash string, engine []byte, limits sandbox.Limits, errEngine error) (*sandbox.Module, error) {
	m, err := e.Compile(ctx, hash, engine, limits)
	if err != nil {
		return nil, err
	}
	if m.ABI() != sandbox.ABIReactor {
		return nil, fmt.Errorf("%w: the engine is not a reactor", errEngine)
	}
	return m, nil
}

// Frame is a request for an engine: the four-byte magic, the source's
// length (uint32, little-endian), the source, then the parameters.
func Frame(magic string, source, params []byte) []byte {
	out := make([]byte, 0, len(magic)+4+len(source)+len(params))
	out = append(out, magic...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(source)))
	out = append(out, source...)
	return append(out, params...)
}

// Printable shortens an engine's message for an error.
func Printable(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return fmt.Sprintf("%q", b)
}
