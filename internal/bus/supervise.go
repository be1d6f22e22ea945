package bus

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Bounds of Supervise's wait between two runs.
const (
	superviseFirstWait = 250 * time.Millisecond
	superviseMaxWait   = 5 * time.Second
	// superviseHealthy is how long a run must last for the next failure
	// to wait superviseFirstWait again.
	superviseHealthy = time.Minute
)

// Supervise calls run until ctx ends, and again whenever it returns
// before that: after an error (logged with what) and a wait that doubles,
// from a quarter of a second up to 5 s, while the runs keep failing fast.
// It stops when run fails because its NATS connection is closed, which
// only the process does, as it shuts down: a closed connection never
// comes back.
//
// It is for the loops a process keeps for its whole life on the bus (a
// bucket's watch, a queue's consumers): their set-up talks to JetStream,
// which does not answer while a node restarts or a stream elects a new
// leader. Returning such an error would end the loop for good, or the
// whole process.
func Supervise(ctx context.Context, log *slog.Logger, what string, run func(context.Context) error) {
	wait := superviseFirstWait
	for {
		began := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			log.Info(what + " stopped: the NATS connection is closed")
			return
		}
		if time.Since(began) >= superviseHealthy {
			wait = superviseFirstWait
		}
		log.Warn(what+" stopped; starting it again", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, superviseMaxWait)
	}
}
