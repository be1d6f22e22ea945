package gateway

// The OpenWhisk-compatible API (a subset) under /api/v1/namespaces/{ns}/:
// actions, activations, triggers and rules, in OpenWhisk's shapes, mapped
// onto Cloister's functions, async activations, sequences, triggers and
// rules. Its clients send plaintext, so every invocation through it is
// "gateway-trusted" (docs/openwhisk.md).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// OpenWhisk action kinds served.
const (
	KindNodeDefault = "nodejs:default"
	KindNode20      = "nodejs:20"
	KindBlackbox    = "blackbox"
	KindWasm        = "wasm"
	KindSequence    = "sequence"
)

// owBlockingWait is how long a blocking invocation waits before it answers
// 202 with the activation id, as OpenWhisk does after 60 s.
const owBlockingWait = 60 * time.Second

// OWKeyValue is an OpenWhisk parameter or annotation.
type OWKeyValue struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// OWExec is an action's exec.
type OWExec struct {
	Kind       string   `json:"kind"`
	Code       string   `json:"code,omitempty"`
	Binary     bool     `json:"binary"`
	Main       string   `json:"main,omitempty"`
	Image      string   `json:"image,omitempty"`
	Components []string `json:"components,omitempty"`
}

// OWLimits are an action's limits: timeout in ms, memory in MB.
type OWLimits struct {
	Timeout     int `json:"timeout,omitempty"`
	Memory      int `json:"memory,omitempty"`
	Logs        int `json:"logs,omitempty"`
	Concurrency int `json:"concurrency,omitempty"`
}

// OWAction is an action record.
type OWAction struct {
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	Version     string       `json:"version"`
	Exec        OWExec       `json:"exec"`
	Limits      OWLimits     `json:"limits"`
	Parameters  []OWKeyValue `json:"parameters"`
	Annotations []OWKeyValue `json:"annotations"`
	Publish     bool         `json:"publish"`
	Updated     int64        `json:"updated,omitempty"`
}

// OWResponse is an activation's response.
type OWResponse struct {
	Status     string          `json:"status"`
	StatusCode int             `json:"statusCode"`
	Success    bool            `json:"success"`
	Result     json.RawMessage `json:"result"`
}

// OWActivation is an activation record.
type OWActivation struct {
	Namespace    string       `json:"namespace"`
	Name         string       `json:"name"`
	Version      string       `json:"version"`
	Subject      string       `json:"subject"`
	ActivationID string       `json:"activationId"`
	Start        int64        `json:"start"`
	End          int64        `json:"end"`
	Duration     int64        `json:"duration"`
	StatusCode   int          `json:"statusCode"`
	Response     OWResponse   `json:"response"`
	Logs         []string     `json:"logs"`
	Annotations  []OWKeyValue `json:"annotations"`
	Publish      bool         `json:"publish"`
}

// owMeta is what the OpenWhisk API keeps beside a function, sequence or
// trigger ("a.<ns>.<name>" / "t.<ns>.<name>" in BucketOpenWhisk).
type owMeta struct {
	Kind        string       `json:"kind,omitempty"`
	Version     int          `json:"version"`
	Parameters  []OWKeyValue `json:"parameters,omitempty"`
	Annotations []OWKeyValue `json:"annotations,omitempty"`
	Updated     int64        `json:"updated"`
}

func owErr(w http.ResponseWriter, err error) {
	ae := apierr.From(err)
	writeJSON(w, ae.Code.Status(), map[string]any{"error": ae.Message, "code": ae.Code})
}

