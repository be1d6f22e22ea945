package pyrt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
)

// memoryUse is what the process holds, as Linux reports it.
type memoryUse struct {
	// images is the host memory of the sandbox's snapshot images: the
	// allocated bytes of every memfd named cloister-snapshot that the
	// process holds, each counted once, whether or not it is mapped.
	images int64
	// anon is the process's anonymous memory (smaps_rollup): the Go heap,
	// and the pages sandboxes have written (their private copies).
	anon int64
	// rss is the process's resident set, and pss its proportional share
	// (smaps_rollup): pages mapped more than once (a snapshot's pages in
	// several sandboxes) count each time in rss, and in shares in pss.
	rss, pss int64
}

// readMemoryUse reads the process's memory use from /proc.
func readMemoryUse() (memoryUse, error) {
	var u memoryUse
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return u, err
	}
	for _, e := range ents {
		p := filepath.Join("/proc/self/fd", e.Name())
		if l, err := os.Readlink(p); err != nil || !strings.HasPrefix(l, "/memfd:cloister-snapshot") {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err == nil {
			u.images += st.Blocks * 512
		}
	}
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || fields[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			u.rss = kb << 10
		case "Pss:":
			u.pss = kb << 10
		case "Anonymous:":
			u.anon = kb << 10
		}
	}
	return u, sc.Err()
}

// settled is readMemoryUse once the Go heap has given back what it can.
func settled() (memoryUse, error) {
	runtime.GC()
	debug.FreeOSMemory()
	return readMemoryUse()
}

// memoryScripts are the functions BenchmarkPythonMemory deploys, in turn,
// each with a constant of its own appended: small functions that import
// different modules and allocate different objects at their top level.
var memoryScripts = []struct{ file, params string }{
	{"testdata/hello.py", `{"name":"Ada"}`},
	{"../../examples/hello-py/main.py", `{"name":"Ada"}`},
	{"../../examples/kv-py/main.py", `{"op":"nothing"}`},
	{"testdata/scores.py", `{"rows":"name,score\nada,9.5\nbob,7.25\n"}`},
}

// BenchmarkPythonMemory measures what a deployed Python function costs in
// host memory: it loads n functions (20, then 100), each its own script
// (memoryScripts in turn, each with a constant of its own) in its own
// snapshot (NewFunction), each with a warm pool of one sandbox that has
// served a call, as a worker keeps them, and reports per function:
//
//   - image-B/fn: the snapshot images' memfds (allocated bytes);
//   - anon-B/fn: anonymous memory: the sandboxes' private pages, the
//     instances' Go structures and whatever else the Go heap keeps;
//   - B/fn: the two together, against a whole interpreter's memory
//     (the snapshot, 14.5 MiB);
//   - rss-B/fn and pss-B/fn: the growth of the process's resident set
//     and of its proportional share, for comparison (rss counts a page
//     each time it is mapped; neither counts an image's pages that are
//     not mapped).
//
// Per-function figures include the engine's own share divided by the
// count (a base image shared by all). Linux only (it reads /proc).
func BenchmarkPythonMemory(b *testing.B) {
	if _, err := readMemoryUse(); err != nil {
		b.Skipf("no /proc: %v", err)
	}
	ctx := context.Background()
	m, err := Compile(ctx, testEngine, sandbox.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	scripts := make([][]byte, len(memoryScripts))
	for i, ms := range memoryScripts {
		if scripts[i], err = os.ReadFile(ms.file); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{20, 100} {
		b.Run(fmt.Sprintf("functions=%d", n), func(b *testing.B) {
			for b.Loop() {
				before, err := settled()
				if err != nil {
					b.Fatal(err)
				}
				fs := make([]*sandbox.Function, n)
				for i := range fs {
					k := i % len(scripts)
					src := append(bytes.Clone(scripts[k]), fmt.Sprintf("\nVERSION = %d\n", i)...)
					spec := sandbox.FunctionSpec{Name: "fn", MaxSandboxes: 1, Prewarm: 1, IdleTimeout: -1}
					if fs[i], err = NewFunction(ctx, m, spec, src); err != nil {
						b.Fatal(err)
					}
					// A call (kv-py's answers its unknown op with a ValueError).
					if _, res, err := Invoke(ctx, fs[i], []byte(memoryScripts[k].params)); err != nil && !errors.Is(err, ErrException) {
						b.Fatalf("%s: %v (log %q)", memoryScripts[k].file, err, res.Stderr)
					}
				}
				after, err := settled()
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range fs {
					if s := f.Stats(); s.Live != 1 || s.Discards != 0 {
						b.Fatalf("pool: %+v, want one warm sandbox", s)
					}
					f.Close()
				}
				per := func(v int64) float64 { return float64(v) / float64(n) }
				b.ReportMetric(per(after.images-before.images), "image-B/fn")
				b.ReportMetric(per(after.anon-before.anon), "anon-B/fn")
				b.ReportMetric(per(after.images-before.images+after.anon-before.anon), "B/fn")
				b.ReportMetric(per(after.rss-before.rss), "rss-B/fn")
				b.ReportMetric(per(after.pss-before.pss), "pss-B/fn")
			}
		})
	}
}
