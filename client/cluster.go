package client

import (
	"context"
	"net/http"

	"github.com/cloister-faas/cloister/internal/wire"
)

// ClusterStatus is the cluster as the answering gateway sees it: the
// active coordinator and its standbys, the gateways, the workers and the
// NATS nodes. It reports health, not proof: Attest verifies what serves.
type ClusterStatus = wire.ClusterStatus

// ClusterStatus returns GET /v1/cluster (needs an admin API key).
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	var st ClusterStatus
	if err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, "", &st); err != nil {
		return nil, err
	}
	return &st, nil
}
