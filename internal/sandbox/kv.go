package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// KV is a function's state as the state host functions see it (the
// worker's adapter over internal/state). Errors that wrap ErrKVInvalid,
// ErrKVTooLarge or ErrKVQuota are returned to the guest as codes; any other
// error fails the call: the host stops the guest and Call or Run returns
// the error wrapped in ErrState.
type KV interface {
	Get(ctx context.Context, key []byte) ([]byte, bool, error)
	Put(ctx context.Context, key, value []byte) error
	Delete(ctx context.Context, key []byte) (bool, error)
	CompareAndSwap(ctx context.Context, key, oldValue []byte, oldPresent bool, newValue []byte, newPresent bool) (bool, error)
	List(ctx context.Context, prefix, start []byte, limit int) ([][]byte, bool, error)
}

// Errors a KV returns for the guest to handle.
var (
	ErrKVInvalid  = errors.New("invalid state key")
	ErrKVTooLarge = errors.New("state value too large")
	ErrKVQuota    = errors.New("state quota exceeded")
	// ErrState wraps a state error that failed the call.
	ErrState = errors.New("state operation failed")
)

type kvKey struct{}

// WithKV attaches a function's state to the context of a Call or Run. The
// guest reaches it through the kv_* host functions; without it they return
// KVDenied.
func WithKV(ctx context.Context, kv KV) context.Context { return context.WithValue(ctx, kvKey{}, kv) }

func kvFrom(ctx context.Context) KV {
	kv, _ := ctx.Value(kvKey{}).(KV)
	return kv
}

// Codes the kv_* host functions return (as i32).
const (
	KVNotFound    = -1 // kv_get: no such key
	KVInvalid     = -2 // a pointer or length out of bounds, or an invalid key
	KVTooLarge    = -3 // the value is over the limit
	KVQuota       = -4 // the function's key count or total bytes would be exceeded
	KVDenied      = -5 // no state for this call (not granted, or during init)
	KVBufferSmall = -6 // kv_list: the buffer cannot hold the next key
	KVFailed      = -7 // the state failed (integrity or availability); the call is stopped
)

// kvAbsent is the length (-1) that means "absent" in kv_cas.
const kvAbsent = 0xFFFFFFFF

// kvImports are the state host functions; commands may import these (and
// only these) from the host module too.
var kvImports = map[string]bool{"kv_get": true, "kv_put": true, "kv_delete": true, "kv_cas": true, "kv_list": true}

func code(c int32) uint64 { return uint64(uint32(c)) }

// kvStatus turns a KV error into a guest code; a failing error is recorded
// and stops the call.
func (st *callState) kvStatus(err error) uint64 {
	switch {
	case errors.Is(err, ErrKVInvalid):
		return code(KVInvalid)
	case errors.Is(err, ErrKVTooLarge):
		return code(KVTooLarge)
	case errors.Is(err, ErrKVQuota):
		return code(KVQuota)
	}
	if st.kvErr == nil {
		st.kvErr = err
	}
	if st.abort != nil {
		st.abort(fmt.Errorf("%w: %w", ErrState, err))
	}
	return code(KVFailed)
}

// kvState returns the call's state and KV, or nil when the guest has none.
func kvState(ctx context.Context) (*callState, KV) {
	st := stateOf(ctx)
	if st == nil {
		return nil, nil
	}
	st.calls++
	if st.kv == nil || st.kvErr != nil {
		return nil, nil
	}
	return st, st.kv
}

// read copies n bytes at ptr out of guest memory.
func read(mod api.Module, ptr, n uint32) ([]byte, bool) {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		return nil, false
	}
	return bytes.Clone(b), true
}