// owRoutes registers the OpenWhisk-compatible routes.
func (g *Gateway) owRoutes() {
	const p = "/api/v1/namespaces/{ns}/"
	g.owHandle("GET /api/v1/namespaces", ScopeInvoke, func(w http.ResponseWriter, r *http.Request, pr *Principal) error {
		writeJSON(w, http.StatusOK, []string{pr.Namespace})
		return nil
	})
	g.owHandle("GET "+p+"actions", ScopeInvoke, g.owListActions)
	g.owHandle("PUT "+p+"actions/{name}", ScopeDeploy, g.owPutAction)
	g.owHandle("GET "+p+"actions/{name}", ScopeInvoke, g.owGetAction)
	g.owHandle("DELETE "+p+"actions/{name}", ScopeDeploy, g.owDeleteAction)
	g.owHandle("POST "+p+"actions/{name}", ScopeInvoke, g.owInvoke)
	g.owHandle("GET "+p+"activations", ScopeInvoke, g.owListActivations)
	g.owHandle("GET "+p+"activations/{id}", ScopeInvoke, g.owGetActivation)
	g.owHandle("GET "+p+"activations/{id}/result", ScopeInvoke, g.owActivationPart)
	g.owHandle("GET "+p+"activations/{id}/logs", ScopeInvoke, g.owActivationPart)
	g.owHandle("GET "+p+"triggers", ScopeInvoke, g.owListTriggers)
	g.owHandle("PUT "+p+"triggers/{name}", ScopeDeploy, g.owPutTrigger)
	g.owHandle("GET "+p+"triggers/{name}", ScopeInvoke, g.owGetTrigger)
	g.owHandle("DELETE "+p+"triggers/{name}", ScopeDeploy, g.owDeleteTrigger)
	g.owHandle("POST "+p+"triggers/{name}", ScopeInvoke, g.owFireTrigger)
	g.owHandle("GET "+p+"rules", ScopeInvoke, g.owListRules)
	g.owHandle("PUT "+p+"rules/{name}", ScopeDeploy, g.owPutRule)
	g.owHandle("GET "+p+"rules/{name}", ScopeInvoke, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		ru, err := st.GetRule(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		return owRule(ru), nil
	}))
	g.owHandle("DELETE "+p+"rules/{name}", ScopeDeploy, g.onNamed(func(ctx context.Context, st *trigger.Store, ns, name string) (any, error) {
		ru, err := st.GetRule(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		return owRule(ru), st.DeleteRule(ctx, ns, name)
	}))
	g.owHandle("POST "+p+"rules/{name}", ScopeDeploy, g.owSetRuleStatus)
	g.mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		owErr(w, apierr.New(apierr.NotFound, "The requested resource does not exist (no OpenWhisk route for %s %s; packages, APIs and web actions are not served).", r.Method, r.URL.Path))
	})
}

// owHandle is handle for OpenWhisk routes: OpenWhisk's auth and error shape.
func (g *Gateway) owHandle(pattern string, need Scope, h handlerFunc) {
	g.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		p, err := g.owAuthenticate(r)
		err = g.admit(p, err, need, start)
		if err == nil {
			err = h(sw, r, p)
		}
		if err != nil {
			g.refused(pattern, err)
			owErr(sw, err)
		}
		g.requests.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
		g.latency.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
	})
}

func (g *Gateway) owStore() (jetstream.KeyValue, error) {
	if g.cfg.Async == nil || g.cfg.Async.OpenWhisk == nil {
		return nil, apierr.New(apierr.Unavailable, "the OpenWhisk API needs async invocations, which are not enabled on this gateway")
	}
	return g.cfg.Async.OpenWhisk, nil
}

func (g *Gateway) owMeta(ctx context.Context, key string) (*owMeta, error) {
	kv, err := g.owStore()
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &owMeta{}, nil
	}
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "OpenWhisk store unavailable")
	}
	var m owMeta
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt OpenWhisk record %s", key)
	}
	return &m, nil
}

func (g *Gateway) owPutMeta(ctx context.Context, key string, m *owMeta) error {
	kv, err := g.owStore()
	if err != nil {
		return err
	}
	b, _ := json.Marshal(m) // its raw values were decoded from JSON: Marshal cannot fail
	if _, err := kv.Put(ctx, key, b); err != nil {
		return apierr.New(apierr.Unavailable, "OpenWhisk store unavailable")
	}
	return nil
}

func actionMetaKey(ns, name string) string  { return "a." + ns + "." + name }
func triggerMetaKey(ns, name string) string { return "t." + ns + "." + name }

// owName takes the last segment of an OpenWhisk entity name ("/ns/x",
// "ns/x", "x"); a package path or another namespace is refused.
func owName(ns, full string) (string, error) {
	s := strings.TrimPrefix(full, "/")
	parts := strings.Split(s, "/")
	name := parts[len(parts)-1]
	switch {
	case len(parts) > 2:
		return "", apierr.New(apierr.BadRequest, "%q names a package; packages are not supported", full)
	case len(parts) == 2 && parts[0] != "_" && parts[0] != ns:
		return "", apierr.New(apierr.Forbidden, "%q is in another namespace", full)
	case !bundle.ValidName(name):
		return "", apierr.New(apierr.BadRequest, "invalid name %q: use lower-case letters, digits, '-' and '_'", name)
	}
	return name, nil
}

// owQueryBool reads a boolean query parameter of the OpenWhisk API. As in
// OpenWhisk, only "true" and "false" are booleans; absent or empty is def,
// and anything else ("1", "yes", "maybe") is refused with bad_request
// rather than read as either.
func owQueryBool(r *http.Request, k string, def bool) (bool, error) {
	switch s := r.URL.Query().Get(k); s {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, apierr.New(apierr.BadRequest, "The request content was malformed: the query parameter '%s' must be true or false.", k)
	}
}

// OpenWhisk's list paging: a page holds owDefaultLimit entities unless
// ?limit= says otherwise; limit=0 means owMaxLimit, the most there is.
const (
	owDefaultLimit = 30
	owMaxLimit     = 200
)

