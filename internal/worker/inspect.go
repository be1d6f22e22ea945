package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/fnspec"
	"github.com/cloister-faas/cloister/internal/jsrt"
	"github.com/cloister-faas/cloister/internal/pyrt"
	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/wire"
)

// maxInspectBundle bounds the bundle a worker reads to inspect it: the
// coordinator reads no larger (coordinator.MaxBundleSize), and the bundle
// must hash to what it read.
const maxInspectBundle = 64 << 20

// maxInspections bounds the inspections one worker runs at once; each
// also takes one of its namespace's slots while it compiles and
// initialises.
const maxInspections = 4

// maxInspectTime bounds an inspection whatever the request says.
const maxInspectTime = wire.DefaultDeployTimeout

// handleInspect answers the coordinator's deploy-time inspection of a
// bundle (bus.SubjectWorkerInspect): it loads the bundle from the object
// store, checks it against what the coordinator read, compiles it, runs a
// reactor's initialisation in a sandbox, and states the ABI and the
// snapshot hash under its certified signing key. This keeps tenant code
// out of the coordinator, which holds the master secret
// (docs/adr/0005-init-on-worker.md).
//
// The inspection handles no secret: no function key exists yet, the
// sandbox gets the deterministic clock and random source, and every
// worker that later loads the version computes the snapshot again and
// refuses one that differs from the certified hash.
func (w *Worker) handleInspect(ctx context.Context, b []byte) (any, error) {
	var req wire.InspectRequest
	if err := json.Unmarshal(b, &req); err != nil || !bundle.ValidName(req.Namespace) || !bundle.ValidName(req.Name) ||
		req.Version < 1 || req.Object == "" || req.CodeHash == "" || req.BundleHash == "" || len(req.Nonce) == 0 || req.TimeoutMS <= 0 {
		return nil, apierr.New(apierr.BadRequest, "malformed inspect request")
	}
	adm := w.cert.Load()
	if adm == nil || w.revoked.Load() {
		return nil, apierr.New(apierr.Unavailable, "this worker is not admitted")
	}
	if err := adm.cert.ValidAt(w.now()); err != nil {
		return nil, apierr.New(apierr.Unavailable, "this worker's certificate is not valid now: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, min(time.Duration(req.TimeoutMS)*time.Millisecond, maxInspectTime))
	defer cancel()
	start := time.Now()
	abi, snap, err := w.inspect(ctx, &req)
	if err != nil {
		w.log.Info("inspection refused", "namespace", req.Namespace, "name", req.Name, "version", req.Version,
			"code_sha256", req.CodeHash, "code", apierr.CodeOf(err))
		return nil, err
	}
	stmt, err := certs.Sign(w.signKey, wire.DomainInspection, wire.Inspection{
		WorkerID: adm.cert.WorkerID, Namespace: req.Namespace, Name: req.Name, Version: req.Version,
		CodeHash: req.CodeHash, BundleHash: req.BundleHash, Nonce: req.Nonce, ABI: string(abi), SnapshotHash: snap,
	})
	if err != nil {
		return nil, err
	}
	w.log.Info("inspected bundle", "namespace", req.Namespace, "name", req.Name, "version", req.Version,
		"code_sha256", req.CodeHash, "abi", abi, "snapshot_sha256", snap, "took", time.Since(start))
	return wire.InspectReply{Certificate: adm.signed, Statement: stmt}, nil
}

// inspect reads and checks the bundle of req, then compiles it and
// computes its snapshot hash in one of the namespace's slots, with the
// function's memory limit reserved from the budget, as a call would.
func (w *Worker) inspect(ctx context.Context, req *wire.InspectRequest) (sandbox.ABI, string, error) {
	bd, err := w.readInspected(ctx, req)
	if err != nil {
		return "", "", err
	}
	lim := fnspec.Limits(bd.Manifest)
	pages := lim.MemoryPages
	if pages == 0 {
		pages = sandbox.DefaultMemoryPages
	}
	release, err := w.slots.acquire(ctx, req.Namespace, int64(pages)*65536)
	if err != nil {
		return "", "", err
	}
	defer release()
	spec := fnspec.Spec(req.Namespace, bd.Manifest)
	switch bd.Manifest.Runtime {
	case bundle.RuntimeJS:
		h, err := jsrt.Inspect(ctx, w.cfg.Engine, lim, spec, bd.Module)
		if err != nil {
			return "", "", inspectScriptError(ctx, err)
		}
		return sandbox.ABIReactor, h, nil
	case bundle.RuntimePython:
		// The snapshot is taken after the script's import, as every
		// worker serving it takes it (load.go): the same hash.
		h, err := pyrt.InspectLoaded(ctx, w.cfg.Engine, lim, spec, bd.Module)
		if err != nil {
			return "", "", inspectScriptError(ctx, err)
		}
		return sandbox.ABIReactor, h, nil
	}
	ins, err := w.cfg.Engine.Inspect(ctx, bd.CodeHash, bd.Module, lim, spec)
	if err != nil {
		return "", "", inspectModuleError(ctx, err)
	}
	if (bd.Manifest.ABI == bundle.ABIReactor) != (ins.ABI == sandbox.ABIReactor) {
		return "", "", apierr.New(apierr.InvalidModule, "manifest says abi %q but the module is a %s", bd.Manifest.ABI, ins.ABI)
	}
	return ins.ABI, ins.SnapshotHash, nil
}

// readInspected reads the bundle of req from the object store and checks,
// inside the TEE, that it is the one the coordinator read (its hash), that
// its owner signed it for the namespace, and that it is the named version.
func (w *Worker) readInspected(ctx context.Context, req *wire.InspectRequest) (*bundle.Bundle, error) {
	info, err := bus.ObjectInfo(ctx, w.cfg.Stores.Bundles, req.Object)
	if err != nil {
		if ctx.Err() != nil {
			return nil, readTimeout()
		}
		return nil, apierr.New(apierr.NotFound, "bundle object %q not found", req.Object)
	}
	if info.Size > maxInspectBundle {
		return nil, apierr.New(apierr.PayloadTooLarge, "bundle is %d bytes, limit %d", info.Size, maxInspectBundle)
	}
	raw, err := w.readBundle(ctx, req.Object)
	if err != nil {
		if ctx.Err() != nil {
			return nil, readTimeout()
		}
		return nil, apierr.New(apierr.Unavailable, "reading bundle object %q failed", req.Object)
	}
	if bundle.Hash(raw) != req.BundleHash {
		return nil, apierr.New(apierr.BundleIntegrity, "bundle object %q differs from the bundle the coordinator checked", req.Object)
	}
	bd, err := bundle.Open(raw)
	if err != nil {
		if errors.Is(err, bundle.ErrSignature) {
			return nil, apierr.Wrap(apierr.BundleSignature, err)
		}
		return nil, apierr.Wrap(apierr.BundleIntegrity, err)
	}
	if bd.CodeHash != req.CodeHash || bd.Manifest.Name != req.Name || bd.Manifest.Version != req.Version {
		return nil, apierr.New(apierr.BundleIntegrity, "bundle contents differ from the inspection request")
	}
	if err := bd.Manifest.BoundTo(req.Namespace); err != nil {
		return nil, apierr.Wrap(apierr.BundleSignature, err)
	}
	return bd, nil
}

func readTimeout() error {
	return apierr.New(apierr.Timeout, "the inspecting worker did not finish reading the bundle from the object store within the deploy timeout; nothing was registered")
}

func inspectTimeout() error {
	return apierr.New(apierr.Timeout, "compiling and initialising the module did not finish within the deploy timeout; nothing was registered")
}

// inspectModuleError maps the sandbox's errors at inspection to the
// stable codes a deploy answers.
func inspectModuleError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return inspectTimeout()
	case errors.Is(err, sandbox.ErrMemoryLimit):
		return apierr.Wrap(apierr.MemoryLimit, err)
	case errors.Is(err, sandbox.ErrInvalidModule), errors.Is(err, sandbox.ErrInvalidLimits), errors.Is(err, sandbox.ErrInvalidInvocation):
		return apierr.Wrap(apierr.InvalidModule, err)
	case errors.Is(err, sandbox.ErrClosed):
		return apierr.New(apierr.Unavailable, "this worker is stopping")
	default:
		return apierr.New(apierr.InvalidModule, "initialising the function failed: %v", err)
	}
}

