// Package artoken encodes attestation-result tokens: JSON Web Tokens
// (RFC 7519) signed with EdDSA/Ed25519 (RFC 8037) by the coordinator's
// identity key, carrying an Entity Attestation Token profile (RFC 9711,
// "eat_profile") of Cloister's own.
//
// A token says: at iat, the coordinator whose identity key signed it ran
// in a TEE of kind "tee" with measurement "measurement", bound the
// deployment manifest "manifest_sha256", and had admitted the listed
// workers after verifying their evidence. It is valid until exp (60 s by
// default). A relying party trusts the signing key only after verifying the
// coordinator's raw evidence once (or by pinning it); the token then spares
// it verifying hardware evidence again for every request.
//
// The package never accepts another algorithm than EdDSA, and never a
// token without exp.
package artoken

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/tee"
)

// Profile is the eat_profile of Cloister attestation-result tokens.
const Profile = "tag:cloister-faas.github.io,2026:attestation-result-v1"

// Issuer is the iss of every token.
const Issuer = "cloister-coordinator"

// Errors returned by Verify.
var (
	ErrMalformed = errors.New("artoken: malformed token")
	ErrSignature = errors.New("artoken: signature does not verify")
	ErrExpired   = errors.New("artoken: token expired or not yet valid")
)

// Worker is the attestation result for one admitted worker.
type Worker struct {
	ID          string    `json:"id"`
	TEE         tee.Kind  `json:"tee"`
	TCB         string    `json:"tcb"`
	Measurement string    `json:"measurement"`
	NotAfter    time.Time `json:"not_after"`
}

// Claims are a token's payload.
type Claims struct {
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"` // hex identity key
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti,omitempty"`
	Profile  string `json:"eat_profile"`
	// Status is the appraisal (EAR, draft-ietf-rats-ear): always "affirming"
	// here, since the coordinator issues tokens only for what it accepted.
	Status       string   `json:"status"`
	TEE          tee.Kind `json:"tee"`
	TCB          string   `json:"tcb"`
	Measurement  string   `json:"measurement"`
	ManifestHash string   `json:"manifest_sha256"`
	EvidenceHash string   `json:"evidence_sha256"`
	Workers      []Worker `json:"workers,omitempty"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
}

var b64 = base64.RawURLEncoding

// Issue signs claims as a compact JWT.
func Issue(key ed25519.PrivateKey, c Claims) (string, error) {
	if c.Expires <= c.IssuedAt {
		return "", fmt.Errorf("%w: exp must follow iat", ErrMalformed)
	}
	h, _ := json.Marshal(header{Alg: "EdDSA", Typ: "JWT"}) // two strings: Marshal cannot fail
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	return signing + "." + b64.EncodeToString(ed25519.Sign(key, []byte(signing))), nil
}

// Verify checks a token's algorithm, signature (by key), profile, issuer
// and validity at now (with 30 s of skew), and returns its claims.
func Verify(token string, key ed25519.PublicKey, now time.Time) (*Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: want three parts", ErrMalformed)
	}
	hb, err1 := b64.DecodeString(parts[0])
	pb, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, fmt.Errorf("%w: base64url", ErrMalformed)
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "EdDSA" {
		return nil, fmt.Errorf("%w: alg %q (want EdDSA)", ErrMalformed, h.Alg)
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, ErrSignature
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if c.Profile != Profile || c.Issuer != Issuer || c.Status != "affirming" {
		return nil, fmt.Errorf("%w: profile %q, issuer %q, status %q", ErrMalformed, c.Profile, c.Issuer, c.Status)
	}
	const skew = 30
	if t := now.Unix(); c.Expires == 0 || t > c.Expires+skew || t < c.IssuedAt-skew {
		return nil, fmt.Errorf("%w: valid %s to %s, now %s", ErrExpired,
			time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339), time.Unix(c.Expires, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return &c, nil
}
