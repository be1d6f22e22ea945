package gateway

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/wire"
)

// maxKeyName bounds an API key's label.
const maxKeyName = 128

// keyRoutes registers the API-key routes (admin scope). A namespace admin
// key acts on its own namespace's keys only; a platform admin key on every
// namespace's. See docs/adr/0008-api-keys.md.
func (g *Gateway) keyRoutes() {
	g.handle("POST /v1/keys", ScopeAdmin, g.createKey)
	g.handle("GET /v1/keys", ScopeAdmin, g.listKeys)
	g.handle("DELETE /v1/keys/{id}", ScopeAdmin, g.revokeKey)
	g.handle("POST /v1/tokens", ScopeAdmin, g.createToken)
	g.handle("GET /v1/whoami", ScopeInvoke, func(w http.ResponseWriter, _ *http.Request, p *Principal) error {
		writeJSON(w, http.StatusOK, map[string]any{"namespace": p.Namespace, "admin": p.Scope == ScopeAdmin,
			"scope": p.Scope, "platform": p.Platform, "id": p.ID, "expires": p.Expires})
		return nil
	})
}

// mayManage refuses a namespace admin key acting on another namespace.
func (p *Principal) mayManage(ns string) error {
	if ns != p.Namespace && !p.Platform {
		return apierr.New(apierr.Forbidden, "API key %s is an admin key of namespace %q only; keys of namespace %q need a platform admin key", p.ID, p.Namespace, ns)
	}
	return nil
}

// issue creates a key for req on behalf of p.
func (g *Gateway) issue(r *http.Request, p *Principal, req wire.APIKeyRequest) (*wire.NewAPIKey, error) {
	ns := cmp.Or(req.Namespace, p.Namespace)
	if !bundle.ValidName(ns) {
		return nil, apierr.New(apierr.BadRequest, "invalid namespace %.70q", ns)
	}
	if err := p.mayManage(ns); err != nil {
		return nil, err
	}
	scope, err := ParseScope(req.Scope)
	if err != nil {
		return nil, err
	}
	if req.Platform && !p.Platform {
		return nil, apierr.New(apierr.Forbidden, "only a platform admin key can create platform keys")
	}
	if len(req.Name) > maxKeyName || slices.ContainsFunc([]rune(req.Name), unicode.IsControl) {
		return nil, apierr.New(apierr.BadRequest, "a key's name is at most %d bytes, without control characters", maxKeyName)
	}
	now := g.auth.now().UTC()
	np := Principal{Namespace: ns, Scope: scope, Platform: req.Platform, Name: req.Name, Created: now}
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return nil, apierr.New(apierr.BadRequest, "expires_in must be a positive duration such as 720h, not %.32q", req.ExpiresIn)
		}
		np.Expires = now.Add(d)
	}
	tok, err := IssueToken(r.Context(), g.cfg.Stores.Auth, np)
	if err != nil {
		return nil, storeError("auth store", err)
	}
	np.ID = wire.APIKeyID(tok)
	// The id, never the key: the log is the host's.
	g.log.Info("API key created", "id", np.ID, "namespace", ns, "scope", scope, "platform", np.Platform, "expires", cmp.Or(req.ExpiresIn, "never"), "by", p.ID)
	return &wire.NewAPIKey{Key: tok, APIKey: np.info(now)}, nil
}

// createKey answers POST /v1/keys.
func (g *Gateway) createKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req wire.APIKeyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		return apierr.New(apierr.BadRequest, "body must be JSON {\"scope\": \"invoke\"|\"deploy\"|\"admin\", \"namespace\"?, \"name\"?, \"expires_in\"?, \"platform\"?}")
	}
	k, err := g.issue(r, p, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, k)
	return nil
}

// createToken answers POST /v1/tokens, the route from before scopes: it
// creates a deploy key, as it did then.
func (g *Gateway) createToken(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req struct{ Namespace, Name string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		return apierr.New(apierr.BadRequest, "body must be JSON {\"namespace\": ..., \"name\": ...}")
	}
	if req.Namespace == "" {
		return apierr.New(apierr.BadRequest, "invalid namespace \"\"")
	}
	k, err := g.issue(r, p, wire.APIKeyRequest{Namespace: req.Namespace, Name: req.Name, Scope: string(ScopeDeploy)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"token": k.Key, "namespace": k.Namespace, "id": k.ID})
	return nil
}

// listKeys answers GET /v1/keys[?namespace=NS]: the keys p may manage (its
// namespace's; every namespace's for a platform key), never the secrets.
func (g *Gateway) listKeys(w http.ResponseWriter, r *http.Request, p *Principal) error {
	ns := r.URL.Query().Get("namespace")
	if !p.Platform {
		if err := p.mayManage(cmp.Or(ns, p.Namespace)); err != nil {
			return err
		}
		ns = p.Namespace
	}
	recs, err := listRecords(r.Context(), g.cfg.Stores.Auth)
	if err != nil {
		return err
	}
	now := g.auth.now()
	keys := []wire.APIKey{}
	for _, rec := range recs {
		if ns == "" || rec.Namespace == ns {
			keys = append(keys, rec.info(now))
		}
	}
	slices.SortFunc(keys, func(a, b wire.APIKey) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	return nil
}

// revokeKey answers DELETE /v1/keys/{id}. A key of another namespace is
// not found for a namespace admin key, and a platform key of its own
// namespace is forbidden to it. Revoking a revoked key changes
// nothing. The key stops working on this gateway at once and on the
// others within authCacheTTL.
func (g *Gateway) revokeKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id := r.PathValue("id")
	if _, err := hex.DecodeString(id); err != nil || len(id) != wire.APIKeyIDLen || strings.ToLower(id) != id {
		return apierr.New(apierr.BadRequest, "a key id is %d lower-case hex digits (`cloister keys api list`)", wire.APIKeyIDLen)
	}
	recs, err := listRecords(r.Context(), g.cfg.Stores.Auth)
	if err != nil {
		return err
	}
	var names []string
	for name, rec := range recs {
		if rec.ID == id && (p.Platform || rec.Namespace == p.Namespace) {
			names = append(names, name)
		}
	}
	switch len(names) {
	case 0:
		return apierr.New(apierr.NotFound, "no API key %s that this key may revoke", id)
	case 1:
	default: // 2^-64 per pair of keys
		return apierr.New(apierr.BadRequest, "several keys have id %s; none was revoked", id)
	}
	if recs[names[0]].Platform && !p.Platform {
		return apierr.New(apierr.Forbidden, "API key %s is a platform key: only a platform admin key may revoke it", id)
	}
	rec, err := revokeRecord(r.Context(), g.cfg.Stores.Auth, names[0], g.auth.now())
	if err != nil {
		return err
	}
	g.auth.evict(names[0])
	g.log.Info("API key revoked", "id", id, "namespace", rec.Namespace, "by", p.ID)
	writeJSON(w, http.StatusOK, rec.info(g.auth.now()))
	return nil
}
