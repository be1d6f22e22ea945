package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// ErrBusy means every sandbox of a function is in use and the pool is at
// its limit.
var ErrBusy = errors.New("sandbox: all sandboxes of the function are busy")

// DefaultIdleTimeout is how long idle sandboxes are kept before the pool
// shrinks to zero.
const DefaultIdleTimeout = 5 * time.Minute

// FunctionSpec configures a reactor function's sandboxes. The environment
// and capabilities are fixed when a sandbox is made: a reactor sees no
// per-request environment.
type FunctionSpec struct {
	// Name is argv[0]; empty means DefaultName.
	Name string
	// Env is the whole environment the guest sees.
	Env map[string]string
	// Caps are the capabilities granted to calls. Init always runs with
	// the deterministic clock and random source, so the snapshot is the
	// same on every worker.
	Caps Capabilities
	// MaxSandboxes bounds the pool (the function's concurrency); 0 means 16.
	MaxSandboxes int
	// IdleTimeout discards idle sandboxes after this long without a call;
	// 0 means DefaultIdleTimeout, negative means never.
	IdleTimeout time.Duration
	// Prewarm sandboxes are made at once.
	Prewarm int
	// InitInput, when not nil, is the request cloister_init reads with
	// input_len and input_read (output_write still refuses, and the state
	// is still denied). A language engine takes the function's source here
	// and loads it once, so the snapshot, and its hash, include the loaded
	// code. Nil: input_len returns 0 during init, as the ABI says.
	InitInput []byte
}

// PoolStats are a function's pool counters.
type PoolStats struct {
	Live, Idle                     int
	Hits, Misses, Resets, Discards uint64
	ResetPages                     uint64 // host pages dropped by resets
}

// Function is a reactor ready to serve: its snapshot and a pool of
// sandboxes that start from it. It is safe for concurrent use; a sandbox
// serves one call at a time.
type Function struct {
	m    *Module
	spec FunctionSpec
	snap *Snapshot
	// clock and random positions right after init, restored on reset.
	clockAt, randAt uint64

	mu      sync.Mutex
	idle    []*sandbox
	live    int
	lastUse time.Time
	closed  bool
	stop    chan struct{}

	hits, misses, resets, discards, resetPages atomic.Uint64
}

// NewFunction instantiates the reactor once, runs _initialize and
// cloister_init, snapshots the result, and returns a pool of sandboxes
// that each start from that snapshot.
func (m *Module) NewFunction(ctx context.Context, spec FunctionSpec) (*Function, error) {
	if m.abi != ABIReactor {
		return nil, errNotReactor
	}
	if m.engine.closed.Load() {
		return nil, ErrClosed
	}
	if spec.MaxSandboxes <= 0 {
		spec.MaxSandboxes = 16
	}
	if spec.IdleTimeout == 0 {
		spec.IdleTimeout = DefaultIdleTimeout
	}
	if spec.Name == "" {
		spec.Name = DefaultName
	}
	f := &Function{m: m, spec: spec, stop: make(chan struct{}), lastUse: time.Now()}
	if err := f.takeSnapshot(ctx); err != nil {
		return nil, err
	}
	for range min(spec.Prewarm, spec.MaxSandboxes) {
		s, err := f.newSandbox(ctx)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.idle = append(f.idle, s)
		f.live++
	}
	if spec.IdleTimeout > 0 {
		go f.reap(spec.IdleTimeout)
	}
	return f, nil
}

// Snapshot returns the function's snapshot.
func (f *Function) Snapshot() *Snapshot { return f.snap }

// Stats returns the pool counters.
func (f *Function) Stats() PoolStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return PoolStats{Live: f.live, Idle: len(f.idle), Hits: f.hits.Load(), Misses: f.misses.Load(),
		Resets: f.resets.Load(), Discards: f.discards.Load(), ResetPages: f.resetPages.Load()}
}

// Close discards the idle sandboxes and stops the pool; sandboxes in use
// are discarded when their call ends.
func (f *Function) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.stop)
	idle := f.idle
	f.idle = nil
	f.live -= len(idle)
	f.mu.Unlock()
	for _, s := range idle {
		s.close()
	}
	f.snap.img.close()
}

