package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
)

// OpenWhiskUUID is the "uuid" half of the OpenWhisk credential of an API
// key: derived from the key, so it needs no storage, and checked on every
// request so that a credential is the pair, as in OpenWhisk.
func OpenWhiskUUID(token string) string {
	h := sha256.Sum256([]byte("cloister/v1/openwhisk-uuid\x00" + token))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40 // version 4 layout
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// OpenWhiskAuth is the AUTH value (uuid:key) of .wskprops for an API key.
func OpenWhiskAuth(token string) string { return OpenWhiskUUID(token) + ":" + token }

// owAuthenticate reads OpenWhisk's basic auth (uuid:key) or a Cloister
// bearer key, then maps the path's {ns} ("_" is the key's own namespace).
func (g *Gateway) owAuthenticate(r *http.Request) (*Principal, error) {
	var p *Principal
	if user, key, ok := r.BasicAuth(); ok {
		if !strings.HasPrefix(key, TokenPrefix) || subtle.ConstantTimeCompare([]byte(user), []byte(OpenWhiskUUID(key))) != 1 {
			return nil, apierr.New(apierr.Unauthorized, "The supplied authentication is invalid")
		}
		var err error
		if p, err = g.auth.lookup(r.Context(), key); err != nil {
			if apierr.CodeOf(err) == apierr.Unauthorized {
				return nil, apierr.New(apierr.Unauthorized, "The supplied authentication is invalid")
			}
			return nil, err
		}
	} else if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		var err error
		if p, err = g.auth.authenticate(r); err != nil {
			return nil, err
		}
	} else {
		return nil, apierr.New(apierr.Unauthorized, "The resource requires authentication, which was not supplied with the request")
	}
	if ns := r.PathValue("ns"); ns != "" && ns != "_" && ns != p.Namespace {
		return nil, apierr.New(apierr.Forbidden, "The supplied authentication is not authorized to access '%s'.", ns)
	}
	return p, nil
}

// deployKeys holds the gateway's per-namespace deploy keys: the owner key
// of bundles the gateway builds from an OpenWhisk client's source. The seed
// lives in the OpenWhisk bucket, untrusted storage like the gateway itself;
// functions it signs say deployer "gateway-trusted" in their manifest.
type deployKeys struct {
	mu sync.Mutex
	m  map[string]ed25519.PrivateKey
}

func deployKeyName(ns string) string { return "k." + ns }

// key returns the namespace's deploy key, creating it on first use. Two
// gateways racing both end with the key that was stored first.
func (d *deployKeys) key(ctx context.Context, kv jetstream.KeyValue, ns string) (ed25519.PrivateKey, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k, ok := d.m[ns]; ok {
		return k, nil
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	if _, err := kv.Create(ctx, deployKeyName(ns), seed); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, storeError("OpenWhisk store", err)
		}
		e, err := kv.Get(ctx, deployKeyName(ns))
		if err != nil {
			return nil, storeError("OpenWhisk store", err)
		}
		if len(e.Value()) != ed25519.SeedSize {
			return nil, apierr.New(apierr.Internal, "the deploy key of namespace %q in the OpenWhisk store is corrupt", ns)
		}
		seed = e.Value()
	}
	k := ed25519.NewKeyFromSeed(seed)
	if d.m == nil {
		d.m = map[string]ed25519.PrivateKey{}
	}
	d.m[ns] = k
	return k, nil
}
