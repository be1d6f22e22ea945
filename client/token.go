package client

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/artoken"
)

// ResultClaims are the claims of an attestation-result token: a JWT
// (RFC 7519) the attested coordinator signs with its identity key
// (EdDSA, RFC 8037), saying what it ran in and which workers it admitted
// (docs/operations.md).
type ResultClaims struct {
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"` // hex identity key
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti,omitempty"`
	Profile  string `json:"eat_profile"`
	// Status is the appraisal (EAR, draft-ietf-rats-ear): always
	// "affirming", since the coordinator issues tokens only for what it
	// accepted.
	Status string `json:"status"`
	// TEE is the coordinator's TEE kind: "sim", "sev-snp" or "tdx".
	TEE          string         `json:"tee"`
	TCB          string         `json:"tcb"`
	Measurement  string         `json:"measurement"`
	ManifestHash string         `json:"manifest_sha256"`
	EvidenceHash string         `json:"evidence_sha256"`
	Workers      []ResultWorker `json:"workers,omitempty"`
}

// ResultWorker is the attestation result for one admitted worker.
type ResultWorker struct {
	ID          string    `json:"id"`
	TEE         string    `json:"tee"`
	TCB         string    `json:"tcb"`
	Measurement string    `json:"measurement"`
	NotAfter    time.Time `json:"not_after"`
}

// VerifyResultToken verifies an attestation-result token signed by the
// coordinator identity key (taken from a verified Attestation) at now.
// Failures wrap ErrVerification.
func VerifyResultToken(token string, identityKey ed25519.PublicKey, now time.Time) (*ResultClaims, error) {
	cl, err := verifyResultToken(token, identityKey, now)
	if err != nil {
		return nil, err
	}
	return claimsFrom(cl), nil
}

func verifyResultToken(token string, identityKey ed25519.PublicKey, now time.Time) (*artoken.Claims, error) {
	cl, err := artoken.Verify(token, identityKey, now)
	if err != nil {
		return nil, fmt.Errorf("%w: result token: %w", ErrVerification, err)
	}
	return cl, nil
}

// claimsFrom is a token's claims in their public form; nil stays nil.
func claimsFrom(cl *artoken.Claims) *ResultClaims {
	if cl == nil {
		return nil
	}
	out := &ResultClaims{Issuer: cl.Issuer, Subject: cl.Subject, IssuedAt: cl.IssuedAt, Expires: cl.Expires, ID: cl.ID,
		Profile: cl.Profile, Status: cl.Status, TEE: string(cl.TEE), TCB: cl.TCB, Measurement: cl.Measurement,
		ManifestHash: cl.ManifestHash, EvidenceHash: cl.EvidenceHash}
	if cl.Workers != nil {
		out.Workers = make([]ResultWorker, len(cl.Workers))
		for i, w := range cl.Workers {
			out.Workers[i] = ResultWorker{ID: w.ID, TEE: string(w.TEE), TCB: w.TCB, Measurement: w.Measurement, NotAfter: w.NotAfter}
		}
	}
	return out
}
