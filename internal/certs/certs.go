// Package certs holds the statements the coordinator signs with its attested
// identity key: worker certificates (a worker's key was admitted on attested
// hardware) and function certificates (a function version's code hash is
// bound to its HPKE public key and policy). Clients and workers verify them
// against the coordinator key they learned from verified evidence.
//
// Each statement type has its own signature domain so that no signature can
// be replayed as a different statement.
package certs

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/tee"
)

// Signature domains.
const (
	DomainWorker   = "cloister-worker-cert-v1\n"
	DomainFunction = "cloister-function-cert-v1\n"
)

// Errors returned by Open and the Check methods.
var (
	ErrSignature = errors.New("certs: signature does not verify")
	ErrExpired   = errors.New("certs: certificate not valid at this time")
	ErrMalformed = errors.New("certs: malformed statement")
	// ErrKeyExchange: a key-exchange key is not the one a worker
	// certificate names.
	ErrKeyExchange = errors.New("certs: key-exchange key is not the certified one")
)

// Signed is a statement and a detached Ed25519 signature over domain ‖ Body.
type Signed struct {
	Body      []byte `json:"body"`
	Signature []byte `json:"sig"`
}

// Sign encodes v as JSON and signs it under domain.
func Sign(key ed25519.PrivateKey, domain string, v any) (Signed, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return Signed{}, fmt.Errorf("encoding statement: %w", err)
	}
	return Signed{Body: body, Signature: ed25519.Sign(key, append([]byte(domain), body...))}, nil
}

