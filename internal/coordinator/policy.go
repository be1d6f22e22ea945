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
	"github.com/cloister-faas/cloister/internal/seal"
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
// or fails if another change came first. A new policy's version is past
// both the registry's and every version certified before (the control
// journal's), so that storage cannot make it one that workers which saw
// a higher one ignore.
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
	signed, next, err := c.certifyPolicy(ctx, ns, name, version, *inv, owner, "")
	if err != nil {
		return deployPolicy{}, err
	}
	return deployPolicy{inForce: &signed, version: next, install: &signed}, nil
}

// certifyPolicy signs the function's next invoker policy: its version is
// past stored (the registry's) and past every version certified before,
// and it is recorded in the control journal first, with the owner update
// it certifies (update: the SHA-256 of its signed body; "" for a deploy),
// which can then never be certified again.
func (c *Coordinator) certifyPolicy(ctx context.Context, ns, name string, stored int, inv certs.Invokers, owner ed25519.PublicKey, update string) (certs.Signed, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if update != "" && c.policyUpdates[update] {
		return certs.Signed{}, 0, apierr.New(apierr.Replay, "this policy update of %s/%s was certified before", ns, name)
	}
	next := max(stored, c.policyMax[ns+"/"+name]) + 1
	if err := c.appendControl(ctx, controlRecord{Kind: "policy", Policy: &policyRecord{Namespace: ns, Name: name, Version: next, Update: update}}); err != nil {
		return certs.Signed{}, 0, apierr.New(apierr.Unavailable, "recording the policy: %v", err)
	}
	signed, err := certs.Sign(c.identity, certs.DomainPolicy, certs.Policy{
		Namespace: ns, Name: name, Version: next, Invokers: inv, OwnerKey: owner, IssuedAt: c.now().UTC(),
	})
	return signed, next, err
}

// handlePolicy certifies an owner's invoker policy update: signed with the
// owner key of the function's latest version, for this function, one
// version past the policy stored now, and never certified before. The
// certified version is past every version certified before too (see
// certifyPolicy). The gateway that relays it is not trusted with any of
// this; it can only drop the update.
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
	// The stored policy's version, as this coordinator certified it (not
	// the registry's word for it).
	stored := 0
	if rec.Policy != nil {
		p, err := certs.OpenPolicy(*rec.Policy, c.IdentityKey())
		if err != nil {
			return nil, apierr.New(apierr.Internal, "the registry's policy of %s/%s does not verify: %v", req.Namespace, req.Name, err)
		}
		stored = p.Version
	}
	if u.Version != stored+1 {
		return nil, apierr.New(apierr.Conflict, "the policy of %s/%s is at version %d; an update must carry version %d, not %d", req.Namespace, req.Name, stored, stored+1, u.Version)
	}
	if err := u.Invokers.Validate(); err != nil {
		return nil, apierr.Wrap(apierr.BadRequest, err)
	}
	signed, next, err := c.certifyPolicy(ctx, req.Namespace, req.Name, max(stored, rec.PolicyVersion), u.Invokers, fc.OwnerKey, seal.SHA256Hex(req.Update.Body))
	if err != nil {
		return nil, err
	}
	if err := c.reg.SetPolicy(ctx, req.Namespace, req.Name, next, signed); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			return nil, apierr.Wrap(apierr.Conflict, err)
		}
		if errors.Is(err, registry.ErrNotFound) {
			return nil, apierr.Wrap(apierr.NotFound, err)
		}
		return nil, apierr.New(apierr.Unavailable, "storing the policy: %v", err)
	}
	c.log.Info("invoker policy changed", "namespace", req.Namespace, "name", req.Name, "policy_version", next, "invokers", u.Invokers.String())
	return signed, nil
}
