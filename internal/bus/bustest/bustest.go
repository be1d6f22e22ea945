// Package bustest starts an embedded NATS server for tests.
package bustest

import (
	"testing"

	"github.com/nats-io/nats.go"

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
