// Package bustest starts an embedded NATS server for tests.
package bustest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/bus"
)

// Connect starts an embedded server with JetStream in a temporary directory
// and returns a connection to it; both end with the test.
func Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	srv, err := bus.StartServer(bus.ServerOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// CountingKV is a bucket that counts its reads (Get), for tests that
// check what is served from memory.
type CountingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

// Get reads the bucket and counts the read.
func (c *CountingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets.Add(1)
	return c.KeyValue.Get(ctx, key)
}

// Gets is the number of reads so far.
func (c *CountingKV) Gets() int64 { return c.gets.Load() }

// Eventually polls cond until it holds, for up to 5 s.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not after 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FlakyWatches is a bucket whose first watch fails, as one does while a
// NATS node restarts, and which hands the test every watch it starts
// after that (on Watches, which must have room), so that the test can end
// them.
type FlakyWatches struct {
	jetstream.KeyValue
	Watches chan jetstream.KeyWatcher
	calls   atomic.Int32
}

// NewFlakyWatches wraps kv.
func NewFlakyWatches(kv jetstream.KeyValue) *FlakyWatches {
	return &FlakyWatches{KeyValue: kv, Watches: make(chan jetstream.KeyWatcher, 8)}
}

// Watch fails the first watch of either kind, and starts the others.
func (f *FlakyWatches) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return f.watch(func() (jetstream.KeyWatcher, error) { return f.KeyValue.Watch(ctx, keys, opts...) })
}

// WatchFiltered is Watch for several filters.
func (f *FlakyWatches) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return f.watch(func() (jetstream.KeyWatcher, error) { return f.KeyValue.WatchFiltered(ctx, keys, opts...) })
}

func (f *FlakyWatches) watch(start func() (jetstream.KeyWatcher, error)) (jetstream.KeyWatcher, error) {
	if f.calls.Add(1) == 1 {
		return nil, errors.New("nats: no response from stream")
	}
	w, err := start()
	if err == nil {
		f.Watches <- w
	}
	return w, err
}

// NextWatch returns the next watch started, failing the test if none
// starts within 10 s.
func (f *FlakyWatches) NextWatch(tb testing.TB) jetstream.KeyWatcher {
	tb.Helper()
	select {
	case w := <-f.Watches:
		return w
	case <-time.After(10 * time.Second):
		tb.Fatal("no watch started within 10 s")
		return nil
	}
}

// OpenAsync opens the async streams and buckets, with the default limits,
// on nc's server.
func OpenAsync(tb testing.TB, nc *nats.Conn) *bus.AsyncStores {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	as, err := bus.OpenAsync(tb.Context(), js, 1, bus.AsyncLimits{})
	if err != nil {
		tb.Fatal(err)
	}
	return as
}
