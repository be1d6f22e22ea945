// Package wire defines the messages that cross role boundaries: between the
// coordinator, workers and gateways on the bus, and between clients and the
// gateway over HTTP. It holds types, and the few byte formats that both
// sides of a boundary must agree on (keyrelease.go), so that no role's
// package imports another's. Every field that crosses the untrusted
// network is either public, signed, or ciphertext.
package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/tee"
)

// Report-data labels. Evidence binds sha256(label ‖ 0 ‖ len ‖ part ‖ …),
// each part length-prefixed (tee.BindReportData).
const (
	LabelCoordinator = "cloister-coordinator-v1"
	LabelWorker      = "cloister-worker-v1"
)

// Attestation is the coordinator's attestation document, served at
// GET /v1/attestation. Evidence binds IdentityKey and ManifestHash.
type Attestation struct {
	Evidence     tee.Evidence      `json:"evidence"`
	IdentityKey  ed25519.PublicKey `json:"identity_key"`
	Manifest     json.RawMessage   `json:"manifest"`
	ManifestHash string            `json:"manifest_sha256"`
	// LedgerOrigin is the origin line of the ledger's checkpoints, which
	// IdentityKey signs (C2SP signed-note key name).
	LedgerOrigin string `json:"ledger_origin,omitempty"`
	// Workers are the certificates of the admitted workers, each signed by
	// IdentityKey: the chain from hardware evidence to the keys that sign receipts.
	Workers []certs.Signed `json:"workers,omitempty"`
	Warning string         `json:"warning,omitempty"`
}

// AdmitRequest asks the coordinator for a worker certificate.
type AdmitRequest struct {
	WorkerID    string            `json:"worker_id"`
	Evidence    tee.Evidence      `json:"evidence"`
	SigningKey  ed25519.PublicKey `json:"signing_key"`
	KeyExchange []byte            `json:"kex_key"`
}

// AdmitResponse carries the certificate and the coordinator's identity.
type AdmitResponse struct {
	Certificate certs.Signed      `json:"certificate"`
	IdentityKey ed25519.PublicKey `json:"identity_key"`
}

// RegisterRequest asks the coordinator to verify and register a bundle that
// the gateway stored in the object store.
type RegisterRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Object    string `json:"object"`
	// TimeoutMS bounds the registration, counted from when the coordinator
	// receives it: past it the coordinator registers nothing and answers
	// timeout, so that a caller that waits longer than this (plus a
	// margin) knows the outcome. 0 means DefaultDeployTimeout.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// DefaultDeployTimeout bounds a deploy: reading and checking the bundle,
// compiling the module and running a reactor's initialisation.
const DefaultDeployTimeout = 2 * time.Minute

// Deployed announces a newly registered function version.
type Deployed struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   int    `json:"version"`
}