// owPage is the paging of an OpenWhisk list route.
type owPage struct {
	skip, limit int
	count       bool // answer {"<collection>": n} instead of the list
}

// owListPage reads ?skip=, ?limit= and ?count= with OpenWhisk's meaning:
// skip ≥ 0 (default 0); limit 1 to owMaxLimit, 0 for owMaxLimit (default
// owDefaultLimit); count true or false. Anything else is bad_request.
func owListPage(r *http.Request, collection string) (owPage, error) {
	q := r.URL.Query()
	pg := owPage{limit: owDefaultLimit}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > owMaxLimit {
			return pg, apierr.New(apierr.BadRequest, "The value %q of 'limit' for '%s' is not an integer from 0 to %d.", s, collection, owMaxLimit)
		}
		pg.limit = n
		if n == 0 {
			pg.limit = owMaxLimit
		}
	}
	if s := q.Get("skip"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return pg, apierr.New(apierr.BadRequest, "The value %q of 'skip' for '%s' is not an integer of 0 or more.", s, collection)
		}
		pg.skip = n
	}
	var err error
	pg.count, err = owQueryBool(r, "count", false)
	return pg, err
}

// owPageOf returns the page of list that pg asks for.
func owPageOf[T any](list []T, pg owPage) []T {
	if pg.skip >= len(list) {
		return list[:0]
	}
	list = list[pg.skip:]
	return list[:min(len(list), pg.limit)]
}

// writeOWList answers a list route: the page, or with ?count=true the
// number of entities after skip, as {"<collection>": n}.
func writeOWList[T any](w http.ResponseWriter, collection string, list []T, pg owPage) {
	if pg.count {
		writeJSON(w, http.StatusOK, map[string]int{collection: max(len(list)-pg.skip, 0)})
		return
	}
	writeJSON(w, http.StatusOK, owPageOf(list, pg))
}

func owVersion(v int) string { return "0.0." + strconv.Itoa(v) }

