package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// APIKeyPrefix starts every API key, so that leaked keys are easy to scan for.
const APIKeyPrefix = "clk_"

// APIKeyIDLen is the length of an API key's id, in hex digits.
const APIKeyIDLen = 16

// APIKeyID is the id of an API key: the first 16 hex digits of the
// SHA-256 of the key. It names a key in listings and revocations without
// being one: the key carries 256 random bits, so its hash reveals nothing
// of it. Anyone holding a key can compute its id.
func APIKeyID(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])[:APIKeyIDLen]
}

// APIKey describes a stored API key (GET /v1/keys). It never holds the
// key itself, which is stored only as its SHA-256.
type APIKey struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	// Scope is "invoke", "deploy" or "admin"; each includes the ones before.
	Scope string `json:"scope"`
	// Platform keys reach past their namespace (docs/adr/0008-api-keys.md).
	Platform bool      `json:"platform,omitempty"`
	Name     string    `json:"name,omitempty"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	Revoked  time.Time `json:"revoked,omitzero"`
	// Status is "active", "expired" or "revoked", as of the answer.
	Status string `json:"status"`
}

// APIKeyRequest is the body of POST /v1/keys.
type APIKeyRequest struct {
	// Namespace is the new key's ("": the caller's).
	Namespace string `json:"namespace,omitempty"`
	Scope     string `json:"scope"`
	Name      string `json:"name,omitempty"`
	// ExpiresIn is a Go duration ("720h"); "" for a key that does not expire.
	ExpiresIn string `json:"expires_in,omitempty"`
	Platform  bool   `json:"platform,omitempty"`
}

// NewAPIKey is the answer to POST /v1/keys: the key, shown this once, and
// what was stored about it.
type NewAPIKey struct {
	Key string `json:"key"`
	APIKey
}
