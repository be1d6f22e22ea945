package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/fnspec"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/wire"
)

// recheckAfter is how long a loaded function is served before the worker
// checks the registry again (so that a delete takes effect).
const recheckAfter = 5 * time.Second

// loaded is a verified, compiled function version with its key.
type loaded struct {
	fn        *certs.Function
	manifest  bundle.Manifest
	module    *sandbox.Module
	reactor   *sandbox.Function // nil for commands
	script    []byte            // a JavaScript or Python function's script (its reactor runs the engine); nil otherwise
	snapshot  string            // hash of the state every invocation starts from
	key       hpke.PrivateKey
	ticketKey []byte
	tickets   ticketCache     // the session tickets opened with ticketKey
	state     *state.Function // nil unless the manifest grants state
	sem       chan struct{}
	checked   atomic.Int64                 // unix nanoseconds of the last registry check; calls share it
	policy    atomic.Pointer[certs.Policy] // the newest verified invoker policy; nil: anyone (see authorise)
	lastUsed  atomic.Int64                 // unix nanoseconds of the last call, for eviction
}

func fnID(ns, name string, version int) string { return fmt.Sprintf("%s/%s/%d", ns, name, version) }

// function returns the verified function version, loading it on first use.
// version 0 means the latest.
func (w *Worker) function(ctx context.Context, ns, name string, version int) (*loaded, error) {
	if !bundle.ValidName(ns) || !bundle.ValidName(name) || version < 0 {
		return nil, apierr.New(apierr.BadRequest, "invalid function name or version")
	}
	if version == 0 {
		v, err := w.reg.Latest(ctx, ns, name)
		if err != nil {
			return nil, registryError(err)
		}
		version = v
	}
	id := fnID(ns, name, version)
	if v, ok := w.fns.Load(id); ok {
		l := v.(*loaded)
		l.lastUsed.Store(w.now().UnixNano())
		if w.now().Sub(time.Unix(0, l.checked.Load())) < recheckAfter {
			return l, nil
		}
		rec, err := w.reg.Get(ctx, ns, name, version)
		if err != nil {
			w.evict(id, l, "deleted")
			return nil, registryError(err)
		}
		if err := w.applyPolicy(l, rec, w.cert.Load().coordKey); err != nil {
			// The policy in force stays; a newer one is not verified.
			w.log.Warn("invoker policy not applied", "namespace", ns, "name", name, "err", err)
		}
		l.checked.Store(w.now().UnixNano())
		return l, nil
	}
	v, err, _ := w.loadGroup.Do(id, func() (any, error) {
		l, err := w.load(ctx, ns, name, version)
		if err != nil {
			return nil, err
		}
		l.lastUsed.Store(w.now().UnixNano())
		w.fns.Store(id, l)
		if w.nLoaded.Add(1) > int64(w.cfg.MaxLoaded) {
			w.evictLRU()
		}
		return l, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*loaded), nil
}

func registryError(err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return apierr.Wrap(apierr.NotFound, err)
	}
	return err
}