// jsonString encodes s; strings always encode.
func jsonString(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func owAnno(list []OWKeyValue, key string) (string, bool) {
	for _, kv := range list {
		if kv.Key == key {
			var s string
			if json.Unmarshal(kv.Value, &s) == nil {
				return s, true
			}
		}
	}
	return "", false
}

// withAnno returns list with key set to v (replacing a client's value: the
// cloister-* annotations are the platform's word).
func withAnno(list []OWKeyValue, key string, v any) []OWKeyValue {
	b, _ := json.Marshal(v) // the callers pass strings, which always encode
	out := slices.DeleteFunc(slices.Clone(list), func(kv OWKeyValue) bool { return kv.Key == key })
	return append(out, OWKeyValue{Key: key, Value: b})
}

// Actions.

type owPutBody struct {
	Exec        *OWExec      `json:"exec"`
	Limits      *OWLimits    `json:"limits"`
	Parameters  []OWKeyValue `json:"parameters"`
	Annotations []OWKeyValue `json:"annotations"`
}

func (g *Gateway) owSequenceExists(ctx context.Context, ns, name string) bool {
	_, err := g.sequence(ctx, ns, name)
	return err == nil
}

func (g *Gateway) owPutAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	overwrite, err := owQueryBool(r, "overwrite", false)
	if err != nil {
		return err
	}
	raw, release, err := g.readUpload(w, r, "action")
	if err != nil {
		return err
	}
	defer release()
	var body owPutBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return apierr.New(apierr.BadRequest, "The request content was malformed: %v", err)
	}
	ctx := r.Context()
	_, fnErr := g.reg.Latest(ctx, p.Namespace, name)
	isFn, isSeq := fnErr == nil, g.owSequenceExists(ctx, p.Namespace, name)
	if (isFn || isSeq) && !overwrite {
		return apierr.New(apierr.Conflict, "resource already exists (add ?overwrite=true to update it)")
	}
	meta, err := g.owMeta(ctx, actionMetaKey(p.Namespace, name))
	if err != nil {
		return err
	}
	if body.Parameters != nil {
		meta.Parameters = body.Parameters
	}
	if body.Annotations != nil {
		meta.Annotations = body.Annotations
	}
	for _, kv := range meta.Parameters {
		if kv.Key == "" || !json.Valid(kv.Value) {
			return apierr.New(apierr.BadRequest, "every parameter needs a key and a JSON value")
		}
	}
	meta.Updated = time.Now().UnixMilli()
	switch {
	case body.Exec == nil && !(isFn || isSeq):
		return apierr.New(apierr.BadRequest, "an action needs exec: {kind, code} or {kind: sequence, components}")
	case body.Exec == nil:
		// An update of parameters or annotations only.
	case body.Exec.Kind == KindSequence:
		if err := g.owPutSequence(ctx, p, name, body.Exec.Components, isFn); err != nil {
			return err
		}
		meta.Kind, meta.Version = KindSequence, meta.Version+1
	default:
		v, err := g.owDeployCode(ctx, p, name, body.Exec, body.Limits, meta.Annotations)
		if err != nil {
			return err
		}
		if isSeq {
			// A sequence left behind would shadow the new code: invocations
			// and reads look the sequence up first.
			if err := g.cfg.Async.Sequences.Delete(ctx, sequenceKey(p.Namespace, name)); err != nil {
				return storeError("sequence store", err)
			}
		}
		meta.Kind, meta.Version = body.Exec.Kind, v
	}
	if err := g.owPutMeta(ctx, actionMetaKey(p.Namespace, name), meta); err != nil {
		return err
	}
	a, err := g.owAction(ctx, p.Namespace, name, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// owDeployCode builds a bundle from an OpenWhisk action, signs it with the
// namespace's gateway deploy key, and registers it as a new version.
func (g *Gateway) owDeployCode(ctx context.Context, p *Principal, name string, ex *OWExec, lim *OWLimits, annos []OWKeyValue) (int, error) {
	// Its calls come through the gateway in plaintext (OpenWhisk clients
	// do not seal), so anyone the gateway lets in may invoke it.
	m := bundle.Manifest{Name: name, Confidential: bundle.ConfidentialOptional, Deployer: bundle.DeployerGatewayTrusted,
		Invokers: &certs.Invokers{Kind: certs.InvokersAny}}
	var module []byte
	switch ex.Kind {
	case KindNodeDefault, KindNode20:
		if ex.Binary {
			return 0, apierr.New(apierr.BadRequest, "zipped Node.js actions are not supported; send the script as exec.code")
		}
		if ex.Main != "" && ex.Main != "main" {
			return 0, apierr.New(apierr.BadRequest, "exec.main %q: the entry point must be main", ex.Main)
		}
		m.Runtime, m.ABI, module = bundle.RuntimeJS, bundle.ABIJS, []byte(ex.Code)
	case KindBlackbox, KindWasm:
		if ex.Code == "" {
			return 0, apierr.New(apierr.BadRequest, "kind %s needs exec.code: a WebAssembly module, base64 (container images are not run)", ex.Kind)
		}
		b, err := base64.StdEncoding.DecodeString(ex.Code)
		if err != nil {
			return 0, apierr.New(apierr.BadRequest, "exec.code of kind %s must be a base64 WebAssembly module: %v", ex.Kind, err)
		}
		m.Runtime, module = bundle.RuntimeWasm, b
		if abi, ok := owAnno(annos, "cloister-abi"); ok {
			m.ABI = abi
		}
	default:
		return 0, apierr.New(apierr.BadRequest, "kind %q is not supported (use %s, %s, %s, %s or %s)", ex.Kind, KindNodeDefault, KindNode20, KindBlackbox, KindWasm, KindSequence)
	}
	if c, ok := owAnno(annos, "confidential"); ok {
		m.Confidential = c
	}
	if lim != nil {
		if lim.Memory < 0 || lim.Memory > bundle.MaxMemoryPages/16 || lim.Timeout < 0 {
			return 0, apierr.New(apierr.BadRequest, "limits: memory must be 0 to %d MB and timeout ≥ 0 ms", bundle.MaxMemoryPages/16)
		}
		m.Limits.MemoryPages, m.Limits.TimeoutMS = uint32(lim.Memory*16), lim.Timeout
		if lim.Concurrency > 0 {
			m.Limits.Concurrency = lim.Concurrency
		}
	}
	v, err := g.reg.NextVersion(ctx, p.Namespace, name)
	if err != nil {
		return 0, err
	}
	m.Version, m.Namespace = v, p.Namespace
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		return 0, apierr.Wrap(apierr.InvalidManifest, err)
	}
	kv, err := g.owStore()
	if err != nil {
		return 0, err
	}
	key, err := g.deployKeys.key(ctx, kv, p.Namespace)
	if err != nil {
		return 0, err
	}
	b, err := bundle.Build(m, module, key)
	if err != nil {
		return 0, apierr.Wrap(apierr.InvalidBundle, err)
	}
	fi, err := g.register(ctx, p.Namespace, name, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return 0, err
	}
	return fi.Version, nil
}

