package gateway

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The native API's triggers and rules.

// pathName is the validated {name} of a trigger or rule route.
func pathName(r *http.Request) (string, error) {
	n := r.PathValue("name")
	if !bundle.ValidName(n) {
		return "", apierr.New(apierr.InvalidTrigger, "invalid name %q: use lower-case letters, digits, '-' and '_'", n)
	}
	return n, nil
}

// onNamed serves a request on the trigger or rule named in the path: do
// gets the store, the caller's namespace and the name, and its answer is
// written as JSON.
func (g *Gateway) onNamed(do func(ctx context.Context, st *trigger.Store, ns, name string) (any, error)) func(http.ResponseWriter, *http.Request, *Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		st, name, err := g.namedInStore(r)
		if err != nil {
			return err
		}
		v, err := do(r.Context(), st, p.Namespace, name)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
}

// namedInStore returns the trigger store and the name in the request's path.
func (g *Gateway) namedInStore(r *http.Request) (*trigger.Store, string, error) {
	st, err := g.triggerStore()
	if err != nil {
		return nil, "", err
	}
	name, err := pathName(r)
	if err != nil {
		return nil, "", err
	}
	return st, name, nil
}

func (g *Gateway) triggerStore() (*trigger.Store, error) {
	if g.cfg.Async == nil {
		return nil, apierr.New(apierr.Unavailable, "triggers are not enabled on this gateway")
	}
	return trigger.NewStoreWithQuotas(g.cfg.Async.JS, g.cfg.Async.Triggers, trigger.Quotas{Triggers: g.quotas.Triggers, Rules: g.quotas.Rules}), nil
}

func (g *Gateway) putTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	var t wire.Trigger
	if err := readDefinition(w, r, &t); err != nil {
		return err
	}
	t.Namespace, t.Name, t.Created = p.Namespace, r.PathValue("name"), time.Now().UTC()
	if err := st.PutTrigger(r.Context(), &t); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (g *Gateway) listTriggers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	l, err := st.Triggers(r.Context(), p.Namespace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"triggers": l})
	return nil
}

// fireTrigger fires a trigger with the request body as the event (the
// trigger's stored payload if the body is empty).
func (g *Gateway) fireTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, name, err := g.namedInStore(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, trigger.MaxPayload))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "event over %d bytes", trigger.MaxPayload)
	}
	t, err := st.GetTrigger(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		body = trigger.CronPayload(t, time.Now())
	}
	q, _ := g.svc.asyncQueue() // fails only without g.cfg.Async, which triggerStore checked
	f, err := trigger.Fire(r.Context(), st, q, t, body, r.Header.Get(HeaderIdempotencyKey))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, f)
	return nil
}

func (g *Gateway) putRule(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	ru := wire.Rule{Active: true}
	if err := readDefinition(w, r, &ru); err != nil {
		return err
	}
	ru.Namespace, ru.Name, ru.Created = p.Namespace, r.PathValue("name"), time.Now().UTC()
	if !bundle.ValidName(ru.Function) || ru.Version < 0 || ru.Version > MaxVersion {
		return apierr.New(apierr.InvalidTrigger, "a rule needs a valid function name and a version from 0 (the latest) to %d", MaxVersion)
	}
	rec, err := g.svc.lookup(r.Context(), p.Namespace, ru.Function, ru.Version)
	if err != nil {
		return err
	}
	if err := requirePlain(rec, plainHintTrigger); err != nil {
		return err
	}
	if err := st.PutRule(r.Context(), &ru); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ru)
	return nil
}

func (g *Gateway) listRules(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	l, err := st.Rules(r.Context(), p.Namespace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": l})
	return nil
}