// load fetches the record and bundle from untrusted storage and verifies
// both inside the TEE before compiling.
func (w *Worker) load(ctx context.Context, ns, name string, version int) (*loaded, error) {
	adm := w.cert.Load()
	rec, err := w.reg.Get(ctx, ns, name, version)
	if err != nil {
		return nil, registryError(err)
	}
	fc, err := certs.OpenFunction(rec.Certificate, adm.coordKey)
	if err != nil || fc.Namespace != ns || fc.Name != name || fc.Version != version {
		return nil, apierr.New(apierr.BundleIntegrity, "registry record for %s/%s v%d is not certified by the coordinator", ns, name, version)
	}
	if err := checkTEEPolicy(adm.cert, fc); err != nil {
		return nil, err
	}
	raw, err := w.readBundle(ctx, rec.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, apierr.New(apierr.BundleIntegrity, "bundle for %s/%s v%d is missing from the object store", ns, name, version)
	}
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "reading the bundle of %s/%s v%d: %v", ns, name, version, err)
	}
	if bundle.Hash(raw) != fc.BundleHash {
		return nil, apierr.New(apierr.BundleIntegrity, "bundle for %s/%s v%d does not match its certified hash", ns, name, version)
	}
	bd, err := openCertified(raw, fc, ns, name, version)
	if err != nil {
		return nil, err
	}
	lim := bd.Manifest.Limits
	mod, script, err := w.compileBundle(ctx, bd)
	if err != nil {
		return nil, sandboxError(err)
	}
	l := &loaded{fn: fc, manifest: bd.Manifest, module: mod, script: script, sem: make(chan struct{}, lim.Concurrency)}
	l.checked.Store(w.now().UnixNano())
	if err := w.applyPolicy(l, rec, adm.coordKey); err != nil {
		l.close()
		return nil, apierr.Wrap(apierr.BundleIntegrity, err)
	}
	if mod.ABI() == sandbox.ABIReactor {
		spec := fnspec.Spec(ns, bd.Manifest)
		spec.MaxSandboxes, spec.IdleTimeout, spec.Prewarm = lim.Concurrency, w.cfg.PoolIdle, 1
		if spec.InitInput, err = initInput(bd); err != nil {
			l.close()
			return nil, err
		}
		if l.reactor, err = mod.NewFunction(ctx, spec); err != nil {
			l.close()
			return nil, sandboxError(err)
		}
		l.snapshot = l.reactor.Snapshot().Hash()
	} else if l.snapshot, err = mod.CommandSnapshotHash(ctx); err != nil {
		l.close()
		return nil, sandboxError(err)
	}
	if fc.SnapshotHash != "" && l.snapshot != fc.SnapshotHash {
		l.close()
		return nil, apierr.New(apierr.BundleIntegrity, "the snapshot of %s/%s v%d (%s) differs from the certified %s: init is not deterministic", ns, name, version, l.snapshot, fc.SnapshotHash)
	}
	var stateKey []byte
	if l.key, stateKey, err = w.fetchKey(ctx, adm, fc); err != nil {
		l.close()
		return nil, err
	}
	defer clear(stateKey)
	if bd.Manifest.Capabilities.State {
		if l.state, err = w.state.Function(ns, name, stateKey); err != nil {
			l.close()
			return nil, err
		}
	}
	if l.ticketKey, err = seal.TicketKey(l.key); err != nil {
		l.close()
		return nil, err
	}
	w.log.Info("loaded function", "namespace", ns, "name", name, "version", version, "abi", mod.ABI(),
		"code_sha256", fc.CodeHash, "snapshot_sha256", l.snapshot)
	return l, nil
}

// openCertified opens a bundle read from untrusted storage and checks it
// against the coordinator's certificate for ns/name/version: the owner's
// signature, the code, the owner key, the name and version, and the
// namespace the owner signed it for. A bundle without a namespace was
// registered before bundles carried one; the certificate alone binds it
// to ns.
func openCertified(raw []byte, fc *certs.Function, ns, name string, version int) (*bundle.Bundle, error) {
	bd, err := bundle.Open(raw)
	if err != nil {
		if errors.Is(err, bundle.ErrSignature) {
			return nil, apierr.Wrap(apierr.BundleSignature, err)
		}
		return nil, apierr.Wrap(apierr.BundleIntegrity, err)
	}
	if bd.CodeHash != fc.CodeHash || !bytes.Equal(bd.Signer, fc.OwnerKey) || bd.Manifest.Name != name || bd.Manifest.Version != version {
		return nil, apierr.New(apierr.BundleIntegrity, "bundle contents differ from the certified function")
	}
	if err := bd.Manifest.BoundTo(ns); errors.Is(err, bundle.ErrNamespace) {
		return nil, apierr.Wrap(apierr.BundleSignature, err)
	}
	return bd, nil
}

