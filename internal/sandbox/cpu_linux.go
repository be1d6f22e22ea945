//go:build linux

package sandbox

import (
	"syscall"
	"time"
)

// rusageThread is RUSAGE_THREAD from <sys/resource.h>, which the syscall
// package does not name.
const rusageThread = 1

// threadCPU returns the user plus system CPU time of the calling OS thread.
// The caller must hold runtime.LockOSThread for the reading to mean
// anything.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
