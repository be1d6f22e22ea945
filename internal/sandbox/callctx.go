package sandbox

import (
	"context"
	"sync"
	"time"
)

// callCtx is the context a pooled sandbox's guest runs under. It is made
// once per sandbox and re-armed for every call, so that a call costs no
// context allocations and no timer creation:
//   - Done closes when the call reaches its wall-time limit (a timer made
//     once and reset per call), when the caller's context ends, or when the
//     guest's output overflows; wazero then stops the guest at its next
//     termination check;
//   - Value answers only callStateKey (the host functions' view of the
//     call), so no value of the caller's context, wazero's experimental
//     options included, ever reaches wazero or the guest (see isolate).
//
// A callback that fires late (the timer of a call that already returned, or
// a caller's context that ends afterwards) must not stop the next call: the
// timer checks the call's deadline and the caller's callback its sequence.
type callCtx struct {
	st    *callState
	timer *time.Timer

	mu       sync.Mutex
	done     chan struct{}
	closed   bool // done is closed
	armed    bool // a call is running
	seq      uint64
	deadline time.Time
	cause    error
}

var _ context.Context = (*callCtx)(nil)

func newCallCtx(st *callState) *callCtx {
	c := &callCtx{st: st, done: make(chan struct{})}
	c.timer = time.AfterFunc(time.Hour, c.expire)
	c.timer.Stop()
	return c
}

// arm starts a call: Done is open, the wall-time limit runs, and the end of
// parent stops the call. The returned function disarms it and reports why
// the call was stopped (nil if it was not).
func (c *callCtx) arm(parent context.Context, timeout time.Duration) (disarm func() error) {
	c.mu.Lock()
	if c.closed {
		c.done, c.closed = make(chan struct{}), false
	}
	c.armed, c.cause = true, nil
	c.seq++
	seq := c.seq
	c.deadline = time.Now().Add(timeout)
	c.mu.Unlock()
	c.timer.Reset(timeout)
	stop := func() bool { return false }
	if parent.Done() != nil {
		stop = context.AfterFunc(parent, func() { c.stop(seq, context.Cause(parent)) })
	}
	return func() error {
		c.timer.Stop()
		stop()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.armed = false
		return c.cause
	}
}

// expire is the wall-time timer's callback.
func (c *callCtx) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed && !time.Now().Before(c.deadline) {
		c.closeLocked(errWallLimit)
	}
}

// stop ends call seq with cause, if it is still running.
func (c *callCtx) stop(seq uint64, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed && c.seq == seq {
		c.closeLocked(cause)
	}
}

// abort ends the running call with cause (the guest's own goroutine calls
// it, from a host function).
func (c *callCtx) abort(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		c.closeLocked(cause)
	}
}

func (c *callCtx) closeLocked(cause error) {
	if !c.closed {
		c.cause, c.closed = cause, true
		close(c.done)
	}
}

// Deadline implements context.Context. The deadline is enforced by Done;
// it is not reported, so nothing below plans around it.
func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context.
func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// Err implements context.Context: DeadlineExceeded once the wall-time limit
// is reached, Canceled once stopped for any other reason. wazero maps these
// to the exit codes that classify recognises.
func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.closed:
		return nil
	case c.cause == errWallLimit:
		return context.DeadlineExceeded
	default:
		return context.Canceled
	}
}

// Cause reports why the context ended, as context.Cause would.
func (c *callCtx) Cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Value implements context.Context.
func (c *callCtx) Value(key any) any {
	if _, ok := key.(callStateKey); ok {
		return c.st
	}
	return nil
}