// reap discards idle sandboxes once the function has had no call for idle.
func (f *Function) reap(idle time.Duration) {
	t := time.NewTicker(max(idle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		var drop []*sandbox
		if time.Since(f.lastUse) >= idle {
			drop, f.idle = f.idle, nil
			f.live -= len(drop)
		}
		f.mu.Unlock()
		for _, s := range drop {
			f.discards.Add(1)
			s.close()
		}
	}
}

// sandbox is one instance of a reactor.
type sandbox struct {
	inst    api.Module
	mem     *cowMemory
	handle  api.Function
	globals []api.MutableGlobal
	gen     uint64
	logs    *truncatingBuffer
	src     *sources
	meter   meter
	// st, out and cctx are the per-call state, response buffer and
	// context, made once and re-armed for every call.
	st   callState
	out  boundedBuffer
	cctx *callCtx
	// oneShot sandboxes cannot be reset (the module writes its tables or
	// drops segments): each was made by running init afresh and serves one call.
	oneShot bool
}

func (s *sandbox) close() {
	if s.cctx != nil {
		s.cctx.timer.Stop()
	}
	// Frees the instance; an error could only come from closing the guest's
	// in-memory stdio, and the sandbox is gone either way.
	_ = s.inst.Close(context.Background())
}

// initCall makes the sandbox's reusable call context.
func (s *sandbox) initCall() {
	s.cctx = newCallCtx(&s.st)
	s.out.onOverflow = func() { s.cctx.abort(ErrOutputTooLarge) }
}

// cowLinear adapts a cowMemory to wazero's LinearMemory.
type cowLinear struct{ m *cowMemory }

func (c cowLinear) Reallocate(size uint64) []byte { return c.m.reallocate(size) }
func (c cowLinear) Free()                         { c.m.free() }

// sources are the clock and random source of a reactor instance. While not
// live (during init) they are always the deterministic ones, so that init
// leaves the same state everywhere; once live they are the real ones where
// the manifest grants them. The deterministic positions are part of the
// snapshot and restored on reset.
type sources struct {
	live  bool
	caps  Capabilities
	clock fakeClock
	rnd   detRand
}

var monotonicBase = time.Now()

func (s *sources) walltime() (int64, int32) {
	if s.live && s.caps.Clock {
		now := time.Now()
		return now.Unix(), int32(now.Nanosecond())
	}
	return s.clock.walltime()
}

func (s *sources) nanotime() int64 {
	if s.live && s.caps.Clock {
		return int64(time.Since(monotonicBase))
	}
	return s.clock.nanotime()
}

func (s *sources) Read(p []byte) (int, error) {
	if s.live && s.caps.Random {
		return rand.Read(p)
	}
	return s.rnd.Read(p)
}

// instantiate makes an instance whose memory maps img (nil: empty) with the
// given clock and random sources.
func (m *Module) instantiate(ctx context.Context, img *image, name string, env map[string]string,
	src *sources, logs io.Writer) (api.Module, *cowMemory, error) {
	var mem *cowMemory
	var allocErr error
	alloc := experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
		mem, allocErr = newCOWMemory(img, max)
		if allocErr != nil {
			return nil
		}
		return cowLinear{mem}
	})
	ctx = experimental.WithMemoryAllocator(isolate(ctx), alloc)
	merged, err := mergeEnv(env, nil)
	if err != nil {
		return nil, nil, err
	}
	cfg := m.base.WithArgs(name).WithStdout(logs).WithStderr(logs)
	for _, kv := range merged {
		cfg = cfg.WithEnv(kv[0], kv[1])
	}
	cfg = cfg.WithWalltime(src.walltime, 1).WithNanotime(src.nanotime, 1).WithRandSource(src)
	if src.caps.Clock {
		// A real sleep, bounded by the call's time limit (wazero's
		// Nanosleep has no context; the instance is closed at the limit).
		limit := m.limits.Timeout
		cfg = cfg.WithNanosleep(func(ns int64) {
			if src.live {
				time.Sleep(min(time.Duration(ns), limit))
			}
		})
	}
	inst, err := m.runtime.InstantiateModule(ctx, m.compiled, cfg)
	if err != nil {
		if allocErr != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMemoryLimit, allocErr)
		}
		return nil, nil, fmt.Errorf("%w: instantiating: %s", ErrInvalidModule, shorten(err.Error()))
	}
	return inst, mem, nil
}

