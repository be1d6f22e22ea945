package sandbox

import (
	"runtime"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// A command gets a new instance on every run, but its linear memory need
// not be a new mapping: reserving the memory limit, opening the pages the
// guest uses, taking their page faults and unmapping them again cost more
// than the rest of a small command's run. So a run's memory, once its
// instance closes, is zeroed (the pages the guest wrote are cleared, or
// dropped when there are many: cowMemory.zero) and kept for the next run
// of the same module. A spare memory is never shared between modules, so
// it never passes between functions or tenants even zeroed, and it is
// freed when the module is released, evicted or its engine closes.

// sparesPerCPU bounds the spare memories an engine keeps, per CPU: a run
// holds its memory only while it runs, so a few per CPU are enough for
// every run to find one.
const sparesPerCPU = 4

// spareMemories are the zeroed memories of a module's finished runs.
type spareMemories struct {
	mu   sync.Mutex
	mems []*cowMemory
}

// commandMemory returns the allocator of a command's run: a spare memory of
// the module when there is one, else a new reservation. The memory goes
// back to the spares when the instance closes. *allocErr is set when a new
// reservation fails.
func (m *Module) commandMemory(allocErr *error) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(_, limit uint64) experimental.LinearMemory {
		if mem := m.takeSpare(limit); mem != nil {
			return spareLinear{m, mem}
		}
		mem, err := newCOWMemory(nil, limit)
		if err != nil {
			*allocErr = err
			return nil
		}
		return spareLinear{m, mem}
	})
}

// spareLinear is a command's memory: freeing it gives it back to its module.
type spareLinear struct {
	m   *Module
	mem *cowMemory
}

func (s spareLinear) Reallocate(size uint64) []byte { return s.mem.reallocate(size) }
func (s spareLinear) Free()                         { s.m.putSpare(s.mem) }

// takeSpare takes a spare memory reserved for limit bytes, or returns nil.
func (m *Module) takeSpare(limit uint64) *cowMemory {
	s := m.spares
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.mems) - 1; i >= 0; i-- {
		if mem := s.mems[i]; mem.fits(limit) {
			s.mems = append(s.mems[:i], s.mems[i+1:]...)
			m.engine.spares.Add(-1)
			return mem
		}
	}
	return nil
}

// putSpare zeroes mem and keeps it for the module's next run, or frees it
// when it cannot be zeroed, the engine keeps enough spares or is closed.
func (m *Module) putSpare(mem *cowMemory) {
	e := m.engine
	if e.closed.Load() || e.spares.Load() >= e.maxSpares {
		mem.free()
		return
	}
	if _, err := mem.zero(); err != nil {
		mem.free()
		return
	}
	s := m.spares
	s.mu.Lock()
	if e.closed.Load() || e.spares.Add(1) > e.maxSpares {
		s.mu.Unlock()
		e.spares.Add(-1)
		mem.free()
		return
	}
	s.mems = append(s.mems, mem)
	s.mu.Unlock()
}

// freeSpares frees the module's spare memories.
func (m *Module) freeSpares() {
	s := m.spares
	s.mu.Lock()
	mems := s.mems
	s.mems = nil
	s.mu.Unlock()
	m.engine.spares.Add(-int64(len(mems)))
	for _, mem := range mems {
		mem.free()
	}
}

// maxSpares is how many spare memories an engine keeps at most.
func maxSpares() int64 { return int64(sparesPerCPU * runtime.GOMAXPROCS(0)) }
