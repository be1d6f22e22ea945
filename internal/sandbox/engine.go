package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// Config configures an [Engine].
type Config struct {
	// Logger receives the engine's logs. Nil discards them.
	Logger *slog.Logger
	// Unmetered compiles modules without instruction metering and fuel:
	// results then carry no instruction count and only the wall-time limit
	// stops a runaway guest. It exists for same-run comparisons in
	// benchmarks; production engines always meter.
	Unmetered bool
	// MaxCompiles bounds the compiles that run at once; more wait their
	// turn. wazero cannot stop a compile that has started, so a compile
	// whose callers all gave up runs to its end, holding its turn: the
	// bound is what keeps abandoned compiles from piling up. Zero means
	// half of GOMAXPROCS, and at least 1.
	MaxCompiles int
	// CompileWorkers is how many goroutines compile the functions of one
	// module in parallel (wazero's compilation workers). Zero means
	// GOMAXPROCS: a module compiles in about 1/N of the time on N cores.
	CompileWorkers int
	// IdleModules is how long a compiled module that nobody holds (every
	// Module from Compile given back with Release) stays cached before it
	// is freed (default DefaultIdleModules). Keep it above the longest
	// call: a sandbox of a released module may still be running.
	IdleModules time.Duration
}

// DefaultIdleModules is the default of Config.IdleModules: twice the
// longest call a manifest may ask for.
const DefaultIdleModules = 10 * time.Minute

// Engine compiles and runs WebAssembly functions. It is safe for
// concurrent use. Create one per process with [New] and release it with
// [Engine.Close].
//
// wazero enforces the memory limit per runtime, so the engine keeps one
// wazero runtime per distinct Limits.MemoryPages, created on first use, all
// sharing one compilation cache. Compiled modules are cached per (code
// hash, memory limit) while someone holds them, and for Config.IdleModules
// after the last holder released them (see Module.Release).
type Engine struct {
	unmetered bool
	workers   int // Config.CompileWorkers
	log       *slog.Logger
	cache     wazero.CompilationCache
	// wasi lists the functions of wasi_snapshot_preview1 by name, to check
	// a module's imports at compile time.
	wasi map[string]api.FunctionDefinition
	// host lists the functions of the cloister host module (reactor ABI).
	host map[string]api.FunctionDefinition

	closed atomic.Bool
	// compileSlots holds a token for each compile running: its capacity
	// is Config.MaxCompiles.
	compileSlots chan struct{}

	mu       sync.Mutex // guards runtimes, modules and the entries' waiters
	runtimes map[uint32]wazero.Runtime
	modules  map[cacheKey]*cacheEntry

	compiles  atomic.Uint64
	cacheHits atomic.Uint64
	evictions atomic.Uint64

	idle      time.Duration // Config.IdleModules
	stopSweep chan struct{} // closed by Close

	// images shares pages between the snapshot images of each module.
	images imageBases

	// spares counts the spare memories the modules keep (spare.go), at
	// most maxSpares.
	spares    atomic.Int64
	maxSpares int64
}

// cacheKey identifies one compilation.
type cacheKey struct {
	codeHash string
	pages    uint32
}

// cacheEntry is one compilation, finished once done is closed. The first
// caller for a key starts the compile in its own goroutine; every caller,
// the first included, waits on done and shares the result.
type cacheEntry struct {
	done chan struct{}
	mod  *Module // set when err is nil
	err  error

	// waiters counts the callers waiting on done. When the last one gives
	// up before done, the entry is abandoned: it leaves the cache, cancel
	// stops what of the compile still can stop, and a result that comes
	// later is thrown away. Guarded by Engine.mu.
	waiters   int
	abandoned bool
	cancel    context.CancelFunc

	// refs counts the Modules handed out and not yet released; once it
	// is back to 0, idleSince says since when (see evict.go). Guarded by
	// Engine.mu.
	refs      int
	idleSince time.Time
}

// Stats counts the engine's compile cache activity.
type Stats struct {
	// Compiles is how many modules were actually compiled.
	Compiles uint64
	// CacheHits is how many Compile calls were served from the cache,
	// including callers that waited on a compile already in flight.
	CacheHits uint64
	// Evictions is how many compiled modules were freed after going
	// unheld for Config.IdleModules.
	Evictions uint64
	// Cached is how many compiled modules the cache holds now.
	Cached int
}

