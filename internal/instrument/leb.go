package instrument

import (
	"fmt"
	"unicode/utf8"
)

// reader reads the WebAssembly binary encoding from a byte slice.
//
// The first failure is kept in err; after it every method reads nothing and
// returns zero values, so callers check err where a value is used to decide
// something (an allocation, a branch), not after every read. base is the
// offset of b[0] in the module, so that errors name module offsets.
type reader struct {
	b    []byte
	off  int
	base int
	err  error
}

// sub returns a reader over the next n bytes, which r skips. n must have
// come from a checked read (see bytes).
func (r *reader) sub(n int) *reader {
	start := r.base + r.off
	return &reader{b: r.bytes(n), base: start}
}

func (r *reader) failf(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at offset %d: %s", ErrMalformed, r.base+r.off, fmt.Sprintf(format, args...))
	}
}

// left is the number of unread bytes.
func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) done() bool { return r.off >= len(r.b) }

// pos is the module offset of the next byte.
func (r *reader) pos() int { return r.base + r.off }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.failf("unexpected end")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// bytes returns the next n bytes without copying them.
func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.left() {
		r.failf("%d bytes needed, %d left", n, r.left())
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// count reads a vector length and checks that the vector can fit in what is
// left, given that each element takes at least minSize bytes. This is the
// check that keeps every allocation sized by a count proportional to the
// input: callers may allocate count elements once err is nil.
func (r *reader) count(minSize int) int {
	n := r.u32()
	if r.err != nil {
		return 0
	}
	if uint64(n)*uint64(minSize) > uint64(r.left()) {
		r.failf("vector of %d elements of at least %d bytes each, %d bytes left", n, minSize, r.left())
		return 0
	}
	return int(n)
}

// size reads a byte length (of a section, body, name or data segment)
// and checks that the bytes are there.
func (r *reader) size() int { return r.count(1) }

// name reads a UTF-8 name (https://webassembly.github.io/spec/core/binary/values.html#names).
func (r *reader) name() string {
	b := r.bytes(r.size())
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		r.failf("name is not valid UTF-8")
		return ""
	}
	return string(b)
}

// u32 reads an unsigned LEB128 integer of at most 32 bits. As the
// specification requires, the encoding is at most 5 bytes long and unused
// bits of its last byte are zero
// (https://webassembly.github.io/spec/core/binary/values.html#integers).
func (r *reader) u32() uint32 {
	if r.err == nil && r.off < len(r.b) && r.b[r.off] < 0x80 {
		c := r.b[r.off]
		r.off++
		return uint32(c)
	}
	return uint32(r.uleb(32))
}

// uleb reads an unsigned LEB128 integer of at most bits bits.
func (r *reader) uleb(bits int) uint64 {
	maxBytes := (bits + 6) / 7
	var v uint64
	for i := range maxBytes {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i == maxBytes-1 {
			used := bits - 7*i // value bits in the last byte
			if c>>used != 0 {
				r.failf("integer too large or too long for %d bits", bits)
				return 0
			}
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	return v // not reached: the last byte has no continuation bit
}

// sleb reads a signed LEB128 integer of at most bits bits (32, 33 or 64),
// sign-extended to 64 bits. The unused bits of a maximal-length encoding
// must all equal the sign bit.
func (r *reader) sleb(bits int) int64 {
	maxBytes := (bits + 6) / 7
	var v uint64
	for i := range maxBytes {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		shift := 7 * i
		if i == maxBytes-1 {
			used := bits - shift                    // value bits in the last byte, the sign bit included
			mask := byte(0x7f) &^ (1<<(used-1) - 1) // the sign bit and the unused bits above it
			if c&0x80 != 0 || (c&mask != 0 && c&mask != mask) {
				r.failf("integer too large or too long for %d bits", bits)
				return 0
			}
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if shift+7 < 64 && c&0x40 != 0 {
				v |= ^uint64(0) << (shift + 7)
			}
			return int64(v)
		}
	}
	return int64(v) // not reached
}

func (r *reader) s32() int32 { return int32(r.sleb(32)) }

func (r *reader) s64() int64 { return r.sleb(64) }

// AppendU32 appends the shortest unsigned LEB128 encoding of v.
func AppendU32(b []byte, v uint32) []byte { return AppendU64(b, uint64(v)) }

// AppendU64 appends the shortest unsigned LEB128 encoding of v.
func AppendU64(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// AppendS32 appends the shortest signed LEB128 encoding of v.
func AppendS32(b []byte, v int32) []byte { return AppendS64(b, int64(v)) }

// AppendS64 appends the shortest signed LEB128 encoding of v.
func AppendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// appendName appends a name: its byte length, then its bytes.
func appendName(b []byte, s string) []byte {
	b = AppendU32(b, uint32(len(s)))
	return append(b, s...)
}
