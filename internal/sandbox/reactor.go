package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/cloister-faas/cloister/internal/instrument"
)

// ABI names how a module talks to the platform.
type ABI string

// The ABIs. See docs/reactor-abi.md.
const (
	// ABICommand is the WASI command ABI: request on stdin, response on
	// stdout, metadata in the environment; a fresh instance per run.
	ABICommand ABI = "wasi-command"
	// ABIReactor is Cloister's reactor ABI: initialised once, snapshotted,
	// then cloister_handle is called per request from the snapshot's state.
	ABIReactor ABI = "reactor"
)

// Reactor ABI names.
const (
	HostModule       = "cloister"
	ExportHandle     = "cloister_handle"
	ExportInit       = "cloister_init"
	ExportInitialize = "_initialize"
)

// callState is one reactor call's input and output, reached by the host
// functions through the call's context.
type callState struct {
	input  []byte
	output *boundedBuffer
	calls  uint64 // host calls made
	// tainted is set when the guest changed host-side state a reset does
	// not restore (it tried to close or renumber a standard descriptor).
	tainted bool
	// kv is the function's state for this call (nil: none); kvErr the
	// state error that failed the call; abort stops the guest.
	kv    KV
	kvErr error
	abort context.CancelCauseFunc
	// lastKey and lastVal are the last kv_get's, for a retry with a bigger
	// buffer. They belong to the call and go with it.
	lastKey, lastVal []byte
}

// errnoBadf is WASI's EBADF.
const errnoBadf = 8

// instantiateWASI adds wasi_snapshot_preview1 to r with fd_close and
// fd_renumber replaced: no file or socket is ever opened, so the only
// descriptors are stdin, stdout and stderr, and those are host-side state
// that outlives a call. Closing or renumbering them is reported as done but
// not done, and marks the call tainted, so that a reactor's sandbox is
// discarded afterwards rather than reset. Other descriptors get EBADF, as
// they would from wazero.
func instantiateWASI(ctx context.Context, r wazero.Runtime) (api.Module, error) {
	b := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	i32 := api.ValueTypeI32
	stdio := func(ctx context.Context, fds ...uint64) uint64 {
		for _, fd := range fds {
			if uint32(fd) > 2 {
				return errnoBadf
			}
		}
		if st := stateOf(ctx); st != nil {
			st.tainted = true
		}
		return 0
	}
	b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
		stack[0] = stdio(ctx, stack[0])
	}), []api.ValueType{i32}, []api.ValueType{i32}).WithParameterNames("fd").Export("fd_close")
	b.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(ctx context.Context, stack []uint64) {
		stack[0] = stdio(ctx, stack[0], stack[1])
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).WithParameterNames("fd", "to").Export("fd_renumber")
	return b.Instantiate(ctx)
}

type callStateKey struct{}

func stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(callStateKey{}).(*callState)
	return st
}

// instantiateHost adds the cloister host module (reactor ABI v1) to r:
//
//	input_len() -> i32
//	input_read(ptr, len i32) -> i32   copies min(len, input_len) bytes; -1 if out of bounds
//	output_write(ptr, len i32) -> i32 appends to the response; -1 if over the limit or out of bounds
//
// Every argument from the guest is bounds-checked; outside a call (during
// init) the input is empty and output is refused.
func instantiateHost(ctx context.Context, r wazero.Runtime) (api.Module, error) {
	i32 := api.ValueTypeI32
	fail := uint64(0xFFFFFFFF) // -1 as i32
	return addKVFunctions(r.NewHostModuleBuilder(HostModule)).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
		st := stateOf(ctx)
		if st == nil {
			stack[0] = 0
			return
		}
		st.calls++
		stack[0] = uint64(uint32(len(st.input)))
	}), nil, []api.ValueType{i32}).Export("input_len").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		ptr, n := uint32(stack[0]), uint32(stack[1])
		st := stateOf(ctx)
		if st == nil {
			stack[0] = 0
			return
		}
		st.calls++
		n = min(n, uint32(len(st.input)))
		if !mod.Memory().Write(ptr, st.input[:n]) {
			stack[0] = fail
			return
		}
		stack[0] = uint64(n)
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("input_read").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		ptr, n := uint32(stack[0]), uint32(stack[1])
		st := stateOf(ctx)
		if st == nil {
			stack[0] = fail
			return
		}
		st.calls++
		b, ok := mod.Memory().Read(ptr, n)
		if !ok {
			stack[0] = fail
			return
		}
		if _, err := st.output.Write(b); err != nil {
			stack[0] = fail
			return
		}
		stack[0] = 0
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("output_write").
		Instantiate(ctx)
}

// Snapshot is the state of a reactor after _initialize and cloister_init:
// its memory (in a sealed image) and its mutable globals. Every call starts
// from exactly this state.
type Snapshot struct {
	img     *image
	pages   uint32
	globals []uint64 // in the order of Module.info.Globals
	hash    string
}