func (g *Gateway) owPutSequence(ctx context.Context, p *Principal, name string, components []string, replacesFn bool) error {
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	if len(components) < 1 || len(components) > MaxSequenceSteps {
		return apierr.New(apierr.BadRequest, "a sequence has 1 to %d components, not %d", MaxSequenceSteps, len(components))
	}
	steps := make([]wire.StepRef, len(components))
	for i, c := range components {
		n, err := owName(p.Namespace, c)
		if err != nil {
			return err
		}
		if n == name {
			return apierr.New(apierr.BadRequest, "a sequence cannot contain itself")
		}
		if g.owSequenceExists(ctx, p.Namespace, n) {
			return apierr.New(apierr.BadRequest, "component %d (%s) is a sequence; sequences of sequences are not supported", i+1, n)
		}
		if _, err := g.lookup(ctx, p.Namespace, n, 0); err != nil {
			return err
		}
		steps[i] = wire.StepRef{Name: n}
	}
	if replacesFn {
		if err := g.deleteVersions(ctx, p.Namespace, name); err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
	}
	seq := wire.Sequence{Namespace: p.Namespace, Name: name, Steps: steps, Created: time.Now().UTC()}
	b, _ := json.Marshal(seq) // plain data: Marshal cannot fail
	if _, err := g.cfg.Async.Sequences.Put(ctx, sequenceKey(p.Namespace, name), b); err != nil {
		return apierr.New(apierr.Unavailable, "sequence store unavailable")
	}
	return nil
}

// owAction builds the action record of a function or sequence.
func (g *Gateway) owAction(ctx context.Context, ns, name string, code bool) (*OWAction, error) {
	meta, err := g.owMeta(ctx, actionMetaKey(ns, name))
	if err != nil {
		return nil, err
	}
	a := &OWAction{Namespace: ns, Name: name, Parameters: meta.Parameters, Annotations: meta.Annotations, Updated: meta.Updated}
	if a.Parameters == nil {
		a.Parameters = []OWKeyValue{}
	}
	if seq, err := g.sequence(ctx, ns, name); err == nil {
		a.Version = owVersion(max(meta.Version, 1))
		a.Exec = OWExec{Kind: KindSequence}
		for _, s := range seq.Steps {
			a.Exec.Components = append(a.Exec.Components, "/"+ns+"/"+s.Name)
		}
		a.Annotations = withAnno(a.Annotations, "exec", KindSequence)
		a.Limits = OWLimits{Timeout: 0, Memory: 0, Logs: 10}
		if a.Updated == 0 {
			a.Updated = seq.Created.UnixMilli()
		}
		return a, nil
	}
	rec, err := g.lookup(ctx, ns, name, 0)
	if err != nil {
		return nil, err
	}
	var m bundle.Manifest
	if err := json.Unmarshal(rec.Manifest, &m); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt manifest of %s", name)
	}
	m.ApplyDefaults()
	f := rec.Function
	a.Version = owVersion(f.Version)
	kind := meta.Kind
	if kind == "" || kind == KindSequence {
		kind = KindWasm
		if m.Runtime == bundle.RuntimeJS {
			kind = KindNodeDefault
		}
	}
	a.Exec = OWExec{Kind: kind, Binary: m.Runtime != bundle.RuntimeJS}
	a.Limits = OWLimits{Timeout: m.Limits.TimeoutMS, Memory: int(m.Limits.MemoryPages / 16), Logs: 10, Concurrency: m.Limits.Concurrency}
	deployer := "owner"
	if m.Deployer != "" {
		deployer = m.Deployer
	}
	execAnno := "nodejs"
	if m.Runtime != bundle.RuntimeJS {
		execAnno = "blackbox"
	}
	a.Annotations = withAnno(a.Annotations, "exec", execAnno)
	a.Annotations = withAnno(a.Annotations, "confidential", m.Confidential)
	a.Annotations = withAnno(a.Annotations, "cloister-deployer", deployer)
	a.Annotations = withAnno(a.Annotations, "cloister-owner-key", hex.EncodeToString(f.OwnerKey))
	a.Annotations = withAnno(a.Annotations, "cloister-code-sha256", f.CodeHash)
	if a.Updated == 0 || meta.Version != f.Version {
		a.Updated = rec.Created.UnixMilli()
	}
	if code {
		raw, err := g.cfg.Stores.Bundles.GetBytes(ctx, rec.Object)
		if err != nil {
			return nil, apierr.New(apierr.Unavailable, "reading the bundle: %v", err)
		}
		bd, err := bundle.Open(raw)
		if err != nil {
			return nil, apierr.New(apierr.BundleIntegrity, "stored bundle of %s: %v", name, err)
		}
		if a.Exec.Binary {
			a.Exec.Code = base64.StdEncoding.EncodeToString(bd.Module)
		} else {
			a.Exec.Code = string(bd.Module)
		}
	}
	return a, nil
}