// takeSnapshot runs init in a template instance and records its state.
func (f *Function) takeSnapshot(ctx context.Context) error {
	m := f.m
	src := &sources{}
	logs := &truncatingBuffer{limit: m.limits.MaxLog}
	inst, _, err := m.instantiate(ctx, nil, f.spec.Name, f.spec.Env, src, logs)
	if err != nil {
		return err
	}
	defer inst.Close(context.Background()) // as in sandbox.close
	if err := m.runInit(ctx, inst, f.spec.InitInput); err != nil {
		return err
	}
	var pages uint32
	var bytes []byte
	if mm := memoryOf(inst); mm != nil {
		size := mm.Size()
		pages = size / pageSize
		b, _ := mm.Read(0, size)
		bytes = slices.Clone(b)
	}
	globals, err := m.readGlobals(inst)
	if err != nil {
		return err
	}
	img, err := m.engine.images.newImage(m.instHash, bytes)
	if err != nil {
		return err
	}
	f.snap = &Snapshot{img: img, pages: pages, globals: globals, hash: snapshotHash(pages, bytes, globals)}
	f.clockAt, f.randAt = src.clock.reads, src.rnd.pos
	return nil
}

// runInit calls _initialize and cloister_init, those that are exported;
// cloister_init sees input (FunctionSpec.InitInput) as its request.
func (m *Module) runInit(ctx context.Context, inst api.Module, input []byte) error {
	ictx, cancel := context.WithTimeoutCause(isolate(ctx), max(m.limits.Timeout, 30*time.Second), errWallLimit)
	defer cancel()
	for _, name := range []string{ExportInitialize, ExportInit} {
		if fn := inst.ExportedFunction(name); fn != nil {
			cctx := ictx
			if name == ExportInit && input != nil {
				// An output that is already over its limit refuses every
				// write; no KV means the state is denied.
				cctx = context.WithValue(ictx, callStateKey{}, &callState{input: input, output: &boundedBuffer{overflowed: true}})
			}
			if _, err := fn.Call(cctx); err != nil {
				return fmt.Errorf("%w: %s: %s", errInitFailed, name, shorten(err.Error()))
			}
		}
	}
	return nil
}

// newSandbox makes an instance and puts it in the snapshot's state.
func (f *Function) newSandbox(ctx context.Context) (*sandbox, error) {
	m := f.m
	s := &sandbox{logs: &truncatingBuffer{limit: m.limits.MaxLog}, src: &sources{caps: f.spec.Caps}}
	s.initCall()
	if m.info.MutatesTables || m.info.DropsData {
		// No exact reset exists: instantiate and run init afresh (with the
		// deterministic sources, so the state equals the snapshot's), and
		// serve one call.
		inst, _, err := m.instantiate(ctx, nil, f.spec.Name, f.spec.Env, s.src, s.logs)
		if err != nil {
			return nil, err
		}
		s.inst, s.oneShot = inst, true
		if err := m.runInit(ctx, inst, f.spec.InitInput); err != nil {
			s.close()
			return nil, err
		}
		s.src.live = true
		s.handle = inst.ExportedFunction(ExportHandle)
		var ok bool
		if s.meter, ok = meterOf(inst); !ok && !m.engine.unmetered {
			s.close()
			return nil, fmt.Errorf("%w: metering globals missing", ErrInvalidModule)
		}
		return s, nil
	}
	s.src.clock.reads = f.clockAt
	s.src.rnd.seek(f.randAt)
	inst, mem, err := m.instantiate(ctx, f.snap.img, f.spec.Name, f.spec.Env, s.src, s.logs)
	if err != nil {
		return nil, err
	}
	s.inst, s.mem = inst, mem
	s.src.live = true
	fail := func(err error) (*sandbox, error) { s.close(); return nil, err }
	if mm := memoryOf(inst); mm != nil {
		if cur := mm.Size() / pageSize; cur < f.snap.pages {
			if _, ok := mm.Grow(f.snap.pages - cur); !ok {
				return fail(fmt.Errorf("%w: growing to the snapshot's %d pages", ErrMemoryLimit, f.snap.pages))
			}
		}
	}
	if s.globals, err = m.mutableGlobals(inst); err != nil {
		return fail(err)
	}
	s.handle = inst.ExportedFunction(ExportHandle)
	var metered bool
	if s.meter, metered = meterOf(inst); !metered && !m.engine.unmetered {
		return fail(fmt.Errorf("%w: metering globals missing", ErrInvalidModule))
	}
	// Instantiation wrote the data segments and initial globals: put the
	// snapshot back, dropping those pages rather than copying them back
	// on every reset.
	if s.mem != nil {
		s.mem.dropNext()
	}
	if err := f.restore(s); err != nil {
		return fail(err)
	}
	s.gen = 0
	return s, nil
}

