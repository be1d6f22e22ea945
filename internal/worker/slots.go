package worker

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// SlotLimits bound what one worker runs at once, in total and per
// namespace. Zero fields take the defaults named on each.
type SlotLimits struct {
	// Slots is how many invocations run at once (Config.Concurrency).
	Slots int
	// NamespaceSlots is the most slots one namespace may hold
	// (default: half of Slots, at least 1), so that one namespace's long
	// calls always leave room for the others.
	NamespaceSlots int
	// MemoryBudget is the guest memory, in bytes, that running calls may
	// reserve in total; a call reserves its function's memory limit for
	// as long as it runs (default DefaultMemoryBudget).
	MemoryBudget int64
	// NamespaceMemory is the most of MemoryBudget one namespace's running
	// calls may reserve (default: half of MemoryBudget).
	NamespaceMemory int64
	// QueueDepth is how many calls of one namespace may wait for a slot
	// (default: Slots). A call past it is refused at once.
	QueueDepth int
	// QueueWait is the longest a call waits for a slot before it is
	// refused (default DefaultQueueWait).
	QueueWait time.Duration
}

// Defaults of SlotLimits.
const (
	DefaultMemoryBudget int64 = 8 << 30
	DefaultQueueWait          = 10 * time.Second
)

func (l SlotLimits) withDefaults() SlotLimits {
	if l.Slots <= 0 {
		l.Slots = 64
	}
	if l.NamespaceSlots <= 0 {
		l.NamespaceSlots = max(1, l.Slots/2)
	}
	l.NamespaceSlots = min(l.NamespaceSlots, l.Slots)
	if l.MemoryBudget <= 0 {
		l.MemoryBudget = DefaultMemoryBudget
	}
	if l.NamespaceMemory <= 0 {
		l.NamespaceMemory = l.MemoryBudget / 2
	}
	l.NamespaceMemory = min(l.NamespaceMemory, l.MemoryBudget)
	if l.QueueDepth <= 0 {
		l.QueueDepth = l.Slots
	}
	if l.QueueWait <= 0 {
		l.QueueWait = DefaultQueueWait
	}
	return l
}

// slots hands out a worker's invocation slots and its guest-memory budget
// fairly across namespaces. A call takes a slot at once when one is free
// and its namespace is within its shares; otherwise it waits in its
// namespace's FIFO queue. Freed capacity goes to the waiting namespaces in
// turn (round robin), so a namespace with a long queue cannot starve one
// with a short one. A call that cannot wait (its queue is full, it waited
// QueueWait, or it asks for more memory than a namespace may ever hold) is
// refused with apierr.Overloaded: nothing ran.
//
// Lock order: slots.mu is a leaf; nothing is called with it held.
type slots struct {
	lim SlotLimits
	now func() time.Time

	mu      sync.Mutex
	used    int
	memUsed int64
	ns      map[string]*nsShare
	ring    *list.List // namespaces with waiters, in turn order (*nsShare)
	stats   slotStats
}

// nsShare is one namespace's use and queue.
type nsShare struct {
	name    string
	used    int
	mem     int64
	waiters *list.List    // *slotWaiter, FIFO
	inRing  *list.Element // its place in slots.ring while it has waiters
}

type slotWaiter struct {
	mem     int64
	granted chan struct{} // closed when the slot is the waiter's
}

// slotStats are counters for metrics.
type slotStats struct {
	Granted, Queued, RefusedQueueFull, RefusedWait, RefusedMemory uint64
}

func newSlots(lim SlotLimits, now func() time.Time) *slots {
	if now == nil {
		now = time.Now
	}
	return &slots{lim: lim.withDefaults(), now: now, ns: map[string]*nsShare{}, ring: list.New()}
}

// acquire takes a slot for a call of namespace ns that reserves mem bytes
// of guest memory, waiting its turn if need be. The returned release gives
// both back; call it exactly once.
func (s *slots) acquire(ctx context.Context, ns string, mem int64) (func(), error) {
	if mem > s.lim.NamespaceMemory {
		s.mu.Lock()
		s.stats.RefusedMemory++
		s.mu.Unlock()
		return nil, apierr.New(apierr.Overloaded, "the function's memory limit (%d MiB) is over what one namespace may reserve on this worker (%d MiB of a %d MiB budget)",
			mem>>20, s.lim.NamespaceMemory>>20, s.lim.MemoryBudget>>20)
	}
	s.mu.Lock()
	sh := s.share(ns)
	if sh.waiters.Len() == 0 && s.fits(sh, mem) {
		s.take(sh, mem)
		s.stats.Granted++
		s.mu.Unlock()
		return s.releaser(ns, mem), nil
	}
	if sh.waiters.Len() >= s.lim.QueueDepth {
		s.stats.RefusedQueueFull++
		s.mu.Unlock()
		return nil, apierr.New(apierr.Overloaded, "namespace %q already has %d calls waiting for a slot on this worker", ns, s.lim.QueueDepth)
	}
	wt := &slotWaiter{mem: mem, granted: make(chan struct{})}
	el := sh.waiters.PushBack(wt)
	if sh.inRing == nil {
		sh.inRing = s.ring.PushBack(sh)
	}
	s.stats.Queued++
	s.mu.Unlock()

	timer := time.NewTimer(s.lim.QueueWait)
	defer timer.Stop()
	var why error
	select {
	case <-wt.granted:
		return s.releaser(ns, mem), nil
	case <-ctx.Done():
		why = apierr.New(apierr.Unavailable, "the call was abandoned while it waited for a slot")
	case <-timer.C:
		s.mu.Lock()
		running, mine := s.used, sh.used
		s.mu.Unlock()
		why = apierr.New(apierr.Overloaded, "no slot on this worker within %s: %d calls running of %d, %d of them namespace %q's (its share is %d)",
			s.lim.QueueWait, running, s.lim.Slots, mine, ns, s.lim.NamespaceSlots)
	}
	s.mu.Lock()
	select {
	case <-wt.granted:
		// Granted while giving up: hand the slot on.
		s.mu.Unlock()
		s.release(ns, mem)
	default:
		sh.waiters.Remove(el)
		s.stats.RefusedWait++
		s.forget(sh)
		s.mu.Unlock()
	}
	return nil, why
}

