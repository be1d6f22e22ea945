package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/wire"
)

// inspectMargin is kept from what is left of a deploy's timeout when an
// inspection is asked for, so that the worker's own timeout answer (or
// its result) reaches the coordinator before the deploy's deadline.
const inspectMargin = 250 * time.Millisecond

// inspectAttempts is how many workers a deploy asks at most, when those
// asked are unavailable or full.
const inspectAttempts = 3

// A deploy that finds no worker listening asks again noWorkerRetries times,
// noWorkerPause apart (15 s in all, within the deploy's timeout), before
// it answers no_worker: a worker cut off as a slow consumer while large
// bundles cross the bus takes seconds to reconnect under load.
const (
	noWorkerRetries = 15
	noWorkerPause   = time.Second
)

// inspectBundle has an admitted worker inspect a bundle the coordinator
// read and opened: the worker loads it from the object store, checks it,
// compiles it and runs a reactor's initialisation in its sandbox, and
// states the ABI and the snapshot hash under its certified key. The
// coordinator verifies that statement (verifyInspection) and checks the
// ABI against the manifest. It compiles and runs nothing itself: tenant
// code never runs in the process that holds the master secret
// (docs/adr/0005-init-on-worker.md).
//
// The inspection uses what is left of ctx's deadline (the deploy's
// timeout). No worker answering is no_worker; a worker's refusal keeps its
// stable code (invalid_module, memory_limit, timeout, …).
func (c *Coordinator) inspectBundle(ctx context.Context, ns, object string, bd *bundle.Bundle, bundleHash string) (*wire.Inspection, error) {
	if bundle.Script(bd.Manifest.Runtime) {
		if err := checkScript(bd.Manifest.Runtime, bd.Module); err != nil {
			return nil, err
		}
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	req := wire.InspectRequest{
		Namespace: ns, Name: bd.Manifest.Name, Version: bd.Manifest.Version, Object: object,
		BundleHash: bundleHash, CodeHash: bd.CodeHash, Nonce: nonce,
	}
	if c.nc == nil {
		return nil, apierr.New(apierr.NoWorker, "the coordinator is not connected to the bus, so no worker can inspect the module; nothing was registered")
	}
	var rep wire.InspectReply
	for attempt := 1; ; attempt++ {
		left := time.Until(deadlineOf(ctx)) - inspectMargin
		if left <= 0 {
			return nil, apierr.New(apierr.Timeout, "the deploy's timeout passed before its module could be inspected; nothing was registered")
		}
		req.TimeoutMS = max(left.Milliseconds(), 1)
		err := bus.Call(ctx, c.nc, bus.SubjectWorkerInspect, req, &rep)
		if err == nil {
			break
		}
		// The queue group picks a worker at random: one that is stopping,
		// not (yet) admitted or full may have a peer that is not.
		code := apierr.CodeOf(err)
		if attempt < inspectAttempts && ctx.Err() == nil && (code == apierr.Unavailable || code == apierr.Overloaded) {
			continue
		}
		// No worker listening at all may be one reconnecting to the bus
		// (a slow consumer under load is cut off and comes back): wait a
		// little, within the deploy's time, before giving up.
		if code == apierr.NoWorker && ctx.Err() == nil && time.Until(deadlineOf(ctx)) > inspectMargin+noWorkerPause && attempt < inspectAttempts+noWorkerRetries {
			select {
			case <-ctx.Done():
			case <-time.After(noWorkerPause):
			}
			continue
		}
		return nil, inspectError(ctx, err)
	}
	ins, err := c.verifyInspection(&req, &rep)
	if err != nil {
		c.log.Warn("refusing an inspection", "namespace", ns, "name", req.Name, "version", req.Version, "err", err)
		return nil, err
	}
	switch {
	case bundle.Script(bd.Manifest.Runtime) && ins.ABI != bundle.ABIReactor:
		return nil, apierr.New(apierr.BundleIntegrity, "the worker inspected a %s function as a %s; nothing was registered", bd.Manifest.Runtime, ins.ABI)
	case !bundle.Script(bd.Manifest.Runtime) && (bd.Manifest.ABI == bundle.ABIReactor) != (ins.ABI == bundle.ABIReactor):
		return nil, apierr.New(apierr.InvalidModule, "manifest says abi %q but the module is a %s", bd.Manifest.ABI, ins.ABI)
	}
	return ins, nil
}

// verifyInspection checks a worker's answer to req: its certificate was
// issued by this coordinator, is valid now and not revoked (the same test
// as for key release), and its signing key signed an Inspection of exactly
// what req asked about, nonce included.
func (c *Coordinator) verifyInspection(req *wire.InspectRequest, rep *wire.InspectReply) (*wire.Inspection, error) {
	refuse := func(why string, args ...any) error {
		return apierr.New(apierr.BundleIntegrity, "the inspection of the module did not verify: "+why+"; nothing was registered", args...)
	}
	w, err := certs.OpenWorker(rep.Certificate, c.IdentityKey())
	if err != nil {
		return nil, refuse("%v", err)
	}
	if err := w.ValidAt(c.now()); err != nil {
		return nil, refuse("%v", err)
	}
	if err := c.stillAdmitted(w, rep.Certificate); err != nil {
		return nil, refuse("%v", err)
	}
	var ins wire.Inspection
	if err := certs.Open(rep.Statement, w.SigningKey, wire.DomainInspection, &ins); err != nil {
		return nil, refuse("statement of worker %s: %v", w.WorkerID, err)
	}
	switch {
	case ins.WorkerID != w.WorkerID:
		return nil, refuse("statement names worker %q, certificate %q", ins.WorkerID, w.WorkerID)
	case ins.Namespace != req.Namespace || ins.Name != req.Name || ins.Version != req.Version:
		return nil, refuse("statement is for %s/%s v%d", ins.Namespace, ins.Name, ins.Version)
	case ins.CodeHash != req.CodeHash || ins.BundleHash != req.BundleHash:
		return nil, refuse("statement is for another bundle")
	case string(ins.Nonce) != string(req.Nonce):
		return nil, refuse("statement answers another request")
	case ins.ABI != bundle.ABICommand && ins.ABI != bundle.ABIReactor:
		return nil, refuse("statement names abi %q", ins.ABI)
	case len(ins.SnapshotHash) != 64 || !isHex(ins.SnapshotHash):
		return nil, refuse("statement has no snapshot hash")
	}
	return &ins, nil
}

// inspectError maps a failed inspection request to the deploy's answer.
func inspectError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return apierr.New(apierr.Timeout, "compiling and initialising the module did not finish within the deploy timeout; nothing was registered")
	}
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		return apierr.New(apierr.Unavailable, "inspecting the module failed: %v; nothing was registered", err)
	}
	switch ae.Code {
	case apierr.Unavailable:
		// Nobody listening, or only workers that are stopping or not
		// admitted: the bus says unavailable for each.
		return apierr.New(apierr.NoWorker, "no admitted worker answered to inspect the module (%s): the coordinator runs no function code itself, so a deploy needs a running, admitted worker; nothing was registered", ae.Message)
	case apierr.InvalidModule, apierr.MemoryLimit, apierr.Timeout, apierr.BundleIntegrity, apierr.BundleSignature,
		apierr.NotFound, apierr.PayloadTooLarge, apierr.Overloaded, apierr.NoWorker:
		return ae
	default:
		return apierr.New(apierr.Unavailable, "the worker could not inspect the module: %s (%s); nothing was registered", ae.Message, ae.Code)
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// deadlineOf is ctx's deadline, or a far one.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(wire.DefaultDeployTimeout)
}