func (g *Gateway) owGetAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	code, err := owQueryBool(r, "code", true)
	if err != nil {
		return err
	}
	a, err := g.owAction(r.Context(), p.Namespace, name, code)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (g *Gateway) owListActions(w http.ResponseWriter, r *http.Request, p *Principal) error {
	pg, err := owListPage(r, "actions")
	if err != nil {
		return err
	}
	ctx := r.Context()
	recs, err := g.reg.List(ctx, p.Namespace)
	if err != nil {
		return err
	}
	names := []string{}
	for _, rec := range recs {
		names = append(names, rec.Function.Name)
	}
	if g.cfg.Async != nil {
		if l, err := g.cfg.Async.Sequences.ListKeysFiltered(ctx, "s."+p.Namespace+".*"); err == nil {
			for k := range l.Keys() {
				names = append(names, strings.TrimPrefix(k, "s."+p.Namespace+"."))
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if pg.count {
		writeOWList(w, "actions", names, pg)
		return nil
	}
	// Build the records of the page only: skip the first pg.skip actions
	// that exist, then take pg.limit.
	out := []*OWAction{}
	skip := pg.skip
	for _, n := range names {
		if len(out) == pg.limit {
			break
		}
		a, err := g.owAction(ctx, p.Namespace, n, false)
		if apierr.CodeOf(err) == apierr.NotFound {
			continue
		}
		if err != nil {
			return err
		}
		if skip > 0 {
			skip--
			continue
		}
		out = append(out, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (g *Gateway) owDeleteAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := g.owAction(ctx, p.Namespace, name, false)
	if err != nil {
		return err
	}
	if a.Exec.Kind == KindSequence {
		if err := g.cfg.Async.Sequences.Delete(ctx, sequenceKey(p.Namespace, name)); err != nil {
			return apierr.New(apierr.Unavailable, "sequence store unavailable")
		}
	} else if err := g.deleteVersions(ctx, p.Namespace, name); err != nil {
		return err
	}
	if kv, err := g.owStore(); err == nil {
		// The action is gone; its stale parameters and annotations would
		// come back with an action created again under its name.
		if err := kv.Delete(ctx, actionMetaKey(p.Namespace, name)); err != nil {
			g.log.Warn("deleting OpenWhisk action metadata", "namespace", p.Namespace, "action", name, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// Invocation.

// owParams merges the action's default parameters under the request's.
func owParams(body []byte, defaults []OWKeyValue) ([]byte, error) {
	params := map[string]json.RawMessage{}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &params); err != nil || params == nil {
			return nil, apierr.New(apierr.BadRequest, "The request content was malformed: parameters must be a JSON object")
		}
	}
	for _, kv := range defaults {
		if _, ok := params[kv.Key]; !ok {
			params[kv.Key] = kv.Value
		}
	}
	return json.Marshal(params)
}

func confidentialRefusal(name string) error {
	return apierr.New(apierr.ConfidentialRequired,
		"action %q requires confidential invocations (confidential: required), and an OpenWhisk client sends plaintext that the gateway can read (gateway-trusted). "+
			"Invoke it with the confidential client instead: `cloister invoke %s --data '{...}'`, or the Go SDK (github.com/cloister-faas/cloister/client), "+
			"which seal the request to the attested worker", name, name)
}

func (g *Gateway) owInvoke(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	blocking, err := owQueryBool(r, "blocking", false)
	if err != nil {
		return err
	}
	resultOnly, err := owQueryBool(r, "result", false)
	if err != nil {
		return err
	}
	st, err := g.asyncStore()
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxInvokeBytes))
	if err != nil {
		return apierr.New(apierr.PayloadTooLarge, "request body over %d bytes", MaxInvokeBytes)
	}
	ctx := r.Context()
	meta, err := g.owMeta(ctx, actionMetaKey(p.Namespace, name))
	if err != nil {
		return err
	}
	params, err := owParams(body, meta.Parameters)
	if err != nil {
		return err
	}
	var id string
	if seq, err := g.sequence(ctx, p.Namespace, name); err == nil {
		if id, err = g.owStartSequence(ctx, st, seq, params); err != nil {
			return err
		}
	} else {
		rec, err := g.lookup(ctx, p.Namespace, name, 0)
		if err != nil {
			return err
		}
		if rec.Function.Confidential != bundle.ConfidentialOptional {
			return confidentialRefusal(name)
		}
		acc, err := st.Submit(ctx, async.Submission{Kind: "function", IdempotencyKey: r.Header.Get(HeaderIdempotencyKey),
			Request: wire.InvokeRequest{Namespace: p.Namespace, Name: name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: params}})
		if err != nil {
			return err
		}
		id = acc.ActivationID
	}
	if !blocking {
		writeJSON(w, http.StatusAccepted, map[string]string{"activationId": id})
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, owBlockingWait)
	defer cancel()
	a, err := st.Wait(wctx, p.Namespace, id)
	if err != nil {
		return err
	}
	if !wire.FinalStatus(a.Status) {
		writeJSON(w, http.StatusAccepted, map[string]string{"activationId": id})
		return nil
	}
	oa := owActivation(a)
	status := http.StatusOK
	switch a.Status {
	case wire.StatusApplicationError, wire.StatusDeveloperError:
		status = http.StatusBadGateway
	case wire.StatusPlatformError:
		status = http.StatusInternalServerError
	}
	if resultOnly {
		writeJSON(w, status, oa.Response.Result)
		return nil
	}
	writeJSON(w, status, oa)
	return nil
}

// owStartSequence records a sequence activation and runs its steps, one
// queued plaintext activation each, in the background. The gateway sees
// every intermediate result: this is the gateway-trusted counterpart of a
// sealed sequence, whose intermediate results stay in the worker.
func (g *Gateway) owStartSequence(ctx context.Context, st *async.Store, seq *wire.Sequence, params []byte) (string, error) {
	now := time.Now()
	a := &wire.Activation{ActivationID: async.NewID(now), Namespace: seq.Namespace, Name: seq.Name, Kind: "sequence",
		Mode: wire.ModePlain, Trust: wire.TrustGatewayTrusted, Status: wire.StatusRunning, Submitted: async.Millis(now),
		Start: async.Millis(now), Logs: []string{}}
	recs := make([]*registry.Record, len(seq.Steps))
	defaults := make([][]OWKeyValue, len(seq.Steps))
	timeout := 30 * time.Second
	for i, s := range seq.Steps {
		rec, err := g.lookup(ctx, seq.Namespace, s.Name, s.Version)
		if err != nil {
			return "", err
		}
		if rec.Function.Confidential != bundle.ConfidentialOptional {
			return "", confidentialRefusal(s.Name)
		}
		var m bundle.Manifest
		_ = json.Unmarshal(rec.Manifest, &m) // validated at deploy; a zero limit leaves the margin
		timeout += time.Duration(m.Limits.TimeoutMS)*time.Millisecond + 5*time.Second
		recs[i] = rec
		meta, err := g.owMeta(ctx, actionMetaKey(seq.Namespace, s.Name))
		if err != nil {
			return "", err
		}
		defaults[i] = meta.Parameters
	}
	if err := st.Record(ctx, a); err != nil {
		return "", err
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	go func() {
		defer cancel()
		resp, steps := g.owRunSteps(bg, st, seq, recs, defaults, params)
		_, err := st.Update(context.WithoutCancel(bg), seq.Namespace, a.ActivationID, func(x *wire.Activation) error {
			end := time.Now()
			x.Logs = steps
			x.Response = resp
			x.Status = resp.Status
			x.End, x.Duration = async.Millis(end), async.Millis(end)-x.Start
			return nil
		})
		if err != nil {
			g.log.Error("finishing a sequence activation", "activation", a.ActivationID, "err", err)
		}
	}()
	return a.ActivationID, nil
}

// owRunSteps runs the steps and returns the sequence's response and its
// logs (the steps' activation ids, as OpenWhisk lists them). Each step's
// default parameters go under its input, as in OpenWhisk.
func (g *Gateway) owRunSteps(ctx context.Context, st *async.Store, seq *wire.Sequence, recs []*registry.Record, defaults [][]OWKeyValue, input []byte) (wire.ActivationResponse, []string) {
	logs := []string{}
	for i, rec := range recs {
		in, err := owParams(input, defaults[i])
		if err != nil {
			return failed(i+1, apierr.New(apierr.BadRequest, "the input of step %d (%s) is not a JSON object", i+1, rec.Function.Name)), logs
		}
		acc, err := st.Submit(ctx, async.Submission{Kind: "function",
			Request: wire.InvokeRequest{Namespace: seq.Namespace, Name: rec.Function.Name, Version: rec.Function.Version, Mode: wire.ModePlain, Plain: in}})
		if err != nil {
			return failed(i+1, apierr.From(err)), logs
		}
		logs = append(logs, acc.ActivationID)
		a, err := st.Wait(ctx, seq.Namespace, acc.ActivationID)
		if err == nil && !wire.FinalStatus(a.Status) {
			err = apierr.New(apierr.Timeout, "step %d (%s) did not finish in time", i+1, rec.Function.Name)
		}
		if err != nil {
			return failed(i+1, apierr.From(err)), logs
		}
		if a.Status != wire.StatusSuccess {
			r := a.Response
			r.Step = i + 1
			if r.Error != nil {
				r.StepCode = r.Error.Code
			}
			return r, logs
		}
		input = a.Response.Result
	}
	return wire.ActivationResponse{Status: wire.StatusSuccess, Success: true, Result: input}, logs
}

func failed(step int, e *apierr.Error) wire.ActivationResponse {
	return wire.ActivationResponse{Status: wire.StatusPlatformError, Error: e, Step: step, StepCode: e.Code}
}

// Activations.

var owStatus = map[string]struct {
	name string
	code int
}{
	wire.StatusSuccess:          {"success", 0},
	wire.StatusApplicationError: {"application error", 1},
	wire.StatusDeveloperError:   {"action developer error", 2},
	wire.StatusPlatformError:    {"whisk internal error", 3},
}

// owResult is an activation's result as a JSON object: a plaintext output
// that is a JSON object as it is, other output under "output", an error
// as {"error": message}, and a sealed result as {} (annotated "sealed").
func owResult(a *wire.Activation) json.RawMessage {
	resp := a.Response
	switch {
	case resp.Sealed:
		return json.RawMessage("{}")
	case resp.Error != nil:
		b, _ := json.Marshal(map[string]any{"error": resp.Error.Message, "code": resp.Error.Code}) // two strings
		return b
	case len(resp.Result) == 0:
		return json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(resp.Result, &obj) == nil && obj != nil {
		return resp.Result
	}
	var out any = string(resp.Result)
	if json.Valid(resp.Result) {
		out = json.RawMessage(resp.Result)
	}
	b, _ := json.Marshal(map[string]any{"output": out}) // a string, or JSON checked by json.Valid
	return b
}

func owActivation(a *wire.Activation) *OWActivation {
	s := owStatus[a.Status]
	o := &OWActivation{
		Namespace: a.Namespace, Name: a.Name, Version: owVersion(max(a.Version, 1)), Subject: a.Namespace,
		ActivationID: a.ActivationID, Start: a.Start, End: a.End, Duration: a.Duration, StatusCode: s.code,
		Response: OWResponse{Status: s.name, StatusCode: s.code, Success: a.Status == wire.StatusSuccess, Result: owResult(a)},
		Logs:     a.Logs,
	}
	if o.Logs == nil {
		o.Logs = []string{}
	}
	trust := a.Trust
	if trust == "" {
		trust = "confidential"
	}
	o.Annotations = []OWKeyValue{
		{Key: "path", Value: jsonString(a.Namespace + "/" + a.Name)},
		{Key: "kind", Value: jsonString(a.Kind)},
		{Key: "trust", Value: jsonString(trust)},
		{Key: "cloister-mode", Value: jsonString(a.Mode)},
	}
	if a.Start != 0 {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "waitTime", Value: jsonString(strconv.FormatInt(a.Start-a.Submitted, 10))})
	}
	if a.Response.Sealed {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "sealed", Value: json.RawMessage("true")})
	}
	if a.Trigger != "" {
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cause", Value: jsonString(a.Trigger + "/" + a.Rule)})
	}
	// Receipts decoded from the record re-encode: Marshal cannot fail.
	if a.Receipt != nil {
		b, _ := json.Marshal(a.Receipt) // see above
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cloister-receipt", Value: b})
	}
	if len(a.Receipts) > 0 {
		b, _ := json.Marshal(a.Receipts) // see above
		o.Annotations = append(o.Annotations, OWKeyValue{Key: "cloister-receipts", Value: b})
	}
	return o
}

func (g *Gateway) owListActivations(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st, err := g.asyncStore()
	if err != nil {
		return err
	}
	pg, err := owListPage(r, "activations")
	if err != nil {
		return err
	}
	if pg.count {
		return apierr.New(apierr.BadRequest, "count is not supported for activations")
	}
	// As in OpenWhisk, an activation is listed once it has finished; skip
	// counts finished activations only.
	o := async.ListOptions{Limit: pg.limit, Skip: pg.skip, Keep: func(a *wire.Activation) bool { return wire.FinalStatus(a.Status) }}
	if n := r.URL.Query().Get("name"); n != "" {
		if o.Name, err = owName(p.Namespace, n); err != nil {
			return err
		}
	}
	list, err := st.List(r.Context(), p.Namespace, o)
	if err != nil {
		return err
	}
	out := []*OWActivation{}
	for _, a := range list {
		out = append(out, owActivation(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// owFinished returns a final activation; an unfinished one is not found
// yet, as in OpenWhisk, where records appear when they complete.
func (g *Gateway) owFinished(r *http.Request, p *Principal) (*wire.Activation, error) {
	a, err := g.activation(r, p)
	if err != nil {
		return nil, err
	}
	if !wire.FinalStatus(a.Status) {
		return nil, apierr.New(apierr.NotFound, "The requested resource does not exist (activation %s is %s; ask again later).", a.ActivationID, a.Status)
	}
	return a, nil
}

func (g *Gateway) owGetActivation(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.owFinished(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, owActivation(a))
	return nil
}

func (g *Gateway) owActivationPart(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := g.owFinished(r, p)
	if err != nil {
		return err
	}
	o := owActivation(a)
	if strings.HasSuffix(r.URL.Path, "/logs") {
		writeJSON(w, http.StatusOK, map[string]any{"logs": o.Logs})
		return nil
	}
	writeJSON(w, http.StatusOK, o.Response)
	return nil
}

// Triggers and rules.

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
	q, err := g.asyncStore()
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
	rec, err := g.lookup(ctx, p.Namespace, act, 0)
	if err != nil {
		return err
	}
	if rec.Function.Confidential != bundle.ConfidentialOptional {
		return confidentialRefusal(act)
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
