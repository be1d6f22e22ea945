package node_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// TestClusterStatus: GET /v1/cluster (admin) shows the active coordinator,
// the gateway that answered, and the workers; a tenant's key is refused.
func TestClusterStatus(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	st := e.c.ClusterStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := st(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Workers advertise every 2 s; the gateway asks at start.
		if s.Coordinator != nil && len(s.Workers) > 0 {
			if !s.Coordinator.ActiveSince.Before(time.Now()) || s.Coordinator.ManifestHash != e.n.Policy.ManifestHash || s.Coordinator.Alive != len(s.Workers) {
				t.Errorf("coordinator %+v (policy pins %s, %d workers advertised)", s.Coordinator, e.n.Policy.ManifestHash, len(s.Workers))
			}
			if len(s.Gateways) != 1 || !s.Gateways[0].Self || s.Gateways[0].URL != e.n.URL {
				t.Errorf("gateways %+v, want this one at %s", s.Gateways, e.n.URL)
			}
			if s.Workers[0].TEE != "sim" || s.Workers[0].Capacity == 0 {
				t.Errorf("worker %+v", s.Workers[0])
			}
			if s.NATS.Connected == "" {
				t.Errorf("NATS %+v", s.NATS)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no coordinator or worker in the cluster status: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := e.c.CreateToken(ctx, "team-a", "team-a-key")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := e.send(http.MethodGet, "/v1/cluster", "", tok, nil); code != http.StatusForbidden || body.Code != apierr.Forbidden {
		t.Errorf("a tenant's key: %d %+v", code, body)
	}
}
