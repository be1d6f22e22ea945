package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The native API's function routes: list, read, deploy and delete.

func info(rec *registry.Record, latest int) wire.FunctionInfo {
	f := rec.Function
	return wire.FunctionInfo{
		Namespace: f.Namespace, Name: f.Name, Version: f.Version, Latest: latest, CodeHash: f.CodeHash,
		BundleHash: f.BundleHash, Confidential: f.Confidential, Created: rec.Created, Manifest: rec.Manifest,
		Certificate: rec.Certificate, Policy: rec.Policy,
	}
}

// MaxFunctionPage bounds one page of GET /v1/functions?limit=N.
const MaxFunctionPage = 200

// listFunctions answers GET /v1/functions[?limit=N][&after=NAME]: the
// latest version of each function, in name order; without limit, all of
// them. With more to come, the answer's "next" is the name to pass as
// after for the next page.
func (g *Gateway) listFunctions(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := r.URL.Query()
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxFunctionPage {
			return apierr.New(apierr.BadRequest, "limit must be 1 to %d", MaxFunctionPage)
		}
		limit = n
	}
	after := q.Get("after")
	if after != "" && !bundle.ValidName(after) {
		return apierr.New(apierr.BadRequest, "after must be a function name (the next of the previous page), not %q", after)
	}
	recs, more, err := g.svc.functions.ListPage(r.Context(), p.Namespace, after, limit)
	if err != nil {
		return storeError("registry", err)
	}
	out := make([]wire.FunctionInfo, 0, len(recs))
	for _, rec := range recs {
		i := info(rec, rec.Function.Version)
		i.Manifest = nil
		out = append(out, i)
	}
	body := map[string]any{"functions": out}
	if more && len(out) > 0 {
		body["next"] = out[len(out)-1].Name
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (g *Gateway) getFunction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := queryVersion(r)
	if err != nil {
		return err
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	latest, err := g.svc.functions.Latest(r.Context(), p.Namespace, name)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		// The version asked for was found; answer without the latest.
		g.log.Warn("reading the latest version", "namespace", p.Namespace, "function", name, "err", err)
	}
	writeJSON(w, http.StatusOK, info(rec, latest))
	return nil
}

// nextVersion tells a deployer which version number its bundle must carry.
// Numbers are never reused, even after a delete.
func (g *Gateway) nextVersion(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	v, err := g.svc.functions.NextVersion(r.Context(), p.Namespace, name)
	if err != nil {
		return storeError("registry", err)
	}
	writeJSON(w, http.StatusOK, map[string]int{"version": v})
	return nil
}

func (g *Gateway) deleteFunction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if err := g.deleteVersions(r.Context(), p.Namespace, name); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return apierr.New(apierr.NotFound, "function %q not found", name)
		}
		return storeError("registry", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
	return nil
}

// deleteVersions marks a function deleted and tells the workers, which
// then free what they hold of it (pools, compiled code). The event is a
// hint: workers also find deletions when they check the registry.
func (g *Gateway) deleteVersions(ctx context.Context, ns, name string) error {
	if err := g.reg.Delete(ctx, ns, name); err != nil {
		return err
	}
	if b, err := json.Marshal(wire.Deleted{Namespace: ns, Name: name}); err == nil {
		// Best effort: it only frees workers' pools early. Requests no
		// longer reach them (lookups fail), and idle pools are evicted.
		_ = g.cfg.Conn.Publish(bus.SubjectDeleted, b)
	}
	return nil
}

func (g *Gateway) deploy(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	// The body goes to the object store as it arrives: the gateway holds
	// a chunk of it at a time, not the bundle.
	fi, err := g.register(r.Context(), p.Namespace, name, http.MaxBytesReader(w, r.Body, MaxBundleBytes), r.ContentLength)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, fi)
	return nil
}

