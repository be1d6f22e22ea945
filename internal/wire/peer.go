package wire

import (
	"crypto/ed25519"

	"github.com/cloister-faas/cloister/internal/tee"
)

// Labels of the coordinators' peer recovery (docs/adr/0007-coordinator-failover.md).
const (
	// LabelPeerJoin binds a joining coordinator's evidence to its one-time
	// key-exchange key and the genesis manifest it was configured with.
	LabelPeerJoin = "cloister-coordinator-join-v1"
	// LabelPeerGive binds the answering coordinator's evidence to the
	// joiner's key and the sealed secrets it sends.
	LabelPeerGive = "cloister-coordinator-give-v1"
	// InfoPeerSecrets is the HPKE info of the sealed secrets.
	InfoPeerSecrets = "cloister/v1/coordinator-peer-secrets"
)

// PeerRecoverRequest is a coordinator's request for the deployment's
// secrets from a peer that holds them (bus.SubjectPeerRecover). Its
// evidence binds KeyExchange and GenesisHash.
type PeerRecoverRequest struct {
	Evidence    tee.Evidence `json:"evidence"`
	KeyExchange []byte       `json:"kex_key"`
	// GenesisHash is the sha256 (hex) of the joiner's genesis manifest:
	// secrets move only between coordinators of the same deployment.
	GenesisHash string `json:"genesis_sha256"`
}

// PeerRecoverResponse carries the secrets, HPKE-sealed to the joiner's
// key, and the giver's evidence, which binds the joiner's key and the
// sealed bytes: the joiner accepts secrets only from an attested peer.
type PeerRecoverResponse struct {
	Evidence    tee.Evidence      `json:"evidence"`
	IdentityKey ed25519.PublicKey `json:"identity_key"`
	Enc         []byte            `json:"enc"`
	Sealed      []byte            `json:"sealed"`
}