// addKVFunctions adds the state host functions to the host module:
//
//	kv_get(key, key_len, buf, cap) -> i32      value length (copied if <= cap), or a code
//	kv_put(key, key_len, val, val_len) -> i32  0, or a code
//	kv_delete(key, key_len) -> i32             1 deleted, 0 absent, or a code
//	kv_cas(key, key_len, old, old_len, new, new_len) -> i32
//	                                           1 swapped, 0 not; a length of -1 means absent
//	kv_list(prefix, prefix_len, start, start_len, buf, cap) -> i32
//	                                           bytes written: keys after start, each as
//	                                           u32 LE length + bytes; 0 when no more
//
// Every pointer and length is checked against guest memory; values are
// copied in and out, never shared. Nothing survives the call: the last
// value read is kept only so that a kv_get retried with a bigger buffer
// does not read again.
func addKVFunctions(b wazero.HostModuleBuilder) wazero.HostModuleBuilder {
	i32 := api.ValueTypeI32
	fn := func(name string, params int, f func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64) {
		ps := make([]api.ValueType, params)
		for i := range ps {
			ps[i] = i32
		}
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			st, kv := kvState(ctx)
			if kv == nil {
				stack[0] = code(KVDenied)
				if st := stateOf(ctx); st != nil && st.kvErr != nil {
					stack[0] = code(KVFailed)
				}
				return
			}
			stack[0] = f(ctx, mod, st, offThread{kv}, stack)
		}), ps, []api.ValueType{i32}).Export(name)
	}
	fn("kv_get", 4, func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64 {
		key, ok := read(mod, uint32(s[0]), uint32(s[1]))
		if !ok {
			return code(KVInvalid)
		}
		var val []byte
		if st.lastKey != nil && bytes.Equal(st.lastKey, key) {
			val = st.lastVal
		} else {
			v, found, err := kv.Get(ctx, key)
			if err != nil {
				return st.kvStatus(err)
			}
			if !found {
				st.lastKey, st.lastVal = nil, nil
				return code(KVNotFound)
			}
			st.lastKey, st.lastVal, val = key, v, v
		}
		if uint32(len(val)) <= uint32(s[3]) {
			if !mod.Memory().Write(uint32(s[2]), val) {
				return code(KVInvalid)
			}
			st.lastKey, st.lastVal = nil, nil
		}
		return uint64(uint32(len(val)))
	})
	fn("kv_put", 4, func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64 {
		st.lastKey, st.lastVal = nil, nil
		key, ok1 := read(mod, uint32(s[0]), uint32(s[1]))
		val, ok2 := read(mod, uint32(s[2]), uint32(s[3]))
		if !ok1 || !ok2 {
			return code(KVInvalid)
		}
		if err := kv.Put(ctx, key, val); err != nil {
			return st.kvStatus(err)
		}
		return 0
	})
	fn("kv_delete", 2, func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64 {
		st.lastKey, st.lastVal = nil, nil
		key, ok := read(mod, uint32(s[0]), uint32(s[1]))
		if !ok {
			return code(KVInvalid)
		}
		existed, err := kv.Delete(ctx, key)
		if err != nil {
			return st.kvStatus(err)
		}
		if existed {
			return 1
		}
		return 0
	})
	fn("kv_cas", 6, func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64 {
		st.lastKey, st.lastVal = nil, nil
		key, ok := read(mod, uint32(s[0]), uint32(s[1]))
		if !ok {
			return code(KVInvalid)
		}
		var old, nw []byte
		oldPresent, newPresent := uint32(s[3]) != kvAbsent, uint32(s[5]) != kvAbsent
		if oldPresent {
			if old, ok = read(mod, uint32(s[2]), uint32(s[3])); !ok {
				return code(KVInvalid)
			}
		}
		if newPresent {
			if nw, ok = read(mod, uint32(s[4]), uint32(s[5])); !ok {
				return code(KVInvalid)
			}
		}
		swapped, err := kv.CompareAndSwap(ctx, key, old, oldPresent, nw, newPresent)
		if err != nil {
			return st.kvStatus(err)
		}
		if swapped {
			return 1
		}
		return 0
	})
	fn("kv_list", 6, func(ctx context.Context, mod api.Module, st *callState, kv KV, s []uint64) uint64 {
		prefix, ok1 := read(mod, uint32(s[0]), uint32(s[1]))
		start, ok2 := read(mod, uint32(s[2]), uint32(s[3]))
		bufPtr, bufCap := uint32(s[4]), uint32(s[5])
		if _, ok3 := mod.Memory().Read(bufPtr, bufCap); !ok1 || !ok2 || !ok3 {
			return code(KVInvalid)
		}
		keys, _, err := kv.List(ctx, prefix, start, int(min(bufCap/5+1, 1000)))
		if err != nil {
			return st.kvStatus(err)
		}
		var out []byte
		for _, k := range keys {
			if uint64(len(out))+4+uint64(len(k)) > uint64(bufCap) {
				break
			}
			out = binary.LittleEndian.AppendUint32(out, uint32(len(k)))
			out = append(out, k...)
		}
		if len(out) == 0 && len(keys) > 0 {
			return code(KVBufferSmall)
		}
		if !mod.Memory().Write(bufPtr, out) {
			return code(KVInvalid)
		}
		return uint64(uint32(len(out)))
	})
	return b
}

