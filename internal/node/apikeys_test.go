package node_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
)

// TestAnotherTenantsKey is an attack table: a key of namespace team-b goes
// after team-a's function, activations, logs and ledger entries, and keys
// that are revoked, expired or of the wrong scope go after the node. Each
// attempt is refused with its own code, and the node keeps serving team-a.
func TestAnotherTenantsKey(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	aKey, bKey := tokenOf(t, e, "team-a", "deploy"), tokenOf(t, e, "team-b", "deploy")
	a := &env{t: t, n: e.n, c: clientOf(t, e, aKey), owner: e.owner, http: e.http, bus: e.bus, dir: e.dir, ns: "team-a"}
	b := &env{t: t, n: e.n, c: clientOf(t, e, bKey), owner: e.owner, http: e.http, bus: e.bus, dir: e.dir, ns: "team-b"}
	a.deploy("echo", fixture(t, "echo.wasm"), nil)
	res, err := a.c.Invoke(ctx, "echo", []byte("a's input"), client.InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.c.InvokeAsync(ctx, "echo", []byte("a's job"), client.AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := a.c.WaitActivation(wctx, p, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// team-a's receipt is in a checkpoint, which team-a's key proves.
	size := waitIncluded(t, a.c, res.SignedReceipt)
	entry, _ := res.SignedReceipt.Entry()
	entryPath := "/v1/ledger/log/" + layout.EntriesPath(0, layout.PartialTileSize(0, 0, size))
	if size >= layout.EntryBundleWidth {
		t.Fatalf("the log has %d entries; the test reads bundle 0", size)
	}
	code := func(err error) string {
		var ce *client.Error
		if errors.As(err, &ce) {
			return ce.Code
		}
		return "(" + err.Error() + ")"
	}
	raw := func(method, path, key string) string {
		st, eb := e.send(method, path, "", key, nil)
		if st < 300 {
			return ""
		}
		return string(eb.Code)
	}
	attacks := []struct {
		name string
		do   func() string
		want apierr.Code
	}{
		{"team-b invokes team-a's function", func() string {
			_, err := b.c.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
			return code(err)
		}, apierr.NotFound},
		{"team-b deploys a bundle signed for team-a", func() string {
			_, err := b.c.Deploy(ctx, "echo", a.build("echo", fixture(t, "echo.wasm"), nil))
			return code(err)
		}, apierr.BundleSignature},
		{"team-b reads team-a's activation", func() string {
			_, err := b.c.Activation(ctx, p.ActivationID)
			return code(err)
		}, apierr.NotFound},
		{"team-b reads team-a's activation result", func() string {
			return raw("GET", "/v1/activations/"+p.ActivationID+"/result", bKey)
		}, apierr.NotFound},
		{"team-b reads team-a's activation logs", func() string {
			_, _, err := b.c.ActivationLogs(ctx, p.ActivationID, nil)
			return code(err)
		}, apierr.NotFound},
		{"team-b reads team-a's activation through OpenWhisk", func() string {
			return raw("GET", "/api/v1/namespaces/team-a/activations/"+p.ActivationID, bKey)
		}, apierr.Forbidden},
		{"team-b looks team-a's receipt up in the ledger", func() string {
			_, _, err := b.c.VerifyInclusion(ctx, res.SignedReceipt)
			return code(err)
		}, apierr.Forbidden},
		{"team-b reads the ledger entries of team-a", func() string {
			return raw("GET", entryPath, bKey)
		}, apierr.Forbidden},
		{"team-b reads /metrics", func() string {
			return raw("GET", "/metrics", bKey)
		}, apierr.Forbidden},
		{"team-b creates a key for team-a", func() string {
			_, err := b.c.CreateAPIKey(ctx, client.APIKeyOptions{Scope: "invoke", Namespace: "team-a"})
			return code(err)
		}, apierr.InsufficientScope},
		{"team-b's admin key creates a key for team-a", func() string {
			_, err := clientOf(t, e, tokenOf(t, e, "team-b", "admin")).CreateAPIKey(ctx, client.APIKeyOptions{Scope: "invoke", Namespace: "team-a"})
			return code(err)
		}, apierr.Forbidden},
		{"team-b's admin key revokes team-a's key", func() string {
			_, err := clientOf(t, e, tokenOf(t, e, "team-b", "admin")).RevokeAPIKey(ctx, aKey)
			return code(err)
		}, apierr.NotFound},
		{"an invoke key of team-a deploys", func() string {
			_, err := clientOf(t, e, tokenOf(t, e, "team-a", "invoke")).Deploy(ctx, "echo", a.build("echo", fixture(t, "echo.wasm"), nil))
			return code(err)
		}, apierr.InsufficientScope},
		{"a revoked key of team-a invokes", func() string {
			k := tokenOf(t, e, "team-a", "invoke")
			if _, err := e.c.RevokeAPIKey(ctx, k); err != nil {
				t.Fatal(err)
			}
			_, err := clientOf(t, e, k).Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
			return code(err)
		}, apierr.KeyRevoked},
		{"an expired key of team-a invokes", func() string {
			k, err := e.c.CreateAPIKey(ctx, client.APIKeyOptions{Scope: "invoke", Namespace: "team-a", Expires: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(k.Expires) + 10*time.Millisecond)
			_, err = clientOf(t, e, k.Key).Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
			return code(err)
		}, apierr.KeyExpired},
	}
	for _, at := range attacks {
		if got := at.do(); got != string(at.want) {
			t.Errorf("%s: got %s, want %s", at.name, got, at.want)
		}
		// The node still serves team-a.
		if out, err := a.c.Invoke(ctx, "echo", []byte("still here"), client.InvokeOptions{}); err != nil || string(out.Output) != "still here" {
			t.Fatalf("after %q: team-a's invocation: %v", at.name, err)
		}
	}
	// What team-b may read of the ledger: the checkpoint and the hash tiles.
	if c := raw("GET", "/v1/ledger/log/checkpoint", bKey); c != "" {
		t.Errorf("team-b reading the checkpoint: %s", c)
	}
	if c := raw("GET", "/v1/ledger/log/"+layout.TilePath(0, 0, layout.PartialTileSize(0, 0, size)), bKey); c != "" {
		t.Errorf("team-b reading a hash tile: %s", c)
	}
	// team-a reads its own entries, and the platform key everything.
	st, _ := e.send("GET", entryPath, "", aKey, nil)
	if st != http.StatusOK {
		t.Errorf("team-a reading a bundle of its own entries: %d", st)
	}
	if st, body := getWithKey(t, e.n.URL+entryPath, e.n.Token); st != http.StatusOK || !bytes.Contains(body, entry) {
		t.Errorf("the platform key reading entry bundle 0: %d", st)
	}
	if _, _, err := e.c.VerifyInclusion(ctx, res.SignedReceipt); err != nil {
		t.Errorf("the platform key proving team-a's receipt: %v", err)
	}
}

// waitIncluded waits until c proves s's inclusion and returns the size of
// the checkpoint it was proven in.
func waitIncluded(t *testing.T, c *client.Client, s *client.SignedReceipt) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, cp, err := c.VerifyInclusion(context.Background(), s)
		if err == nil {
			return cp.Size
		}
		if !errors.Is(err, client.ErrNotLogged) || time.Now().After(deadline) {
			t.Fatalf("inclusion: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tokenOf creates a key of ns with scope, with the node's platform key.
func tokenOf(t *testing.T, e *env, ns, scope string) string {
	t.Helper()
	k, err := e.c.CreateAPIKey(context.Background(), client.APIKeyOptions{Scope: scope, Namespace: ns, Name: ns + "-" + scope})
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

// clientOf is a client of e's node with key, and e's owner as caller.
func clientOf(t *testing.T, e *env, key string) *client.Client {
	t.Helper()
	c, err := client.New(e.n.URL, key, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
