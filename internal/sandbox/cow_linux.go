//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file backs linear memory with a copy-on-write mapping of a snapshot
// image. The image is a sealed memfd holding the snapshot's bytes; each
// instance maps it MAP_PRIVATE, so reads share the image's page cache and
// the first write to a page makes a private copy. A reset finds the pages
// that are private copies (PAGEMAP_SCAN: present and no longer file-backed)
// and copies the image's bytes back over them. The pages stay private, so
// the next call writes them without a copy-on-write fault: a function that
// writes the same stack and heap pages on every call pays one memcpy per
// page and reset, and no fault. Because a page that was written once stays
// private (and is copied on every reset), the set is trimmed: when it grows
// past copyBackMaxPages, or every trimEvery resets, the pages are dropped
// instead (MADV_DONTNEED), which makes them read the image again. Either
// way the cost follows the pages dirtied, not the size of memory.

// copyBackMaxPages bounds the private pages a reset copies back; past it,
// dropping them and taking the faults again is cheaper.
const copyBackMaxPages = 256

// trimEvery is how many resets copy back before one drops the private pages,
// so that pages written once do not stay on the copy list forever.
const trimEvery = 256

// hostPage is the kernel page size.
var hostPage = uint64(os.Getpagesize())

// image is a snapshot's memory, in a sealed memfd shared by every instance.
type image struct {
	fd   int
	size uint64 // bytes, a multiple of the wasm page size
	data []byte // the image mapped read-only, the source of copy-backs
}

// newImage copies b into a sealed memfd.
func newImage(b []byte) (*image, error) {
	fd, err := unix.MemfdCreate("cloister-snapshot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	img := &image{fd: fd, size: uint64(len(b))}
	if err := unix.Ftruncate(fd, int64(len(b))); err != nil {
		img.close()
		return nil, fmt.Errorf("sizing snapshot image: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			img.close()
			return nil, fmt.Errorf("writing snapshot image: %w", err)
		}
		off += n
	}
	// Seal it: nobody, not even this process, can change the image now.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		img.close()
		return nil, fmt.Errorf("sealing snapshot image: %w", err)
	}
	if len(b) > 0 {
		data, err := unix.Mmap(fd, 0, len(b), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			img.close()
			return nil, fmt.Errorf("mapping snapshot image: %w", err)
		}
		img.data = data
	}
	return img, nil
}

func (i *image) close() {
	// munmap and close fail only on arguments this code made valid (a
	// mapping it made, a descriptor it opened); there is nothing to retry.
	if i.data != nil {
		_ = unix.Munmap(i.data) // see above
		i.data = nil
	}
	if i.fd >= 0 {
		_ = unix.Close(i.fd) // as above: a descriptor this code opened
		i.fd = -1
	}
}

// cowMemory is one instance's linear memory. It reserves the maximum size
// up front (PROT_NONE), so the backing slice never moves, maps the image
// copy-on-write over its start, and opens more of the reservation as the
// guest grows memory.
type cowMemory struct {
	base     unsafe.Pointer
	reserved uint64 // bytes reserved
	open     uint64 // bytes readable and writable
	img      *image
	buf      []byte      // all of the reservation
	regions  [][2]uint64 // scratch for reset
	resets   int         // resets since the private pages were last dropped
}

// newCOWMemory reserves max bytes and maps img (which may be nil) at its start.
func newCOWMemory(img *image, max uint64) (*cowMemory, error) {
	reserved := roundUp(max, hostPage)
	if img != nil && img.size > reserved {
		return nil, fmt.Errorf("snapshot of %d bytes exceeds the memory limit of %d", img.size, reserved)
	}
	if reserved == 0 {
		reserved = hostPage
	}
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(reserved), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("reserving linear memory: %w", err)
	}
	m := &cowMemory{base: p, reserved: reserved, img: img, buf: unsafe.Slice((*byte)(p), reserved)}
	if img != nil && img.size > 0 {
		if _, err := unix.MmapPtr(img.fd, 0, p, uintptr(img.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED); err != nil {
			m.free()
			return nil, fmt.Errorf("mapping snapshot: %w", err)
		}
		m.open = img.size
	}
	return m, nil
}

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

