package node_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// sealAs seals input to the function as caller (nil: anonymous), the way
// anyone holding the function's public key can: the gateway, a host on
// the bus.
func (s *sealer) sealAs(caller ed25519.PrivateKey, p seal.Payload) (wire.SealedRequest, *seal.ClientContext) {
	s.t.Helper()
	cc, err := seal.SealRequest(s.fc.HPKEKey, seal.Info(s.fc.Namespace, s.fc.Name, s.fc.Version, s.fc.CodeHash), p, caller, false)
	if err != nil {
		s.t.Fatal(err)
	}
	return wire.SealedRequest{Mode: wire.ModeHPKE, Version: s.fc.Version, Enc: cc.Enc, Ciphertext: cc.Ciphertext}, cc
}

// refusedWithReceipt posts a sealed request and checks that it is refused
// with code and, for a refusal by the worker, a receipt that says so and
// names caller (nil: anonymous).
func (e *env) refusedWithReceipt(what, name string, sr wire.SealedRequest, code apierr.Code, caller ed25519.PrivateKey) {
	e.t.Helper()
	status, body := e.post("/v1/functions/"+name+"/invoke", wire.SealedContentType, e.n.Token, mustJSON(sr))
	if body.Code != code || status != code.Status() {
		e.t.Fatalf("%s: HTTP %d %s (%s), want %s", what, status, body.Code, body.Message, code)
	}
	if code != apierr.CallerNotAuthorised {
		return
	}
	a, err := e.c.Attest(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	want := "-"
	if caller != nil {
		want = certs.CallerHash(caller.Public().(ed25519.PublicKey))
	}
	v, err := receipt.Verify(body.Receipt, a.IdentityKey, receipt.Expect{Function: name, Caller: want,
		RequestHash: seal.RequestHash(sr.Mode, sr.Enc, nil, sr.Ciphertext)})
	if err != nil || v.Receipt.Status != string(apierr.CallerNotAuthorised) {
		e.t.Fatalf("%s: the refusal's receipt: %v", what, err)
	}
}

// TestAuthorityAttacks is the attack table of issue 15: each way a host
// that does not hold an authorised caller's key may try to call a
// confidential function is refused, inside the TEE, with its own code, and
// the node keeps serving.
func TestAuthorityAttacks(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("kv", fixture(t, "kv.wasm"), func(m *bundle.Manifest) { m.ABI = bundle.ABIReactor; m.Capabilities.State = true })
	e.deploy("open", fixture(t, "echo.wasm"), func(m *bundle.Manifest) { m.Confidential = bundle.ConfidentialOptional })
	if c, _, err := kvInvoke(t, e.c, "kv", kvReq('p', "balance", "100")); err != nil || c != 0 {
		t.Fatalf("the owner writes its state: %d %v", c, err)
	}
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	s := e.sealer("echo", 0)

	t.Run("gateway seals its own request", func(t *testing.T) {
		sr, _ := s.sealAs(nil, seal.NewPayload([]byte("host input"), time.Now()))
		e.refusedWithReceipt("anonymous", "echo", sr, apierr.CallerNotAuthorised, nil)
		sr, _ = s.sealAs(hostKey, seal.NewPayload([]byte("host input"), time.Now()))
		e.refusedWithReceipt("signed by the host's key", "echo", sr, apierr.CallerNotAuthorised, hostKey)
	})
	t.Run("replays a signed request", func(t *testing.T) {
		sr, _ := s.sealAs(e.owner, seal.NewPayload([]byte("once"), time.Now()))
		if status, body := e.post("/v1/functions/echo/invoke", wire.SealedContentType, e.n.Token, mustJSON(sr)); status != http.StatusOK {
			t.Fatalf("the owner's request: HTTP %d %s", status, body.Code)
		}
		e.refusedWithReceipt("replayed", "echo", sr, apierr.Replay, nil)
	})
	t.Run("swaps the caller signature onto another request", func(t *testing.T) {
		// The owner's signature of one request (one encapsulation), put in
		// another request with the same nonce, time and input; and a
		// signature of something else.
		p := seal.NewPayload([]byte("same input"), time.Now())
		_, cc := s.sealAs(e.owner, p)
		info := seal.Info(s.fc.Namespace, s.fc.Name, s.fc.Version, s.fc.CodeHash)
		for _, sig := range [][]byte{ed25519.Sign(e.owner, seal.CallerMessage(info, cc.Enc, p)), ed25519.Sign(e.owner, []byte("something else"))} {
			q := p
			q.Caller, q.Signature = e.owner.Public().(ed25519.PublicKey), sig
			enc, ct, err := seal.SealTo(s.fc.HPKEKey, info, q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			sr := wire.SealedRequest{Mode: wire.ModeHPKE, Version: s.fc.Version, Enc: enc, Ciphertext: ct}
			e.refusedWithReceipt("another request's signature", "echo", sr, apierr.CallerSignature, nil)
		}
	})
	t.Run("downgrades the suite", func(t *testing.T) {
		// The certificate names the post-quantum suite; a gateway that
		// rewrites it to X25519 breaks the coordinator's signature.
		down, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner), client.WithHTTPClient(&http.Client{
			Transport: rewriteCert{http.DefaultTransport, func(body map[string]any) { body["suite"] = map[string]int{"kem": 0x20, "kdf": 1, "aead": 1} }},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := down.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{}); !errors.Is(err, client.ErrVerification) {
			t.Fatalf("a certificate whose suite was rewritten: %v", err)
		}
		if fn, err := e.c.Function(ctx, "echo", 0); err != nil || fn.Suite != "MLKEM768-X25519" {
			t.Fatalf("the function's suite: %+v %v", fn, err)
		}
		// A request sealed with X25519 to the function does not open.
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		enc, ct, err := seal.SealTo(k.PublicKey().Bytes(), seal.Info(s.fc.Namespace, s.fc.Name, s.fc.Version, s.fc.CodeHash), seal.NewPayload([]byte("x"), time.Now()).Encode())
		if err != nil {
			t.Fatal(err)
		}
		e.refusedWithReceipt("sealed with X25519", "echo", wire.SealedRequest{Mode: wire.ModeHPKE, Version: s.fc.Version, Enc: enc, Ciphertext: ct}, apierr.DecryptFailed, nil)
	})
	t.Run("plaintext to a function whose policy is owner", func(t *testing.T) {
		_, err := e.c.Invoke(ctx, "open", []byte("x"), client.InvokeOptions{Plaintext: true})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != string(apierr.CallerNotAuthorised) || ce.Receipt == nil || ce.Receipt.Trust != receipt.TrustGatewayTrusted {
			t.Fatalf("plaintext call: %v", err)
		}
	})
	t.Run("invokes a stateful function to read its state", func(t *testing.T) {
		ks := e.sealer("kv", 0)
		sr, _ := ks.sealAs(hostKey, seal.NewPayload(kvReq('g', "balance", ""), time.Now()))
		e.refusedWithReceipt("read state", "kv", sr, apierr.CallerNotAuthorised, hostKey)
		sr, _ = ks.sealAs(nil, seal.NewPayload(kvReq('p', "balance", "0"), time.Now()))
		e.refusedWithReceipt("write state", "kv", sr, apierr.CallerNotAuthorised, nil)
		if c, v, err := kvInvoke(t, e.c, "kv", kvReq('g', "balance", "")); err != nil || c != 3 || string(v) != "100" {
			t.Fatalf("the owner's state after the attempts: %d %q %v", c, v, err)
		}
	})
	t.Run("anonymous async and sequence calls", func(t *testing.T) {
		anon, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy))
		if err != nil {
			t.Fatal(err)
		}
		p, err := anon.InvokeAsync(ctx, "echo", []byte("queued"), client.AsyncOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = wait(t, anon, p)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != string(apierr.CallerNotAuthorised) || ce.Receipt == nil {
			t.Fatalf("anonymous async call: %v", err)
		}
		if _, err := e.c.PutSequence(ctx, "pipe", []client.StepRef{{Name: "open"}, {Name: "echo"}}, e.owner); err != nil {
			t.Fatal(err)
		}
		if _, err := anon.InvokeSequence(ctx, "pipe", []byte("x")); !errors.As(err, &ce) || ce.Code != string(apierr.CallerNotAuthorised) {
			t.Fatalf("anonymous sequence call: %v", err)
		}
	})
	// Still serving, and every receipt names the caller.
	res, err := e.c.Invoke(ctx, "echo", []byte("after"), client.InvokeOptions{})
	if err != nil || string(res.Output) != "after" || res.Receipt.Caller != e.c.CallerHash() {
		t.Fatalf("the owner after the attacks: %v", err)
	}
}

// TestInvokerPolicyUpdate: the owner changes who may invoke without
// deploying; workers apply the certified policy within seconds, to every
// version and to open sessions; nobody else can change it, or replay an
// old change; a deploy that states invokers changes it too.
func TestInvokerPolicyUpdate(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	_, friend, _ := ed25519.GenerateKey(rand.Reader)
	fc, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithCallerKey(friend))
	if err != nil {
		t.Fatal(err)
	}
	call := func(c *client.Client) error {
		_, err := c.Invoke(ctx, "echo", []byte("hi"), client.InvokeOptions{})
		return err
	}
	refused := func(err error) bool {
		var ce *client.Error
		return errors.As(err, &ce) && ce.Code == string(apierr.CallerNotAuthorised)
	}
	// eventually waits for the workers to apply a policy change.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15 s", what)
			}
		}
	}

	p, err := e.c.Policy(ctx, "echo")
	if err != nil || p.Version != 1 || p.Kind != client.InvokersOwner || !p.OwnerKey.Equal(e.owner.Public()) {
		t.Fatalf("a new function's policy: %+v %v", p, err)
	}
	if err := call(fc); !refused(err) {
		t.Fatalf("a caller not in the policy: %v", err)
	}
	session, err := e.c.OpenSession(ctx, "echo", 0)
	if err != nil {
		t.Fatal(err)
	}

	// Only the owner can change it, and only forward.
	if _, err := e.c.SetPolicy(ctx, "echo", client.InvokersAny, nil, friend); err == nil || !errors.As(err, new(*client.Error)) {
		t.Fatalf("a change signed by another key: %v", err)
	}
	p, err = e.c.SetPolicy(ctx, "echo", client.InvokersKeys, []ed25519.PublicKey{friend.Public().(ed25519.PublicKey)}, e.owner)
	if err != nil || p.Version != 2 || p.Kind != client.InvokersKeys || len(p.Keys) != 1 {
		t.Fatalf("the owner's change: %+v %v", p, err)
	}
	old, _ := certs.Sign(e.owner, certs.DomainPolicyUpdate, certs.PolicyUpdate{Namespace: "default", Name: "echo", Version: 2,
		Invokers: certs.Invokers{Kind: certs.InvokersAny}, Time: time.Now()})
	if status, body := e.send(http.MethodPut, "/v1/functions/echo/policy", "application/json", e.n.Token, mustJSON(old)); body.Code != apierr.Conflict {
		t.Fatalf("an update at a spent version: HTTP %d %s", status, body.Code)
	}

	eventually("the friend is let in", func() bool { return call(fc) == nil })
	res, err := fc.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{})
	if err != nil || res.Receipt.Caller != fc.CallerHash() || res.Receipt.Caller == e.c.CallerHash() {
		t.Fatalf("the friend's receipt: %v", err)
	}
	if err := call(e.c); !refused(err) {
		t.Fatalf("the owner, no longer listed: %v", err)
	}
	// The session the owner opened is the owner's: refused too.
	if _, err := session.Invoke(ctx, []byte("x")); !refused(err) {
		t.Fatalf("the owner's session under the new policy: %v", err)
	}

	// A deploy without invokers keeps the policy; one with them sets it.
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	if p, err := e.c.Policy(ctx, "echo"); err != nil || p.Version != 2 {
		t.Fatalf("after a deploy that states no invokers: %+v %v", p, err)
	}
	e.deploy("echo", fixture(t, "echo.wasm"), openToAll)
	if p, err := e.c.Policy(ctx, "echo"); err != nil || p.Version != 3 || p.Kind != client.InvokersAny {
		t.Fatalf("after a deploy that states any: %+v %v", p, err)
	}
	anon, _ := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy))
	eventually("anyone is let in, version 1 too", func() bool {
		_, err := anon.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{Version: 1})
		return err == nil
	})
	if _, err := anon.Invoke(ctx, "echo", []byte("x"), client.InvokeOptions{Plaintext: true}); err != nil {
		t.Fatalf("plaintext under any: %v", err)
	}
}

