//go:build linux

package sandbox

import (
	"bytes"
	"testing"
)

func TestCOWMemoryReset(t *testing.T) {
	snap := make([]byte, 4*65536)
	for i := range snap {
		snap[i] = byte(i * 7)
	}
	img, err := newImage(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer img.close()
	m, err := newCOWMemory(img, 16*65536)
	if err != nil {
		t.Fatal(err)
	}
	defer m.free()
	mem := m.reallocate(uint64(len(snap)))
	if !bytes.Equal(mem, snap) {
		t.Fatal("mapped memory differs from the snapshot")
	}
	mem[10] = 0xAA
	mem[3*65536+5] = 0xBB
	_ = mem[2*65536] // a read does not dirty
	regions, err := scanDirty(nil, mem)
	if err != nil {
		t.Skipf("PAGEMAP_SCAN unavailable: %v", err)
	}
	if len(regions) != 2 {
		t.Errorf("dirty regions: got %v, want 2 pages", regions)
	}
	pages, err := m.reset()
	if err != nil {
		t.Fatal(err)
	}
	if pages != 2 {
		t.Errorf("reset restored %d pages, want 2", pages)
	}
	if !bytes.Equal(mem, snap) {
		t.Fatal("memory differs from the snapshot after reset")
	}
	// The pages were copied back and stay private: a write elsewhere adds
	// a third, and the reset restores all three exactly.
	mem[2*65536+100] = 0xCC
	mem[10] = 0xDD
	if pages, err = m.reset(); err != nil || pages != 3 {
		t.Errorf("second reset: %d pages, %v; want 3 pages", pages, err)
	}
	if !bytes.Equal(mem, snap) {
		t.Fatal("memory differs from the snapshot after the second reset")
	}
	// Every trimEvery resets the private pages are dropped, so that pages
	// written once do not stay on the copy list.
	for range trimEvery {
		if _, err := m.reset(); err != nil {
			t.Fatal(err)
		}
	}
	if regions, _ := scanDirty(nil, mem); len(regions) != 0 {
		t.Errorf("private pages after a trim: %v", regions)
	}
	if !bytes.Equal(mem, snap) {
		t.Fatal("memory differs from the snapshot after a trim")
	}
	// dropNext (after instantiation) drops rather than copies back.
	mem[5*4096] = 9
	m.dropNext()
	if _, err := m.reset(); err != nil {
		t.Fatal(err)
	}
	if regions, _ := scanDirty(nil, mem); len(regions) != 0 || !bytes.Equal(mem, snap) {
		t.Errorf("private pages after dropNext and a reset: %v", regions)
	}
	// More private pages than copyBackMaxPages are dropped at once.
	big := make([]byte, (copyBackMaxPages+8)*int(hostPage))
	img2, err := newImage(big)
	if err != nil {
		t.Fatal(err)
	}
	defer img2.close()
	m2, err := newCOWMemory(img2, uint64(len(big)))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.free()
	mem2 := m2.reallocate(uint64(len(big)))
	for i := 0; i < len(mem2); i += int(hostPage) {
		mem2[i] = 1
	}
	if _, err := m2.reset(); err != nil {
		t.Fatal(err)
	}
	if regions, _ := scanDirty(nil, mem2); len(regions) != 0 {
		t.Errorf("private pages after resetting %d dirty pages: %v", copyBackMaxPages+8, regions)
	}
	if !bytes.Equal(mem2, big) {
		t.Fatal("large memory differs from the snapshot after reset")
	}
	// Writing to the image itself is impossible: it is sealed.
	if _, err := newImage(nil); err != nil {
		t.Fatal(err)
	}
	// Growing past the snapshot makes the memory not resettable.
	mem = m.reallocate(uint64(len(snap)) + 65536)
	mem[len(snap)] = 1
	if _, err := m.reset(); err == nil {
		t.Error("reset after growth: got nil, want errNotResettable")
	}
}

func BenchmarkCOWReset(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 20} {
		snap := make([]byte, size)
		img, err := newImage(snap)
		if err != nil {
			b.Fatal(err)
		}
		m, err := newCOWMemory(img, uint64(size))
		if err != nil {
			b.Fatal(err)
		}
		mem := m.reallocate(uint64(size))
		b.Run(map[int]string{1 << 20: "1MiB", 64 << 20: "64MiB"}[size], func(b *testing.B) {
			for b.Loop() {
				mem[100] = 1
				mem[size/2] = 2
				if _, err := m.reset(); err != nil {
					b.Fatal(err)
				}
			}
		})
		m.free()
		img.close()
	}
}