// reallocate implements experimental.LinearMemory.Reallocate.
func (m *cowMemory) reallocate(size uint64) []byte {
	if size > m.reserved {
		return nil
	}
	if want := roundUp(size, hostPage); want > m.open {
		if err := unix.Mprotect(m.buf[m.open:want], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil
		}
		m.open = want
	}
	return m.buf[:size:size]
}

// free unmaps the reservation (and the image mapping inside it).
func (m *cowMemory) free() {
	if m.base != nil {
		_ = unix.MunmapPtr(m.base, uintptr(m.reserved)) // as in image.close: a range this code mapped
		m.base, m.buf = nil, nil
	}
}

// dropNext makes the next reset drop the private pages rather than copy
// them back: after instantiation, whose data segments wrote pages the
// guest may never write again.
func (m *cowMemory) dropNext() { m.resets = trimEvery }

// errNotResettable means the memory cannot be put back exactly.
var errNotResettable = errors.New("the sandbox cannot be reset exactly")

// reset puts the first img.size bytes back to the image. Memory opened past
// the image cannot be reset (the guest grew it): the caller must discard
// the instance. It returns the number of host pages it dropped.
func (m *cowMemory) reset() (int, error) {
	if m.img == nil || m.open > roundUp(m.img.size, hostPage) {
		return 0, errNotResettable
	}
	if m.img.size == 0 {
		return 0, nil
	}
	regions, err := scanDirty(m.regions[:0], m.buf[:m.img.size])
	if err != nil {
		// No PAGEMAP_SCAN: drop every page of the image mapping.
		if err := unix.Madvise(m.buf[:m.img.size], unix.MADV_DONTNEED); err != nil {
			return 0, fmt.Errorf("madvise: %w", err)
		}
		return int(m.img.size / hostPage), nil
	}
	m.regions = regions
	pages := 0
	for _, r := range regions {
		pages += int((r[1] - r[0]) / hostPage)
	}
	m.resets++
	if pages <= copyBackMaxPages && m.resets < trimEvery {
		for _, r := range regions {
			copy(m.buf[r[0]:r[1]], m.img.data[r[0]:r[1]])
		}
		return pages, nil
	}
	m.resets = 0
	for _, r := range regions {
		if err := unix.Madvise(m.buf[r[0]:r[1]], unix.MADV_DONTNEED); err != nil {
			return pages, fmt.Errorf("madvise: %w", err)
		}
	}
	return pages, nil
}

// PAGEMAP_SCAN (Linux 6.7+), from <linux/fs.h>.
const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
)

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages       uint64
	categoryInverted, categoryMask, categoryAnyofMask, returnMask uint64
}

type pageRegion struct{ start, end, categories uint64 }

var pagemap struct {
	once sync.Once
	fd   int
	err  error
}

// scanDirty appends to out the byte ranges of b (offsets into b) whose pages
// are private copies: present or swapped, and no longer backed by the file.
func scanDirty(out [][2]uint64, b []byte) ([][2]uint64, error) {
	pagemap.once.Do(func() {
		pagemap.fd, pagemap.err = unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	})
	if pagemap.err != nil {
		return nil, pagemap.err
	}
	start := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	end := start + uint64(len(b))
	var vec [64]pageRegion
	for start < end {
		arg := pmScanArg{
			size: uint64(unsafe.Sizeof(pmScanArg{})), start: start, end: end,
			vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), vecLen: uint64(len(vec)),
			categoryInverted: pageIsFile, categoryMask: pageIsFile,
			categoryAnyofMask: pageIsPresent | pageIsSwapped, returnMask: pageIsPresent | pageIsSwapped,
		}
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemap.fd), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if errno != 0 {
			return nil, errno
		}
		base := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
		for _, r := range vec[:n] {
			out = append(out, [2]uint64{r.start - base, r.end - base})
		}
		if arg.walkEnd <= start {
			break
		}
		start = arg.walkEnd
	}
	return out, nil
}
