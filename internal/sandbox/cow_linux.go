//go:build linux

package sandbox

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file backs linear memory with a copy-on-write mapping of a snapshot
// image. The image is held in sealed memfds; each instance maps it
// MAP_PRIVATE, so reads share the memfds' page cache and the first write to
// a page makes a private copy. A reset finds the pages that are private
// copies (PAGEMAP_SCAN: present and no longer file-backed, and not the
// shared zero page) and copies the image's bytes back over them. The pages
// stay private, so the next call writes them without a copy-on-write fault:
// a function that writes the same stack and heap pages on every call pays
// one memcpy per page and reset, and no fault. Because a page that was
// written once stays private (and is copied on every reset), the set is
// trimmed: when it grows past copyBackMaxPages, or every trimEvery resets,
// the pages are dropped instead (MADV_DONTNEED), which makes them read the
// image again. Either way the cost follows the pages dirtied, not the size
// of memory.
//
// An image is stored in runs of pages (planRuns), each from one of three
// sources: a base image, for the pages equal to the base's at the same
// offset (the base is an earlier snapshot of the same module that is still
// in use: imageBases); anonymous memory, for long runs of zero pages, which
// cost nothing until written; and the image's own memfd, for the rest,
// where zero pages stay holes. Snapshots of one module (functions that
// share a language engine, versions of one function) then share the pages
// they have in common, and each holds only the pages it changed.

// copyBackMaxPages bounds the private pages a reset copies back; past it,
// dropping them and taking the faults again is cheaper.
const copyBackMaxPages = 256

// trimEvery is how many resets copy back before one drops the private pages,
// so that pages written once do not stay on the copy list forever.
const trimEvery = 256

// hostPage is the kernel page size.
var hostPage = uint64(os.Getpagesize())

// Each run is a mapping (a VMA) in every instance's memory and in the
// image's own view, and a process has at most vm.max_map_count of them
// (65,530 by default), so an image has at most maxImageRuns runs (planRuns
// folds the shortest into their neighbours). For Python functions (one
// engine, each with its own script loaded) an image then holds about 1.4
// MiB of pages of its own, of 14.5; 32 runs would hold 0.5 MiB, and no
// limit (74 runs) 0.2. Sixteen mappings per instance, against two for an
// image of one run, keep a worker able to map thousands of sandboxes.
const (
	maxImageRuns = 16
	minZeroRun   = 64 // host pages (256 KiB): a shorter run of zero pages is not mapped apart
)

// runSource is where a run of an image's pages comes from.
type runSource uint8

const (
	fromOwn  runSource = iota // the image's own memfd
	fromBase                  // the base image's memfd, at the same offset
	fromZero                  // anonymous memory: zero until written
)

// imageRun is a run of an image's pages: bytes [off, end), multiples of
// the host page size.
type imageRun struct {
	off, end uint64
	src      runSource
}

// image is a snapshot's memory, in sealed memfds shared by every instance.
type image struct {
	fd   int    // the own memfd: the image's size, holding the runs fromOwn
	size uint64 // bytes, a multiple of the wasm page size
	data []byte // the image mapped read-only, the source of copy-backs
	runs []imageRun
	base *image // holds the runs fromBase; nil if there are none
	own  uint64 // bytes allocated in fd (pages written)

	// refs counts the image's holders: its function, the instances that
	// map it, and the images that map runs of it. When bases is set, the
	// image may be bases.m[key]. Both are guarded by imagesMu.
	refs  int
	bases *imageBases
	key   string
}

// imagesMu guards the images' reference counts and the bases' maps.
var imagesMu sync.Mutex

// newImage copies b into a sealed memfd of its own.
func newImage(b []byte) (*image, error) { return newImageOn(b, nil) }

