package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cloister-faas/cloister/internal/bundle"
)

// FunctionInfo describes a registered function version as the gateway
// reports it. It is informational: Invoke verifies the certificate itself.
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
	// Certificate is the function version's certificate, unverified
	// (Client.Function verifies it).
	Certificate Certificate `json:"certificate"`
	// Policy is the function's certified invoker policy, unverified
	// (Client.Policy verifies it); absent for a function registered
	// before invoker policies existed.
	Policy *Certificate `json:"policy,omitempty"`
}

// BundleContentType is the media type of a bundle upload.
const BundleContentType = "application/vnd.cloister.bundle"

// NextVersion returns the version number the next deploy of name must carry.
func (c *Client) NextVersion(ctx context.Context, name string) (int, error) {
	var r struct {
		Version int `json:"version"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/next-version", nil, "", &r)
	return r.Version, err
}

// KeyNamespace asks the gateway which namespace the client's API key
// belongs to. The gateway is not trusted: use the answer only where a
// wrong one fails safe, as in signing a bundle for it (the coordinator
// then refuses to register it anywhere else).
func (c *Client) KeyNamespace(ctx context.Context) (string, error) {
	var r struct {
		Namespace string `json:"namespace"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, "", &r); err != nil {
		return "", err
	}
	return r.Namespace, nil
}

// Deploy uploads a signed bundle (see the bundle format in docs/api.md).
// The bundle's manifest must name the namespace it is deployed to (its
// "namespace" field, signed with it): the coordinator refuses a bundle
// signed for another namespace or for none (bundle_signature). With a
// pinned namespace (WithNamespace), Deploy refuses such a bundle before
// uploading it.
func (c *Client) Deploy(ctx context.Context, name string, b []byte) (*FunctionInfo, error) {
	if c.ns != "" {
		bd, err := bundle.Open(b)
		if err != nil {
			return nil, fmt.Errorf("opening bundle: %w", err)
		}
		if err := bd.Manifest.BoundTo(c.ns); err != nil {
			return nil, err
		}
	}
	var fi FunctionInfo
	if err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name), b, BundleContentType, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// List returns the latest version of every function in the key's namespace.
func (c *Client) List(ctx context.Context) ([]FunctionInfo, error) {
	var r struct {
		Functions []FunctionInfo `json:"functions"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/functions", nil, "", &r)
	return r.Functions, err
}

// MaxFunctionPage is the largest limit ListPage takes.
const MaxFunctionPage = 200

// ListPage returns a page of the latest versions of the key's namespace's
// functions, in name order: at most limit (1 to MaxFunctionPage) of those
// whose names sort after after ("": from the first). next is the after of
// the following page, "" on the last page.
func (c *Client) ListPage(ctx context.Context, after string, limit int) (list []FunctionInfo, next string, err error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after != "" {
		q.Set("after", after)
	}
	var r struct {
		Functions []FunctionInfo `json:"functions"`
		Next      string         `json:"next"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/functions?"+q.Encode(), nil, "", &r); err != nil {
		return nil, "", err
	}
	return r.Functions, r.Next, nil
}

// Get returns one function version (0 = latest).
func (c *Client) Get(ctx context.Context, name string, version int) (*FunctionInfo, error) {
	var fi FunctionInfo
	if err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+versionQuery(version), nil, "", &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// Delete deletes a function; its version numbers are never reused.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, "", nil)
}

// CreateToken creates an API key for a namespace (needs an admin key).
func (c *Client) CreateToken(ctx context.Context, namespace, name string) (string, error) {
	b, _ := json.Marshal(map[string]string{"namespace": namespace, "name": name}) // strings always encode
	var r struct {
		Token string `json:"token"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/tokens", b, "application/json", &r)
	return r.Token, err
}
