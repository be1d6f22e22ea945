package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/wire"
)

// TokenPrefix starts every API key, so that leaked keys are easy to scan for.
const TokenPrefix = wire.APIKeyPrefix

// Scope says what an API key may do in its namespace. Each scope includes
// the ones before it: invoke < deploy < admin. See docs/adr/0008-api-keys.md.
type Scope string

// The scopes.
const (
	// ScopeInvoke calls functions and sequences, fires triggers, and reads
	// the namespace's functions, activations, logs and ledger entries.
	ScopeInvoke Scope = "invoke"
	// ScopeDeploy also deploys and deletes functions and defines
	// sequences, triggers and rules.
	ScopeDeploy Scope = "deploy"
	// ScopeAdmin also creates, lists and revokes the namespace's API keys
	// (every namespace's, for a platform key).
	ScopeAdmin Scope = "admin"
)

// noAuth marks a route that needs no API key.
const noAuth Scope = ""

func (s Scope) rank() int {
	switch s {
	case ScopeInvoke:
		return 1
	case ScopeDeploy:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// ParseScope parses "invoke", "deploy" or "admin".
func ParseScope(s string) (Scope, error) {
	if sc := Scope(s); sc.rank() > 0 {
		return sc, nil
	}
	return "", apierr.New(apierr.BadRequest, "scope must be invoke, deploy or admin, not %.32q", s)
}

// Principal is who an API key belongs to: the record stored under the
// SHA-256 of the key in the auth bucket.
type Principal struct {
	Namespace string `json:"namespace"`
	// Scope is the key's scope. Records from before scopes have none; see
	// normalize.
	Scope Scope `json:"scope,omitempty"`
	// Platform keys reach past their namespace: with any scope they read
	// /metrics, the cluster's status and every namespace's ledger entries;
	// with ScopeAdmin they also manage every namespace's keys, create
	// platform keys and relay manifest changes.
	Platform bool `json:"platform,omitempty"`
	// Admin is what keys were before scopes: true only for the key that
	// `up` and the coordinator write to client.env. New records set it on
	// platform admin keys, so that a gateway from before scopes still
	// treats them as it did.
	Admin   bool      `json:"admin,omitempty"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked time.Time `json:"revoked,omitzero"`
	// ID is the key's id (wire.APIKeyID), from the record's name; not stored.
	ID string `json:"-"`
}

// normalize gives a record from before scopes the powers it had: an admin
// key could create keys in every namespace (a platform admin key now), any
// other key could do everything in its namespace but that (deploy).
func (p *Principal) normalize() {
	if p.Scope != "" {
		return
	}
	if p.Admin {
		p.Scope, p.Platform = ScopeAdmin, true
	} else {
		p.Scope = ScopeDeploy
	}
}

// usable refuses a revoked or expired key, each with its own code.
func (p *Principal) usable(now time.Time) error {
	if !p.Revoked.IsZero() {
		return apierr.New(apierr.KeyRevoked, "API key %s was revoked at %s", p.ID, p.Revoked.UTC().Format(time.RFC3339))
	}
	if !p.Expires.IsZero() && !now.Before(p.Expires) {
		return apierr.New(apierr.KeyExpired, "API key %s expired at %s", p.ID, p.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// need refuses a key whose scope does not include s.
func (p *Principal) need(s Scope) error {
	if p.Scope.rank() < s.rank() {
		return apierr.New(apierr.InsufficientScope, "API key %s has scope %s; this needs %s (or a key with more)", p.ID, p.Scope, s)
	}
	return nil
}

// needPlatform refuses a key that is not a platform key.
func (p *Principal) needPlatform(what string) error {
	if !p.Platform {
		return apierr.New(apierr.Forbidden, "%s needs a platform key; API key %s is of namespace %q only", what, p.ID, p.Namespace)
	}
	return nil
}

// status is "active", "expired" or "revoked" at now.
func (p *Principal) status(now time.Time) string {
	switch apierr.CodeOf(p.usable(now)) {
	case apierr.KeyRevoked:
		return "revoked"
	case apierr.KeyExpired:
		return "expired"
	}
	return "active"
}

func (p *Principal) info(now time.Time) wire.APIKey {
	return wire.APIKey{ID: p.ID, Namespace: p.Namespace, Scope: string(p.Scope), Platform: p.Platform, Name: p.Name,
		Created: p.Created, Expires: p.Expires, Revoked: p.Revoked, Status: p.status(now)}
}

// Auth-bucket records: "tok." + hex(sha256(key)). Keys carry 256 bits of
// randomness, so a fast hash is sufficient, and nothing else of a key is
// stored.
const recordPrefix = "tok."

// tokenKey is the auth-bucket key of a token.
func tokenKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return recordPrefix + hex.EncodeToString(h[:])
}

// decodeRecord reads the record stored under name.
func decodeRecord(name string, v []byte) (*Principal, error) {
	var p Principal
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt auth record")
	}
	p.normalize()
	if h := strings.TrimPrefix(name, recordPrefix); len(h) >= wire.APIKeyIDLen {
		p.ID = h[:wire.APIKeyIDLen]
	}
	return &p, nil
}

// IssueToken creates an API key for p's namespace, with p's scope,
// platform flag and expiry, and stores only its hash. A zero Created is
// set to now. A p without a scope is read as before scopes (normalize).
func IssueToken(ctx context.Context, kv jetstream.KeyValue, p Principal) (string, error) {
	if !bundle.ValidName(p.Namespace) {
		return "", apierr.New(apierr.BadRequest, "invalid namespace %q", p.Namespace)
	}
	p.normalize()
	if p.Scope.rank() == 0 {
		return "", apierr.New(apierr.BadRequest, "invalid scope %q", p.Scope)
	}
	p.Admin = p.Platform && p.Scope == ScopeAdmin
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	if p.Created.IsZero() {
		p.Created = time.Now().UTC()
	}
	v, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	if _, err := kv.Create(ctx, tokenKey(tok), v); err != nil {
		return "", fmt.Errorf("storing token: %w", err)
	}
	return tok, nil
}

// TokenValid reports whether a token is known, not revoked and not expired.
func TokenValid(ctx context.Context, kv jetstream.KeyValue, token string) bool {
	k := tokenKey(token)
	e, err := kv.Get(ctx, k)
	if err != nil {
		return false
	}
	p, err := decodeRecord(k, e.Value())
	return err == nil && p.usable(time.Now()) == nil
}

// listRecords returns every key's record, with its name in the bucket.
func listRecords(ctx context.Context, kv jetstream.KeyValue) (map[string]*Principal, error) {
	w, err := kv.Watch(ctx, recordPrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, storeError("auth store", err)
	}
	defer w.Stop() // fails only once the subscription or its connection is closed
	out := map[string]*Principal{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, apierr.New(apierr.Unavailable, "auth store unavailable: the listing stopped")
			}
			if e == nil { // every current record was delivered
				return out, nil
			}
			if p, err := decodeRecord(e.Key(), e.Value()); err == nil {
				out[e.Key()] = p
			}
		case <-ctx.Done():
			return nil, apierr.New(apierr.Unavailable, "auth store unavailable: %v", ctx.Err())
		}
	}
}

// revokeRecord marks the record under name revoked at now (compare and
// set, so that a concurrent change is not lost) and returns it. A key
// already revoked keeps its first revocation time.
func revokeRecord(ctx context.Context, kv jetstream.KeyValue, name string, now time.Time) (*Principal, error) {
	for attempt := 0; ; attempt++ {
		e, err := kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, apierr.New(apierr.NotFound, "API key not found")
		}
		if err != nil {
			return nil, storeError("auth store", err)
		}
		p, err := decodeRecord(name, e.Value())
		if err != nil {
			return nil, err
		}
		if !p.Revoked.IsZero() {
			return p, nil
		}
		var raw map[string]json.RawMessage // keep fields this version does not know
		if err := json.Unmarshal(e.Value(), &raw); err != nil {
			return nil, apierr.New(apierr.Internal, "corrupt auth record")
		}
		p.Revoked = now.UTC()
		// A time from the clock and raw JSON re-encode: Marshal cannot fail.
		raw["revoked"], _ = json.Marshal(p.Revoked)
		v, _ := json.Marshal(raw) // see above
		_, err = kv.Update(ctx, name, v, e.Revision())
		if err == nil {
			return p, nil
		}
		if attempt >= 3 || !errors.Is(err, jetstream.ErrKeyExists) { // ErrKeyExists: changed since read
			return nil, storeError("auth store", err)
		}
	}
}

// authCacheTTL bounds how long a gateway serves a key's record from memory.
// A revocation (or any other change of the record) reaches every gateway
// within it; the revoking gateway drops its copy at once. It is well below
// the 10 s that issue 15 allows.
const authCacheTTL = 5 * time.Second

// authCache looks API keys up in the auth bucket and keeps what it found
// for authCacheTTL. Revocation and expiry are checked on every request.
type authCache struct {
	kv  jetstream.KeyValue
	now func() time.Time // time.Now unless a test sets it
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedPrincipal
}

type cachedPrincipal struct {
	p   *Principal
	exp time.Time
}

func newAuthCache(kv jetstream.KeyValue) *authCache {
	return &authCache{kv: kv, now: time.Now, ttl: authCacheTTL, m: map[string]cachedPrincipal{}}
}

// lookup returns the principal of a usable key: unknown keys are
// unauthorized, revoked and expired ones key_revoked and key_expired.
func (a *authCache) lookup(ctx context.Context, token string) (*Principal, error) {
	k := tokenKey(token)
	now := a.now()
	a.mu.Lock()
	c, ok := a.m[k]
	a.mu.Unlock()
	if !ok || !now.Before(c.exp) {
		e, err := a.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			a.evict(k)
			return nil, apierr.New(apierr.Unauthorized, "unknown API key")
		}
		if err != nil {
			return nil, storeError("auth store", err)
		}
		p, err := decodeRecord(k, e.Value())
		if err != nil {
			return nil, err
		}
		c = cachedPrincipal{p: p, exp: now.Add(a.ttl)}
		a.mu.Lock()
		if len(a.m) > 10000 {
			clear(a.m)
		}
		a.m[k] = c
		a.mu.Unlock()
	}
	if err := c.p.usable(now); err != nil {
		return nil, err
	}
	return c.p, nil
}

// evict drops the cached record stored under name.
func (a *authCache) evict(name string) {
	a.mu.Lock()
	delete(a.m, name)
	a.mu.Unlock()
}

// authenticate reads "Authorization: Bearer <key>".
func (a *authCache) authenticate(r *http.Request) (*Principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !strings.HasPrefix(tok, TokenPrefix) {
		return nil, apierr.New(apierr.Unauthorized, "missing API key: send Authorization: Bearer %s...", TokenPrefix)
	}
	return a.lookup(r.Context(), tok)
}