// restore puts a sandbox back in the snapshot's exact state.
func (f *Function) restore(s *sandbox) error {
	if s.oneShot || s.inst.IsClosed() {
		return errNotResettable
	}
	if mm := memoryOf(s.inst); mm != nil && mm.Size()/pageSize != f.snap.pages {
		return errNotResettable
	}
	if s.mem != nil {
		n, err := s.mem.reset()
		if err != nil {
			return err
		}
		f.resetPages.Add(uint64(n))
	}
	for i, g := range s.globals {
		g.Set(f.snap.globals[i])
	}
	s.src.clock.reads = f.clockAt
	s.src.rnd.seek(f.randAt)
	s.logs.buf, s.logs.truncated = s.logs.buf[:0], false
	s.gen++
	return nil
}

// get takes an idle sandbox or makes one.
func (f *Function) get(ctx context.Context) (*sandbox, bool, error) {
	f.mu.Lock()
	f.lastUse = time.Now()
	if f.closed {
		f.mu.Unlock()
		return nil, false, ErrClosed
	}
	if n := len(f.idle); n > 0 {
		s := f.idle[n-1]
		f.idle = f.idle[:n-1]
		f.mu.Unlock()
		f.hits.Add(1)
		return s, true, nil
	}
	if f.live >= f.spec.MaxSandboxes {
		f.mu.Unlock()
		return nil, false, ErrBusy
	}
	f.live++
	f.mu.Unlock()
	f.misses.Add(1)
	s, err := f.newSandbox(ctx)
	if err != nil {
		f.mu.Lock()
		f.live--
		f.mu.Unlock()
		return nil, false, err
	}
	return s, false, nil
}