// readBundle reads a bundle from the object store, trying again (three
// times at most, while ctx lasts) when the store fails for another reason
// than the object being missing: under load a large read can time out.
func (w *Worker) readBundle(ctx context.Context, obj string) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		raw, err := w.cfg.Stores.Bundles.GetBytes(ctx, obj)
		if err == nil || errors.Is(err, jetstream.ErrObjectNotFound) || attempt == 3 || ctx.Err() != nil {
			return raw, err
		}
		w.log.Warn("reading a bundle failed; trying again", "object", obj, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		}
	}
}

// close releases a loaded function's pool and its hold on the compiled
// code. Call it once.
func (l *loaded) close() {
	if l.reactor != nil {
		l.reactor.Close()
	}
	// The compiled code stays cached a while for other holders and the
	// next load, then is freed (sandbox.Module.Release).
	l.module.Release()
}

// fetchKey asks the coordinator for the function's HPKE key, sealed to this
// worker's key-exchange key, and checks it against the certificate.
// The state key comes with it: it has no certificate to check against,
// but it arrives sealed to this worker's attested key under its own info,
// and a wrong one authenticates nothing at the coordinator's anchor.
func (w *Worker) fetchKey(ctx context.Context, adm *admission, fc *certs.Function) (hpke.PrivateKey, []byte, error) {
	req := wire.FunctionKeyRequest{Certificate: adm.signed, KeyExchange: seal.PublicKeyBytes(w.kexKey), Namespace: fc.Namespace, Name: fc.Name, Version: fc.Version, Time: w.now().UTC()}
	req.Signature = ed25519.Sign(w.signKey, wire.KeyRequestMessage(req))
	var resp wire.FunctionKeyResponse
	if err := bus.Call(ctx, w.cfg.Conn, bus.SubjectFunctionKey, req, &resp); err != nil {
		return nil, nil, err
	}
	kb, err := seal.OpenFrom(w.kexKey, wire.KeyReleaseInfo(adm.cert.WorkerID, fc.Namespace, fc.Name, fc.Version), resp.Enc, resp.Sealed)
	if err != nil {
		return nil, nil, apierr.New(apierr.Internal, "function key release could not be opened")
	}
	defer clear(kb)
	k, err := seal.ParsePrivateKey(fc.HPKEKey, kb)
	if err != nil {
		return nil, nil, apierr.New(apierr.Internal, "released function key does not match its certificate")
	}
	sk, err := seal.OpenFrom(w.kexKey, wire.StateKeyReleaseInfo(adm.cert.WorkerID, fc.Namespace, fc.Name), resp.StateEnc, resp.StateSealed)
	if err != nil || len(sk) != state.KeySize {
		return nil, nil, apierr.New(apierr.Internal, "state key release could not be opened")
	}
	return k, sk, nil
}

// sandboxError maps sandbox errors to API errors.
func sandboxError(err error) error {
	var code apierr.Code
	switch {
	case errors.Is(err, state.ErrIntegrity):
		code = apierr.StateIntegrity
	case errors.Is(err, sandbox.ErrState):
		code = apierr.Unavailable
	case errors.Is(err, sandbox.ErrOutputTooLarge):
		code = apierr.OutputTooLarge
	case errors.Is(err, sandbox.ErrMemoryLimit):
		code = apierr.MemoryLimit
	case errors.Is(err, sandbox.ErrFuelExhausted):
		code = apierr.FuelExhausted
	case errors.Is(err, sandbox.ErrTimeout):
		code = apierr.Timeout
	case errors.Is(err, sandbox.ErrTrap):
		code = apierr.FunctionTrap
	case errors.Is(err, sandbox.ErrExit):
		code = apierr.FunctionExit
	case errors.Is(err, sandbox.ErrBusy):
		code = apierr.ConcurrencyLimit
	case errors.Is(err, sandbox.ErrInvalidModule), errors.Is(err, sandbox.ErrInvalidLimits):
		code = apierr.InvalidModule
	case errors.Is(err, context.Canceled), errors.Is(err, sandbox.ErrClosed):
		code = apierr.Unavailable
	default:
		return err
	}
	return &apierr.Error{Code: code, Message: err.Error()}
}
