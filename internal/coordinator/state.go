package coordinator

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
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

// serve subscribes h to subj in the coordinator's queue group, except
// the state anchor, which is served in its binary wire encoding without a
// JSON envelope (bus.ServeBytes, handleStateAnchorBytes).
func (c *Coordinator) serve(ctx context.Context, nc *nats.Conn, subj string, limit int, h bus.Handler) (*nats.Subscription, error) {
	if subj == bus.SubjectStateAnchor {
		return bus.ServeBytes(ctx, nc, subj, bus.CoordinatorQueue, limit, c.log, c.handleStateAnchorBytes)
	}
	return bus.Serve(ctx, nc, subj, bus.CoordinatorQueue, limit, c.log, h)
}

// handleStateAnchorBytes answers a worker's sealed batch of state
// operations (internal/state) in the anchor's wire encoding. The batch
// authenticates under the function's state key, which only the
// coordinator and the workers it released it to hold.
func (c *Coordinator) handleStateAnchorBytes(_ context.Context, b []byte) ([]byte, error) {
	out, err := c.anchor.HandleBinary(b)
	if err != nil {
		return nil, stateAnchorError(err)
	}
	return out, nil
}

// handleStateAnchor is handleStateAnchorBytes for bus.Serve: the answer
// travels as JSON in the bus's JSON envelope, which the worker's
// transport also accepts. It takes a request in the wire encoding or in
// JSON.
func (c *Coordinator) handleStateAnchor(_ context.Context, b []byte) (any, error) {
	var req fnstate.AnchorRequest
	if err := req.UnmarshalBinary(b); err != nil && json.Unmarshal(b, &req) != nil {
		return nil, apierr.New(apierr.BadRequest, "malformed state request")
	}
	rep, err := c.anchor.Handle(&req)
	if err != nil {
		return nil, stateAnchorError(err)
	}
	return rep, nil
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
