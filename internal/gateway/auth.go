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
)

// TokenPrefix starts every API key, so that leaked keys are easy to scan for.
const TokenPrefix = "clk_"

// Principal is who an API key belongs to.
type Principal struct {
	Namespace string    `json:"namespace"`
	Admin     bool      `json:"admin,omitempty"`
	Name      string    `json:"name,omitempty"`
	Created   time.Time `json:"created"`
}

// tokenKey is the auth-bucket key of a token: only its sha256 is stored.
// Tokens carry 256 bits of randomness, so a fast hash is sufficient.
func tokenKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return "tok." + hex.EncodeToString(h[:])
}

// IssueToken creates an API key for a namespace and stores its hash.
func IssueToken(ctx context.Context, kv jetstream.KeyValue, p Principal) (string, error) {
	if !bundle.ValidName(p.Namespace) {
		return "", apierr.New(apierr.BadRequest, "invalid namespace %q", p.Namespace)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	p.Created = time.Now().UTC()
	v, _ := json.Marshal(p)
	if _, err := kv.Create(ctx, tokenKey(tok), v); err != nil {
		return "", fmt.Errorf("storing token: %w", err)
	}
	return tok, nil
}

// TokenValid reports whether a token is known.
func TokenValid(ctx context.Context, kv jetstream.KeyValue, token string) bool {
	_, err := kv.Get(ctx, tokenKey(token))
	return err == nil
}

type authCache struct {
	kv jetstream.KeyValue
	mu sync.Mutex
	m  map[string]cachedPrincipal
}

type cachedPrincipal struct {
	p   *Principal
	exp time.Time
}

const authCacheTTL = 10 * time.Second

func (a *authCache) lookup(ctx context.Context, token string) (*Principal, error) {
	k := tokenKey(token)
	a.mu.Lock()
	c, ok := a.m[k]
	a.mu.Unlock()
	if ok && time.Now().Before(c.exp) {
		return c.p, nil
	}
	e, err := a.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, apierr.New(apierr.Unauthorized, "unknown API key")
	}
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "auth store unavailable")
	}
	var p Principal
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt auth record")
	}
	a.mu.Lock()
	if len(a.m) > 10000 {
		clear(a.m)
	}
	a.m[k] = cachedPrincipal{p: &p, exp: time.Now().Add(authCacheTTL)}
	a.mu.Unlock()
	return &p, nil
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