// New returns an Engine configured by cfg. ctx is used for the setup only.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slots := cfg.MaxCompiles
	if slots <= 0 {
		slots = max(1, runtime.GOMAXPROCS(0)/2)
	}
	workers := cfg.CompileWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	e := &Engine{
		unmetered:    cfg.Unmetered,
		workers:      workers,
		log:          log.WithGroup("sandbox"),
		compileSlots: make(chan struct{}, slots),
		runtimes:     make(map[uint32]wazero.Runtime),
		modules:      make(map[cacheKey]*cacheEntry),
		idle:         cfg.IdleModules,
		stopSweep:    make(chan struct{}),
		maxSpares:    maxSpares(),
	}
	if e.idle <= 0 {
		e.idle = DefaultIdleModules
	}
	// Compiled native code lives in memory only. The disk is untrusted: a
	// host that edited cached native code would run its own code inside
	// the TEE, and wazero's file cache does not authenticate entries.
	e.cache = wazero.NewCompilationCache()
	// Create the runtime for the default limit now, so that a broken setup
	// fails here rather than on the first request.
	r, err := e.runtime(ctx, DefaultMemoryPages)
	if err != nil {
		_ = e.cache.Close(ctx) // the setup error is the one to return
		return nil, err
	}
	wasi := r.Module(wasi_snapshot_preview1.ModuleName)
	if wasi == nil {
		_ = e.Close(ctx) // the setup error is the one to return
		return nil, errors.New("sandbox: WASI host module missing")
	}
	e.wasi = wasi.ExportedFunctionDefinitions()
	e.host = r.Module(HostModule).ExportedFunctionDefinitions()
	e.log.LogAttrs(ctx, slog.LevelDebug, "engine ready")
	go e.sweep()
	return e, nil
}

// Close releases the engine: its runtimes, compiled modules and cache.
// Runs still in flight are stopped and return ErrClosed; later calls to
// Compile and Run return ErrClosed. Close is idempotent.
func (e *Engine) Close(ctx context.Context) error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stopSweep)
	e.mu.Lock()
	runtimes := e.runtimes
	for _, ent := range e.modules {
		ent.cancel() // compiles waiting for their turn give up
	}
	modules := e.modules
	e.runtimes, e.modules = nil, nil
	e.mu.Unlock()
	for _, ent := range modules {
		if ent.mod != nil {
			ent.mod.freeSpares()
		}
	}

	ctx = isolate(ctx)
	var errs []error
	for pages, r := range runtimes {
		if err := r.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing runtime for %d pages: %w", pages, err))
		}
	}
	if err := e.cache.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("closing compilation cache: %w", err))
	}
	return errors.Join(errs...)
}

// Stats returns the engine's compile cache counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	cached := len(e.modules)
	e.mu.Unlock()
	return Stats{Compiles: e.compiles.Load(), CacheHits: e.cacheHits.Load(), Evictions: e.evictions.Load(), Cached: cached}
}

// runtime returns the wazero runtime for a memory limit, creating it, with
// WASI instantiated in it, on first use.
func (e *Engine) runtime(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if r, ok := e.runtimes[pages]; ok {
		return r, nil
	}
	ctx = isolate(ctx)
	cfg := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages).
		WithCompilationCache(e.cache).
		WithDebugInfoEnabled(false)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := instantiateWASI(ctx, r); err != nil {
		_ = r.Close(ctx) // the setup error is the one to return
		return nil, fmt.Errorf("instantiating WASI: %w", err)
	}
	if _, err := instantiateHost(ctx, r); err != nil {
		_ = r.Close(ctx) // the setup error is the one to return
		return nil, fmt.Errorf("instantiating the %s host module: %w", HostModule, err)
	}
	e.runtimes[pages] = r
	e.log.LogAttrs(ctx, slog.LevelDebug, "runtime created", slog.Uint64("memory_pages", uint64(pages)))
	return r, nil
}

