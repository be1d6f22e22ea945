package client

import (
	"context"
	"net/http"
	"time"
)

// ClusterStatus is the cluster as the answering gateway sees it: the
// active coordinator and its standbys, the gateways, the workers and the
// NATS nodes. It reports health, not proof: Attest verifies what serves.
type ClusterStatus struct {
	// Coordinator is the active coordinator's own status; nil when none
	// answered (CoordinatorError says why).
	Coordinator      *CoordinatorStatus `json:"coordinator"`
	CoordinatorError string             `json:"coordinator_error,omitempty"`
	Gateways         []GatewayStatus    `json:"gateways"`
	Workers          []ClusterWorker    `json:"workers"`
	NATS             NATSStatus         `json:"nats"`
}

// CoordinatorStatus is the active coordinator's status.
type CoordinatorStatus struct {
	Node         string    `json:"node"`
	Instance     string    `json:"instance"`
	TEE          string    `json:"tee"`
	ActiveSince  time.Time `json:"active_since"`
	ManifestHash string    `json:"manifest_sha256"`
	// Standbys are the coordinators that announced themselves within the
	// last few seconds.
	Standbys []CoordinatorPeer `json:"standbys"`
	// Admitted counts the workers with a valid certificate, Alive those
	// heard from recently (the ones the attestation document lists).
	Admitted int `json:"admitted_workers"`
	Alive    int `json:"alive_workers"`
}

// CoordinatorPeer is a standby coordinator, as it announced itself.
type CoordinatorPeer struct {
	Node     string    `json:"node"`
	Instance string    `json:"instance"`
	TEE      string    `json:"tee"`
	LastSeen time.Time `json:"last_seen"`
}

// GatewayStatus is a gateway, as it announced itself.
type GatewayStatus struct {
	ID       string    `json:"id"`
	URL      string    `json:"url,omitempty"`
	LastSeen time.Time `json:"last_seen"`
	// Self marks the gateway that answered.
	Self bool `json:"self,omitempty"`
}

// ClusterWorker is a worker as its advertisements show it.
type ClusterWorker struct {
	ID       string    `json:"id"`
	TEE      string    `json:"tee"`
	Capacity int       `json:"capacity"`
	Free     int       `json:"free"`
	LastSeen time.Time `json:"last_seen"`
}

// NATSStatus is the NATS cluster as the answering gateway's connection and
// JetStream see it.
type NATSStatus struct {
	Connected string   `json:"connected"`
	Servers   []string `json:"servers"`
	// Leader and Replicas are the JetStream cluster of the registry
	// bucket's stream: its leader and each replica's state.
	Leader   string       `json:"leader,omitempty"`
	Replicas []NATSServer `json:"replicas,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// NATSServer is one JetStream replica.
type NATSServer struct {
	Name    string `json:"name"`
	Leader  bool   `json:"leader,omitempty"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline,omitempty"`
	// ActiveMS is how long ago, in milliseconds, the leader last heard from it.
	ActiveMS int64  `json:"active_ms"`
	Lag      uint64 `json:"lag"`
}

// ClusterStatus returns GET /v1/cluster (needs an admin API key).
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	var st ClusterStatus
	if err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, "", &st); err != nil {
		return nil, err
	}
	return &st, nil
}
