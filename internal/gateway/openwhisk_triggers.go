package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// OpenWhisk triggers and rules, kept as Cloister's.

// OWTrigger is a trigger record.
type OWTrigger struct {
	Namespace   string                   `json:"namespace"`
	Name        string                   `json:"name"`
	Version     string                   `json:"version"`
	Parameters  []OWKeyValue             `json:"parameters"`
	Annotations []OWKeyValue             `json:"annotations"`
	Limits      struct{}                 `json:"limits"`
	Publish     bool                     `json:"publish"`
	Rules       map[string]OWTriggerRule `json:"rules,omitempty"`
	Updated     int64                    `json:"updated,omitempty"`
}

// OWTriggerRule is a rule as listed in its trigger.
type OWTriggerRule struct {
	Action OWPath `json:"action"`
	Status string `json:"status"`
}

// OWPath names an entity by name and namespace path.
type OWPath struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// OWRule is a rule record.
type OWRule struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Status    string `json:"status"`
	Trigger   OWPath `json:"trigger"`
	Action    OWPath `json:"action"`
	Publish   bool   `json:"publish"`
	Updated   int64  `json:"updated,omitempty"`
}

func ruleStatus(active bool) string {
	if active {
		return "active"
	}
	return "inactive"
}

func (g *Gateway) owTrigger(ctx context.Context, ns, name string) (*OWTrigger, *wire.Trigger, *owMeta, error) {
	st, err := g.triggerStore()
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := st.GetTrigger(ctx, ns, name)
	if err != nil {
		return nil, nil, nil, err
	}
	meta, err := g.owMeta(ctx, triggerMetaKey(ns, name))
	if err != nil {
		return nil, nil, nil, err
	}
	o := &OWTrigger{Namespace: ns, Name: name, Version: owVersion(max(meta.Version, 1)), Parameters: meta.Parameters,
		Annotations: meta.Annotations, Updated: t.Created.UnixMilli()}
	if o.Parameters == nil {
		o.Parameters = []OWKeyValue{}
	}
	if o.Annotations == nil {
		o.Annotations = []OWKeyValue{}
	}
	rules, err := st.RulesFor(ctx, ns, name, false)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, ru := range rules {
		if o.Rules == nil {
			o.Rules = map[string]OWTriggerRule{}
		}
		o.Rules[ns+"/"+ru.Name] = OWTriggerRule{Action: OWPath{Name: ru.Function, Path: ns}, Status: ruleStatus(ru.Active)}
	}
	return o, t, meta, nil
}

