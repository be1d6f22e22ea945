package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/worker"
)

// slotFlags adds the flags that share a worker's slots and guest memory
// across namespaces, and returns a function that reads them once fs is
// parsed. slots is the total (the worker's --concurrency; 0 for up's).
func slotFlags(fs *pflag.FlagSet) func(slots int) (worker.SlotLimits, error) {
	budget := fs.String("memory-budget", "8GiB", "guest memory all running calls of a worker may reserve; each call reserves its function's memory limit (B, KiB, MiB, GiB)")
	nsMemory := fs.String("namespace-memory", "", "the most of --memory-budget one namespace's running calls may reserve (default: half)")
	nsSlots := fs.Int("namespace-slots", 0, "the most invocation slots one namespace may hold on a worker (default: half of them)")
	queueDepth := fs.Int("queue-depth", 0, "calls of one namespace that may wait for a slot (default: as many as slots)")
	queueWait := fs.Duration("queue-wait", worker.DefaultQueueWait, "the longest a call waits for a slot before it is refused (overloaded)")
	return func(slots int) (worker.SlotLimits, error) {
		l := worker.SlotLimits{Slots: slots, NamespaceSlots: *nsSlots, QueueDepth: *queueDepth, QueueWait: *queueWait}
		var err error
		if l.MemoryBudget, err = parseSize(*budget); err != nil {
			return l, usageErr("--memory-budget: %v", err)
		}
		if *nsMemory != "" {
			if l.NamespaceMemory, err = parseSize(*nsMemory); err != nil {
				return l, usageErr("--namespace-memory: %v", err)
			}
		}
		if *nsSlots < 0 || *queueDepth < 0 || *queueWait < 0 {
			return l, usageErr("--namespace-slots, --queue-depth and --queue-wait must not be negative")
		}
		return l, nil
	}
}

// asyncFlags adds the flags that bound the async queue and the activation
// records, and returns a function that reads them once fs is parsed. The
// roles that own these settings take them: `up` and `gateway` (every
// gateway of a cluster must be given the same: the last one to start sets
// them; workers leave them as they are).
func asyncFlags(fs *pflag.FlagSet) func() (bus.AsyncLimits, error) {
	ttl := fs.Duration("activation-ttl", bus.DefaultActivationTTL, "how long an activation record (and an async idempotency key) is kept after its last write; at least 1m, and longer than any job waits in the queue")
	perNS := fs.Int("max-queued-per-namespace", bus.DefaultMaxQueuedPerNamespace, "async jobs one namespace may have queued or running (negative: no limit)")
	jobs := fs.Int64("max-queue-jobs", bus.DefaultMaxQueueJobs, "async jobs the queue holds, every namespace together (negative: no limit)")
	size := fs.String("max-queue-bytes", "8GiB", "bytes the async queue holds, every namespace together (B, KiB, MiB, GiB, TiB; at least 16MiB, one job's largest size)")
	return func() (bus.AsyncLimits, error) {
		l := bus.AsyncLimits{ActivationTTL: *ttl, MaxQueuedPerNamespace: *perNS, MaxQueueJobs: *jobs}
		if *ttl < time.Minute {
			return l, usageErr("--activation-ttl %v: want at least 1m", *ttl)
		}
		if *perNS == 0 || *jobs == 0 {
			return l, usageErr("--max-queued-per-namespace and --max-queue-jobs must not be 0 (negative: no limit)")
		}
		var err error
		if l.MaxQueueBytes, err = parseSize(*size); err != nil {
			return l, usageErr("--max-queue-bytes: %v", err)
		}
		if l.MaxQueueBytes < bus.MaxPayload {
			return l, usageErr("--max-queue-bytes %s: want at least %d bytes, one job's largest size", *size, bus.MaxPayload)
		}
		return l, nil
	}
}

// parseSize reads a byte count: a whole number with an optional unit B,
// KiB, MiB, GiB or TiB (also K, M, G, T, as powers of 1024).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.TrimSpace(s[len(num):])
	shift := map[string]uint{"": 0, "B": 0, "K": 10, "KiB": 10, "M": 20, "MiB": 20, "G": 30, "GiB": 30, "T": 40, "TiB": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q in %q (use B, KiB, MiB, GiB or TiB)", unit, s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	if n > (1<<62)>>sh {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << sh, nil
}
