package gateway

// The OpenWhisk-compatible API (a subset) under /api/v1/namespaces/{ns}/:
// actions, activations, triggers and rules, in OpenWhisk's shapes, mapped
// onto Cloister's functions, async activations, sequences, triggers and
// rules. Its clients send plaintext, so every invocation through it is
// "gateway-trusted" (docs/openwhisk.md).

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/trigger"
)

// OpenWhisk action kinds served.
const (
	KindNodeDefault   = "nodejs:default"
	KindNode20        = "nodejs:20"
	KindPython3       = "python:3"
	KindPythonDefault = "python:default"
	KindBlackbox      = "blackbox"
	KindWasm          = "wasm"
	KindSequence      = "sequence"
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

// owMeta reads an action's or trigger's record from the store.
func (g *Gateway) owMeta(ctx context.Context, key string) (*owMeta, error) {
	return g.lookupOWMeta(ctx, key, false)
}

// owMetaFollowed is owMeta served from memory while the gateway follows
// the action records (docs/adr/0023-followed-buckets.md), for the
// invocation path, which reads an action's default parameters on every
// call; a change made elsewhere arrives with the watch. Trigger records
// ("t.") are not followed: they are read from the store.
func (g *Gateway) owMetaFollowed(ctx context.Context, key string) (*owMeta, error) {
	return g.lookupOWMeta(ctx, key, true)
}

func (g *Gateway) lookupOWMeta(ctx context.Context, key string, fromMemory bool) (*owMeta, error) {
	if _, err := g.owStore(); err != nil {
		return nil, err
	}
	read := g.owActions.Read
	if fromMemory {
		read = g.owActions.Get
	}
	e, err := read(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &owMeta{}, nil
	}
	if err != nil {
		return nil, storeError("OpenWhisk store", err)
	}
	var m owMeta
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt OpenWhisk record %s", key)
	}
	return &m, nil
}

func (g *Gateway) owPutMeta(ctx context.Context, key string, m *owMeta) error {
	if _, err := g.owStore(); err != nil {
		return err
	}
	b, _ := json.Marshal(m) // its raw values were decoded from JSON: Marshal cannot fail
	if _, err := g.owActions.Put(ctx, key, b); err != nil {
		return storeError("OpenWhisk store", err)
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
