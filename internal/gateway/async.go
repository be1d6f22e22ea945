package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// HeaderIdempotencyKey makes an asynchronous invocation idempotent: a
// second request with the same key in the namespace returns the first
// activation and queues nothing.
const HeaderIdempotencyKey = "Idempotency-Key"

// maxDefinitionBytes bounds trigger, rule and sequence bodies.
const maxDefinitionBytes = 64 << 10

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

func (g *Gateway) asyncStore() (*async.Store, error) {
	if g.cfg.Async == nil {
		return nil, apierr.New(apierr.Unavailable, "async invocations are not enabled on this gateway")
	}
	return async.NewStore(g.cfg.Async, nil), nil
}

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
	return trigger.NewStoreWithQuotas(g.cfg.Async.Triggers, trigger.Quotas{Triggers: g.quotas.Triggers, Rules: g.quotas.Rules}), nil
}

// queryAsync reads ?async=true|false (also OpenWhisk's ?blocking=false).
func queryAsync(r *http.Request) (bool, error) {
	q := r.URL.Query()
	if s := q.Get("async"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, apierr.New(apierr.BadRequest, "async must be true or false")
		}
		return b, nil
	}
	if s := q.Get("blocking"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, apierr.New(apierr.BadRequest, "blocking must be true or false")
		}
		return !b, nil
	}
	return false, nil
}

func isSealed(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")) // one that does not parse is not sealed
	return mt == wire.SealedContentType
}

// invokeAsync queues an invocation and answers 202 with its activation id.
// A sealed body is queued as it is: the gateway reads only its routing fields.
func (g *Gateway) invokeAsync(w http.ResponseWriter, r *http.Request, p *Principal, name string, v int, body []byte) error {
	st, err := g.asyncStore()
	if err != nil {
		return err
	}
	req := wire.InvokeRequest{Namespace: p.Namespace, Name: name}
	if isSealed(r) {
		var sr wire.SealedRequest
		if err := json.Unmarshal(body, &sr); err != nil {
			return apierr.New(apierr.BadRequest, "malformed sealed request: %v", err)
		}
		if sr.Mode != wire.ModeHPKE {
			return apierr.New(apierr.BadRequest, "mode %q cannot be queued; async invocations are sealed with mode hpke", sr.Mode)
		}
		if v, err = sealedVersion(v, sr.Version); err != nil {
			return err
		}
		req.Mode, req.Sealed = wire.ModeHPKE, sr
	} else {
		req.Mode, req.Plain = wire.ModePlain, body
	}
	rec, err := g.lookup(r.Context(), p.Namespace, name, v)
	if err != nil {
		return err
	}
	if req.Mode == wire.ModePlain && rec.Function.Confidential != bundle.ConfidentialOptional {
		return apierr.New(apierr.ConfidentialRequired,
			"function %q requires confidential requests; use `cloister invoke --async` or the client SDK, which seal the request to the attested worker", name)
	}
	req.Version = rec.Function.Version
	acc, err := st.Submit(r.Context(), async.Submission{Request: req, Kind: "function", IdempotencyKey: r.Header.Get(HeaderIdempotencyKey)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, acc)
	return nil
}

func (g *Gateway) listActivations(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.asyncStore()
	if err != nil {
		return err
	}
	o := async.ListOptions{Name: r.URL.Query().Get("name")}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > async.MaxList {
			return apierr.New(apierr.BadRequest, "limit must be 1 to %d", async.MaxList)
		}
		o.Limit = n
	}
	if o.Name != "" && !bundle.ValidName(o.Name) {
		return apierr.New(apierr.BadRequest, "invalid name %q", o.Name)
	}
	list, err := st.List(r.Context(), p.Namespace, o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"activations": list})
	return nil
}

// listDeadLetters answers GET /v1/dead-letters[?limit=N][&since=RFC3339]:
// the namespace's dead letters, newest first, without their jobs.
func (g *Gateway) listDeadLetters(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.asyncStore()
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
	st, err := g.asyncStore()
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

// readDefinition reads a small JSON body into v.
func readDefinition(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDefinitionBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "body over %d bytes", maxDefinitionBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return apierr.New(apierr.BadRequest, "body is not the expected JSON: %v", err)
	}
	return nil
}

