package bus

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// A synchronous call on the bus is one NATS request and its reply, and
// core NATS delivers each at most once: when a NATS node dies, the
// requests and replies it was passing on are gone. The caller of a
// long-running call cannot tell that from a slow answer by waiting, so it
// names its call (HeaderCall) and asks the service now and then whether
// it is still running it (ProbeCall). A service that is not running it
// either never got the request or has answered it; as the answer travels
// on the same connections as the probe's, ahead of it, a caller that still
// has no answer a while after hearing "idle" knows that it was lost.
const (
	// HeaderCall names a call: any string unique to its caller.
	HeaderCall = "Cloister-Call"
	// HeaderCallState is a probe's answer: CallRunning or CallIdle.
	HeaderCallState = "Cloister-Call-State"

	CallRunning = "running"
	CallIdle    = "idle"
)

// callSet is the calls a ServeCalls subscription has received and not yet
// answered, by name.
type callSet struct {
	mu      sync.Mutex
	running map[string]int
}

func (c *callSet) start(id string) {
	if id == "" {
		return
	}
	c.mu.Lock()
	c.running[id]++
	c.mu.Unlock()
}

func (c *callSet) end(id string) {
	if id == "" {
		return
	}
	c.mu.Lock()
	if c.running[id]--; c.running[id] <= 0 {
		delete(c.running, id)
	}
	c.mu.Unlock()
}

func (c *callSet) state(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[id] > 0 {
		return CallRunning
	}
	return CallIdle
}

// ServeCalls is ServeBytes for calls that their callers probe: an empty
// request is a probe, answered at once with an empty body and, when it
// names a call (HeaderCall), that call's state in HeaderCallState. A call
// counts as running from the moment it arrives (before it waits for its
// turn under limit) until its answer has been handed to the connection.
func ServeCalls(ctx context.Context, nc *nats.Conn, subject, queue string, limit int, log *slog.Logger, h BytesHandler) (*nats.Subscription, error) {
	calls := &callSet{running: map[string]int{}}
	respond, refuse := bytesResponder(ctx, log, h)
	return serve(ctx, nc, subject, queue, limit, func(m *nats.Msg) bool {
		id := m.Header.Get(HeaderCall)
		if len(m.Data) > 0 {
			calls.start(id)
			return false
		}
		r := nats.NewMsg(m.Reply)
		if id != "" {
			r.Header.Set(HeaderCallState, calls.state(id))
		}
		if err := m.RespondMsg(r); err != nil {
			log.Warn("answering a probe", "subject", m.Subject, "err", err)
		}
		return true
	}, func(m *nats.Msg) {
		respond(m)
		calls.end(m.Header.Get(HeaderCall))
	}, func(m *nats.Msg, e *apierr.Error) {
		refuse(m, e)
		calls.end(m.Header.Get(HeaderCall))
	})
}

// CallBytesNamed is CallBytes for a call named id (HeaderCall) on a
// ServeCalls subject.
func CallBytesNamed(ctx context.Context, nc *nats.Conn, subject, id string, req []byte) ([]byte, error) {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderCall, id)
	m.Data = req
	rep, err := nc.RequestMsgWithContext(ctx, m)
	if err := requestError(err, subject); err != nil {
		return nil, err
	}
	return bytesReply(rep, subject)
}

// ErrCallIdle: the service is not running the call (ProbeCall).
var ErrCallIdle = errors.New("the service is not running the call")

// ProbeCall asks the ServeCalls subscription on subject whether it is
// running the call named id: nil if it is (or if it is an older service
// that does not say), ErrCallIdle if it is not, nats.ErrNoResponders if
// nobody serves subject, and any other error as the request failed.
func ProbeCall(ctx context.Context, nc *nats.Conn, subject, id string) error {
	m := nats.NewMsg(subject)
	m.Header.Set(HeaderCall, id)
	rep, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return err
	}
	if rep.Header.Get(HeaderCallState) == CallIdle {
		return ErrCallIdle
	}
	return nil
}