// Compile validates and compiles a module for the given limits, and caches
// it under (codeHash, limits.MemoryPages). codeHash must be a
// collision-resistant digest of wasm: the engine trusts it and does not
// hash wasm itself. Concurrent callers for the same key share one compile.
// Failed compiles are not cached.
//
// The returned Module runs with limits (defaults filled in). Callers with
// the same key and equal limits get the same *Module.
//
// Before wazero sees the module, Compile checks its structure (see
// prepareModule): custom sections are dropped, tables are bounded by
// MaxTableEntries and functions to 50,000 locals, and what the module
// costs to compile is bounded (MaxNestingDepth, MaxModuleLocals and a
// compile work budget; see compile_cost.go), so that compiling takes time
// in proportion to the module's size. The caller must still cap the size
// of what it accepts.
//
// At most Config.MaxCompiles compiles run at once. A caller whose ctx ends
// before its compile is done gets, promptly, an error wrapping ctx's error
// (and ErrTimeout if its deadline passed). The compile goes on for the
// other callers of the same key; once none is left it is abandoned: it
// stops if it has not started yet, and otherwise, since wazero cannot be
// interrupted, runs to its end in the background and its result is
// discarded, not cached.
//
// Errors wrap ErrInvalidModule for malformed, invalid or non-WASI-command
// modules (with ErrCompileLimit for a module over a compile bound),
// ErrMemoryLimit if the module's declared minimum memory exceeds
// limits.MemoryPages or a table's exceeds MaxTableEntries,
// ErrInvalidLimits, ErrTimeout and ErrClosed.
func (e *Engine) Compile(ctx context.Context, codeHash string, wasm []byte, limits Limits) (*Module, error) {
	lim, err := limits.withDefaults()
	if err != nil {
		return nil, err
	}
	if codeHash == "" {
		return nil, fmt.Errorf("%w: empty code hash", ErrInvalidModule)
	}
	key := cacheKey{codeHash: codeHash, pages: lim.MemoryPages}

	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	ent, found := e.modules[key]
	if !found {
		if err := ctx.Err(); err != nil {
			e.mu.Unlock()
			return nil, abandonedError(err)
		}
		// The compile belongs to all the callers of the key, not to this
		// one: it keeps ctx's values but not its end, and its own copy of
		// the bytes, since it may outlive this call.
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		ent = &cacheEntry{done: make(chan struct{}), cancel: cancel}
		e.modules[key] = ent
		go e.compileEntry(cctx, key, ent, codeHash, bytes.Clone(wasm), lim)
	}
	ent.waiters++
	e.mu.Unlock()

	select {
	case <-ent.done:
	case <-ctx.Done():
		select {
		case <-ent.done: // done as well: take the result
		default:
			e.leave(key, ent)
			return nil, abandonedError(ctx.Err())
		}
	}
	if ent.err != nil {
		return nil, ent.err
	}
	e.hold(ent)
	if found {
		e.cacheHits.Add(1)
	}
	if ent.mod.limits == lim {
		return ent.mod, nil
	}
	m := *ent.mod
	m.limits = lim
	return &m, nil
}

// abandonedError is the error of a caller that stopped waiting for a
// compile because its context ended.
func abandonedError(ctxErr error) error {
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return &joinedError{msg: "sandbox: compile abandoned: " + ctxErr.Error(), errs: []error{ErrTimeout, ctxErr}}
	}
	return fmt.Errorf("sandbox: compile abandoned: %w", ctxErr)
}

// leave is called by a caller of Compile that stops waiting for ent. The
// last one to leave before the compile is done abandons it.
func (e *Engine) leave(key cacheKey, ent *cacheEntry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent.waiters--
	if ent.waiters > 0 || ent.abandoned {
		return
	}
	select {
	case <-ent.done:
		return // done meanwhile: a failure has left the cache, a success stays
	default:
	}
	ent.abandoned = true
	ent.cancel()
	if e.modules[key] == ent {
		delete(e.modules, key) // the next caller starts afresh
	}
}

