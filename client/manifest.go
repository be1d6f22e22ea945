package client

import (
	"context"
	"encoding/json"
	"net/http"
)

// SignedManifest is a deployment manifest document with admin signatures.
type SignedManifest struct {
	// Manifest is the document's exact bytes, which the signatures cover.
	Manifest   json.RawMessage     `json:"manifest"`
	Signatures []ManifestSignature `json:"signatures,omitempty"`
}

// ManifestSignature is an admin's Ed25519 signature over a manifest
// document's exact bytes (under the domain "cloister-manifest-v1\n").
type ManifestSignature struct {
	Key string `json:"key"` // hex public key
	Sig []byte `json:"sig"`
}

// ManifestChange answers an accepted manifest change: the new version and
// hash (pin it in the client policy), and the workers it revoked.
type ManifestChange struct {
	Version      int      `json:"version"`
	ManifestHash string   `json:"manifest_sha256"`
	Revoked      []string `json:"revoked_workers,omitempty"`
}

// CurrentManifest returns the coordinator's current manifest document and
// its hash, as the gateway reports them. Attest verifies them.
func (c *Client) CurrentManifest(ctx context.Context) (json.RawMessage, string, error) {
	var r struct {
		Manifest json.RawMessage `json:"manifest"`
		Hash     string          `json:"manifest_sha256"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/manifest", nil, "", &r); err != nil {
		return nil, "", err
	}
	return r.Manifest, r.Hash, nil
}

// ManifestHistory returns every manifest since the first, oldest first.
func (c *Client) ManifestHistory(ctx context.Context) ([]SignedManifest, error) {
	var h struct {
		Manifests []SignedManifest `json:"manifests"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/manifest/history", nil, "", &h); err != nil {
		return nil, err
	}
	return h.Manifests, nil
}

// SetManifest submits a signed manifest change (needs an admin API key; the
// coordinator checks the admin signature and the hash chain).
func (c *Client) SetManifest(ctx context.Context, sm SignedManifest) (*ManifestChange, error) {
	b, err := json.Marshal(sm)
	if err != nil {
		return nil, err
	}
	var ch ManifestChange
	if err := c.do(ctx, http.MethodPut, "/v1/manifest", b, "application/json", &ch); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.att = nil // the attestation now binds another manifest
	c.mu.Unlock()
	return &ch, nil
}
