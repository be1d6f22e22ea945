package worker

import (
	"sync"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/seal"
)

// maxTickets bounds the session tickets a function version keeps opened.
// When it is reached the cache starts again empty: a session whose ticket
// fell out is opened again on its next call, at the cost of one decryption.
const maxTickets = 1024

// ticketCache keeps the session tickets a function version opened, with the
// session key's cipher set up, keyed by the sealed ticket's bytes. Every
// call of a session carries the same ticket, so from the second call on it
// is neither decrypted nor decoded again. A hit is exactly what opening the
// same bytes under the same ticket key would give; the caller still checks
// the ticket's function and expiry on every call.
type ticketCache struct {
	mu sync.RWMutex
	m  map[string]*openTicket
}

// openTicket is an opened session ticket and its session key's cipher.
type openTicket struct {
	ticket *seal.Ticket
	key    *seal.Symmetric
}

// open is seal.OpenTicket through the cache. The returned ticket is shared:
// callers must not modify it.
func (c *ticketCache) open(ticketKey, sealed []byte) (*openTicket, error) {
	c.mu.RLock()
	ot := c.m[string(sealed)]
	c.mu.RUnlock()
	if ot != nil {
		return ot, nil
	}
	t, err := seal.OpenTicket(ticketKey, sealed)
	if err != nil {
		return nil, err
	}
	k, err := seal.NewSymmetric(t.Key)
	if err != nil {
		return nil, err
	}
	ot = &openTicket{ticket: t, key: k}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxTickets {
		c.m = make(map[string]*openTicket)
	}
	c.m[string(sealed)] = ot
	c.mu.Unlock()
	return ot, nil
}

// sessionTicket opens a session message's ticket for fn and checks it at
// now: it must be fn's, and not expired. Both are checked on every call,
// cached or not.
func (fn *loaded) sessionTicket(sealed []byte, now time.Time) (*openTicket, error) {
	ot, err := fn.tickets.open(fn.ticketKey, sealed)
	if err != nil {
		return nil, apierr.New(apierr.SessionInvalid, "session ticket is not valid for this function version")
	}
	t, f := ot.ticket, fn.fn
	if t.Namespace != f.Namespace || t.Name != f.Name || t.Version != f.Version || t.CodeHash != f.CodeHash {
		return nil, apierr.New(apierr.SessionInvalid, "session ticket belongs to another function version")
	}
	if now.After(t.Expires) {
		return nil, apierr.New(apierr.SessionInvalid, "session expired at %s; open a new one", t.Expires.Format(time.RFC3339))
	}
	return ot, nil
}
