package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/journal"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/seal"
	fnstate "github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/wire"
)

// followInterval is how often a standby reads the journals.
const followInterval = 250 * time.Millisecond

// WorkerSilence is how long an admitted worker may go without advertising
// itself (it does every 2 s) before the attestation document stops listing
// it. Its certificate stays valid until it expires: a worker that comes
// back is listed again at its next advertisement.
const WorkerSilence = 7 * time.Second

// Serve runs the coordinator until ctx ends: as a standby, it follows the
// journals and shares the secrets with attested peers; once it holds the
// lease, it catches up and answers the coordinator's subjects, until ctx
// ends (it then releases the lease, so that a standby takes over at once)
// or it loses the lease or finds that another coordinator wrote to a
// journal. Then it reopens the state anchor and the ledger as standbys and
// stands by again, in the same process.
func (c *Coordinator) Serve(ctx context.Context, nc *nats.Conn) error {
	c.nc = nc
	peers, err := c.servePeers(ctx, nc)
	if err != nil {
		return err
	}
	defer func() { _ = peers.Drain() }() // stopping: nothing to do with a failed drain
	for {
		err := c.serveTerm(ctx, nc)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, ErrLostLease) {
			return err
		}
		c.log.Warn("coordinator stepped down; standing by again", "err", err)
		if err := c.standAgain(ctx); err != nil {
			return fmt.Errorf("coordinator: standing by again: %w", err)
		}
	}
}

// standAgain makes a coordinator that was active a standby: a new term,
// and the state anchor and the ledger reopened as standbys (their writers
// cannot go back to following).
func (c *Coordinator) standAgain(ctx context.Context) error {
	err := c.anchor.Close()
	if c.ledger != nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = errors.Join(err, c.ledger.Close(cctx))
		cancel()
	}
	if err != nil {
		c.log.Warn("closing the state anchor and the ledger", "err", err)
	}
	c.term.Store(newTerm())
	return c.openFollowers(ctx)
}

// serveTerm stands by until this coordinator holds the lease, then serves
// as the active one until ctx ends (nil) or the term ends (ErrLostLease).
func (c *Coordinator) serveTerm(ctx context.Context, nc *nats.Conn) error {
	t := c.term.Load()
	l := &lease{kv: c.kv, me: LeaseHolder{Node: c.node, Instance: newInstance(), TEE: string(c.tee.Kind())}}
	fctx, stopFollowing := context.WithCancel(ctx)
	following := make(chan struct{})
	me := l.me
	go func() {
		defer close(following)
		c.follow(fctx, me)
	}()
	abandoned, err := l.acquire(ctx, func(h LeaseHolder) {
		c.log.Info("coordinator standby: following the active coordinator", "active_node", h.Node, "active_since", h.Since)
	})
	stopFollowing()
	<-following
	if err != nil {
		return err
	}
	start := time.Now()
	tctx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	if err := c.lead(tctx, l.me, t, abandoned); err != nil {
		l.release()
		if errors.Is(err, journal.ErrCorrupt) || errors.Is(err, journal.ErrRolledBack) || errors.Is(err, ledger.ErrJournalMismatch) {
			// The durable state does not verify: an operator must look.
			return fmt.Errorf("coordinator: taking over: %w", err)
		}
		// NATS failed during the takeover: stand by again and retry.
		return fmt.Errorf("%w: taking over failed: %v", ErrLostLease, err)
	}
	c.mu.Lock()
	c.me = l.me
	c.mu.Unlock()
	subs, err := c.serveActive(ctx, nc)
	if err != nil {
		drain(subs)
		l.release()
		return err
	}
	c.active.Store(true)
	c.log.Info("coordinator active", "tee", c.tee.Kind(), "manifest_sha256", c.ManifestHash(), "node", c.node,
		"took_over_in", time.Since(start).Round(time.Millisecond))
	for {
		err = l.hold(ctx, t.fenced)
		if !errors.Is(err, errStalled) {
			break
		}
		// NATS did not take the renewals (a JetStream election, a
		// partition): answer nothing until the lease is ours again.
		c.active.Store(false)
		drain(subs)
		subs = nil
		c.log.Warn("coordinator paused: cannot renew the lease", "err", err)
		if err = l.renew(ctx, t.fenced); err != nil {
			break
		}
		if subs, err = c.serveActive(ctx, nc); err != nil {
			break
		}
		c.active.Store(true)
		c.log.Info("coordinator resumed: the lease is still ours")
	}
	c.active.Store(false)
	drain(subs)
	select {
	case <-t.fenced:
		l.release()
		return fmt.Errorf("%w: another coordinator wrote to a journal", ErrLostLease)
	default:
	}
	return err
}

// serveActive subscribes the active coordinator's subjects.
func (c *Coordinator) serveActive(ctx context.Context, nc *nats.Conn) ([]*nats.Subscription, error) {
	subs, err := c.subscribe(ctx, nc)
	for _, more := range []func() (*nats.Subscription, error){
		func() (*nats.Subscription, error) { return c.followWorkers(nc) },
		func() (*nats.Subscription, error) { return c.followStandbys(nc) },
		func() (*nats.Subscription, error) {
			return bus.Serve(ctx, nc, bus.SubjectCoordStatus, bus.CoordinatorQueue, 16, c.log,
				func(context.Context, []byte) (any, error) { return c.Status(), nil })
		},
	} {
		if err != nil {
			break
		}
		var s *nats.Subscription
		if s, err = more(); err == nil {
			subs = append(subs, s)
		}
	}
	return subs, err
}

