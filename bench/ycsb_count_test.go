package bench

import (
	"context"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// countingKV counts the bucket operations the state stores make: reads
// (Get, GetRevision) and writes (Put, Create, Update).
type countingKV struct {
	jetstream.KeyValue
	reads, writes atomic.Uint64
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.reads.Add(1)
	return c.KeyValue.Get(ctx, key)
}

func (c *countingKV) GetRevision(ctx context.Context, key string, rev uint64) (jetstream.KeyValueEntry, error) {
	c.reads.Add(1)
	return c.KeyValue.GetRevision(ctx, key, rev)
}

func (c *countingKV) Put(ctx context.Context, key string, v []byte) (uint64, error) {
	c.writes.Add(1)
	return c.KeyValue.Put(ctx, key, v)
}

func (c *countingKV) Create(ctx context.Context, key string, v []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	c.writes.Add(1)
	return c.KeyValue.Create(ctx, key, v, opts...)
}

func (c *countingKV) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	c.writes.Add(1)
	return c.KeyValue.Update(ctx, key, v, rev)
}

// countingMetrics counts what a state store reports (state.Metrics): its
// anchor requests, combined puts and direct reads.
type countingMetrics struct{ anchorRequests, putsCombined, directReads atomic.Uint64 }

func (c *countingMetrics) AnchorRequest() { c.anchorRequests.Add(1) }
func (c *countingMetrics) PutCombined()   { c.putsCombined.Add(1) }
func (c *countingMetrics) DirectRead()    { c.directReads.Add(1) }
