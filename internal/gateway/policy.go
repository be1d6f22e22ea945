package gateway

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/wire"
)

// maxPolicyBody bounds a policy update: MaxInvokerKeys hex keys and a
// signature, with room to spare.
const maxPolicyBody = 64 << 10

// getPolicy serves a function's certified invoker policy, as the registry
// holds it. The gateway is not trusted with it: clients and workers verify
// the coordinator's signature. A function registered before policies
// existed has none (anyone may invoke it).
func (g *Gateway) getPolicy(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, name, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.FunctionInfo{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Policy: rec.Policy})
	return nil
}

// setPolicy relays an owner's signed invoker policy update (a
// certs.Signed of a certs.PolicyUpdate) to the coordinator, which checks
// the owner's signature and certifies the policy. The gateway can drop the
// update, not forge or alter one.
func (g *Gateway) setPolicy(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPolicyBody))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "a policy update is at most %d bytes", maxPolicyBody)
	}
	var upd certs.Signed
	if err := json.Unmarshal(body, &upd); err != nil || len(upd.Body) == 0 {
		return apierr.New(apierr.BadRequest, "want a signed policy update: {\"body\": ..., \"sig\": ...}")
	}
	var signed certs.Signed
	if err := bus.Call(r.Context(), g.cfg.Conn, bus.SubjectPolicy, wire.PolicyRequest{Namespace: p.Namespace, Name: name, Update: upd}, &signed); err != nil {
		return err
	}
	if err := g.reg.Refresh(r.Context(), p.Namespace, name); err != nil {
		g.log.Warn("reading the registry after a policy update", "namespace", p.Namespace, "function", name, "err", err)
	}
	writeJSON(w, http.StatusOK, wire.FunctionInfo{Namespace: p.Namespace, Name: name, Policy: &signed})
	return nil
}