// offThread runs a KV's operations on a goroutine of their own while the
// guest's goroutine waits. The guest's goroutine holds its OS thread
// (runtime.LockOSThread, for CPU metering), and each time a goroutine
// locked to a thread blocks, the Go runtime hands its processor to another
// thread and later hands it back (two thread wake-ups). A state operation
// may block several times (a sealed write stores its value, then commits
// it at the anchor, and may wait for a lock); off the locked thread those
// blocks are ordinary goroutine switches, and the locked thread blocks
// once, on the result. The guest is paused meanwhile, so nothing runs
// concurrently with it; the time spent is wall time of the call, not CPU
// time of its thread.
//
// The goroutines are kept (offWorker): a new goroutine starts with a small
// stack, and a sealed operation's calls are deep enough to grow it, a copy
// of the whole stack, on every call (in BenchmarkYCSB C, 6% of the CPU).
type offThread struct{ kv KV }

// offJobs hands a job to an idle off-thread worker, if one waits.
var offJobs = make(chan func())

// offIdle is how long an off-thread worker waits for a job before it ends.
const offIdle = 10 * time.Second

// run calls fn on an off-thread worker and waits for it; a panic in fn is
// raised again in the caller.
func (o offThread) run(fn func()) {
	done := make(chan any, 1)
	job := func() {
		defer func() { done <- recover() }()
		fn()
	}
	select {
	case offJobs <- job:
	default:
		go offWorker(job)
	}
	if p := <-done; p != nil {
		panic(p)
	}
}

// offWorker runs job, then the jobs handed to it, until it has waited
// offIdle for one.
func offWorker(job func()) {
	t := time.NewTimer(offIdle)
	defer t.Stop()
	for {
		job()
		t.Reset(offIdle)
		select {
		case job = <-offJobs:
		case <-t.C:
			return
		}
	}
}

func (o offThread) Get(ctx context.Context, key []byte) (v []byte, ok bool, err error) {
	o.run(func() { v, ok, err = o.kv.Get(ctx, key) })
	return
}

func (o offThread) Put(ctx context.Context, key, value []byte) (err error) {
	o.run(func() { err = o.kv.Put(ctx, key, value) })
	return
}

func (o offThread) Delete(ctx context.Context, key []byte) (ok bool, err error) {
	o.run(func() { ok, err = o.kv.Delete(ctx, key) })
	return
}

func (o offThread) CompareAndSwap(ctx context.Context, key, oldValue []byte, oldPresent bool, newValue []byte, newPresent bool) (ok bool, err error) {
	o.run(func() { ok, err = o.kv.CompareAndSwap(ctx, key, oldValue, oldPresent, newValue, newPresent) })
	return
}

func (o offThread) List(ctx context.Context, prefix, start []byte, limit int) (keys [][]byte, more bool, err error) {
	o.run(func() { keys, more, err = o.kv.List(ctx, prefix, start, limit) })
	return
}
