//go:build linux

package sandbox

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU returns the CPU time of the calling OS thread from
// CLOCK_THREAD_CPUTIME_ID, which is exact to the nanosecond where
// getrusage(RUSAGE_THREAD) rounds to scheduler ticks and under-reports short
// runs. The caller must hold runtime.LockOSThread for the reading to mean
// anything.
func threadCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
