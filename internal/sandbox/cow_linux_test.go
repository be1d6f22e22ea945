//go:build linux

package sandbox

import (
	"bytes"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// checkRuns checks that runs describe b: contiguous from 0 to len(b), on
// page boundaries, no two neighbours from the same source, at most maxRuns,
// zero runs all zero, and base runs equal to base.
func checkRuns(t *testing.T, b, base []byte, page uint64, runs []imageRun, maxRuns int) {
	t.Helper()
	if len(runs) > maxRuns {
		t.Errorf("%d runs, want at most %d", len(runs), maxRuns)
	}
	var at uint64
	for i, r := range runs {
		if r.off != at || r.end <= r.off || r.off%page != 0 || (r.end%page != 0 && r.end != uint64(len(b))) {
			t.Fatalf("run %d %+v after %#x: not contiguous pages", i, r, at)
		}
		if i > 0 && runs[i-1].src == r.src {
			t.Errorf("runs %d and %d both from %d", i-1, i, r.src)
		}
		switch r.src {
		case fromZero:
			if !isZero(b[r.off:r.end]) {
				t.Errorf("zero run %+v is not zero", r)
			}
		case fromBase:
			if r.end > uint64(len(base)) || !bytes.Equal(b[r.off:r.end], base[r.off:r.end]) {
				t.Errorf("base run %+v differs from the base", r)
			}
		}
		at = r.end
	}
	if at != uint64(len(b)) {
		t.Fatalf("runs end at %#x, want %#x", at, len(b))
	}
}

// pages makes n pages of size page: 'z' zero, 'x' a page of its own
// (nonzero, different from every other), 'b' the page of base (nonzero).
func pages(layout string, page int, seed byte) []byte {
	b := make([]byte, len(layout)*page)
	for i, c := range layout {
		pg := b[i*page : (i+1)*page]
		switch c {
		case 'x':
			for j := range pg {
				pg[j] = byte(i) ^ seed ^ byte(j) | 1
			}
		case 'b':
			for j := range pg {
				pg[j] = byte(i) ^ byte(j) | 0x80
			}
		}
	}
	return b
}

// TestPlanRuns: how an image is cut into runs of own, base and zero pages.
func TestPlanRuns(t *testing.T) {
	const page = 64
	z16 := strings.Repeat("z", minZeroRun)
	tests := []struct {
		name, layout, base string // base: "" is none
		maxRuns            int
		want               []runSource
	}{
		{"own", "xxxx", "", 16, []runSource{fromOwn}},
		{"long zero run", "xx" + z16 + "x", "", 16, []runSource{fromOwn, fromZero, fromOwn}},
		{"short zero run is a hole", "xxzzzx", "", 16, []runSource{fromOwn}},
		{"zero at the end", "x" + z16, "", 16, []runSource{fromOwn, fromZero}},
		{"all zero", z16, "", 16, []runSource{fromZero}},
		{"equal to the base", "bbbb", "bbbb", 16, []runSource{fromBase}},
		{"one page differs", "bbxbb", "bbbbb", 16, []runSource{fromBase, fromOwn, fromBase}},
		{"short zero run in the base", "bbzzbb", "bbzzbb", 16, []runSource{fromBase}},
		{"short zero run not in the base", "bbzzbb", "bbbbbb", 16, []runSource{fromBase, fromOwn, fromBase}},
		{"base shorter", "bbbbxx", "bbbb", 16, []runSource{fromBase, fromOwn}},
		{"base longer", "bbx", "bbbbbbbb", 16, []runSource{fromBase, fromOwn}},
		// Too many runs: the shortest base runs become own pages first.
		{"fold the shortest", "xbxbbxbbbx", "bbbbbbbbbb", 5, []runSource{fromOwn, fromBase, fromOwn, fromBase, fromOwn}},
		{"fold the two shortest", "xbxbbxbbbx", "bbbbbbbbbb", 3, []runSource{fromOwn, fromBase, fromOwn}},
		{"fold down to one", "xbxbxbxbx", "bbbbbbbbb", 1, []runSource{fromOwn}},
		// Zero runs fold first: into base pages where the base's are zero
		// too, else into holes in the memfd.
		{"fold zero runs first", "x" + z16 + "xbbx", "b" + z16 + "bbbb", 3, []runSource{fromOwn, fromBase, fromOwn}},
		{"fold a zero run into holes", "x" + z16 + "xbbbbx", "b" + strings.Repeat("b", minZeroRun) + "bbbbbb", 3, []runSource{fromOwn, fromBase, fromOwn}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := pages(tc.layout, page, 1)
			var base []byte
			if tc.base != "" {
				base = pages(tc.base, page, 2)
			}
			runs := planRuns(b, base, page, tc.maxRuns)
			checkRuns(t, b, base, page, runs, tc.maxRuns)
			var got []runSource
			for _, r := range runs {
				got = append(got, r.src)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v (%+v), want %v", got, runs, tc.want)
			}
		})
	}
	// Not a multiple of the page size: one run of its own.
	if runs := planRuns(make([]byte, 100), nil, page, 16); len(runs) != 1 || runs[0] != (imageRun{0, 100, fromOwn}) {
		t.Errorf("partial page: %+v", runs)
	}
	if runs := planRuns(nil, nil, page, 16); runs != nil {
		t.Errorf("empty: %+v", runs)
	}
	// Random layouts: the runs always describe the image, within the limit.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var layout, baseLayout []byte
		for len(layout) < 300 {
			kind, n := "xbz"[rng.IntN(3)], 1+rng.IntN(2*minZeroRun)
			for range n {
				layout = append(layout, kind)
				if kind == 'z' && rng.IntN(4) == 0 {
					baseLayout = append(baseLayout, 'z')
				} else {
					baseLayout = append(baseLayout, 'b')
				}
			}
		}
		if rng.IntN(4) == 0 {
			baseLayout = baseLayout[:rng.IntN(len(baseLayout))]
		}
		b, base := pages(string(layout), page, 1), pages(string(baseLayout), page, 2)
		maxRuns := 1 + rng.IntN(20)
		checkRuns(t, b, base, page, planRuns(b, base, page, maxRuns), maxRuns)
		checkRuns(t, b, nil, page, planRuns(b, nil, page, maxRuns), maxRuns)
	}
}