// register stores a bundle read from src (size is its declared length, or
// -1 when unknown) under a name of its own, and asks the coordinator to
// register it. What a failed registration stored is removed again.
func (g *Gateway) register(ctx context.Context, ns, name string, src io.Reader, size int64) (wire.FunctionInfo, error) {
	if err := g.checkDeployQuota(ctx, ns, name, max(size, 0)); err != nil {
		return wire.FunctionInfo{}, err
	}
	obj, err := g.storeBundle(ctx, ns, name, src, size)
	if err != nil {
		return wire.FunctionInfo{}, err
	}
	// The coordinator registers nothing once the deploy timeout has passed
	// (counted from when it receives the request). Wait for its answer a
	// margin longer, and whatever the HTTP client does: only then is the
	// outcome known, and the bundle may be removed.
	timeout := g.deployTimeout()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+deployMargin)
	defer cancel()
	var fi wire.FunctionInfo
	err = bus.Call(cctx, g.cfg.Conn, bus.SubjectRegister, wire.RegisterRequest{Namespace: ns, Name: name, Object: obj, TimeoutMS: timeout.Milliseconds()}, &fi)
	if err != nil {
		// No answer, or one lost on the way back, for a bundle this deploy
		// stored: the registry says what happened.
		code := apierr.CodeOf(err)
		if code == apierr.Timeout || code == apierr.Unavailable {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rec, gerr := g.reg.Get(rctx, ns, name, 0); gerr == nil && rec.Object == obj {
				// Get just found this version: Latest can only fail with
				// the store, and then the reply goes without it.
				latest, _ := g.svc.functions.Latest(rctx, ns, name)
				return info(rec, latest), nil
			}
		}
		g.removeBundle(ctx, obj)
		if code == apierr.Timeout {
			return wire.FunctionInfo{}, apierr.New(apierr.Timeout, "the deploy did not finish within the deploy timeout of %s; nothing was registered (%s)", timeout, apierr.From(err).Message)
		}
		return wire.FunctionInfo{}, err
	}
	// A call of the function's latest version right after this deploy
	// must find it, whatever the registry's watch has delivered yet.
	if err := g.reg.Refresh(cctx, ns, name); err != nil {
		g.log.Warn("reading the registry after a deploy", "namespace", ns, "function", name, "err", err)
	}
	fi.Latest = fi.Version
	return fi, nil
}

// storeBundle streams a bundle into the object store under a fresh name
// (<ns>/<name>/u-<random>; the coordinator checks the content against what
// the owner signed, so the name needs no meaning). Past MaxBundleBytes,
// empty, or over the namespace's code quota once its size is known, it is
// refused and nothing stays stored.
func (g *Gateway) storeBundle(ctx context.Context, ns, name string, src io.Reader, size int64) (string, error) {
	var id [12]byte
	rand.Read(id[:])
	obj := ns + "/" + name + "/u-" + hex.EncodeToString(id[:])
	info, err := g.cfg.Stores.Bundles.Put(ctx, jetstream.ObjectMeta{Name: obj}, src)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return "", apierr.New(apierr.PayloadTooLarge, "bundle over %d bytes", MaxBundleBytes)
	case err != nil && ctx.Err() != nil:
		return "", apierr.New(apierr.BadRequest, "the upload stopped before the bundle was complete")
	case err != nil:
		return "", apierr.New(apierr.Unavailable, "storing bundle: %v", err)
	}
	remove := func() { g.removeBundle(ctx, obj) }
	if info.Size == 0 {
		remove()
		return "", apierr.New(apierr.InvalidBundle, "empty body: send a bundle made by `cloister fn deploy`")
	}
	if size < 0 {
		if err := g.checkDeployQuota(ctx, ns, name, int64(info.Size)); err != nil {
			remove()
			return "", err
		}
	}
	return obj, nil
}

// removeBundle deletes a stored bundle that no function version refers to.
// Nothing else removes it, so a failure is logged for the operator.
func (g *Gateway) removeBundle(ctx context.Context, obj string) {
	if err := g.cfg.Stores.Bundles.Delete(context.WithoutCancel(ctx), obj); err != nil {
		g.log.Warn("removing an unregistered bundle; it stays in the object store", "object", obj, "err", err)
	}
}

// deployMargin is how much longer than the deploy timeout the gateway
// waits for the coordinator's answer.
const deployMargin = 15 * time.Second

func (g *Gateway) deployTimeout() time.Duration {
	if g.cfg.DeployTimeout > 0 {
		return g.cfg.DeployTimeout
	}
	return wire.DefaultDeployTimeout
}