// compileEntry runs in its own goroutine: it waits for a compile slot,
// compiles, and publishes the result in ent, unless ent was abandoned.
func (e *Engine) compileEntry(ctx context.Context, key cacheKey, ent *cacheEntry, codeHash string, wasm []byte, lim Limits) {
	defer ent.cancel()
	var mod *Module
	var err error
	select {
	case e.compileSlots <- struct{}{}:
		if err = ctx.Err(); err == nil {
			mod, err = e.compile(ctx, codeHash, wasm, lim)
		}
		<-e.compileSlots
	case <-ctx.Done():
		err = ctx.Err() // abandoned, or the engine closed, before its turn
	}
	if err != nil && e.closed.Load() {
		err = ErrClosed
	}

	e.mu.Lock()
	abandoned := ent.abandoned
	if (err != nil || abandoned) && e.modules[key] == ent {
		delete(e.modules, key)
	}
	if abandoned {
		err = fmt.Errorf("sandbox: compile abandoned: %w", context.Canceled)
	}
	ent.err = err
	if err == nil {
		ent.mod = mod
	}
	close(ent.done) // under e.mu, so that leave sees done and abandoned agree
	e.mu.Unlock()

	if abandoned && mod != nil {
		e.log.LogAttrs(ctx, slog.LevelDebug, "abandoned compile discarded", slog.String("code_hash", codeHash))
		_ = mod.compiled.Close(context.WithoutCancel(ctx)) // wazero's CompiledModule.Close always returns nil
	}
}

// compile does the work of Compile for one key.
func (e *Engine) compile(ctx context.Context, codeHash string, wasm []byte, lim Limits) (mod *Module, err error) {
	r, err := e.runtime(ctx, lim.MemoryPages)
	if err != nil {
		return nil, err
	}
	ctx = isolate(ctx)
	start := time.Now()
	prepared, shape, err := prepareModule(wasm)
	switch {
	case errors.Is(err, errTableLimit):
		return nil, fmt.Errorf("%w: %s", ErrMemoryLimit, shorten(err.Error()))
	case errors.Is(err, errCompileLimit):
		e.log.LogAttrs(ctx, slog.LevelDebug, "module over a compile limit", slog.String("code_hash", codeHash), slog.String("error", shorten(err.Error())))
		return nil, &joinedError{
			msg:  ErrInvalidModule.Error() + ": " + shorten(err.Error()),
			errs: []error{ErrInvalidModule, ErrCompileLimit},
		}
	case err != nil:
		return nil, fmt.Errorf("%w: %s", ErrInvalidModule, shorten(err.Error()))
	case shape.hasMemory && shape.memoryMin > lim.MemoryPages:
		return nil, fmt.Errorf("%w: module declares %d pages of memory, limit is %d", ErrMemoryLimit, shape.memoryMin, lim.MemoryPages)
	}
	// Every module is rewritten before its only compile: its mutable
	// globals exported (so that a reactor's reset can restore them) and
	// instruction metering and fuel added (so that receipts carry an exact
	// count and runaway code stops at its budget). The compile below is
	// the rewritten module's validation (wazero validates in full what it
	// compiles; a refusal is ErrInvalidModule), so the pass does not
	// validate it first. The pass adds functions' code, globals and
	// exports, never imports or function exports, so the ABI check sees
	// what the owner wrote.
	rewritten, info, _, err := instrument.Rewrite(ctx, prepared, instrument.Options{Metered: !e.unmetered, CallerCompiles: true})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr // abandoned: no one will read this
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidModule, shorten(err.Error()))
	}
	compiled, err := compileGuarded(experimental.WithCompilationWorkers(ctx, e.workers), r, rewritten)
	if err != nil && e.closed.Load() {
		return nil, ErrClosed // the runtime was closed under the compile
	}
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelDebug, "module rejected", slog.String("code_hash", codeHash), slog.String("error", shorten(err.Error())))
		return nil, fmt.Errorf("%w: compiling module: %s", ErrInvalidModule, shorten(err.Error()))
	}
	abi, err := e.checkABI(compiled, shape)
	if err != nil {
		_ = compiled.Close(ctx) // always nil, as above
		return nil, err
	}
	instrumentedHash := sha256.Sum256(rewritten)
	e.compiles.Add(1)
	e.log.LogAttrs(ctx, slog.LevelInfo, "module compiled",
		slog.String("code_hash", codeHash),
		slog.Uint64("memory_pages", uint64(lim.MemoryPages)),
		slog.Int("size", len(wasm)),
		slog.Float64("compile_work", shape.compileWork),
		slog.Int("max_depth", shape.maxDepth),
		slog.Duration("took", time.Since(start)))
	return &Module{
		engine:   e,
		runtime:  r,
		compiled: compiled,
		codeHash: codeHash,
		limits:   lim,
		abi:      abi,
		info:     info,
		instHash: hex.EncodeToString(instrumentedHash[:]),
		cmdSnap:  &lazyHash{},
		spares:   &spareMemories{},
		base:     wazero.NewModuleConfig().WithName("").WithStartFunctions(),
	}, nil
}