// Deleted announces a deleted function: every version of it.
type Deleted struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// FunctionKeyRequest asks for a function's HPKE private key. The worker signs
// the request body (without Signature) with its certified key.
type FunctionKeyRequest struct {
	Certificate certs.Signed `json:"certificate"`
	// KeyExchange is the worker's key-exchange key, which the certificate
	// names by its hash: the key is sealed to it.
	KeyExchange []byte    `json:"kex_key"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Version     int       `json:"version"`
	Time        time.Time `json:"time"`
	Signature   []byte    `json:"sig,omitempty"`
}

// FunctionKeyResponse holds the function key sealed to the worker's key-exchange key.
type FunctionKeyResponse struct {
	Enc    []byte `json:"enc"`
	Sealed []byte `json:"sealed"`
	// StateEnc and StateSealed hold the function's state key (for
	// internal/state), sealed the same way under its own info.
	StateEnc    []byte `json:"state_enc,omitempty"`
	StateSealed []byte `json:"state_sealed,omitempty"`
}

// Invocation modes.
const (
	ModeHPKE        = "hpke"
	ModeSession     = "session"
	ModeSessionOpen = "session-open"
	ModePlain       = "plain"
	// ModeSequence runs a sequence: HPKE-sealed to its first step's key.
	ModeSequence = "sequence"
)

// TrustGatewayTrusted marks a plaintext invocation in activation records
// and receipts: the gateway saw the data.
const TrustGatewayTrusted = receipt.TrustGatewayTrusted

const ()

// SealedRequest is the HTTP body of a confidential invocation
// (Content-Type application/vnd.cloister.sealed+json).
type SealedRequest struct {
	Mode       string `json:"mode"`
	Version    int    `json:"version"`
	Enc        []byte `json:"enc,omitempty"`
	Ticket     []byte `json:"ticket,omitempty"`
	Ciphertext []byte `json:"ct"`
	// Steps are the steps of a sequence (mode "sequence"), in clear for
	// routing; the HPKE info binds them, so they cannot be altered.
	Steps []StepRef `json:"steps,omitempty"`
}

// SealedContentType marks a SealedRequest body.
const SealedContentType = "application/vnd.cloister.sealed+json"

// InvokeRequest travels from a gateway to a worker.
type InvokeRequest struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	Version   int           `json:"version"`
	Sealed    SealedRequest `json:"sealed"`
	Plain     []byte        `json:"plain,omitempty"`
	Mode      string        `json:"mode"`
	// Activation is set on asynchronous invocations only: the request was
	// sealed for the async path (seal.AsyncInfo) and may be delivered again
	// for the same activation.
	Activation string `json:"activation,omitempty"`
	// Logs asks for the function's stderr in the reply (InvokeReply.Logs)
	// of a synchronous invocation; asynchronous ones always keep it.
	Logs bool `json:"logs,omitempty"`
}

// InvokeReply travels back. Output is set only in plain mode; Ciphertext in
// the sealed modes. Error replies still carry a receipt when the function ran.
type InvokeReply struct {
	Version       int             `json:"version"`
	Output        []byte          `json:"output,omitempty"`
	Ciphertext    []byte          `json:"ct,omitempty"`
	Ticket        []byte          `json:"ticket,omitempty"`
	TicketExpires time.Time       `json:"ticket_expires,omitzero"`
	Receipt       *receipt.Signed `json:"receipt,omitempty"`
	Error         *apierr.Error   `json:"error,omitempty"`
	// Logs is what the function wrote on stderr: sealed to the caller like
	// the output in the sealed modes. Set for asynchronous invocations
	// (activation records keep it) and when the request asked (Logs).
	Logs []byte `json:"logs,omitempty"`
	// Receipts is a sequence's receipt chain, step 1 first; Receipt is its
	// last element. Step and StepCode name the step that failed.
	Receipts []*receipt.Signed `json:"receipts,omitempty"`
	Step     int               `json:"step,omitempty"`
	StepCode apierr.Code       `json:"step_code,omitempty"`
}

// SealedResponse is the HTTP body answering a SealedRequest.
type SealedResponse struct {
	Version       int             `json:"version"`
	Ciphertext    []byte          `json:"ct,omitempty"`
	Ticket        []byte          `json:"ticket,omitempty"`
	TicketExpires time.Time       `json:"ticket_expires,omitzero"`
	Receipt       *receipt.Signed `json:"receipt,omitempty"`
	// Receipts is a sequence's receipt chain (step 1 first).
	Receipts []*receipt.Signed `json:"receipts,omitempty"`
	// Logs is the function's stderr sealed to the caller (the response
	// key, seal.AADLogs), when the request asked for it with ?logs=true.
	Logs []byte `json:"logs,omitempty"`
}

// MaxLedgerBatch is the most receipts one ledger append request may carry.
const MaxLedgerBatch = 1024

// LedgerAppendRequest carries signed receipts (each a receipt.Signed's
// Entry bytes) from a worker to the coordinator's ledger, with the worker's
// certificate and its signature over the batch (receipt.SignBatch).
type LedgerAppendRequest struct {
	WorkerCert certs.Signed `json:"worker_cert"`
	Receipts   [][]byte     `json:"receipts"`
	Signature  []byte       `json:"sig"`
}

// LedgerAppendResponse is the coordinator's answer to a ledger append: the
// log index of each receipt, in order. It is sent once every receipt is
// durably sequenced.
type LedgerAppendResponse struct {
	Indices []uint64 `json:"indices"`
}

// LedgerLookup answers GET /v1/ledger/receipts/{sha256}.
type LedgerLookup struct {
	EntryHash string `json:"entry_sha256"`
	Index     uint64 `json:"index"`
}

// ErrorBody is every HTTP error response: a stable code, a message for
// people, and, when the function ran, the version and the signed receipt.
type ErrorBody struct {
	Code    apierr.Code     `json:"code"`
	Message string          `json:"message"`
	Version int             `json:"version,omitempty"`
	Receipt *receipt.Signed `json:"receipt,omitempty"`
	// For sequence_step_failed: the failed step (1-based), its own code,
	// and the receipt chain up to and including the failed step.
	Step     int               `json:"step,omitempty"`
	StepCode apierr.Code       `json:"step_code,omitempty"`
	Receipts []*receipt.Signed `json:"receipts,omitempty"`
	// Logs is the function's stderr sealed to the caller, as in
	// SealedResponse, when the request asked for it.
	Logs []byte `json:"logs,omitempty"`
}

// FunctionInfo describes a function version over the API.
type FunctionInfo struct {
	Namespace    string          `json:"namespace"`
	Name         string          `json:"name"`
	Version      int             `json:"version"`
	Latest       int             `json:"latest,omitempty"`
	CodeHash     string          `json:"code_sha256"`
	BundleHash   string          `json:"bundle_sha256"`
	Confidential string          `json:"confidential"`
	Created      time.Time       `json:"created"`
	Manifest     json.RawMessage `json:"manifest,omitempty"`
	Certificate  certs.Signed    `json:"certificate"`
	// Policy is the function's certified invoker policy (certs.Policy),
	// absent for a function registered before policies existed (anyone
	// may invoke it).
	Policy *certs.Signed `json:"policy,omitempty"`
}

// PolicyRequest asks the coordinator to certify a function's new invoker
// policy: Update is a certs.PolicyUpdate signed by the function's owner.
// The answer is the certified policy (certs.Signed of a certs.Policy).
type PolicyRequest struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	Update    certs.Signed `json:"update"`
}

// ManifestSignature is an admin's Ed25519 signature over a manifest
// document's exact bytes (domain "cloister-manifest-v1\n").
type ManifestSignature struct {
	Key string `json:"key"` // hex public key
	Sig []byte `json:"sig"`
}

// SignedManifest is a deployment manifest document with admin signatures.
type SignedManifest struct {
	Manifest   json.RawMessage     `json:"manifest"`
	Signatures []ManifestSignature `json:"signatures,omitempty"`
}

// ManifestChange answers an accepted manifest change.
type ManifestChange struct {
	Version      int      `json:"version"`
	ManifestHash string   `json:"manifest_sha256"`
	Revoked      []string `json:"revoked_workers,omitempty"`
}

// ManifestHistory lists every manifest since the first, oldest first.
type ManifestHistory struct {
	Manifests []SignedManifest `json:"manifests"`
}

// WorkerStatus is a worker's advertisement for TEE-aware scheduling. The
// certificate (signed by the coordinator) carries the TEE kind and TCB; the
// rest is load information the gateway uses to pick among allowed workers.
type WorkerStatus struct {
	WorkerID    string       `json:"worker_id"`
	Certificate certs.Signed `json:"certificate"`
	Capacity    int          `json:"capacity"`
	Free        int          `json:"free"`
	// Warm lists loaded function versions as "namespace/name/version".
	Warm []string `json:"warm,omitempty"`
}

// ResultToken carries an attestation-result token (a JWT, see package
// artoken), served at GET /v1/attestation/token.
type ResultToken struct {
	Token string `json:"token"`
}
