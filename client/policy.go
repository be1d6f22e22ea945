package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Invoker policy kinds (InvokerPolicy.Kind).
const (
	InvokersOwner = certs.InvokersOwner // the function's owner key only: the default
	InvokersAny   = certs.InvokersAny   // anyone, and plaintext calls
	InvokersKeys  = certs.InvokersKeys  // the listed caller keys only
)

// InvokerPolicy is a function's invoker policy, verified: who may invoke
// any version of it. Workers enforce it inside the TEE; the gateway has no
// say.
type InvokerPolicy struct {
	Namespace string
	Name      string
	// Version grows by one with each change.
	Version int
	// Kind is InvokersOwner, InvokersAny or InvokersKeys.
	Kind string
	// Keys are the caller keys of a policy of kind InvokersKeys.
	Keys []ed25519.PublicKey
	// OwnerKey is the owner key that kind InvokersOwner means.
	OwnerKey ed25519.PublicKey
	IssuedAt time.Time
}

func policyOf(p *certs.Policy) *InvokerPolicy {
	kind := p.Invokers.Kind
	if kind == "" {
		kind = InvokersOwner
	}
	return &InvokerPolicy{Namespace: p.Namespace, Name: p.Name, Version: p.Version, Kind: kind,
		Keys: p.Invokers.Keys, OwnerKey: p.OwnerKey, IssuedAt: p.IssuedAt}
}

// Policy returns the function's invoker policy, verified against the
// attested coordinator key. It returns nil and no error for a function
// registered before invoker policies existed: anyone may invoke it until
// its owner sets one.
func (c *Client) Policy(ctx context.Context, name string) (*InvokerPolicy, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	var fi wire.FunctionInfo
	if err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/policy", nil, "", &fi); err != nil {
		return nil, publicError(err)
	}
	if fi.Policy == nil {
		return nil, nil
	}
	return c.openPolicy(*fi.Policy, a.IdentityKey, name)
}

func (c *Client) openPolicy(s certs.Signed, coordinator ed25519.PublicKey, name string) (*InvokerPolicy, error) {
	p, err := certs.OpenPolicy(s, coordinator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	if p.Name != name || (c.ns != "" && p.Namespace != c.ns) {
		return nil, fmt.Errorf("%w: the policy is for %s/%s", ErrVerification, p.Namespace, p.Name)
	}
	return policyOf(p), nil
}

// SetPolicy changes who may invoke the function, for all its versions,
// without deploying: kind is InvokersOwner, InvokersAny or InvokersKeys
// (with keys). owner must be the key that signed the function's latest
// version; it signs the update, which the coordinator certifies. Workers
// apply the new policy within seconds (they check the registry every 5 s).
func (c *Client) SetPolicy(ctx context.Context, name, kind string, keys []ed25519.PublicKey, owner ed25519.PrivateKey) (*InvokerPolicy, error) {
	inv := certs.Invokers{Kind: kind, Keys: keys}
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	cur, err := c.Policy(ctx, name)
	if err != nil {
		return nil, err
	}
	ns, version := c.ns, 0
	if cur != nil {
		ns, version = cur.Namespace, cur.Version
	}
	if ns == "" {
		// A function without a policy, and no pinned namespace: the
		// coordinator refuses an update signed for another namespace
		// than the API key's, so this only names it.
		fn, err := c.Function(ctx, name, 0)
		if err != nil {
			return nil, err
		}
		ns = fn.Namespace
	}
	upd, err := certs.Sign(owner, certs.DomainPolicyUpdate, certs.PolicyUpdate{
		Namespace: ns, Name: name, Version: version + 1, Invokers: inv, Time: c.now().UTC(),
	})
	if err != nil {
		return nil, err
	}
	var out wire.FunctionInfo
	body, err := json.Marshal(upd)
	if err != nil {
		return nil, err
	}
	if err := c.do(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name)+"/policy", body, "application/json", &out); err != nil {
		return nil, publicError(err)
	}
	if out.Policy == nil {
		return nil, fmt.Errorf("%w: no certified policy in the answer", ErrVerification)
	}
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	got, err := c.openPolicy(*out.Policy, a.IdentityKey, name)
	if err != nil {
		return nil, err
	}
	if got.Version <= version || got.Kind != kind || !slices.EqualFunc(got.Keys, keys, func(a, b ed25519.PublicKey) bool { return bytes.Equal(a, b) }) {
		return nil, fmt.Errorf("%w: the certified policy (version %d, %s) is not the update (version %d, %s)", ErrVerification, got.Version, got.Kind, version+1, kind)
	}
	return got, nil
}
