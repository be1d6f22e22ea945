package node_test

import (
	"context"
	"encoding/hex"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/tee"
)

// TestResultTokenRenewsAttestation: a client that verified the raw evidence
// renews its attestation with the coordinator's attestation-result token
// after the TTL, instead of fetching and verifying evidence again; the token
// names the coordinator's TEE, manifest and admitted workers.
func TestResultTokenRenewsAttestation(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	c, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithResultToken(), client.WithClock(clock), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := c.ResultToken(); tok != "" {
		t.Fatal("a token before the first renewal")
	}
	before := strings.Count(string(e.http.bytes()), "/v1/attestation\n")
	if before == 0 {
		t.Fatal("the raw attestation was not fetched through the gateway")
	}
	offset.Store(int64(61 * time.Second))
	if _, err := c.Attest(ctx); err != nil {
		t.Fatal(err)
	}
	tok, cl := c.ResultToken()
	if tok == "" || cl == nil {
		t.Fatal("no token after renewal")
	}
	if n := strings.Count(string(e.http.bytes()), "/v1/attestation\n"); n != before {
		t.Fatalf("the renewal fetched the raw evidence again (%d → %d)", before, n)
	}
	if cl.TEE != string(tee.KindSim) || cl.ManifestHash != a.ManifestHash || cl.Subject != hex.EncodeToString(a.IdentityKey) || len(cl.Workers) != 1 {
		t.Fatalf("claims: %+v", cl)
	}
	// A relying party that trusts the identity key verifies the token alone.
	if _, err := client.VerifyResultToken(tok, a.IdentityKey, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyResultToken(tok, a.IdentityKey, time.Now().Add(5*time.Minute)); err == nil {
		t.Fatal("an expired token verified")
	}
	if _, err := artoken.Verify(tok, make([]byte, 32), time.Now()); err == nil {
		t.Fatal("the token verified under another key")
	}
}
