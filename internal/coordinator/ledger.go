package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/ledger"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

// recentLogged is how many recently logged entry hashes the coordinator
// remembers, so that a worker's retried batch is answered with the indices
// its receipts already have instead of logging them twice. A retry that
// comes after they are forgotten (or after a restart) logs a duplicate;
// the audit bills each receipt once and counts duplicates.
const recentLogged = 1 << 18

// recentIndex maps recently logged entry hashes to their log index, in a
// bounded ring (the oldest is forgotten first).
type recentIndex struct {
	mu   sync.Mutex
	idx  map[string]uint64
	ring []string
	next int
}

func newRecentIndex(n int) *recentIndex {
	return &recentIndex{idx: make(map[string]uint64, n), ring: make([]string, n)}
}

func (r *recentIndex) get(h string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.idx[h]
	return i, ok
}

func (r *recentIndex) put(h string, i uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.idx[h]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.idx, old)
	}
	r.ring[r.next] = h
	r.next = (r.next + 1) % len(r.ring)
	r.idx[h] = i
}

// handleLedgerAppend logs a batch of receipts. The batch must be signed by
// a worker whose certificate chains to this coordinator, so a host cannot
// log a forged or altered receipt (see receipt.VerifyBatch). It answers once every logged entry is durably sequenced, and
// records each entry's index for lookups by entry hash.
func (c *Coordinator) handleLedgerAppend(ctx context.Context, b []byte) (any, error) {
	var req wire.LedgerAppendRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed ledger append")
	}
	if len(req.Receipts) == 0 || len(req.Receipts) > wire.MaxLedgerBatch {
		return nil, apierr.New(apierr.BadRequest, "a ledger append carries 1 to %d receipts, not %d", wire.MaxLedgerBatch, len(req.Receipts))
	}
	entries := req.Receipts
	if _, err := c.receipts.VerifyBatch(req.WorkerCert, entries, req.Signature, c.now()); err != nil {
		return nil, apierr.New(apierr.Forbidden, "refusing to log a batch that does not verify: %v", err)
	}
	indices := make([]uint64, len(entries))
	futures := make([]ledger.Future, len(entries))
	hashes := make([]string, len(entries))
	for i, e := range entries {
		hashes[i] = receipt.EntryHash(e)
		if idx, ok := c.recent.get(hashes[i]); ok {
			indices[i] = idx
			continue
		}
		futures[i] = c.ledger.AppendAsync(ctx, e)
	}
	acks := make([]jetstream.PubAckFuture, 0, len(futures))
	for i, f := range futures {
		if f == nil {
			continue
		}
		idx, err := f()
		if err != nil {
			// What was sequenced is remembered: the worker's retry gets the
			// same indices.
			return nil, fmt.Errorf("appending to the ledger: %w", err)
		}
		indices[i] = idx
		c.recent.put(hashes[i], idx)
		ack, err := c.js.PublishAsync(bus.LedgerLookupSubject(hashes[i]), []byte(strconv.FormatUint(idx, 10)))
		if err != nil {
			c.log.Warn("recording a ledger index", "index", idx, "err", err)
			continue
		}
		acks = append(acks, ack)
	}
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			c.log.Warn("recording a ledger index", "err", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return wire.LedgerAppendResponse{Indices: indices}, nil
}