func drain(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Drain() // stepping down: the connection drops what a failed drain leaves
	}
}

// Active reports whether this coordinator is the active one.
func (c *Coordinator) Active() bool { return c.active.Load() }

// follow reads the journals every followInterval until ctx ends, so that a
// standby that takes over has little to catch up on, and announces this
// standby every bus.StatusInterval.
func (c *Coordinator) follow(ctx context.Context, me LeaseHolder) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	var lastErr string
	var announced time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(announced) >= bus.StatusInterval {
			// A struct of strings cannot fail to encode; the announcement is
			// best effort, made again every bus.StatusInterval.
			b, _ := json.Marshal(wire.CoordinatorPeer{Node: me.Node, Instance: me.Instance, TEE: me.TEE})
			_ = c.nc.Publish(bus.SubjectCoordStandby, b)
			announced = time.Now()
		}
		if err := c.catchUp(ctx); err != nil && ctx.Err() == nil && err.Error() != lastErr {
			lastErr = err.Error()
			c.log.Warn("coordinator standby: reading the journals", "err", err)
		}
	}
}

// catchUp reads what the active coordinator appended to the journals.
func (c *Coordinator) catchUp(ctx context.Context) error {
	_, err := c.control.CatchUp(ctx)
	err = errors.Join(err, c.anchor.CatchUp(ctx))
	if c.ledger != nil {
		err = errors.Join(err, c.ledger.CatchUp(ctx))
	}
	return err
}

// lead catches up with every journal and takes over as the writer.
func (c *Coordinator) lead(ctx context.Context, me LeaseHolder, t *term, abandoned bool) error {
	if err := c.leadControl(ctx, me); err != nil {
		return err
	}
	// Writes wait one read lease unless the lease was abandoned long
	// enough ago that none of the previous leader's read leases runs.
	lead := c.anchor.Lead
	if abandoned && LeaseTTL-LeaseStepDown >= fnstate.DefaultLease && (c.cfg.StateLease <= 0 || c.cfg.StateLease <= LeaseTTL-LeaseStepDown) {
		lead = c.anchor.LeadAfterLeases
	}
	if err := lead(ctx); err != nil {
		return fmt.Errorf("leading the state anchor: %w", err)
	}
	fenced := []<-chan struct{}{c.anchor.Fenced()}
	if c.ledger != nil {
		if err := c.ledger.Lead(ctx); err != nil {
			return fmt.Errorf("leading the ledger: %w", err)
		}
		fenced = append(fenced, c.ledger.Fenced())
	}
	// A journal that another coordinator wrote to first ends this term.
	for _, ch := range fenced {
		go func() {
			select {
			case <-ch:
				t.fence()
			case <-ctx.Done():
			}
		}()
	}
	if err := c.storeRecovery(ctx); err != nil {
		// Not fatal: the peers still hold the secrets. Said loudly.
		c.log.Error("keeping the secrets for the owner's recovery", "err", err)
	}
	c.mu.Lock()
	// The workers the previous active coordinator knew get WorkerSilence
	// to show that they are alive.
	now := c.now()
	for id := range c.workers {
		c.seen[id] = now
	}
	c.mu.Unlock()
	return nil
}

// followWorkers notes the advertisements of admitted workers: the
// attestation document lists only those heard from within WorkerSilence.
func (c *Coordinator) followWorkers(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(bus.SubjectWorkerStatus, func(m *nats.Msg) {
		var st wire.WorkerStatus
		if err := json.Unmarshal(m.Data, &st); err != nil || st.WorkerID == "" {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if w, ok := c.workers[st.WorkerID]; ok && w.certHash == seal.SHA256Hex(st.Certificate.Body) {
			c.seen[st.WorkerID] = c.now()
		}
	})
}

// alive reports whether worker id was heard from recently. Callers hold
// c.mu.
func (c *Coordinator) alive(id string, now time.Time) bool {
	t, ok := c.seen[id]
	return ok && now.Sub(t) <= WorkerSilence
}

// followStandbys notes the standby coordinators' announcements.
func (c *Coordinator) followStandbys(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(bus.SubjectCoordStandby, func(m *nats.Msg) {
		var p wire.CoordinatorPeer
		if err := json.Unmarshal(m.Data, &p); err != nil || p.Node == "" {
			return
		}
		p.LastSeen = time.Now().UTC()
		c.mu.Lock()
		c.standbys[p.Node] = p
		c.mu.Unlock()
	})
}

// Status reports the active coordinator's view of the cluster: itself,
// the standbys heard from within three announcement intervals and the
// workers.
func (c *Coordinator) Status() wire.CoordinatorStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := wire.CoordinatorStatus{Node: c.me.Node, Instance: c.me.Instance, TEE: c.me.TEE, ActiveSince: c.me.Since,
		ManifestHash: fmt.Sprintf("%x", c.mhash), Standbys: []wire.CoordinatorPeer{}}
	for node, p := range c.standbys {
		if time.Since(p.LastSeen) > 3*bus.StatusInterval {
			delete(c.standbys, node)
			continue
		}
		st.Standbys = append(st.Standbys, p)
	}
	slices.SortFunc(st.Standbys, func(a, b wire.CoordinatorPeer) int { return strings.Compare(a.Node, b.Node) })
	now := c.now()
	for id, w := range c.workers {
		if now.After(w.notAfter) {
			continue
		}
		st.Admitted++
		if c.alive(id, now) {
			st.Alive++
		}
	}
	return st
}
