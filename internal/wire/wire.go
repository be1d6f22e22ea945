// Package wire defines the messages that cross role boundaries: between the
// coordinator, workers and gateways on the bus, and between clients and the
// gateway over HTTP. It holds types only; every field that crosses the
// untrusted network is either public, signed, or ciphertext.
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
}

// Deployed announces a newly registered function version.
type Deployed struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   int    `json:"version"`
}

// FunctionKeyRequest asks for a function's HPKE private key. The worker signs
// the request body (without Signature) with its certified key.
type FunctionKeyRequest struct {
	Certificate certs.Signed `json:"certificate"`
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	Version     int          `json:"version"`
	Time        time.Time    `json:"time"`
	Signature   []byte       `json:"sig,omitempty"`
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
)

// SealedRequest is the HTTP body of a confidential invocation
// (Content-Type application/vnd.cloister.sealed+json).
type SealedRequest struct {
	Mode       string `json:"mode"`
	Version    int    `json:"version"`
	Enc        []byte `json:"enc,omitempty"`
	Ticket     []byte `json:"ticket,omitempty"`
	Ciphertext []byte `json:"ct"`
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
}

// SealedResponse is the HTTP body answering a SealedRequest.
type SealedResponse struct {
	Version       int             `json:"version"`
	Ciphertext    []byte          `json:"ct,omitempty"`
	Ticket        []byte          `json:"ticket,omitempty"`
	TicketExpires time.Time       `json:"ticket_expires,omitzero"`
	Receipt       *receipt.Signed `json:"receipt,omitempty"`
}

// MaxLedgerBatch is the most receipts one ledger append request may carry.
const MaxLedgerBatch = 1024

// LedgerAppendRequest carries signed receipts (each a receipt.Signed's
// Entry bytes) from a worker to the coordinator's ledger, with the worker's
// certificate and its signature over the batch (receipt.SignBatch).
type LedgerAppendRequest struct {
	WorkerCert certs.Signed      `json:"worker_cert"`
	Receipts   []json.RawMessage `json:"receipts"`
	Signature  []byte            `json:"sig"`
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
}
