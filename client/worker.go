package client

import (
	"crypto/ed25519"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
)

// Worker is an admitted worker's certificate, verified against the
// attested coordinator's identity key: the worker's keys, the TEE it runs
// in ("sim", "sev-snp" or "tdx") with its TCB and measurement, and the
// certificate's validity.
type Worker struct {
	WorkerID   string            `json:"worker_id"`
	SigningKey ed25519.PublicKey `json:"signing_key"`
	// KeyExchangeHash is the hex SHA-256 of the worker's HPKE public key
	// for key release (the key itself is not in the certificate).
	KeyExchangeHash string    `json:"kex_key_sha256"`
	TEE             string    `json:"tee"`
	TCB             string    `json:"tcb"`
	Measurement     string    `json:"measurement"`
	EvidenceHash    string    `json:"evidence_sha256"`
	ManifestHash    string    `json:"manifest_sha256"`
	NotBefore       time.Time `json:"not_before"`
	NotAfter        time.Time `json:"not_after"`
}

// workerFrom is a verified worker certificate's public form; nil stays nil.
func workerFrom(w *certs.Worker) *Worker {
	if w == nil {
		return nil
	}
	return &Worker{WorkerID: w.WorkerID, SigningKey: w.SigningKey, KeyExchangeHash: w.KeyExchangeHash, TEE: string(w.TEE), TCB: w.TCB,
		Measurement: w.Measurement, EvidenceHash: w.EvidenceHash, ManifestHash: w.ManifestHash, NotBefore: w.NotBefore, NotAfter: w.NotAfter}
}

// kinds converts a list of TEE kinds between their public form (string)
// and package tee's; nil stays nil.
func kinds[To, From ~string](in []From) []To {
	if in == nil {
		return nil
	}
	out := make([]To, len(in))
	for i, k := range in {
		out[i] = To(k)
	}
	return out
}

// minTCBs converts minimum TCBs by TEE kind as kinds does.
func minTCBs[To, From ~string](in map[From]string) map[To]string {
	if in == nil {
		return nil
	}
	out := make(map[To]string, len(in))
	for k, v := range in {
		out[To(k)] = v
	}
	return out
}