// saturated reports whether a call of ns would have to wait: the worker
// is full, ns holds its share of slots, or ns already has calls waiting.
// The async dispatcher leaves such a namespace's jobs in the stream.
func (s *slots) saturated(ns string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.lim.Slots {
		return true
	}
	sh, ok := s.ns[ns]
	return ok && (sh.used >= s.lim.NamespaceSlots || sh.waiters.Len() > 0)
}

func (s *slots) releaser(ns string, mem int64) func() {
	var once sync.Once
	return func() { once.Do(func() { s.release(ns, mem) }) }
}

// release gives a slot back and grants what now fits, namespace by
// namespace in turn.
func (s *slots) release(ns string, mem int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.ns[ns]
	sh.used--
	sh.mem -= mem
	s.used--
	s.memUsed -= mem
	s.grant()
	s.forget(sh)
}

// grant gives freed capacity to waiters, one namespace at a time in ring
// order: each namespace whose first waiter fits gets one slot, then goes
// to the back of the ring. It stops when a full turn grants nothing.
func (s *slots) grant() {
	for s.used < s.lim.Slots {
		granted := false
		for n := s.ring.Len(); n > 0 && s.used < s.lim.Slots; n-- {
			e := s.ring.Front()
			sh := e.Value.(*nsShare)
			first := sh.waiters.Front()
			wt := first.Value.(*slotWaiter)
			if !s.fits(sh, wt.mem) {
				s.ring.MoveToBack(e)
				continue
			}
			sh.waiters.Remove(first)
			s.take(sh, wt.mem)
			s.stats.Granted++
			close(wt.granted)
			granted = true
			if sh.waiters.Len() == 0 {
				s.ring.Remove(e)
				sh.inRing = nil
			} else {
				s.ring.MoveToBack(e)
			}
		}
		if !granted {
			return
		}
	}
}

func (s *slots) share(ns string) *nsShare {
	sh, ok := s.ns[ns]
	if !ok {
		sh = &nsShare{name: ns, waiters: list.New()}
		s.ns[ns] = sh
	}
	return sh
}

// forget drops an idle namespace's entry, so that the map holds only
// namespaces with calls running or waiting.
func (s *slots) forget(sh *nsShare) {
	if sh.waiters.Len() == 0 && sh.inRing != nil {
		s.ring.Remove(sh.inRing)
		sh.inRing = nil
	}
	if sh.used == 0 && sh.waiters.Len() == 0 {
		delete(s.ns, sh.name)
	}
}

func (s *slots) fits(sh *nsShare, mem int64) bool {
	return s.used < s.lim.Slots && sh.used < s.lim.NamespaceSlots &&
		s.memUsed+mem <= s.lim.MemoryBudget && sh.mem+mem <= s.lim.NamespaceMemory
}

func (s *slots) take(sh *nsShare, mem int64) {
	sh.used++
	sh.mem += mem
	s.used++
	s.memUsed += mem
}

// slotUse is a snapshot for metrics and advertisements.
type slotUse struct {
	Used, Waiting, Namespaces int
	MemoryReserved            int64
	slotStats
}

func (s *slots) use() slotUse {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := slotUse{Used: s.used, MemoryReserved: s.memUsed, Namespaces: len(s.ns), slotStats: s.stats}
	for _, sh := range s.ns {
		u.Waiting += sh.waiters.Len()
	}
	return u
}

// String describes the limits, for the start-up log.
func (l SlotLimits) String() string {
	return fmt.Sprintf("%d slots (%d per namespace), %d MiB guest memory (%d MiB per namespace), %d waiting per namespace for at most %s",
		l.Slots, l.NamespaceSlots, l.MemoryBudget>>20, l.NamespaceMemory>>20, l.QueueDepth, l.QueueWait)
}

// memoryBytes is what a call of l reserves from the memory budget: its
// memory limit, all the guest may map.
func (l *loaded) memoryBytes() int64 {
	return int64(l.module.Limits().MemoryPages) * 65536
}
