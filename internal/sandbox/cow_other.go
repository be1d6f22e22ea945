//go:build !linux

package sandbox

import (
	"errors"
	"fmt"
)

// Outside Linux there is no memfd, MAP_PRIVATE of a sealed file or
// PAGEMAP_SCAN to rely on, so snapshot memory falls back to copying: the
// image is a byte slice, each instance gets its own copy, and a reset copies
// the whole image back. The semantics are the same as on Linux; a reset
// costs in proportion to the snapshot's size instead of the dirtied pages.

type image struct {
	b    []byte
	size uint64
}

func newImage(b []byte) (*image, error) {
	return &image{b: append([]byte(nil), b...), size: uint64(len(b))}, nil
}

func (i *image) close() {}

// newImage returns an image of b: outside Linux each image is a copy of
// its own, shared with no other.
func (ib *imageBases) newImage(_ string, b []byte) (*image, error) { return newImage(b) }

type cowMemory struct {
	img *image
	max uint64
	buf []byte
}

func newCOWMemory(img *image, max uint64) (*cowMemory, error) {
	m := &cowMemory{img: img, max: max}
	if img != nil {
		if img.size > max {
			return nil, fmt.Errorf("snapshot of %d bytes exceeds the memory limit of %d", img.size, max)
		}
		m.buf = append(make([]byte, 0, img.size), img.b...)
	}
	return m, nil
}

func (m *cowMemory) reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, max(size, 2*uint64(cap(m.buf))))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *cowMemory) free() { m.buf = nil }

func (m *cowMemory) dropNext() {}

var errNotResettable = errors.New("the sandbox cannot be reset exactly")

func (m *cowMemory) reset() (int, error) {
	if m.img == nil || uint64(len(m.buf)) != m.img.size {
		return 0, errNotResettable
	}
	copy(m.buf, m.img.b)
	return int(m.img.size / 4096), nil
}

func (m *cowMemory) zero() (int, error) {
	if m.img != nil {
		return 0, errNotResettable
	}
	clear(m.buf[:cap(m.buf)])
	return cap(m.buf) / 4096, nil
}

func (m *cowMemory) fits(limit uint64) bool { return m.max == limit }
