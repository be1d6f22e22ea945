package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/wire"
)

// APIKey describes a stored API key, never the key itself (the gateway
// stores only its SHA-256).
type APIKey struct {
	// ID is the key's id (APIKeyID).
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

// NewAPIKey is a key just created: the key, shown this once, and its record.
type NewAPIKey struct {
	Key string `json:"key"`
	APIKey
}

// APIKeyOptions describe a key to create.
type APIKeyOptions struct {
	// Scope is "invoke", "deploy" or "admin".
	Scope string
	// Namespace is the new key's ("": the calling key's). Another
	// namespace needs a platform admin key.
	Namespace string
	// Name labels the key in listings.
	Name string
	// Expires is the key's lifetime (0: it does not expire).
	Expires time.Duration
	// Platform makes a platform key (needs a platform admin key).
	Platform bool
}

// CreateAPIKey creates an API key (needs a key with the admin scope). The
// answer is the only place the key appears: the gateway stores its hash.
func (c *Client) CreateAPIKey(ctx context.Context, o APIKeyOptions) (*NewAPIKey, error) {
	req := wire.APIKeyRequest{Namespace: o.Namespace, Scope: o.Scope, Name: o.Name, Platform: o.Platform}
	if o.Expires != 0 {
		req.ExpiresIn = o.Expires.String()
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var k NewAPIKey
	if err := c.do(ctx, http.MethodPost, "/v1/keys", b, "application/json", &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// APIKeys lists the keys the calling admin key may manage: its namespace's,
// or for a platform key every namespace's (namespace, if set, filters).
func (c *Client) APIKeys(ctx context.Context, namespace string) ([]APIKey, error) {
	path := "/v1/keys"
	if namespace != "" {
		path += "?namespace=" + url.QueryEscape(namespace)
	}
	var r struct {
		Keys []APIKey `json:"keys"`
	}
	err := c.do(ctx, http.MethodGet, path, nil, "", &r)
	return r.Keys, err
}

// RevokeAPIKey revokes a key, named by the key itself or by its id. A key
// is never sent: its id is computed here. Every gateway refuses a revoked
// key within seconds.
func (c *Client) RevokeAPIKey(ctx context.Context, keyOrID string) (*APIKey, error) {
	id := keyOrID
	if strings.HasPrefix(keyOrID, wire.APIKeyPrefix) {
		id = wire.APIKeyID(keyOrID)
	}
	var k APIKey
	if err := c.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, "", &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// APIKeyID returns the id of an API key, as listings show it.
func APIKeyID(key string) string { return wire.APIKeyID(key) }