// Hash identifies the snapshot: sha256 over the page count, the memory and
// the global values. Init runs with a deterministic clock and random source,
// so every worker computes the same hash for the same module and manifest.
func (s *Snapshot) Hash() string { return s.hash }

// Pages is the snapshot's memory size in 64 KiB pages.
func (s *Snapshot) Pages() uint32 { return s.pages }

func snapshotHash(pages uint32, mem []byte, globals []uint64) string {
	h := sha256.New()
	h.Write([]byte("cloister-snapshot-v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(pages))
	h.Write(b[:])
	h.Write(mem)
	for _, g := range globals {
		binary.BigEndian.PutUint64(b[:], g)
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// errReactorOnly and friends.
var errNotReactor = fmt.Errorf("%w: not a reactor module", ErrInvalidInvocation)

// readGlobals reads the exported mutable globals of inst in info order.
func (m *Module) readGlobals(inst api.Module) ([]uint64, error) {
	out := make([]uint64, len(m.info.Globals))
	for i, g := range m.info.Globals {
		eg := inst.ExportedGlobal(g.Export)
		if eg == nil {
			return nil, fmt.Errorf("%w: exported global %s missing", ErrInvalidModule, g.Export)
		}
		out[i] = eg.Get()
	}
	return out, nil
}

// mutableGlobals returns the exported mutable globals of inst in info order.
func (m *Module) mutableGlobals(inst api.Module) ([]api.MutableGlobal, error) {
	out := make([]api.MutableGlobal, len(m.info.Globals))
	for i, g := range m.info.Globals {
		mg, ok := inst.ExportedGlobal(g.Export).(api.MutableGlobal)
		if !ok {
			return nil, fmt.Errorf("%w: global %s is not mutable", ErrInvalidModule, g.Export)
		}
		out[i] = mg
	}
	return out, nil
}

var errInitFailed = errors.New("reactor initialisation failed")

// CommandSnapshotHash returns the hash of a command's post-instantiation
// state (memory after the data segments, before _start), which every run
// starts from. It is computed the same way as a reactor's snapshot hash.
func (m *Module) CommandSnapshotHash(ctx context.Context) (string, error) {
	if m.abi != ABICommand {
		return "", fmt.Errorf("%w: not a command module", ErrInvalidInvocation)
	}
	m.cmdSnap.once.Do(func() {
		logs := &truncatingBuffer{limit: 1}
		inst, _, err := m.instantiate(ctx, nil, DefaultName, nil, &sources{}, logs)
		if err != nil {
			m.cmdSnap.err = err
			return
		}
		defer inst.Close(context.Background()) // as in sandbox.close
		var pages uint32
		var mem []byte
		if mm := memoryOf(inst); mm != nil {
			pages = mm.Size() / pageSize
			mem, _ = mm.Read(0, mm.Size())
		}
		m.cmdSnap.hash = snapshotHash(pages, mem, nil)
	})
	return m.cmdSnap.hash, m.cmdSnap.err
}

// Inspection is what the coordinator learns of a module at deploy.
type Inspection struct {
	ABI          ABI
	SnapshotHash string
}

// Inspect compiles wasm as Compile does (cached under codeHash for
// Config.IdleModules, so that a deploy of the same code soon after does not
// compile again) and computes the hash of
// the state its invocations will start from: for a reactor, the snapshot
// after init in an instance configured by spec; for a command, the
// post-instantiation state. Workers compute the same hash from the same
// module and spec.
func (e *Engine) Inspect(ctx context.Context, codeHash string, wasm []byte, limits Limits, spec FunctionSpec) (Inspection, error) {
	m, err := e.Compile(ctx, codeHash, wasm, limits)
	if err != nil {
		return Inspection{}, err
	}
	defer m.Release()
	out := Inspection{ABI: m.abi}
	if m.abi == ABICommand {
		out.SnapshotHash, err = m.CommandSnapshotHash(ctx)
		return out, err
	}
	spec.Prewarm, spec.IdleTimeout = 0, -1
	f, err := m.NewFunction(ctx, spec)
	if err != nil {
		return Inspection{}, err
	}
	defer f.Close()
	out.SnapshotHash = f.snap.hash
	return out, nil
}

// meter is an instance's metering globals.
type meter struct {
	counter, fuel api.MutableGlobal
}

// meterOf finds the metering globals the instrumentation pass exported.
func meterOf(inst api.Module) (meter, bool) {
	c, ok1 := inst.ExportedGlobal(instrument.CounterExport).(api.MutableGlobal)
	f, ok2 := inst.ExportedGlobal(instrument.FuelExport).(api.MutableGlobal)
	return meter{c, f}, ok1 && ok2
}

// arm sets the counter to zero and the fuel to the budget before a call.
func (mt meter) arm(fuel uint64) {
	mt.counter.Set(0)
	mt.fuel.Set(fuel)
}

// read returns the count after a call and whether the fuel ran out.
func (mt meter) read() (uint64, bool) {
	return mt.counter.Get(), int64(mt.fuel.Get()) == instrument.FuelExhausted
}