// put resets a sandbox and returns it to the pool, or discards it when a
// reset cannot be exact. Unclean state is never served.
func (f *Function) put(s *sandbox, reusable bool) {
	if reusable && !s.inst.IsClosed() {
		if err := f.restore(s); err == nil {
			f.resets.Add(1)
			f.mu.Lock()
			if !f.closed {
				f.idle = append(f.idle, s)
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
		}
	}
	f.discards.Add(1)
	f.mu.Lock()
	f.live--
	f.mu.Unlock()
	s.close()
}

// Call runs cloister_handle once with input, in a sandbox that starts from
// the snapshot, under the module's limits. Result.Stdout is the response;
// Result.Stderr holds what the guest wrote on stdout and stderr (its logs).
func (f *Function) Call(ctx context.Context, input []byte) (Result, error) {
	var res Result
	m := f.m
	if m.engine.closed.Load() {
		return res, ErrClosed
	}
	s, hit, err := f.get(ctx)
	if err != nil {
		return res, err
	}
	res.Reused, res.Generation, res.SnapshotHash = hit, s.gen, f.snap.hash

	st := &s.st
	s.out = boundedBuffer{limit: m.limits.MaxOutput, onOverflow: s.out.onOverflow}
	*st = callState{input: input, output: &s.out, kv: kvFrom(ctx), abort: s.cctx.abort}
	disarm := s.cctx.arm(ctx, m.limits.Timeout)

	runtime.LockOSThread()
	cpu0, ok0 := threadCPU()
	start := time.Now()
	metered := !m.engine.unmetered
	if metered {
		s.meter.arm(m.limits.Fuel)
	}
	rets, callErr := s.handle.Call(s.cctx)
	var fuelOut bool
	if metered {
		res.Instructions, fuelOut = s.meter.read()
		res.InstructionsMeasured = true
	}
	res.Wall = time.Since(start)
	cpu1, ok1 := threadCPU()
	runtime.UnlockOSThread()
	stopped := disarm() != nil
	// The call's state handle and the last value it read go with it.
	st.kv, st.lastKey, st.lastVal = nil, nil, nil
	if ok0 && ok1 {
		res.CPU, res.CPUMeasured = cpu1-cpu0, true
	}
	res.HostCalls = st.calls
	if mm := memoryOf(s.inst); mm != nil {
		res.MemoryPages = mm.Size() / pageSize
	}
	res.Stdout = st.output.buf
	if len(s.logs.buf) > 0 {
		res.Stderr = slices.Clone(s.logs.buf)
	}
	res.StderrTruncated = s.logs.truncated

	var outErr error
	switch {
	case st.kvErr != nil:
		outErr = fmt.Errorf("%w: %w", ErrState, st.kvErr)
	case st.output.overflowed:
		outErr = fmt.Errorf("%w: response exceeded %d bytes", ErrOutputTooLarge, m.limits.MaxOutput)
	case callErr != nil && fuelOut:
		outErr = fmt.Errorf("%w: the budget of %d instructions ran out", ErrFuelExhausted, m.limits.Fuel)
	case callErr != nil:
		outErr = m.classify(s.cctx, callErr, true, false, &res)
	case len(rets) == 1 && uint32(rets[0]) != 0:
		res.ExitCode = uint32(rets[0])
		outErr = fmt.Errorf("%w: %s returned %d", ErrExit, ExportHandle, res.ExitCode)
	}
	// A call that trapped, timed out or overflowed may have stopped
	// anywhere: discard the sandbox. So is one whose context was stopped
	// (a state error, the caller gone) even if the guest returned cleanly:
	// wazero's watcher may close the module just after the return, and a
	// closed module fails every later call with a cancelled exit code. A
	// clean return, even with an error code, leaves a consistent instance
	// that a reset makes exact.
	f.put(s, callErr == nil && !stopped && !st.output.overflowed && !st.tainted)
	return res, outErr
}

// fakeClock is the deterministic clock a guest sees without the clock
// capability: each reading advances it by 1 ms. Its position is part of the
// snapshot and restored on reset.
type fakeClock struct{ reads uint64 }

// fakeEpochSec is 2022-01-01T00:00:00Z, as wazero's own fake clock.
const fakeEpochSec = 1640995200

func (c *fakeClock) tick() int64 { c.reads++; return int64(c.reads) * int64(time.Millisecond) }

func (c *fakeClock) walltime() (int64, int32) {
	ns := c.tick()
	return fakeEpochSec + ns/1e9, int32(ns % 1e9)
}

func (c *fakeClock) nanotime() int64 { return c.tick() }

var _ sys.Walltime = (&fakeClock{}).walltime

// detRand is the deterministic random source a guest sees without the
// random capability: SHA-256 in counter mode over a fixed seed. Its position
// is part of the snapshot and restored on reset. Never use it for secrets.
type detRand struct {
	pos   uint64
	block [32]byte
	have  uint64 // block index held in block, plus one
}

func (r *detRand) seek(pos uint64) { r.pos = pos }

func (r *detRand) Read(p []byte) (int, error) {
	for i := range p {
		idx := r.pos / 32
		if r.have != idx+1 {
			var ctr [8]byte
			binary.BigEndian.PutUint64(ctr[:], idx)
			r.block = sha256.Sum256(append([]byte("cloister-deterministic-random\x00"), ctr[:]...))
			r.have = idx + 1
		}
		p[i] = r.block[r.pos%32]
		r.pos++
	}
	return len(p), nil
}