// inspectScriptError is inspectModuleError for a JavaScript or Python
// function, whose module is its script: the script is compiled (not run)
// in the shared JavaScript engine, or imported (its top level run) in the
// Python engine.
func inspectScriptError(ctx context.Context, err error) error {
	var ex *jsrt.Exception
	var pyEx *pyrt.Exception
	switch {
	case errors.As(err, &ex):
		return apierr.New(apierr.InvalidModule, "the script does not compile: %v", ex)
	case errors.As(err, &pyEx):
		msg := pyEx.Error()
		if pyEx.Traceback != "" {
			msg = strings.TrimRight(pyEx.Traceback, "\n")
		}
		return apierr.New(apierr.InvalidModule, "importing the script failed:\n%s", truncateText(msg, maxExceptionText))
	case errors.Is(err, jsrt.ErrScript), errors.Is(err, pyrt.ErrScript):
		return apierr.Wrap(apierr.InvalidModule, err)
	case ctx.Err() != nil:
		return inspectTimeout()
	case errors.Is(err, sandbox.ErrMemoryLimit), errors.Is(err, jsrt.ErrOutOfMemory), errors.Is(err, pyrt.ErrOutOfMemory):
		return apierr.New(apierr.MemoryLimit, "the language engine does not fit in the function's memory limit: %v", err)
	case errors.Is(err, sandbox.ErrClosed):
		return apierr.New(apierr.Unavailable, "this worker is stopping")
	default:
		return apierr.New(apierr.InvalidModule, "checking the script failed: %v", err)
	}
}
