package worker

import (
	"crypto/ed25519"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-faas/cloister/internal/receipt"
)

// DefaultReceiptTreeWait is how long the signer waits for more receipts
// while other calls are in flight (Config.ReceiptTreeWait).
const DefaultReceiptTreeWait = 250 * time.Microsecond

// maxTree bounds the receipts signed together.
const maxTree = 64

// treeSigner signs the receipts of concurrent calls of one namespace with
// one signature, over the root of a Merkle tree of them
// (docs/adr/0025-receipt-trees.md). A call hands its receipt over and
// waits. The signer takes the first receipt waiting, and waits for more
// while that is likely to pay: while the worker has more calls in flight
// than receipts in hand, or while receipts have been arriving closer
// together than wait (then for up to three of those gaps); never longer
// than wait. Then it signs, one tree per namespace (a tenant's proof never
// names another tenant's receipts) and per certificate. Under a light
// load, receipts arrive far apart and are signed at once, alone.
//
// A call that finds the signer stopped signs its receipt alone.
type treeSigner struct {
	key      ed25519.PrivateKey
	wait     time.Duration
	inflight *atomic.Int64 // the worker's calls in flight

	reqs chan *signRequest
	gap  time.Duration // moving average of the time between receipts (run's)
	last time.Time     // when the last receipt arrived (run's)

	mu      sync.Mutex
	stopped chan struct{} // closed once the running signer has stopped; nil before start
	stop    chan struct{}
}

type signRequest struct {
	r    *receipt.Receipt
	ns   string
	adm  *admission
	done chan signResult // buffered: the signer never waits on a caller
}

type signResult struct {
	s   *receipt.Signed
	err error
}

func newTreeSigner(key ed25519.PrivateKey, wait time.Duration, inflight *atomic.Int64) *treeSigner {
	return &treeSigner{key: key, wait: wait, inflight: inflight, reqs: make(chan *signRequest, maxTree)}
}

// start runs the signer until stopSigner is called; a signer that waits
// for nothing (wait ≤ 0) does not run, and every receipt is signed alone.
func (t *treeSigner) start() (stopSigner func()) {
	if t.wait <= 0 {
		return func() {}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	t.mu.Lock()
	t.stop, t.stopped = stop, stopped
	t.mu.Unlock()
	go func() {
		defer close(stopped)
		t.run(stop)
	}()
	return func() { close(stop); <-stopped }
}

// sign signs r, made under adm, with the receipts of other calls in
// flight, or alone.
func (t *treeSigner) sign(ns string, r *receipt.Receipt, adm *admission) (*receipt.Signed, error) {
	t.mu.Lock()
	stopped := t.stopped
	t.mu.Unlock()
	if stopped == nil {
		return receipt.Sign(r, t.key, adm.signed)
	}
	req := &signRequest{r: r, ns: ns, adm: adm, done: make(chan signResult, 1)}
	select {
	case t.reqs <- req:
	case <-stopped:
		return receipt.Sign(r, t.key, adm.signed)
	}
	select {
	case res := <-req.done:
		return res.s, res.err
	case <-stopped:
		// The signer answers what it took before it stops; what it left
		// in the queue is signed here.
		select {
		case res := <-req.done:
			return res.s, res.err
		default:
			return receipt.Sign(r, t.key, adm.signed)
		}
	}
}

func (t *treeSigner) run(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var batch []*signRequest
		select {
		case req := <-t.reqs:
			batch = append(batch, t.arrived(req))
		case <-stop:
			return
		}
		inflight := int64(len(batch)) < t.inflight.Load()
		if wait := min(t.wait, 3*t.gap); inflight || wait < t.wait {
			if inflight {
				wait = t.wait
			}
			timer.Reset(wait)
		collect:
			for len(batch) < maxTree {
				select {
				case req := <-t.reqs:
					batch = append(batch, t.arrived(req))
				case <-timer.C:
					break collect
				case <-stop:
					break collect
				}
			}
			timer.Stop()
		}
		// And whatever else is already waiting.
	more:
		for len(batch) < maxTree {
			select {
			case req := <-t.reqs:
				batch = append(batch, req)
			default:
				break more
			}
		}
		t.signTrees(batch)
	}
}

// arrived notes req's arrival in the average gap between receipts.
func (t *treeSigner) arrived(req *signRequest) *signRequest {
	now := time.Now()
	if !t.last.IsZero() {
		g := now.Sub(t.last)
		if t.gap == 0 {
			t.gap = g
		} else {
			t.gap += (g - t.gap) / 8
		}
	}
	t.last = now
	return req
}

// signTrees signs batch, one tree per namespace and certificate, and
// answers each request.
func (t *treeSigner) signTrees(batch []*signRequest) {
	type group struct {
		ns  string
		adm *admission
	}
	var order []group
	groups := map[group][]*signRequest{}
	for _, req := range batch {
		g := group{req.ns, req.adm}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], req)
	}
	for _, g := range order {
		reqs := groups[g]
		rs := make([]*receipt.Receipt, len(reqs))
		for i, req := range reqs {
			rs[i] = req.r
		}
		ss, err := receipt.SignTree(rs, t.key, g.adm.signed)
		for i, req := range reqs {
			if err != nil {
				req.done <- signResult{err: err}
				continue
			}
			req.done <- signResult{s: ss[i]}
		}
	}
}