func (g *Gateway) owPutTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, name, err := g.namedInStore(r)
	if err != nil {
		return err
	}
	overwrite, err := owQueryBool(r, "overwrite", false)
	if err != nil {
		return err
	}
	var body struct {
		Parameters  []OWKeyValue `json:"parameters"`
		Annotations []OWKeyValue `json:"annotations"`
	}
	if err := readDefinition(w, r, &body); err != nil {
		return err
	}
	ctx := r.Context()
	old, err := st.GetTrigger(ctx, p.Namespace, name)
	if err == nil && !overwrite {
		return apierr.New(apierr.Conflict, "resource already exists (add ?overwrite=true to update it)")
	}
	if _, ok := owAnno(body.Annotations, "feed"); ok {
		return apierr.New(apierr.BadRequest, "feeds are not supported; a Cloister trigger fires by POST, on a cron schedule or on a NATS subject (docs/async.md)")
	}
	t := &wire.Trigger{Namespace: p.Namespace, Name: name, Created: time.Now().UTC()}
	if old != nil && err == nil {
		t.Cron, t.Subject, t.Payload = old.Cron, old.Subject, old.Payload
	}
	if err := st.PutTrigger(ctx, t); err != nil {
		return err
	}
	meta, err := g.owMeta(ctx, triggerMetaKey(p.Namespace, name))
	if err != nil {
		return err
	}
	meta.Parameters, meta.Annotations, meta.Version, meta.Updated = body.Parameters, body.Annotations, meta.Version+1, time.Now().UnixMilli()
	if err := g.owPutMeta(ctx, triggerMetaKey(p.Namespace, name), meta); err != nil {
		return err
	}
	o, _, _, err := g.owTrigger(ctx, p.Namespace, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (g *Gateway) owGetTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	o, _, _, err := g.owTrigger(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (g *Gateway) owListTriggers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	pg, err := owListPage(r, "triggers")
	if err != nil {
		return err
	}
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	l, err := st.Triggers(r.Context(), p.Namespace)
	if err != nil {
		return err
	}
	slices.SortFunc(l, func(a, b *wire.Trigger) int { return strings.Compare(a.Name, b.Name) })
	if pg.count {
		writeOWList(w, "triggers", l, pg)
		return nil
	}
	out := []*OWTrigger{}
	for _, t := range owPageOf(l, pg) {
		if o, _, _, err := g.owTrigger(r.Context(), p.Namespace, t.Name); err == nil {
			out = append(out, o)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (g *Gateway) owDeleteTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, name, err := g.namedInStore(r)
	if err != nil {
		return err
	}
	o, _, _, err := g.owTrigger(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	if err := st.DeleteTrigger(r.Context(), p.Namespace, name); err != nil {
		return err
	}
	if kv, err := g.owStore(); err == nil {
		// As for actions: stale metadata would come back with a new trigger.
		if err := kv.Delete(r.Context(), triggerMetaKey(p.Namespace, name)); err != nil {
			g.log.Warn("deleting OpenWhisk trigger metadata", "namespace", p.Namespace, "trigger", name, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

// owFireTrigger fires a trigger with its parameters under the request's,
// records a trigger activation whose logs name the rules' activations, and
// answers 202 with its id (204 when no rule is active, as OpenWhisk does).
func (g *Gateway) owFireTrigger(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	q, err := g.svc.asyncQueue()
	if err != nil {
		return err
	}
	name, err := pathName(r)
	if err != nil {
		return err
	}
	_, t, meta, err := g.owTrigger(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDefinitionBytes*16))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "event over %d bytes", maxDefinitionBytes*16)
	}
	payload, err := owParams(body, meta.Parameters)
	if err != nil {
		return err
	}
	start := time.Now()
	f, err := trigger.Fire(r.Context(), st, q, t, payload, r.Header.Get(HeaderIdempotencyKey))
	if err != nil {
		return err
	}
	if len(f.Activations) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	end := time.Now()
	a := &wire.Activation{ActivationID: async.NewID(start), Namespace: p.Namespace, Name: name, Kind: "trigger", Mode: wire.ModePlain,
		Trust: wire.TrustGatewayTrusted, Status: wire.StatusSuccess, Submitted: async.Millis(start), Start: async.Millis(start),
		End: async.Millis(end), Duration: async.Millis(end) - async.Millis(start),
		Response: wire.ActivationResponse{Status: wire.StatusSuccess, Success: true, Result: payload}}
	for _, id := range f.Activations {
		a.Logs = append(a.Logs, fmt.Sprintf(`{"activationId":%q,"statusCode":0,"success":true}`, id))
	}
	if err := q.Record(r.Context(), a); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"activationId": a.ActivationID})
	return nil
}

func owRule(ru *wire.Rule) *OWRule {
	return &OWRule{Namespace: ru.Namespace, Name: ru.Name, Version: "0.0.1", Status: ruleStatus(ru.Active),
		Trigger: OWPath{Name: ru.Trigger, Path: ru.Namespace}, Action: OWPath{Name: ru.Function, Path: ru.Namespace},
		Updated: ru.Created.UnixMilli()}
}

func (g *Gateway) owPutRule(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, name, err := g.namedInStore(r)
	if err != nil {
		return err
	}
	overwrite, err := owQueryBool(r, "overwrite", false)
	if err != nil {
		return err
	}
	var body struct {
		Trigger string `json:"trigger"`
		Action  string `json:"action"`
		Status  string `json:"status"`
	}
	if err := readDefinition(w, r, &body); err != nil {
		return err
	}
	ctx := r.Context()
	if _, err := st.GetRule(ctx, p.Namespace, name); err == nil && !overwrite {
		return apierr.New(apierr.Conflict, "resource already exists (add ?overwrite=true to update it)")
	}
	trig, err := owName(p.Namespace, body.Trigger)
	if err != nil {
		return err
	}
	act, err := owName(p.Namespace, body.Action)
	if err != nil {
		return err
	}
	if body.Status != "" && body.Status != "active" && body.Status != "inactive" {
		return apierr.New(apierr.BadRequest, "status must be active or inactive")
	}
	if g.owSequenceExists(ctx, p.Namespace, act) {
		return apierr.New(apierr.BadRequest, "action %q is a sequence; rules can fire functions only", act)
	}
	rec, err := g.svc.lookup(ctx, p.Namespace, act, 0)
	if err != nil {
		return err
	}
	if err := requirePlain(rec, plainHintTrigger); err != nil {
		return err
	}
	ru := &wire.Rule{Namespace: p.Namespace, Name: name, Trigger: trig, Function: act, Active: body.Status != "inactive", Created: time.Now().UTC()}
	if err := st.PutRule(ctx, ru); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, owRule(ru))
	return nil
}

func (g *Gateway) owListRules(w http.ResponseWriter, r *http.Request, p *Principal) error {
	pg, err := owListPage(r, "rules")
	if err != nil {
		return err
	}
	st, err := g.triggerStore()
	if err != nil {
		return err
	}
	l, err := st.Rules(r.Context(), p.Namespace)
	if err != nil {
		return err
	}
	slices.SortFunc(l, func(a, b *wire.Rule) int { return strings.Compare(a.Name, b.Name) })
	out := []*OWRule{}
	for _, ru := range l {
		out = append(out, owRule(ru))
	}
	writeOWList(w, "rules", out, pg)
	return nil
}

// owSetRuleStatus enables or disables a rule: POST {"status": "active"|"inactive"}.
func (g *Gateway) owSetRuleStatus(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, name, err := g.namedInStore(r)
	if err != nil {
		return err
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := readDefinition(w, r, &body); err != nil {
		return err
	}
	if body.Status != "active" && body.Status != "inactive" {
		return apierr.New(apierr.BadRequest, "status must be active or inactive")
	}
	ru, err := st.GetRule(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	ru.Active = body.Status == "active"
	if err := st.PutRule(r.Context(), ru); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, owRule(ru))
	return nil
}