// allocated is the memory a memfd holds (its allocated blocks).
func allocated(t *testing.T, fd int) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestImageSharing: a module's later snapshots are stored against its first
// one: each image holds only the pages that differ, maps the rest from the
// base (and its long zero runs from anonymous memory), reads back exactly
// as its snapshot, copy-on-write and reset included, and keeps the base
// alive for as long as it needs it.
func TestImageSharing(t *testing.T) {
	pg := int(hostPage)
	maps := func() int {
		b, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Skipf("no /proc/self/maps: %v", err)
		}
		return bytes.Count(b, []byte("memfd:cloister-snapshot"))
	}
	maps0 := maps()
	// A: 48 pages of data, a long run of zero pages (48 to z), 16 pages
	// of data.
	z := 48 + minZeroRun + 16
	snapA := pages(strings.Repeat("b", 48)+strings.Repeat("z", z-48)+strings.Repeat("b", 16), pg, 0)
	// B: A with two pages changed and one zero page written.
	snapB := bytes.Clone(snapA)
	snapB[3*pg] ^= 0xFF
	snapB[60*pg+7] = 1
	snapB[(z+5)*pg+5] ^= 0xFF

	var ib imageBases
	a, err := ib.newImage("m", snapA)
	if err != nil {
		t.Fatal(err)
	}
	if a.base != nil || ib.m["m"] != a {
		t.Fatal("the module's first image is not its base")
	}
	if want := int64(64 * pg); a.own != uint64(want) || allocated(t, a.fd) != want {
		t.Errorf("base image holds %d bytes (memfd %d), want %d: its zero pages are not stored", a.own, allocated(t, a.fd), want)
	}
	b, err := ib.newImage("m", snapB)
	if err != nil {
		t.Fatal(err)
	}
	if b.base != a || ib.m["m"] != a {
		t.Fatal("the second image is not stored against the first")
	}
	if want := int64(3 * pg); b.own != uint64(want) || allocated(t, b.fd) != want {
		t.Errorf("second image holds %d bytes (memfd %d), want the 3 pages that differ", b.own, allocated(t, b.fd))
	}
	if !slices.ContainsFunc(b.runs, func(r imageRun) bool { return r.src == fromZero }) {
		t.Errorf("runs %+v: no zero run", b.runs)
	}
	if !bytes.Equal(b.data, snapB) || !bytes.Equal(a.data, snapA) {
		t.Fatal("an image does not read back as its snapshot")
	}
	if other, err := ib.newImage("other", snapB); err != nil || other.base != nil {
		t.Fatalf("another module's image: base %v, %v", other.base, err)
	} else {
		other.close()
	}

	// An instance of B: copy-on-write over own, base and zero runs; reads
	// of zero pages do not dirty them; a reset restores all.
	m, err := newCOWMemory(b, uint64(len(snapB)))
	if err != nil {
		t.Fatal(err)
	}
	mem := m.reallocate(uint64(len(snapB)))
	if !bytes.Equal(mem, snapB) {
		t.Fatal("mapped memory differs from the snapshot")
	}
	if _, err := scanDirty(nil, mem); err != nil {
		t.Skipf("PAGEMAP_SCAN unavailable: %v", err)
	}
	m.dropNext()
	if _, err := m.reset(); err != nil {
		t.Fatal(err)
	}
	mem[3*pg] = 1       // an own page
	mem[10*pg] = 2      // a base page
	mem[(z-2)*pg+9] = 3 // a zero page
	mem[60*pg+7] = 4    // an own page in the zero run
	_ = mem[(z-4)*pg]   // a read of a zero page
	if n, err := m.reset(); err != nil || n != 4 {
		t.Errorf("reset: %d pages, %v; want 4", n, err)
	}
	if !bytes.Equal(mem, snapB) {
		t.Fatal("memory differs from the snapshot after reset")
	}
	mem[(z-2)*pg+9] = 5
	m.dropNext()
	if _, err := m.reset(); err != nil || !bytes.Equal(mem, snapB) {
		t.Fatalf("memory differs from the snapshot after dropping its pages: %v", err)
	}

	// The base outlives its function while an image maps it, and an image
	// outlives its function while an instance maps it.
	a.close()
	if ib.m["m"] != a || a.fd < 0 {
		t.Fatal("the base was freed while an image maps it")
	}
	d, err := ib.newImage("m", snapA)
	if err != nil {
		t.Fatal(err)
	}
	if d.base != a || d.own != 0 {
		t.Errorf("a snapshot equal to the base: base %v, %d bytes of its own; want the base, 0", d.base == a, d.own)
	}
	b.close()
	if b.fd < 0 {
		t.Fatal("an image was freed while an instance maps it")
	}
	mem[10*pg] = 6
	if _, err := m.reset(); err != nil || !bytes.Equal(mem, snapB) {
		t.Fatalf("reset after the image's function closed: %v", err)
	}
	m.free()
	if b.fd >= 0 {
		t.Error("an image was not freed with its last instance")
	}
	d.close()
	if _, ok := ib.m["m"]; ok || a.fd >= 0 {
		t.Error("the base was not freed with the last image that maps it")
	}
	// The next snapshot of the module is its new base.
	e, err := ib.newImage("m", snapB)
	if err != nil {
		t.Fatal(err)
	}
	if e.base != nil || ib.m["m"] != e {
		t.Error("the next image did not become the base")
	}
	e.close()
	if maps1 := maps(); maps1 != maps0 {
		t.Errorf("mappings of images: %d before, %d after every image was closed", maps0, maps1)
	}
}
