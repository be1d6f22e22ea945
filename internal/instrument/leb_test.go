package instrument

import (
	"errors"
	"math"
	"testing"
)

func TestLEB128(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		read func(*reader) int64
		want int64
		bad  bool
	}{
		{"u32 zero", []byte{0x00}, u32, 0, false},
		{"u32 one byte max", []byte{0x7f}, u32, 127, false},
		{"u32 two bytes", []byte{0x80, 0x01}, u32, 128, false},
		{"u32 padded zero", []byte{0x80, 0x80, 0x80, 0x80, 0x00}, u32, 0, false},
		{"u32 max", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, u32, math.MaxUint32, false},
		{"u32 over 32 bits", []byte{0xff, 0xff, 0xff, 0xff, 0x1f}, u32, 0, true},
		{"u32 six bytes", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, u32, 0, true},
		{"u32 truncated", []byte{0x80, 0x80}, u32, 0, true},
		{"u32 empty", nil, u32, 0, true},
		{"s32 minus one", []byte{0x7f}, s32, -1, false},
		{"s32 63", []byte{0x3f}, s32, 63, false},
		{"s32 64", []byte{0xc0, 0x00}, s32, 64, false},
		{"s32 -64", []byte{0x40}, s32, -64, false},
		{"s32 -65", []byte{0xbf, 0x7f}, s32, -65, false},
		{"s32 max", []byte{0xff, 0xff, 0xff, 0xff, 0x07}, s32, math.MaxInt32, false},
		{"s32 min", []byte{0x80, 0x80, 0x80, 0x80, 0x78}, s32, math.MinInt32, false},
		{"s32 padded -1", []byte{0xff, 0xff, 0xff, 0xff, 0x7f}, s32, -1, false},
		{"s32 unused bits not sign", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, s32, 0, true},
		{"s32 unused bits not sign, negative", []byte{0x80, 0x80, 0x80, 0x80, 0x70}, s32, 0, true},
		{"s32 six bytes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, s32, 0, true},
		{"s33 max", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, s33, math.MaxUint32, false},
		{"s33 min", []byte{0x80, 0x80, 0x80, 0x80, 0x70}, s33, -(1 << 32), false},
		{"s33 over", []byte{0xff, 0xff, 0xff, 0xff, 0x1f}, s33, 0, true},
		{"s64 max", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}, s64, math.MaxInt64, false},
		{"s64 min", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}, s64, math.MinInt64, false},
		{"s64 unused bits", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, s64, 0, true},
		{"s64 eleven bytes", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, s64, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &reader{b: tt.in}
			got := tt.read(r)
			if tt.bad {
				if !errors.Is(r.err, ErrMalformed) {
					t.Fatalf("got %d, err %v; want ErrMalformed", got, r.err)
				}
				return
			}
			if r.err != nil || got != tt.want || !r.done() {
				t.Fatalf("got %d, err %v, %d bytes left; want %d", got, r.err, r.left(), tt.want)
			}
		})
	}
}

func u32(r *reader) int64 { return int64(r.u32()) }
func s32(r *reader) int64 { return int64(r.s32()) }
func s33(r *reader) int64 { return r.sleb(33) }
func s64(r *reader) int64 { return r.s64() }

func TestLEB128RoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, 64, -64, -65, 127, 128, 1 << 31, -1 << 31, math.MaxInt32, math.MinInt32,
		math.MaxInt64, math.MinInt64, 1<<62 + 12345, -(1<<62 + 12345)} {
		r := &reader{b: AppendS64(nil, v)}
		if got := r.s64(); r.err != nil || got != v || !r.done() {
			t.Errorf("s64 %d: got %d, err %v", v, got, r.err)
		}
		if v == int64(int32(v)) {
			r := &reader{b: AppendS32(nil, int32(v))}
			if got := r.s32(); r.err != nil || int64(got) != v || !r.done() {
				t.Errorf("s32 %d: got %d, err %v", v, got, r.err)
			}
		}
		if v >= 0 && v <= math.MaxUint32 {
			r := &reader{b: AppendU32(nil, uint32(v))}
			if got := r.u32(); r.err != nil || int64(got) != v || !r.done() {
				t.Errorf("u32 %d: got %d, err %v", v, got, r.err)
			}
		}
	}
}

// TestCountBeforeAllocating checks that a vector count larger than the
// bytes left fails before anything is allocated from it.
func TestCountBeforeAllocating(t *testing.T) {
	r := &reader{b: []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3}}
	if n := r.count(1); n != 0 || !errors.Is(r.err, ErrMalformed) {
		t.Fatalf("got count %d, err %v; want 0, ErrMalformed", n, r.err)
	}
	r = &reader{b: []byte{0x03, 1, 2, 3}}
	if n := r.count(1); n != 3 || r.err != nil {
		t.Fatalf("got count %d, err %v; want 3", n, r.err)
	}
	r = &reader{b: []byte{0x03, 1, 2, 3}}
	if n := r.count(2); n != 0 || r.err == nil {
		t.Fatalf("got count %d, err %v; want a failure (3 elements of 2 bytes in 3 bytes)", n, r.err)
	}
}