// Sequences.

func sequenceKey(ns, name string) string { return "s." + ns + "." + name }

func (g *Gateway) sequence(ctx context.Context, ns, name string) (*wire.Sequence, error) {
	if g.cfg.Async == nil {
		return nil, apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	e, err := g.cfg.Async.Sequences.Get(ctx, sequenceKey(ns, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, apierr.New(apierr.NotFound, "sequence %q not found in namespace %q", name, ns)
	}
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "sequence store unavailable")
	}
	var s wire.Sequence
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt sequence record")
	}
	return &s, nil
}

// MaxSequenceSteps bounds a sequence definition (the worker's limit).
const MaxSequenceSteps = 16

func (g *Gateway) putSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	var def struct {
		Steps     []wire.StepRef `json:"steps"`
		Signer    []byte         `json:"signer"`
		Signature []byte         `json:"signature"`
	}
	if err := readDefinition(w, r, &def); err != nil {
		return err
	}
	if len(def.Steps) < 1 || len(def.Steps) > MaxSequenceSteps {
		return apierr.New(apierr.BadRequest, "a sequence has 1 to %d steps, not %d", MaxSequenceSteps, len(def.Steps))
	}
	if _, err := g.reg.Latest(r.Context(), p.Namespace, name); err == nil {
		return apierr.New(apierr.Conflict, "a function named %q exists; a sequence needs a name of its own", name)
	}
	steps := make([]wire.StepRef, len(def.Steps))
	signed := make([]bundle.SequenceStep, len(def.Steps))
	for i, s := range def.Steps {
		if !bundle.ValidName(s.Name) || s.Version < 0 || s.Version > MaxVersion {
			return apierr.New(apierr.BadRequest, "step %d: invalid function name %q or version %d", i+1, s.Name, s.Version)
		}
		steps[i] = wire.StepRef{Name: s.Name, Version: s.Version}
		signed[i] = bundle.SequenceStep{Name: s.Name, Version: s.Version}
	}
	if def.Signer != nil || def.Signature != nil {
		// A definition signed without its namespace (an older cloister)
		// is refused like a bad signature: new definitions are signed for
		// the namespace they are stored in.
		if err := bundle.VerifySequence(def.Signer, def.Signature, p.Namespace, name, signed); err != nil {
			return apierr.Wrap(apierr.BundleSignature, err)
		}
	}
	for i, s := range steps {
		rec, err := g.lookup(r.Context(), p.Namespace, s.Name, s.Version)
		if err != nil {
			return err
		}
		// The client checks this again, against the certificates; here it
		// gives the owner a clear error at once.
		if def.Signer != nil && !bytes.Equal(rec.Function.OwnerKey, def.Signer) {
			return apierr.New(apierr.BundleSignature, "step %d: function %q is signed by another owner than the sequence", i+1, s.Name)
		}
	}
	seq := wire.Sequence{Namespace: p.Namespace, Name: name, Steps: steps, Created: time.Now().UTC(), Signer: def.Signer, Signature: def.Signature}
	b, _ := json.Marshal(seq) // plain data: Marshal cannot fail
	if _, err := g.cfg.Async.Sequences.Put(r.Context(), sequenceKey(p.Namespace, name), b); err != nil {
		return apierr.New(apierr.Unavailable, "sequence store unavailable")
	}
	writeJSON(w, http.StatusOK, seq)
	return nil
}

