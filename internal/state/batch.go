package state

import (
	"context"
	"fmt"
	"time"
)

type pending struct {
	op   op
	res  result
	err  error
	done chan struct{}
}

// batcher sends queued operations to the anchor in batches: whatever is
// queued when a batch leaves goes in the next one.
func (f *Function) batcher() {
	ctx := f.s.ctx
	batch := make([]*pending, 0, maxBatch)
	var t timeouts
	defer t.stop()
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case p := <-f.q:
			batch = append(batch, p)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case p := <-f.q:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		f.send(ctx, t.get(ctx), batch)
	}
}

// Every anchor request times out after anchorTimeout, give or take
// timeoutReuse. An answer takes milliseconds; what the timeout bounds is a
// request lost with the coordinator it reached (killed before it
// answered), which holds its call, and the call's slot, until then. It is
// shorter than a coordinator failover takes to end (about 5 s), so that
// calls recover with the failover, not after it.
const (
	anchorTimeout = 4 * time.Second
	timeoutReuse  = time.Second
)

// timeouts hands a batcher a context that ends anchorTimeout after it was
// made, and makes a new one every timeoutReuse: a timer per batch costs
// more than the batch's encoding.
type timeouts struct {
	ctx    context.Context
	cancel context.CancelFunc
	made   time.Time
}

func (t *timeouts) get(parent context.Context) context.Context {
	if now := time.Now(); t.ctx == nil || now.Sub(t.made) >= timeoutReuse {
		t.stop()
		t.ctx, t.cancel = context.WithTimeout(parent, anchorTimeout)
		t.made = now
	}
	return t.ctx
}

func (t *timeouts) stop() {
	if t.cancel != nil {
		t.cancel()
	}
}

// send sends batch to the anchor, cctx bounding the exchange, and hands
// each operation its result; ctx is the store's.
func (f *Function) send(ctx, cctx context.Context, batch []*pending) {
	finish := func(err error) {
		for _, p := range batch {
			p.err = err
			close(p.done)
		}
	}
	ops := make([]op, len(batch), len(batch)+1)
	for i, p := range batch {
		ops[i] = p.op
	}
	sent := time.Now()
	leaseAt := -1 // the lease request in ops, if any
	for i, p := range batch {
		if p.op.Kind == opLease {
			leaseAt = i // queued by renew
		}
	}
	if leaseAt < 0 && f.lease.want(sent) {
		ops = append(ops, op{Kind: opLease, Holder: f.holder})
		leaseAt = len(ops) - 1
	}
	leasing := leaseAt >= 0
	pt, err := appendOps(make([]byte, 0, 128*len(ops)), ops)
	if err != nil {
		f.lease.granted(leasing, sent, 0)
		finish(err)
		return
	}
	nonce, sealed := f.k.sealMessage(requestAAD(f.ns, f.name), pt)
	f.s.o.Metrics.AnchorRequest()
	rep, err := f.s.o.Anchor.Exchange(cctx, &AnchorRequest{Namespace: f.ns, Name: f.name, Nonce: nonce, Sealed: sealed})
	if err != nil {
		f.lease.granted(leasing, sent, 0)
		if ctx.Err() != nil {
			finish(ErrClosed)
			return
		}
		finish(fmt.Errorf("%w: anchor: %v", ErrUnavailable, err))
		return
	}
	pt, err = f.k.openMessage(replyAAD(f.ns, f.name, nonce), rep.Nonce, rep.Sealed)
	var results []result
	if err == nil {
		results, err = decodeResults(pt)
	}
	if err != nil || len(results) != len(ops) {
		f.lease.granted(leasing, sent, 0)
		finish(&IntegrityError{Function: f.id, Kind: KindAnchor, Detail: "the anchor's reply does not authenticate for this request"})
		return
	}
	if leasing {
		f.lease.granted(true, sent, time.Duration(results[leaseAt].LeaseMS)*time.Millisecond)
	}
	for i, p := range batch {
		p.res = results[i]
		close(p.done)
	}
}

// call sends one operation through the batcher and waits for its result.
func (f *Function) call(ctx context.Context, o op) (result, error) {
	p, err := f.submit(ctx, o)
	if err != nil {
		return result{}, err
	}
	return f.await(ctx, p)
}

// submit queues an operation for the next batch.
func (f *Function) submit(ctx context.Context, o op) (*pending, error) {
	p := &pending{op: o, done: make(chan struct{})}
	select {
	case f.q <- p:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.s.ctx.Done():
		return nil, ErrClosed
	}
}

// await waits for a submitted operation's result.
func (f *Function) await(ctx context.Context, p *pending) (result, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	if p.err != nil {
		return result{}, p.err
	}
	switch p.res.Status {
	case stOK, stConflict, stRetry:
		return p.res, nil
	case stQuota:
		return p.res, fmt.Errorf("%w: %s", ErrQuota, p.res.Msg)
	default:
		return p.res, fmt.Errorf("state: the anchor refused an operation: %s", p.res.Msg)
	}
}
