package coordinator

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
	fnstate "github.com/cloister-faas/cloister/internal/state"
)

// StateKeyReleaseInfo is the HPKE info under which a function's state key
// is sealed to a worker. It differs from KeyReleaseInfo so that neither
// sealed key can be passed off as the other.
func StateKeyReleaseInfo(workerID, ns, name string) []byte {
	return []byte("cloister/v1/state-key-release\x00" + workerID + "\x00" + ns + "\x00" + name)
}

// sealStateKey derives the function's state key (shared by all its
// versions) and seals it to the worker's key-exchange key.
func (c *Coordinator) sealStateKey(w *certs.Worker, fc *certs.Function) (enc, sealed []byte, err error) {
	sk, err := fnstate.DeriveKey(c.master, fc.Namespace, fc.Name)
	if err != nil {
		return nil, nil, err
	}
	defer clear(sk)
	return seal.SealTo(w.KeyExchange, StateKeyReleaseInfo(w.WorkerID, fc.Namespace, fc.Name), sk)
}

// handleStateAnchor answers a worker's sealed batch of state operations
// (internal/state). The batch authenticates under the function's state
// key, which only the coordinator and the workers it released it to hold.
func (c *Coordinator) handleStateAnchor(ctx context.Context, b []byte) (any, error) {
	var req fnstate.AnchorRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed state request")
	}
	rep, err := c.anchor.Handle(&req)
	switch {
	case errors.Is(err, fnstate.ErrBadRequest):
		return nil, apierr.New(apierr.Forbidden, "state request refused")
	case errors.Is(err, fnstate.ErrUnavailable):
		return nil, apierr.New(apierr.Unavailable, "state anchor unavailable")
	case err != nil:
		return nil, err
	}
	return rep, nil
}
