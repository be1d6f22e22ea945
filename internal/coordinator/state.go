package coordinator

import (
	"context"
	"errors"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
	fnstate "github.com/cloister-faas/cloister/internal/state"
	"github.com/cloister-faas/cloister/internal/wire"
)

// StateKeyReleaseInfo is the HPKE info under which a function's state key
// is sealed to a worker. It differs from KeyReleaseInfo so that neither
// sealed key can be passed off as the other.
func StateKeyReleaseInfo(workerID, ns, name string) []byte {
	return wire.StateKeyReleaseInfo(workerID, ns, name)
}

// sealStateKey derives the function's state key (shared by all its
// versions) and seals it to the worker's key-exchange key kex, which the
// caller checked against w.
func (c *Coordinator) sealStateKey(w *certs.Worker, kex []byte, fc *certs.Function) (enc, sealed []byte, err error) {
	sk, err := fnstate.DeriveKey(c.master, fc.Namespace, fc.Name)
	if err != nil {
		return nil, nil, err
	}
	defer clear(sk)
	return seal.SealTo(kex, StateKeyReleaseInfo(w.WorkerID, fc.Namespace, fc.Name), sk)
}

// handleStateAnchor answers a worker's sealed batch of state operations
// (internal/state) in the anchor's wire encoding. The batch authenticates
// under the function's state key, which only the coordinator and the
// workers it released it to hold.
func (c *Coordinator) handleStateAnchor(_ context.Context, b []byte) ([]byte, error) {
	out, err := c.anchor.HandleBinary(b)
	if err != nil {
		return nil, stateAnchorError(err)
	}
	return out, nil
}

// stateAnchorError maps the anchor's errors to API errors.
func stateAnchorError(err error) error {
	switch {
	case errors.Is(err, fnstate.ErrMalformedRequest):
		return apierr.New(apierr.BadRequest, "malformed state request")
	case errors.Is(err, fnstate.ErrBadRequest):
		return apierr.New(apierr.Forbidden, "state request refused")
	case errors.Is(err, fnstate.ErrUnavailable):
		return apierr.New(apierr.Unavailable, "state anchor unavailable")
	}
	return err
}
