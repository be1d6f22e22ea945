package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// One coordinator is active at a time: the one that holds the lease, a key
// in bus.BucketCoord that it renews every LeaseRenew by compare-and-set on
// the key's revision. A standby that has seen the revision unchanged for
// LeaseTTL (on its own clock, reading it successfully all along) takes the
// lease over by the same compare-and-set. The active one pauses (answers
// nothing) once it could not renew for LeaseStepDown, which is shorter
// than LeaseTTL, so that it has paused before a standby starts, as long as
// the clocks' rates roughly agree. When it can renew again with the same
// revision nobody took the lease meanwhile, and it resumes; when the
// revision changed, it lost the lease. A JetStream leader election that
// makes the bucket unavailable for a few seconds thus pauses the active
// coordinator instead of handing over to a standby that cannot read the
// bucket either.
// That timing keeps reads fresh; it is not what keeps the durable state
// single: every journal append is fenced (internal/journal), so a stale
// active one cannot write behind its successor's back even if the timing
// assumption fails.
const (
	LeaseTTL      = 5 * time.Second
	LeaseRenew    = time.Second
	LeaseStepDown = 2500 * time.Millisecond
	leaseCheck    = 250 * time.Millisecond
	leaseKey      = "active"
)

// ErrLostLease: this coordinator is no longer the active one.
var ErrLostLease = errors.New("coordinator: lost the lease (another coordinator is active, or NATS could not be reached to renew it)")

// LeaseHolder is the lease's value: who is active, since when.
type LeaseHolder struct {
	// Node is the coordinator's stable id (its data directory's); a
	// coordinator that restarts takes its own lease back at once.
	Node string `json:"node"`
	// Instance is this process's id.
	Instance string    `json:"instance"`
	TEE      string    `json:"tee"`
	Since    time.Time `json:"since"`
}

type lease struct {
	kv      jetstream.KeyValue
	me      LeaseHolder
	rev     uint64
	renewed time.Time
}

// nodeID returns the coordinator's stable id, kept in dir/node-id.
func nodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 16 {
			return id, nil
		}
	}
	b := make([]byte, 8)
	rand.Read(b)
	id := hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the node id: %w", err)
	}
	return id, nil
}

func newInstance() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// acquire waits until this coordinator holds the lease or ctx ends.
// waiting is called once if it has to wait, with the current holder. It
// reports whether it took over a lease left unrenewed for LeaseTTL: the
// previous holder then paused at least LeaseTTL − LeaseStepDown ago, longer
// than a state read lease (state.DefaultLease), so none of its leases
// still runs.
func (l *lease) acquire(ctx context.Context, waiting func(LeaseHolder)) (abandoned bool, err error) {
	var seenRev uint64
	var seenAt time.Time
	told := false
	for {
		e, err := l.kv.Get(ctx, leaseKey)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			// Not seen: the lease may be renewed meanwhile. Observe it
			// anew for a whole LeaseTTL.
			seenRev = 0
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Nobody holds it (first start, or released by a clean stop,
			// whose leases may still run).
			if err := l.take(ctx, 0); err == nil {
				return false, nil
			}
		case err == nil:
			var h LeaseHolder
			_ = json.Unmarshal(e.Value(), &h) // a malformed holder reads as nobody's: the lease's revision still decides
			if e.Revision() != seenRev {
				seenRev, seenAt = e.Revision(), time.Now()
			}
			// A lease of this node's earlier process is ours to take; one
			// unrenewed for LeaseTTL is abandoned.
			if h.Node == l.me.Node {
				if err := l.take(ctx, e.Revision()); err == nil {
					return false, nil
				}
			} else if time.Since(seenAt) >= LeaseTTL {
				// The holder may be renewing right now, after an election
				// that kept everybody from writing: give it the first
				// chance (its renewals come every renewRetry while paused).
				if l.stillAt(ctx, e.Revision()) {
					if err := l.take(ctx, e.Revision()); err == nil {
						return true, nil
					}
				}
				seenRev = 0
			} else if !told && waiting != nil {
				waiting(h)
				told = true
			}
		}
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-time.After(leaseCheck):
		}
	}
}

// takeGrace is how long a standby waits, once it saw the lease unrenewed
// for LeaseTTL, before it takes it: several of a paused holder's retries.
const takeGrace = 3 * renewRetry

// renewRetry is how often a paused holder tries to renew.
const renewRetry = 200 * time.Millisecond

// stillAt waits takeGrace and reports whether the lease is still at
// revision rev.
func (l *lease) stillAt(ctx context.Context, rev uint64) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(takeGrace):
	}
	e, err := l.kv.Get(ctx, leaseKey)
	return err == nil && e.Revision() == rev
}

// take sets the lease to this coordinator if its revision is still rev (0:
// if it does not exist).
func (l *lease) take(ctx context.Context, rev uint64) error {
	l.me.Since = time.Now().UTC()
	b, _ := json.Marshal(l.me) // a struct of strings: cannot fail
	var err error
	if rev == 0 {
		l.rev, err = l.kv.Create(ctx, leaseKey, b)
	} else {
		l.rev, err = l.kv.Update(ctx, leaseKey, b, rev)
	}
	if err == nil {
		l.renewed = time.Now()
	}
	return err
}

// errStalled: the lease could not be renewed for LeaseStepDown.
var errStalled = errors.New("coordinator: could not renew the lease")

// hold renews the lease until ctx ends (then it releases it, so that a
// standby takes over at once) or stop closes (nil), the lease is lost
// (ErrLostLease) or it could not be renewed for LeaseStepDown
// (errStalled: pause, and resume once renew succeeds).
func (l *lease) hold(ctx context.Context, stop <-chan struct{}) error {
	t := time.NewTicker(LeaseRenew)
	defer t.Stop()
	b, _ := json.Marshal(l.me) // a struct of strings: cannot fail
	for {
		select {
		case <-ctx.Done():
			l.release()
			return nil
		case <-stop:
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, LeaseRenew)
		rev, err := l.kv.Update(rctx, leaseKey, b, l.rev)
		cancel()
		if err == nil {
			l.rev, l.renewed = rev, time.Now()
			continue
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: it was taken over", ErrLostLease)
		}
		if time.Since(l.renewed) >= LeaseStepDown {
			return fmt.Errorf("%w: %v", errStalled, err)
		}
	}
}

// renew tries to renew the lease with the revision it last had, every
// renewRetry, until it succeeds (nil: nobody took it meanwhile), the lease
// is lost (ErrLostLease), or ctx ends or stop closes.
func (l *lease) renew(ctx context.Context, stop <-chan struct{}) error {
	b, _ := json.Marshal(l.me) // a struct of strings: cannot fail
	for {
		rctx, cancel := context.WithTimeout(ctx, LeaseRenew)
		rev, err := l.kv.Update(rctx, leaseKey, b, l.rev)
		cancel()
		if err == nil {
			l.rev, l.renewed = rev, time.Now()
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: it was taken over", ErrLostLease)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-stop:
			return ErrLostLease
		case <-time.After(renewRetry):
		}
	}
}

// release deletes the lease if this coordinator still holds it.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev)) // best effort: the lease expires after its TTL anyway
}

// Holder returns who holds the lease, if anyone.
func Holder(ctx context.Context, kv jetstream.KeyValue) (*LeaseHolder, error) {
	e, err := kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h LeaseHolder
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, fmt.Errorf("the lease in NATS is malformed: %w", err)
	}
	return &h, nil
}
