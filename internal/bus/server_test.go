package bus

import "testing"

// TestServerLimits: the embedded server takes messages up to MaxPayload,
// and buffers MaxPending for a slow client before it cuts the client off,
// not nats-server's 64 MB (a worker loading several large bundles at once
// passed that, and lost the replies sent while it reconnected).
func TestServerLimits(t *testing.T) {
	s, err := StartServer(ServerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	v, err := s.ns.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.MaxPayload != MaxPayload || v.MaxPending != MaxPending {
		t.Errorf("max_payload %d, max_pending %d; want %d and %d", v.MaxPayload, v.MaxPending, MaxPayload, MaxPending)
	}
}
