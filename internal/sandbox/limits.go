package sandbox

import (
	"fmt"
	"math"
	"time"
)

// Defaults and bounds for [Limits].
const (
	// DefaultMemoryPages is the default memory limit: 256 pages, 16 MiB.
	DefaultMemoryPages uint32 = 256
	// MaxMemoryPages is the largest memory limit: 65536 pages, 4 GiB, all a
	// 32-bit WebAssembly memory can address.
	MaxMemoryPages uint32 = 65536
	// DefaultTimeout is the default wall-time limit of one run.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxOutput is the default stdout limit: 1 MiB.
	DefaultMaxOutput = 1 << 20
	// DefaultMaxLog is the default amount of stderr kept: 64 KiB.
	DefaultMaxLog = 64 << 10
	// DefaultFuel is the default instruction budget of one call: 50 billion,
	// tens of seconds of work, so that the wall-time limit usually ends a
	// runaway guest first.
	DefaultFuel uint64 = 50_000_000_000

	// pageSize is the size of a WebAssembly memory page.
	pageSize = 65536
)

// Limits bound one invocation. Zero fields take the defaults above.
type Limits struct {
	// MemoryPages is the maximum linear memory, in 64 KiB pages. Default
	// DefaultMemoryPages, at most MaxMemoryPages.
	MemoryPages uint32
	// Timeout is the wall-time limit of one run. Default DefaultTimeout.
	Timeout time.Duration
	// MaxOutput is the most stdout a run may write, in bytes; writing more
	// stops the guest with ErrOutputTooLarge. Default DefaultMaxOutput.
	MaxOutput int
	// Fuel is the instruction budget of one call (the count of the
	// instrumentation pass's cost model); a guest that runs out traps with
	// ErrFuelExhausted. 0 means DefaultFuel.
	Fuel uint64
	// MaxLog is how many bytes of stderr are kept. The rest is dropped
	// silently (Result.StderrTruncated is set); it is not an error.
	// Default DefaultMaxLog.
	MaxLog int
}

// withDefaults returns l with zero fields set to their defaults, or an
// error wrapping ErrInvalidLimits if a field is out of range.
func (l Limits) withDefaults() (Limits, error) {
	switch {
	case l.MemoryPages > MaxMemoryPages:
		return l, fmt.Errorf("%w: memory limit of %d pages is over the maximum of %d", ErrInvalidLimits, l.MemoryPages, MaxMemoryPages)
	case l.Timeout < 0:
		return l, fmt.Errorf("%w: negative timeout %s", ErrInvalidLimits, l.Timeout)
	case l.MaxOutput < 0:
		return l, fmt.Errorf("%w: negative output limit %d", ErrInvalidLimits, l.MaxOutput)
	case l.MaxLog < 0:
		return l, fmt.Errorf("%w: negative log limit %d", ErrInvalidLimits, l.MaxLog)
	}
	if l.MemoryPages == 0 {
		l.MemoryPages = DefaultMemoryPages
	}
	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	if l.MaxOutput == 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	if l.MaxLog == 0 {
		l.MaxLog = DefaultMaxLog
	}
	if l.Fuel == 0 || l.Fuel > math.MaxInt64 {
		l.Fuel = min(max(l.Fuel, DefaultFuel), math.MaxInt64)
	}
	return l, nil
}

// Capabilities are what the function's manifest grants. Everything is
// denied by default: the zero value grants nothing.
type Capabilities struct {
	// Clock grants the real wall and monotonic clocks and a real sleep
	// (bounded by the run's context). Without it the guest sees wazero's
	// deterministic fake clock: the wall clock starts at 2022-01-01T00:00:00Z
	// and the monotonic clock at 0, and both advance 1 ms per reading; sleep
	// returns at once.
	Clock bool
	// Random grants crypto/rand as the source of random_get. Without it
	// random_get still works but is deterministic: every run reads the same
	// fixed-seed pseudo-random sequence. Never use it for secrets.
	Random bool
	// Env is the granted environment, already filtered by the manifest.
	// The host's own environment is never visible.
	Env map[string]string
}
