package worker

import (
	"crypto/ed25519"
	"fmt"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
)

// applyPolicy verifies the invoker policy that came with a registry record
// and installs it on l. The registry is untrusted storage: the policy must
// be certified by the coordinator, for this function, and no older than
// the one in force when the version was registered (its certificate's
// PolicyVersion) or the newest this worker has seen for the function.
// An older or missing policy leaves l's policy as it is (the newest
// verified one), and is an error on first load.
func (w *Worker) applyPolicy(l *loaded, rec *registry.Record, coordinator ed25519.PublicKey) error {
	f := l.fn
	id := f.Namespace + "/" + f.Name
	floor := f.PolicyVersion
	if seen, ok := w.policies.Load(id); ok {
		floor = max(floor, seen.(int))
	}
	if rec.Policy == nil {
		if floor == 0 {
			return nil // registered before policies existed: anyone
		}
		return fmt.Errorf("the registry holds no invoker policy for %s, which has one (version %d at least)", id, floor)
	}
	p, err := certs.OpenPolicy(*rec.Policy, coordinator)
	if err != nil {
		return err
	}
	if p.Namespace != f.Namespace || p.Name != f.Name {
		return fmt.Errorf("the registry's invoker policy of %s is certified for %s/%s", id, p.Namespace, p.Name)
	}
	if p.Version < floor {
		return fmt.Errorf("the registry's invoker policy of %s is version %d, older than version %d", id, p.Version, floor)
	}
	if cur := l.policy.Load(); cur == nil || p.Version >= cur.Version {
		l.policy.Store(p)
	}
	for {
		seen, loaded := w.policies.LoadOrStore(id, p.Version)
		if !loaded || seen.(int) >= p.Version || w.policies.CompareAndSwap(id, seen, p.Version) {
			return nil
		}
	}
}

// authorise checks the caller of one call against fn's invoker policy
// (nil caller: anonymous or plaintext).
func authorise(fn *loaded, caller ed25519.PublicKey) error {
	p := fn.policy.Load()
	if p == nil {
		if fn.fn.PolicyVersion > 0 {
			return apierr.New(apierr.CallerNotAuthorised, "no verified invoker policy for %s", fn.fn.Name)
		}
		return nil // registered before policies existed: anyone
	}
	if p.Allows(caller) {
		return nil
	}
	who := "an anonymous caller"
	if caller != nil {
		who = "caller " + certs.CallerHash(caller)
	}
	return apierr.New(apierr.CallerNotAuthorised, "%s may not invoke %s (invoker policy %d: %s)", who, fn.fn.Name, p.Version, p.Invokers)
}
