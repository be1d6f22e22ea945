package sandbox

import (
	"errors"
	"fmt"
)

// moduleShape is what scanModule learns from a module's binary without
// compiling it: enough to say why wazero rejected a module, and to check
// the imports that wazero's CompiledModule does not list.
type moduleShape struct {
	// hasMemory is true if the module defines or imports a memory.
	hasMemory bool
	// memoryMin is the declared minimum of that memory, in pages.
	memoryMin uint32
	// nonFuncImports counts the imports that are not functions: tables,
	// memories, globals and tags.
	nonFuncImports int
}

// errScan is returned by scanModule for binaries it cannot read. It is a
// best-effort reader: wazero's decoder has the last word on validity.
var errScan = errors.New("unreadable module binary")

// Binary format constants, from the WebAssembly core specification
// (https://webassembly.github.io/spec/core/binary/modules.html).
const (
	sectionImport = 2
	sectionMemory = 5

	importFunc   = 0x00
	importTable  = 0x01
	importMemory = 0x02
	importGlobal = 0x03
	importTag    = 0x04
)

// scanModule reads the section headers of a binary module, and the import
// and memory sections in full. It never panics on malformed input.
func scanModule(b []byte) (moduleShape, error) {
	var shape moduleShape
	r := &byteReader{b: b}
	header, ok := r.bytes(8)
	if !ok || string(header) != "\x00asm\x01\x00\x00\x00" {
		return shape, fmt.Errorf("%w: bad magic or version", errScan)
	}
	for !r.done() {
		id, ok := r.byte()
		if !ok {
			return shape, fmt.Errorf("%w: truncated section id", errScan)
		}
		size, ok := r.u32()
		if !ok {
			return shape, fmt.Errorf("%w: bad section size", errScan)
		}
		body, ok := r.bytes(int(size))
		if !ok {
			return shape, fmt.Errorf("%w: section %d overruns the module", errScan, id)
		}
		var err error
		switch id {
		case sectionImport:
			err = scanImports(&byteReader{b: body}, &shape)
		case sectionMemory:
			err = scanMemories(&byteReader{b: body}, &shape)
		}
		if err != nil {
			return shape, err
		}
	}
	return shape, nil
}

// scanImports reads an import section.
func scanImports(r *byteReader, shape *moduleShape) error {
	n, ok := r.u32()
	if !ok {
		return fmt.Errorf("%w: bad import count", errScan)
	}
	for i := uint32(0); i < n; i++ {
		if !r.name() || !r.name() {
			return fmt.Errorf("%w: bad import name", errScan)
		}
		kind, ok := r.byte()
		if !ok {
			return fmt.Errorf("%w: truncated import", errScan)
		}
		switch kind {
		case importFunc:
			ok = r.skipU32()
		case importTable:
			shape.nonFuncImports++
			ok = r.skipRefType() && r.skipLimits()
		case importMemory:
			shape.nonFuncImports++
			var min uint32
			min, ok = r.limitsMin()
			shape.hasMemory, shape.memoryMin = true, min
		case importGlobal:
			shape.nonFuncImports++
			ok = r.skipValType() && r.skip(1) // value type, mutability
		case importTag:
			shape.nonFuncImports++
			ok = r.skip(1) && r.skipU32() // attribute, type index
		default:
			return fmt.Errorf("%w: unknown import kind %#x", errScan, kind)
		}
		if !ok {
			return fmt.Errorf("%w: bad import descriptor", errScan)
		}
	}
	return nil
}

// scanMemories reads a memory section.
func scanMemories(r *byteReader, shape *moduleShape) error {
	n, ok := r.u32()
	if !ok {
		return fmt.Errorf("%w: bad memory count", errScan)
	}
	for i := uint32(0); i < n; i++ {
		min, ok := r.limitsMin()
		if !ok {
			return fmt.Errorf("%w: bad memory limits", errScan)
		}
		shape.hasMemory = true
		shape.memoryMin = max(shape.memoryMin, min)
	}
	return nil
}

// byteReader reads the WebAssembly binary encoding from a byte slice. Every
// method reports false, without panicking, when the input runs out or is
// malformed.
type byteReader struct {
	b   []byte
	off int
}

func (r *byteReader) done() bool { return r.off >= len(r.b) }

func (r *byteReader) byte() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	c := r.b[r.off]
	r.off++
	return c, true
}

func (r *byteReader) bytes(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, false
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, true
}

func (r *byteReader) skip(n int) bool {
	_, ok := r.bytes(n)
	return ok
}

// u32 reads an unsigned LEB128 value of at most 32 bits.
func (r *byteReader) u32() (uint32, bool) {
	var v uint32
	for i := 0; i < 5; i++ {
		c, ok := r.byte()
		if !ok {
			return 0, false
		}
		if i == 4 && c > 0x0f {
			return 0, false // more than 32 bits
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

func (r *byteReader) skipU32() bool {
	_, ok := r.u32()
	return ok
}

// name skips a length-prefixed name.
func (r *byteReader) name() bool {
	n, ok := r.u32()
	return ok && r.skip(int(n))
}

// limitsMin reads a limits structure (memory or table) and returns its
// minimum. Flags beyond "has maximum" and "shared" (for example 64-bit
// memories) are refused.
func (r *byteReader) limitsMin() (uint32, bool) {
	flags, ok := r.byte()
	if !ok || flags&^0x03 != 0 {
		return 0, false
	}
	min, ok := r.u32()
	if !ok {
		return 0, false
	}
	if flags&0x01 != 0 && !r.skipU32() {
		return 0, false
	}
	return min, true
}

func (r *byteReader) skipLimits() bool {
	_, ok := r.limitsMin()
	return ok
}

// skipRefType skips a reference type in its one-byte form (funcref,
// externref, exnref). The longer forms of the GC proposal are refused.
func (r *byteReader) skipRefType() bool {
	c, ok := r.byte()
	return ok && (c == 0x70 || c == 0x6f || c == 0x69)
}

// skipValType skips a value type in its one-byte form: a number, vector or
// one-byte reference type.
func (r *byteReader) skipValType() bool {
	c, ok := r.byte()
	switch {
	case !ok:
		return false
	case c >= 0x7b && c <= 0x7f: // v128, f64, f32, i64, i32
		return true
	default:
		return c == 0x70 || c == 0x6f || c == 0x69
	}
}