// Open verifies s under pub and domain and decodes the body into v.
func Open(s Signed, pub ed25519.PublicKey, domain string, v any) error {
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, append([]byte(domain), s.Body...), s.Signature) {
		return ErrSignature
	}
	if err := json.Unmarshal(s.Body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Worker certifies that a worker's signing key was bound into evidence that
// the coordinator verified and validated against its manifest.
type Worker struct {
	WorkerID   string            `json:"worker_id"`
	SigningKey ed25519.PublicKey `json:"signing_key"`
	// KeyExchangeHash is the hex SHA-256 of the worker's HPKE public key
	// for key release, which its evidence binds. The key itself (1,216
	// bytes of X-Wing) travels only in the requests that need it, checked
	// with CheckKeyExchange: this certificate rides in every receipt
	// (docs/adr/0024-worker-cert-kex-hash.md).
	KeyExchangeHash string    `json:"kex_key_sha256"`
	TEE             tee.Kind  `json:"tee"`
	TCB             string    `json:"tcb"`
	Measurement     string    `json:"measurement"`
	EvidenceHash    string    `json:"evidence_sha256"`
	ManifestHash    string    `json:"manifest_sha256"`
	NotBefore       time.Time `json:"not_before"`
	NotAfter        time.Time `json:"not_after"`
}

// KeyExchangeHash is the value of Worker.KeyExchangeHash for key.
func KeyExchangeHash(key []byte) string {
	h := sha256.Sum256(key)
	return hex.EncodeToString(h[:])
}

// CheckKeyExchange reports whether key is the key-exchange key w
// certifies (ErrKeyExchange if not, and for a certificate that names
// none).
func (w *Worker) CheckKeyExchange(key []byte) error {
	if len(key) == 0 || w.KeyExchangeHash == "" || KeyExchangeHash(key) != w.KeyExchangeHash {
		return ErrKeyExchange
	}
	return nil
}

// ValidAt reports whether t is inside the certificate's validity window.
func (w *Worker) ValidAt(t time.Time) error {
	if t.Before(w.NotBefore) || t.After(w.NotAfter) {
		return fmt.Errorf("%w: %s not in [%s, %s]", ErrExpired, t.Format(time.RFC3339),
			w.NotBefore.Format(time.RFC3339), w.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// OpenWorker verifies and decodes a worker certificate.
func OpenWorker(s Signed, coordinator ed25519.PublicKey) (*Worker, error) {
	var w Worker
	if err := Open(s, coordinator, DomainWorker, &w); err != nil {
		return nil, fmt.Errorf("worker certificate: %w", err)
	}
	if len(w.SigningKey) != ed25519.PublicKeySize || w.WorkerID == "" {
		return nil, fmt.Errorf("worker certificate: %w: key or id", ErrMalformed)
	}
	return &w, nil
}

// Suite names the HPKE ciphersuite of a function key (RFC 9180 identifiers).
type Suite struct {
	KEM  uint16 `json:"kem"`
	KDF  uint16 `json:"kdf"`
	AEAD uint16 `json:"aead"`
}

// Function binds one immutable function version to its code, owner, HPKE
// public key and policy.
type Function struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   int    `json:"version"`
	CodeHash  string `json:"code_sha256"`
	// SnapshotHash is the hash of the state every invocation starts from
	// (after init for reactors, after instantiation for commands), computed
	// by the coordinator at deploy. Workers refuse to serve a different one.
	SnapshotHash string     `json:"snapshot_sha256,omitempty"`
	ABI          string     `json:"abi,omitempty"`
	BundleHash   string     `json:"bundle_sha256"`
	OwnerKey     []byte     `json:"owner_key"`
	HPKEKey      []byte     `json:"hpke_key"`
	Suite        Suite      `json:"suite"`
	Confidential string     `json:"confidential"`
	AllowTEE     []tee.Kind `json:"allow_tee"`
	// MinTCB is the function's minimum TCB per TEE kind (bundle TEE policy).
	MinTCB map[tee.Kind]string `json:"min_tcb,omitempty"`
	// PolicyVersion is the version of the function's invoker policy
	// (Policy) in force when this version was registered. A worker serves
	// the version only under that policy or a later one, so that nobody
	// who controls storage can strip or roll back the policy below it.
	// Zero in certificates issued before policies existed.
	PolicyVersion int       `json:"policy_version,omitempty"`
	IssuedAt      time.Time `json:"issued_at"`
}

// OpenFunction verifies and decodes a function certificate.
func OpenFunction(s Signed, coordinator ed25519.PublicKey) (*Function, error) {
	var f Function
	if err := Open(s, coordinator, DomainFunction, &f); err != nil {
		return nil, fmt.Errorf("function certificate: %w", err)
	}
	if f.Name == "" || f.Version < 1 || len(f.HPKEKey) == 0 || f.CodeHash == "" {
		return nil, fmt.Errorf("function certificate: %w: missing fields", ErrMalformed)
	}
	return &f, nil
}

// ErrTEEPolicy is wrapped by Admits: the function's TEE policy does not
// admit the worker.
var ErrTEEPolicy = errors.New("certs: the function's TEE policy does not admit the worker")

// Admits reports whether the function's TEE policy admits worker w: its
// kind is in AllowTEE (any kind if empty), and its TCB is at or above
// MinTCB for its kind (if set). It returns nil, or an error wrapping
// ErrTEEPolicy that says why. Every role and the client check the policy
// with it: the gateway to route, the worker before it serves, the
// coordinator before it releases the key, and the client on the receipt's
// worker.
func (f *Function) Admits(w *Worker) error {
	if len(f.AllowTEE) > 0 && !slices.Contains(f.AllowTEE, w.TEE) {
		return fmt.Errorf("%w: %s/%s v%d does not accept TEE kind %q", ErrTEEPolicy, f.Namespace, f.Name, f.Version, w.TEE)
	}
	if min := f.MinTCB[w.TEE]; min != "" {
		if ok, err := attest.TCBAtLeast(w.TEE, w.TCB, min); err != nil || !ok {
			return fmt.Errorf("%w: %s/%s v%d wants %s TCB at least %s; the worker has %s", ErrTEEPolicy, f.Namespace, f.Name, f.Version, w.TEE, min, w.TCB)
		}
	}
	return nil
}