// newImage returns an image of b, a snapshot of the module key: stored
// against the module's base image, if it has one, or made its base.
func (ib *imageBases) newImage(key string, b []byte) (*image, error) {
	imagesMu.Lock()
	base := ib.m[key]
	if base != nil {
		base.refs++ // held while b is compared with it, and by img if it maps it
	}
	imagesMu.Unlock()
	img, err := newImageOn(b, base)
	if base != nil && (err != nil || img.base == nil) {
		base.close()
	}
	if err != nil {
		return nil, err
	}
	imagesMu.Lock()
	defer imagesMu.Unlock()
	img.bases, img.key = ib, key
	if base == nil && ib.m[key] == nil {
		if ib.m == nil {
			ib.m = make(map[string]*image)
		}
		ib.m[key] = img
	}
	return img, nil
}

// newImageOn copies into a sealed memfd the pages of b that are neither
// zero (in long runs) nor equal to base's (nil: none) at the same offset.
// The caller holds a reference to base; if the image maps runs of it,
// img.base is base and the reference is the image's.
func newImageOn(b []byte, base *image) (*image, error) {
	fd, err := unix.MemfdCreate("cloister-snapshot", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	img := &image{fd: fd, size: uint64(len(b)), refs: 1}
	fail := func(err error) (*image, error) {
		img.base = nil // the caller's reference, not the image's
		img.free()
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(len(b))); err != nil {
		return fail(fmt.Errorf("sizing snapshot image: %w", err))
	}
	var baseData []byte
	if base != nil {
		baseData = base.data
	}
	img.runs = planRuns(b, baseData, hostPage, maxImageRuns)
	for _, r := range img.runs {
		switch r.src {
		case fromBase:
			img.base = base
		case fromOwn:
			// Zero pages stay holes, which read as zero.
			n, err := writePages(fd, b, r.off, r.end)
			if err != nil {
				return fail(fmt.Errorf("writing snapshot image: %w", err))
			}
			img.own += n
		}
	}
	// Seal it: nobody, not even this process, can change the image now.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		return fail(fmt.Errorf("sealing snapshot image: %w", err))
	}
	if len(b) == 0 {
		return img, nil
	}
	view, err := unix.MmapPtr(-1, 0, nil, uintptr(len(b)), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fail(fmt.Errorf("mapping snapshot image: %w", err))
	}
	img.data = unsafe.Slice((*byte)(view), len(b))
	if err := img.mapRuns(view, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return fail(fmt.Errorf("mapping snapshot image: %w", err))
	}
	// The image must be exactly the snapshot, whose hash the platform
	// certifies. Zero pages are zero by construction (holes, anonymous
	// memory) or were compared with the base's; reading them here would
	// allocate the holes.
	for off := uint64(0); off < img.size; off += hostPage {
		page := b[off:min(off+hostPage, img.size)]
		if !isZero(page) && !bytes.Equal(page, img.data[off:off+uint64(len(page))]) {
			return fail(fmt.Errorf("snapshot image differs from the snapshot at %#x", off))
		}
	}
	// Unmap what the check mapped (the memfds keep the pages): the view
	// maps only the pages copy-backs read, and the process's resident set
	// does not count the image again.
	if err := unix.Madvise(img.data, unix.MADV_DONTNEED); err != nil {
		return fail(fmt.Errorf("madvise: %w", err))
	}
	return img, nil
}

// writePages writes the pages of b[off:end] that are not all zero to fd at
// the same offsets, and returns the bytes it wrote.
func writePages(fd int, b []byte, off, end uint64) (uint64, error) {
	var written uint64
	for off < end {
		if isZero(b[off:min(off+hostPage, end)]) {
			off += hostPage
			continue
		}
		next := off + hostPage
		for next < end && !isZero(b[next:min(next+hostPage, end)]) {
			next += hostPage
		}
		next = min(next, end)
		for at := off; at < next; {
			n, err := unix.Pwrite(fd, b[at:next], int64(at))
			if err != nil {
				return written, err
			}
			at += uint64(n)
		}
		written += next - off
		off = next
	}
	return written, nil
}