func (g *Gateway) getSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	s, err := g.sequence(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (g *Gateway) deleteSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if _, err := g.sequence(r.Context(), p.Namespace, name); err != nil {
		return err
	}
	if err := g.cfg.Async.Sequences.Delete(r.Context(), sequenceKey(p.Namespace, name)); err != nil {
		return apierr.New(apierr.Unavailable, "sequence store unavailable")
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
	return nil
}

func (g *Gateway) listSequences(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	l, err := g.cfg.Async.Sequences.ListKeysFiltered(r.Context(), "s."+p.Namespace+".*")
	if err != nil {
		return apierr.New(apierr.Unavailable, "sequence store unavailable")
	}
	out := []*wire.Sequence{}
	for k := range l.Keys() {
		s, err := g.sequence(r.Context(), p.Namespace, k[len("s."+p.Namespace+"."):])
		if err == nil {
			out = append(out, s)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sequences": out})
	return nil
}

// invokeSequence forwards a sealed sequence request (mode "sequence") to a
// worker, or queues it with ?async=true. The steps in the request must be
// the stored definition's; their versions and code hashes, resolved by the
// client, are bound into the HPKE info, so the gateway cannot change them.
func (g *Gateway) invokeSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	isAsync, err := queryAsync(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxInvokeBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "request body over %d bytes", MaxInvokeBytes)
	}
	if !isSealed(r) {
		return apierr.New(apierr.ConfidentialRequired, "sequences take sealed requests only (Content-Type %s); use `cloister invoke` or the client SDK", wire.SealedContentType)
	}
	var sr wire.SealedRequest
	if err := json.Unmarshal(body, &sr); err != nil {
		return apierr.New(apierr.BadRequest, "malformed sealed request: %v", err)
	}
	if sr.Mode != wire.ModeSequence {
		return apierr.New(apierr.BadRequest, "mode %q is not accepted here (want %q)", sr.Mode, wire.ModeSequence)
	}
	seq, err := g.sequence(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	if len(sr.Steps) != len(seq.Steps) {
		return apierr.New(apierr.BadRequest, "the request has %d steps; sequence %q has %d", len(sr.Steps), name, len(seq.Steps))
	}
	timeout := 30 * time.Second
	for i, s := range seq.Steps {
		got := sr.Steps[i]
		if got.Version < 0 || got.Version > MaxVersion {
			return apierr.New(apierr.BadRequest, "step %d of the request has version %d: out of range 1 to %d", i+1, got.Version, MaxVersion)
		}
		if got.Name != s.Name || (s.Version != 0 && got.Version != s.Version) {
			return apierr.New(apierr.BadRequest, "step %d of the request is %s v%d; the sequence names %s v%s", i+1, got.Name, got.Version, s.Name, versionString(s.Version))
		}
		rec, err := g.lookup(r.Context(), p.Namespace, got.Name, got.Version)
		if err != nil {
			return err
		}
		var m bundle.Manifest
		_ = json.Unmarshal(rec.Manifest, &m) // validated at deploy; a zero limit adds nothing
		timeout += time.Duration(m.Limits.TimeoutMS) * time.Millisecond
	}
	req := wire.InvokeRequest{Namespace: p.Namespace, Name: name, Mode: wire.ModeSequence, Sealed: sr}
	if isAsync {
		st, err := g.asyncStore()
		if err != nil {
			return err
		}
		acc, err := st.Submit(r.Context(), async.Submission{Request: req, Kind: "sequence", IdempotencyKey: r.Header.Get(HeaderIdempotencyKey)})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusAccepted, acc)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var rep wire.InvokeReply
	if err := bus.Call(ctx, g.cfg.Conn, bus.SubjectInvoke, &req, &rep); err != nil {
		return err
	}
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Receipt: rep.Receipt,
			Step: rep.Step, StepCode: rep.StepCode, Receipts: rep.Receipts})
		return nil
	}
	writeJSON(w, http.StatusOK, wire.SealedResponse{Ciphertext: rep.Ciphertext, Receipt: rep.Receipt, Receipts: rep.Receipts})
	return nil
}

// Triggers and rules.

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
	q, _ := g.asyncStore() // fails only without g.cfg.Async, which triggerStore checked
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
	rec, err := g.lookup(r.Context(), p.Namespace, ru.Function, ru.Version)
	if err != nil {
		return err
	}
	if rec.Function.Confidential != bundle.ConfidentialOptional {
		return apierr.New(apierr.ConfidentialRequired, "function %q requires sealed requests; trigger events are plaintext, so a rule can only fire functions deployed with confidential: optional", ru.Function)
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
