package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// deployPolicy is the invoker policy a deploy leaves in force.
type deployPolicy struct {
	inForce *certs.Signed // nil: none (a function registered before policies existed)
	version int           // inForce's version
	install *certs.Signed // the policy to install with the deploy, if it changes
}

// deployPolicy decides the invoker policy a deploy leaves in force. A
// manifest that states invokers installs them as the function's next
// policy version; a new function (or one deleted and deployed again)
// whose manifest is silent gets "owner"; otherwise the current policy
// stays. registry.Put installs a new policy with the version, atomically,
// or fails if another change came first.
func (c *Coordinator) deployPolicy(ctx context.Context, ns, name string, stated *certs.Invokers, owner ed25519.PublicKey) (deployPolicy, error) {
	current, version, live, err := c.reg.Policy(ctx, ns, name)
	if err != nil {
		return deployPolicy{}, apierr.New(apierr.Unavailable, "reading the function's policy: %v", err)
	}
	inv := stated
	if inv == nil && !live {
		inv = &certs.Invokers{Kind: certs.InvokersOwner}
	}
	if inv == nil {
		return deployPolicy{inForce: current, version: version}, nil
	}
	signed, err := c.certifyPolicy(ns, name, version+1, *inv, owner)
	if err != nil {
		return deployPolicy{}, err
	}
	return deployPolicy{inForce: &signed, version: version + 1, install: &signed}, nil
}

func (c *Coordinator) certifyPolicy(ns, name string, version int, inv certs.Invokers, owner ed25519.PublicKey) (certs.Signed, error) {
	return certs.Sign(c.identity, certs.DomainPolicy, certs.Policy{
		Namespace: ns, Name: name, Version: version, Invokers: inv, OwnerKey: owner, IssuedAt: c.now().UTC(),
	})
}

// handlePolicy certifies an owner's invoker policy update: signed with the
// owner key of the function's latest version, for this function, one
// version past the current policy. The gateway that relays it is not
// trusted with any of this; it can only drop the update.
func (c *Coordinator) handlePolicy(ctx context.Context, b []byte) (any, error) {
	var req wire.PolicyRequest
	if err := json.Unmarshal(b, &req); err != nil || !bundle.ValidName(req.Namespace) || !bundle.ValidName(req.Name) {
		return nil, apierr.New(apierr.BadRequest, "malformed policy request")
	}
	rec, err := c.reg.Get(ctx, req.Namespace, req.Name, 0)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, apierr.New(apierr.NotFound, "function %s/%s not found", req.Namespace, req.Name)
	}
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "reading the function: %v", err)
	}
	fc, err := certs.OpenFunction(rec.Certificate, c.IdentityKey())
	if err != nil {
		return nil, apierr.New(apierr.Internal, "the registry's certificate of %s/%s does not verify: %v", req.Namespace, req.Name, err)
	}
	u, err := certs.OpenPolicyUpdate(req.Update, fc.OwnerKey)
	if err != nil {
		return nil, apierr.New(apierr.BundleSignature, "the policy update is not signed by the owner key of %s/%s: %v", req.Namespace, req.Name, err)
	}
	if u.Namespace != req.Namespace || u.Name != req.Name {
		return nil, apierr.New(apierr.BundleSignature, "the policy update is signed for %s/%s, not %s/%s", u.Namespace, u.Name, req.Namespace, req.Name)
	}
	if u.Version != rec.PolicyVersion+1 {
		return nil, apierr.New(apierr.Conflict, "the policy of %s/%s is at version %d; an update must carry version %d, not %d", req.Namespace, req.Name, rec.PolicyVersion, rec.PolicyVersion+1, u.Version)
	}
	if err := u.Invokers.Validate(); err != nil {
		return nil, apierr.Wrap(apierr.BadRequest, err)
	}
	signed, err := c.certifyPolicy(req.Namespace, req.Name, u.Version, u.Invokers, fc.OwnerKey)
	if err != nil {
		return nil, err
	}
	if err := c.reg.SetPolicy(ctx, req.Namespace, req.Name, u.Version, signed); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			return nil, apierr.Wrap(apierr.Conflict, err)
		}
		if errors.Is(err, registry.ErrNotFound) {
			return nil, apierr.Wrap(apierr.NotFound, err)
		}
		return nil, apierr.New(apierr.Unavailable, "storing the policy: %v", err)
	}
	c.log.Info("invoker policy changed", "namespace", req.Namespace, "name", req.Name, "policy_version", u.Version, "invokers", u.Invokers.String())
	return signed, nil
}
