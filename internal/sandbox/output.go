package sandbox

import "errors"

// errOutputLimit is what the guest's stdout writer returns once the output
// limit is reached. The guest sees a failed write; the host sees
// ErrOutputTooLarge.
var errOutputLimit = errors.New("output limit reached")

// boundedBuffer collects a guest's stdout up to a limit. The write that
// crosses the limit keeps what fits, records the overflow, calls onOverflow
// once (to stop the guest) and fails, as do all later writes.
//
// It is written only by the goroutine running the guest and read after the
// guest has returned, so it needs no lock.
type boundedBuffer struct {
	buf        []byte
	limit      int
	overflowed bool
	onOverflow func()
}

// Write implements io.Writer.
func (b *boundedBuffer) Write(p []byte) (int, error) {
	if b.overflowed {
		return 0, errOutputLimit
	}
	room := b.limit - len(b.buf)
	if len(p) <= room {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	b.buf = append(b.buf, p[:room]...)
	b.overflowed = true
	if b.onOverflow != nil {
		b.onOverflow()
	}
	return room, errOutputLimit
}

// truncatingBuffer collects a guest's stderr, keeping the first limit bytes
// and dropping the rest. Writes always succeed, so a chatty guest is never
// stopped for logging too much.
type truncatingBuffer struct {
	buf       []byte
	limit     int
	truncated bool
}

// Write implements io.Writer.
func (b *truncatingBuffer) Write(p []byte) (int, error) {
	room := b.limit - len(b.buf)
	if len(p) > room {
		b.truncated = true
		b.buf = append(b.buf, p[:room]...)
	} else {
		b.buf = append(b.buf, p...)
	}
	return len(p), nil
}