// mapRuns maps the image's runs at addr (a reservation of img.size bytes)
// with prot: the memfds' runs with flags (MAP_SHARED or MAP_PRIVATE), the
// zero runs as private anonymous memory.
func (i *image) mapRuns(addr unsafe.Pointer, prot, flags int) error {
	for _, r := range i.runs {
		at := unsafe.Add(addr, r.off)
		n := uintptr(r.end - r.off)
		var err error
		switch r.src {
		case fromOwn:
			_, err = unix.MmapPtr(i.fd, int64(r.off), at, n, prot, flags|unix.MAP_FIXED)
		case fromBase:
			_, err = unix.MmapPtr(i.base.fd, int64(r.off), at, n, prot, flags|unix.MAP_FIXED)
		case fromZero:
			_, err = unix.MmapPtr(-1, 0, at, n, prot, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// hold takes a reference to the image.
func (i *image) hold() {
	imagesMu.Lock()
	i.refs++
	imagesMu.Unlock()
}

// close gives back a reference to the image, and frees it with the last.
func (i *image) close() {
	imagesMu.Lock()
	i.refs--
	last := i.refs == 0
	if last && i.bases != nil && i.bases.m[i.key] == i {
		delete(i.bases.m, i.key)
	}
	imagesMu.Unlock()
	if last {
		i.free()
	}
}

// free unmaps and closes the image, and gives back its base.
func (i *image) free() {
	// munmap and close fail only on arguments this code made valid (a
	// mapping it made, a descriptor it opened); there is nothing to retry.
	if i.data != nil {
		_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(i.data)), uintptr(len(i.data))) // see above
		i.data = nil
	}
	if i.fd >= 0 {
		_ = unix.Close(i.fd) // as above: a descriptor this code opened
		i.fd = -1
	}
	if i.base != nil {
		i.base.close()
		i.base = nil
	}
}

// planRuns splits b (a multiple of page bytes, or it is one own run) into
// runs: zero pages, pages equal to baseData's at the same offset, and the
// rest (own), with at most maxRuns runs (see maxImageRuns).
func planRuns(b, baseData []byte, page uint64, maxRuns int) []imageRun {
	size := uint64(len(b))
	if size == 0 {
		return nil
	}
	if size%page != 0 {
		return []imageRun{{0, size, fromOwn}}
	}
	n := int(size / page)
	src := make([]runSource, n)
	same := make([]bool, n)
	for p := range n {
		off := uint64(p) * page
		pg := b[off : off+page]
		same[p] = off+page <= uint64(len(baseData)) && bytes.Equal(pg, baseData[off:off+page])
		switch {
		case isZero(pg):
			src[p] = fromZero
		case same[p]:
			src[p] = fromBase
		default:
			src[p] = fromOwn
		}
	}
	// A short run of zero pages is base pages where the base's are zero
	// too, else own pages (holes in the memfd, which read as zero).
	for p := 0; p < n; {
		q := p + 1
		for q < n && src[q] == src[p] {
			q++
		}
		if src[p] == fromZero && q-p < minZeroRun {
			for i := p; i < q; i++ {
				if same[i] {
					src[i] = fromBase
				} else {
					src[i] = fromOwn
				}
			}
		}
		p = q
	}
	runs := toRuns(src, page)
	// Too many: fold runs into their neighbours until they fit. First the
	// zero runs, shortest first: they become base pages where the base's
	// are zero too, else holes in the memfd (no memory either way until
	// read). Then, if that was not enough (the runs alternate between own
	// and base pages now), the base runs, shortest first: their pages are
	// copied into the memfd.
	runs = foldRuns(runs, maxRuns, fromZero, func(r imageRun) runSource {
		if slices.Contains(same[r.off/page:r.end/page], false) {
			return fromOwn
		}
		return fromBase
	})
	return foldRuns(runs, maxRuns, fromBase, func(imageRun) runSource { return fromOwn })
}

// foldRuns gives the runs from src, shortest first, the source into(run),
// until at most maxRuns are left once neighbours from the same source are
// merged, and returns the merged runs.
func foldRuns(runs []imageRun, maxRuns int, src runSource, into func(imageRun) runSource) []imageRun {
	var fold []int
	for i, r := range runs {
		if r.src == src {
			fold = append(fold, i)
		}
	}
	slices.SortStableFunc(fold, func(i, j int) int {
		return cmp.Compare(runs[i].end-runs[i].off, runs[j].end-runs[j].off)
	})
	count := len(runs)
	for _, i := range fold {
		if count <= maxRuns {
			break
		}
		to := into(runs[i])
		runs[i].src = to
		if i > 0 && runs[i-1].src == to {
			count--
		}
		if i+1 < len(runs) && runs[i+1].src == to {
			count--
		}
	}
	merged := runs[:0]
	for _, r := range runs {
		if len(merged) > 0 && merged[len(merged)-1].src == r.src {
			merged[len(merged)-1].end = r.end
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// toRuns turns per-page sources into runs.
func toRuns(src []runSource, page uint64) []imageRun {
	var runs []imageRun
	for p, s := range src {
		off := uint64(p) * page
		if len(runs) > 0 && runs[len(runs)-1].src == s {
			runs[len(runs)-1].end = off + page
			continue
		}
		runs = append(runs, imageRun{off, off + page, s})
	}
	return runs
}

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
	if img != nil {
		img.hold() // until free: the image outlives its function while the instance runs
	}
	if img != nil && img.size > 0 {
		if err := img.mapRuns(p, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE); err != nil {
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

// free unmaps the reservation (and the image mapping inside it), and gives
// back the image.
func (m *cowMemory) free() {
	if m.base != nil {
		_ = unix.MunmapPtr(m.base, uintptr(m.reserved)) // as in image.free: a range this code mapped
		m.base, m.buf = nil, nil
	}
	if m.img != nil {
		m.img.close()
		m.img = nil
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
	return m.restore(m.buf[:m.img.size], m.img.data)
}

// zero puts a memory that maps no image (a command's) back to all zeros,
// every page it opened, so that another instance of the same module can
// take it. It returns the number of host pages it cleared or dropped.
func (m *cowMemory) zero() (int, error) {
	if m.img != nil {
		return 0, errNotResettable
	}
	return m.restore(m.buf[:m.open], nil)
}

// restore makes b, the start of the memory, equal to src (zeros when src
// is nil): it copies src over the pages that were written, or drops them
// (MADV_DONTNEED: they read the image or zeros again) past
// copyBackMaxPages or every trimEvery restores.
func (m *cowMemory) restore(b, src []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	regions, err := scanDirty(m.regions[:0], b)
	if err != nil {
		// No PAGEMAP_SCAN: drop every page.
		if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
			return 0, fmt.Errorf("madvise: %w", err)
		}
		return len(b) / int(hostPage), nil
	}
	m.regions = regions
	pages := 0
	for _, r := range regions {
		pages += int((r[1] - r[0]) / hostPage)
	}
	m.resets++
	if pages <= copyBackMaxPages && m.resets < trimEvery {
		for _, r := range regions {
			if src == nil {
				clear(b[r[0]:r[1]])
			} else {
				copy(b[r[0]:r[1]], src[r[0]:r[1]])
			}
		}
		return pages, nil
	}
	m.resets = 0
	for _, r := range regions {
		if err := unix.Madvise(b[r[0]:r[1]], unix.MADV_DONTNEED); err != nil {
			return pages, fmt.Errorf("madvise: %w", err)
		}
	}
	return pages, nil
}

// fits reports whether the memory was reserved for a limit of max bytes.
func (m *cowMemory) fits(limit uint64) bool {
	return m.reserved == max(roundUp(limit, hostPage), hostPage)
}

// PAGEMAP_SCAN (Linux 6.7+), from <linux/fs.h>.
const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
	pageIsPFNZero = 1 << 5 // the shared zero page: an anonymous page only read
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
// are private copies: present or swapped, no longer backed by the file, and
// not the shared zero page (which a read of anonymous memory maps).
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
			categoryInverted: pageIsFile | pageIsPFNZero, categoryMask: pageIsFile | pageIsPFNZero,
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
