package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The native API's async activations: listing, reading and dead letters.

// HeaderIdempotencyKey makes an asynchronous invocation idempotent: a
// second request with the same key in the namespace returns the first
// activation and queues nothing.
const HeaderIdempotencyKey = "Idempotency-Key"

// asyncRoutes registers the routes of async invocations, activations,
// sequences, triggers and rules.
func (g *Gateway) asyncRoutes() {
	g.handle("GET /v1/activations", ScopeInvoke, g.listActivations)
	g.handle("GET /v1/activations/{id}", ScopeInvoke, g.getActivation)
	g.handle("GET /v1/activations/{id}/result", ScopeInvoke, g.activationResult)
	g.handle("GET /v1/activations/{id}/logs", ScopeInvoke, g.activationLogs)
	g.handle("GET /v1/dead-letters", ScopeInvoke, g.listDeadLetters)
	g.handle("GET /v1/sequences", ScopeInvoke, g.listSequences)
	g.handle("PUT /v1/sequences/{name}", ScopeDeploy, g.putSequence)
	g.handle("GET /v1/sequences/{name}", ScopeInvoke, g.getSequence)
	g.handle("DELETE /v1/sequences/{name}", ScopeDeploy, g.deleteSequence)
	g.handle("POST /v1/sequences/{name}/invoke", ScopeInvoke, g.invokeSequence)
	g.handle("GET /v1/triggers", ScopeInvoke, g.listTriggers)
	g.handle("PUT /v1/triggers/{name}", ScopeDeploy, g.putTrigger)
	g.handle("GET /v1/triggers/{name}", ScopeInvoke, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		return st.GetTrigger(ctx, ns, name)
	}))
	g.handle("DELETE /v1/triggers/{name}", ScopeDeploy, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		return map[string]string{"deleted": name}, st.DeleteTrigger(ctx, ns, name)
	}))
	g.handle("POST /v1/triggers/{name}/fire", ScopeInvoke, g.fireTrigger)
	g.handle("GET /v1/rules", ScopeInvoke, g.listRules)
	g.handle("PUT /v1/rules/{name}", ScopeDeploy, g.putRule)
	g.handle("GET /v1/rules/{name}", ScopeInvoke, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		return st.GetRule(ctx, ns, name)
	}))
	g.handle("DELETE /v1/rules/{name}", ScopeDeploy, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		return map[string]string{"deleted": name}, st.DeleteRule(ctx, ns, name)
	}))
}

// listActivations answers GET /v1/activations[?limit=N][&name=NAME]
// [&before=ID]: the namespace's activations, newest first, older than
// before when it is set. With more to come, the answer's "next" is the
// id to pass as before for the next page.
func (g *Gateway) listActivations(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.svc.asyncQueue()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	o := async.ListOptions{Name: q.Get("name"), Before: q.Get("before")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > async.MaxList {
			return apierr.New(apierr.BadRequest, "limit must be 1 to %d", async.MaxList)
		}
		o.Limit = n
	}
	if o.Name != "" && !bundle.ValidName(o.Name) {
		return apierr.New(apierr.BadRequest, "invalid name %q", o.Name)
	}
	if o.Before != "" && !async.ValidID(o.Before) {
		return apierr.New(apierr.BadRequest, "before must be an activation id (32 lower-case hex digits), the next of the previous page")
	}
	list, next, err := st.ListPage(r.Context(), p.Namespace, o)
	if err != nil {
		return err
	}
	body := map[string]any{"activations": list}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// listDeadLetters answers GET /v1/dead-letters[?limit=N][&since=RFC3339]:
// the namespace's dead letters, newest first, without their jobs.
func (g *Gateway) listDeadLetters(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.svc.asyncQueue()
	if err != nil {
		return err
	}
	limit := 0
	if s := r.URL.Query().Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > async.MaxList {
			return apierr.New(apierr.BadRequest, "limit must be 1 to %d", async.MaxList)
		}
	}
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		if since, err = time.Parse(time.RFC3339, s); err != nil {
			return apierr.New(apierr.BadRequest, "since must be an RFC 3339 time, such as 2026-12-05T00:00:00Z")
		}
	}
	list, err := st.DeadLetters(r.Context(), p.Namespace, since, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": list})
	return nil
}

func (g *Gateway) activation(r *http.Request, p *Principal) (*wire.Activation, error) {
	st, err := g.svc.asyncQueue()
	if err != nil {
		return nil, err
	}
	a, _, err := st.Get(r.Context(), p.Namespace, r.PathValue("id"))
	return a, err
}

func (g *Gateway) getActivation(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.activation(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// ActivationResult is the body of GET /v1/activations/{id}/result.
type ActivationResult struct {
	ActivationID string                  `json:"activationId"`
	Status       string                  `json:"status"`
	Version      int                     `json:"version"`
	Mode         string                  `json:"mode"`
	Response     wire.ActivationResponse `json:"response"`
	Receipt      json.RawMessage         `json:"receipt,omitempty"`
	Receipts     json.RawMessage         `json:"receipts,omitempty"`
}

func (g *Gateway) activationResult(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.activation(r, p)
	if err != nil {
		return err
	}
	if !wire.FinalStatus(a.Status) {
		return apierr.New(apierr.ActivationPending, "activation %s is %s; ask again later", a.ActivationID, a.Status)
	}
	res := ActivationResult{ActivationID: a.ActivationID, Status: a.Status, Version: a.Version, Mode: a.Mode, Response: a.Response}
	// Receipts decoded from the record re-encode: Marshal cannot fail.
	if a.Receipt != nil {
		res.Receipt, _ = json.Marshal(a.Receipt) // see above
	}
	if len(a.Receipts) > 0 {
		res.Receipts, _ = json.Marshal(a.Receipts) // see above
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (g *Gateway) activationLogs(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.activation(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"activationId": a.ActivationID, "logs": a.Logs, "sealed_logs": a.SealedLogs})
	return nil
}
