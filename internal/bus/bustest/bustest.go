// Package bustest starts an embedded NATS server for tests.
package bustest

import (
	"context"
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