// rewriteCert is a gateway that rewrites the body of the function
// certificates it serves.
type rewriteCert struct {
	next http.RoundTripper
	edit func(map[string]any)
}

func (r rewriteCert) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/key") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	var fi wire.FunctionInfo
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if json.Unmarshal(b, &fi) == nil {
		var body map[string]any
		if json.Unmarshal(fi.Certificate.Body, &body) == nil {
			r.edit(body)
			fi.Certificate.Body, _ = json.Marshal(body)
			b, _ = json.Marshal(fi)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// TestPolicyRollbackAndReplay: storage, which the host controls, puts back
// an older certified policy and its version number; an owner update is
// replayed. The coordinator certifies the next change past every version
// it certified before (its control journal), so workers that saw the
// newer policy take the change; and it certifies an update once.
func TestPolicyRollbackAndReplay(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	get := func() *certs.Signed {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.n.URL+"/v1/functions/echo/policy", nil)
		req.Header.Set("Authorization", "Bearer "+e.n.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var fi wire.FunctionInfo
		if err := json.NewDecoder(resp.Body).Decode(&fi); err != nil || fi.Policy == nil {
			t.Fatalf("policy: %v", err)
		}
		return fi.Policy
	}
	v1 := get()
	update := func(version int, inv certs.Invokers) []byte {
		u, _ := certs.Sign(e.owner, certs.DomainPolicyUpdate, certs.PolicyUpdate{Namespace: "default", Name: "echo", Version: version, Invokers: inv, Time: time.Now()})
		return mustJSON(u)
	}
	any2 := update(2, certs.Invokers{Kind: certs.InvokersAny})
	if status, body := e.send(http.MethodPut, "/v1/functions/echo/policy", "application/json", e.n.Token, any2); status != http.StatusOK {
		t.Fatalf("the owner's update: HTTP %d %s %s", status, body.Code, body.Message)
	}
	// The host puts policy 1 back, with its number.
	nc, err := e.n.Bus().Connect("host")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, bus.BucketRegistry)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, bus.LatestKey("default", "echo"))
	if err != nil {
		t.Fatal(err)
	}
	var latest map[string]any
	json.Unmarshal(entry.Value(), &latest)
	latest["policy"], latest["policy_version"] = v1, 1
	if _, err := kv.Put(ctx, bus.LatestKey("default", "echo"), mustJSON(latest)); err != nil {
		t.Fatal(err)
	}
	// The same update again: certified once only.
	if status, body := e.send(http.MethodPut, "/v1/functions/echo/policy", "application/json", e.n.Token, any2); body.Code != apierr.Replay {
		t.Fatalf("the update replayed: HTTP %d %s", status, body.Code)
	}
	// The owner, seeing policy 1, changes it: certified as version 3.
	p, err := e.c.SetPolicy(ctx, "echo", client.InvokersOwner, nil, e.owner)
	if err != nil || p.Version != 3 {
		t.Fatalf("the owner's change after the rollback: %+v %v", p, err)
	}
}