// compileGuarded compiles wasm, turning a panic inside wazero into an
// error. prepareModule has already bounded what decoding can allocate; this
// catches the rest.
func compileGuarded(ctx context.Context, r wazero.Runtime, wasm []byte) (compiled wazero.CompiledModule, err error) {
	defer func() {
		if p := recover(); p != nil {
			compiled, err = nil, fmt.Errorf("compiler panic: %v", p)
		}
	}()
	return r.CompileModule(ctx, wasm)
}

// checkABI checks that a compiled module is a function the sandbox can
// link and returns its ABI. A reactor exports cloister_handle ([] -> [i32]),
// and may export _initialize and cloister_init ([] -> []); a command exports
// _start ([] -> []). Imports must be wasi_snapshot_preview1 functions, or
// for a reactor the cloister host functions (for a command only the state
// functions kv_*), with their exact signatures,
// and a module that imports anything needs a memory for it to work on.
func (e *Engine) checkABI(compiled wazero.CompiledModule, shape moduleShape) (ABI, error) {
	exports := compiled.ExportedFunctions()
	abi := ABICommand
	if h, ok := exports[ExportHandle]; ok {
		abi = ABIReactor
		if len(h.ParamTypes()) != 0 || !slices.Equal(h.ResultTypes(), []api.ValueType{api.ValueTypeI32}) {
			return "", fmt.Errorf("%w: reactor: %s must take nothing and return i32", ErrInvalidModule, ExportHandle)
		}
		for _, name := range []string{ExportInitialize, ExportInit} {
			if f, ok := exports[name]; ok && (len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0) {
				return "", fmt.Errorf("%w: reactor: %s must take and return nothing", ErrInvalidModule, name)
			}
		}
	} else if start, ok := exports["_start"]; !ok {
		return "", fmt.Errorf("%w: neither a WASI command (no _start export) nor a reactor (no handle export)", ErrInvalidModule)
	} else if len(start.ParamTypes()) != 0 || len(start.ResultTypes()) != 0 {
		return "", fmt.Errorf("%w: not a WASI command: _start must take and return nothing", ErrInvalidModule)
	}
	imports := compiled.ImportedFunctions()
	for _, fn := range imports {
		module, name, _ := fn.Import()
		var want api.FunctionDefinition
		var ok bool
		switch {
		case module == wasi_snapshot_preview1.ModuleName:
			if want, ok = e.wasi[name]; !ok {
				return "", fmt.Errorf("%w: imports unknown WASI function %s", ErrInvalidModule, quoteName(name))
			}
		case module == HostModule && (abi == ABIReactor || kvImports[name]):
			if want, ok = e.host[name]; !ok {
				return "", fmt.Errorf("%w: imports unknown %s function %s", ErrInvalidModule, HostModule, quoteName(name))
			}
		default:
			return "", fmt.Errorf("%w: imports %s from module %s; only WASI (and, for reactors, the platform's host functions) is provided", ErrInvalidModule, quoteName(name), quoteName(module))
		}
		if !slices.Equal(fn.ParamTypes(), want.ParamTypes()) || !slices.Equal(fn.ResultTypes(), want.ResultTypes()) {
			return "", fmt.Errorf("%w: imports %s function %s with the wrong signature", ErrInvalidModule, quoteName(module), quoteName(name))
		}
	}
	if shape.nonFuncImports > 0 {
		return "", fmt.Errorf("%w: imports tables, memories, globals or tags; only host functions are provided", ErrInvalidModule)
	}
	if len(imports) > 0 && !shape.hasMemory {
		return "", fmt.Errorf("%w: imports host functions but has no memory", ErrInvalidModule)
	}
	return abi, nil
}
