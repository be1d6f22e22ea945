package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/wire"
)

func example(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", name, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSequenceThreeSteps runs echo → sha256 → echo in one worker and
// verifies the receipt chain: one receipt per step, each naming the one
// before, linked input to output, and the secret never leaves in plaintext.
func TestSequenceThreeSteps(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("sha", example(t, "sha256-c"), nil)
	if _, err := e.c.PutSequence(ctx, "pipeline", []client.StepRef{{Name: "echo"}, {Name: "sha"}, {Name: "echo"}}, e.owner); err != nil {
		t.Fatal(err)
	}
	secret := randomMarker()
	res, err := e.c.InvokeSequence(ctx, "pipeline", secret)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(secret)
	if want := hex.EncodeToString(sum[:]); !bytes.HasPrefix(res.Output, []byte(want)) {
		t.Fatalf("got %q, want the sha256 of the input %s", res.Output, want)
	}
	if len(res.Chain) != 3 {
		t.Fatalf("chain of %d receipts", len(res.Chain))
	}
	a, err := e.c.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := receipt.NewVerifier(a.IdentityKey)
	chain := make([]*receipt.Signed, len(res.Chain))
	for i, s := range res.Chain {
		chain[i] = &receipt.Signed{Receipt: s.Receipt, Signature: s.Signature, WorkerCert: certs.Signed(s.WorkerCert)}
	}
	vs, err := v.VerifyChain(chain, receipt.Expect{}, receipt.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"echo", "sha", "echo"} {
		r := vs[i].Receipt
		if r.Function != want || r.Step != i+1 || r.Sequence != "pipeline" || r.Mode != wire.ModeSequence || r.Status != "ok" {
			t.Fatalf("receipt %d: %+v", i+1, r)
		}
	}
	if vs[0].Receipt.Prev != "" || vs[1].Receipt.Prev == "" {
		t.Fatal("prev links missing")
	}
	// A reordered or truncated chain does not verify.
	swapped := []*receipt.Signed{chain[1], chain[0], chain[2]}
	if _, err := v.VerifyChain(swapped, receipt.Expect{}, receipt.Expect{}); !errors.Is(err, receipt.ErrBrokenChain) {
		t.Fatalf("swapped chain: %v", err)
	}
	if _, err := v.VerifyChain([]*receipt.Signed{chain[0], chain[2]}, receipt.Expect{}, receipt.Expect{}); !errors.Is(err, receipt.ErrBrokenChain) {
		t.Fatalf("chain without step 2: %v", err)
	}
	if leaks(e.http.bytes(), secret) || leaks(e.bus.bytes(), secret) {
		t.Fatal("the sequence's plaintext reached the gateway or the bus")
	}

	// The same sequence, queued.
	p, err := e.c.InvokeSequenceAsync(ctx, "pipeline", secret, "")
	if err != nil {
		t.Fatal(err)
	}
	ares, err := wait(t, e.c, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ares.Output, res.Output) || len(ares.Chain) != 3 {
		t.Fatalf("async sequence: %q, %d receipts", ares.Output, len(ares.Chain))
	}
}

// TestSequenceFailsAtStep2 shows a failure mid-way: the answer names the
// step and its code, and carries the verified chain up to the failure.
func TestSequenceFailsAtStep2(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("boom", fixture(t, "trap.wasm"), nil)
	if _, err := e.c.PutSequence(ctx, "broken", []client.StepRef{{Name: "echo"}, {Name: "boom"}, {Name: "echo"}}, e.owner); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.InvokeSequence(ctx, "broken", []byte("input"))
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a client error", err)
	}
	if ce.Code != string(apierr.SequenceStepFailed) || ce.Step != 2 || ce.StepCode != string(apierr.FunctionTrap) || ce.Status != 422 {
		t.Fatalf("got %+v", ce)
	}
	if len(ce.Chain) != 2 || ce.Receipt == nil || ce.Receipt.Status != string(apierr.FunctionTrap) || ce.Chain[0].Status != "ok" {
		t.Fatalf("chain: %+v", ce.Chain)
	}
	// Queued, the activation records the failed step too.
	p, err := e.c.InvokeSequenceAsync(ctx, "broken", []byte("input"), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = wait(t, e.c, p)
	if !errors.As(err, &ce) || ce.Step != 2 || ce.StepCode != string(apierr.FunctionTrap) {
		t.Fatalf("async: %v", err)
	}
	a, err := e.c.Activation(ctx, p.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != wire.StatusDeveloperError || a.Response.Step != 2 || len(a.Receipts) != 2 {
		t.Fatalf("record: %+v", a)
	}
}

// TestSequenceBadInput checks the stable codes of bad sequence requests.
func TestSequenceBadInput(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	var ce *client.Error
	for _, c := range []struct {
		name  string
		steps []client.StepRef
		code  apierr.Code
	}{
		{"no steps", nil, apierr.BadRequest},
		{"unknown step", []client.StepRef{{Name: "nope"}}, apierr.NotFound},
		{"bad step name", []client.StepRef{{Name: "Bad Name"}}, apierr.BadRequest},
		{"too many steps", make([]client.StepRef, 17), apierr.BadRequest},
	} {
		if _, err := e.c.PutSequence(ctx, "s", c.steps, nil); !errors.As(err, &ce) || ce.Code != string(c.code) {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := e.c.PutSequence(ctx, "echo", []client.StepRef{{Name: "echo"}}, e.owner); !errors.As(err, &ce) || ce.Code != string(apierr.Conflict) {
		t.Errorf("sequence named like a function: %v", err)
	}
	if _, err := e.c.InvokeSequence(ctx, "missing", nil); !errors.As(err, &ce) || ce.Code != string(apierr.NotFound) {
		t.Errorf("unknown sequence: %v", err)
	}
	st, eb := e.post("/v1/sequences/missing/invoke", "application/octet-stream", e.n.Token, []byte("x"))
	if st != 403 || eb.Code != apierr.ConfidentialRequired {
		t.Errorf("plaintext sequence request: %d %s", st, eb.Code)
	}
}

// TestSequenceDefinitionSigned: the owner signs a sequence's definition,
// and a client runs it only as signed, with every step a function of that
// owner. The host, which stores the definition, can neither change its
// steps nor pass off another owner's function as one; stripping the
// signature shows in the result, and a client that pins owner keys
// refuses an unsigned definition.
func TestSequenceDefinitionSigned(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.deploy("echo", fixture(t, "echo.wasm"), nil)
	e.deploy("sha", example(t, "sha256-c"), nil)
	def, err := e.c.PutSequence(ctx, "pipe", []client.StepRef{{Name: "sha"}, {Name: "echo"}}, e.owner)
	if err != nil {
		t.Fatal(err)
	}
	ownerPub := e.owner.Public().(ed25519.PublicKey)
	if !ownerPub.Equal(ed25519.PublicKey(def.Signer)) {
		t.Fatalf("stored signer %x", def.Signer)
	}
	res, err := e.c.InvokeSequence(ctx, "pipe", []byte("abc"))
	if err != nil || !ownerPub.Equal(res.SequenceSigner) {
		t.Fatalf("signed sequence: %v, signer %x", err, res.SequenceSigner)
	}
	pinned, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithOwnerKeys(ownerPub), client.WithCallerKey(e.owner))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pinned.InvokeSequence(ctx, "pipe", []byte("abc")); err != nil {
		t.Fatalf("signed sequence, owner pinned: %v", err)
	}

	// The host rewrites the stored definition.
	nc, err := e.n.Bus().Connect("tamperer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, bus.BucketSequences)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(edit func(*client.Sequence)) {
		t.Helper()
		s := *def
		s.Steps = slices.Clone(def.Steps)
		edit(&s)
		b, _ := json.Marshal(s)
		if _, err := kv.Put(ctx, "s.default.pipe", b); err != nil {
			t.Fatal(err)
		}
	}
	for what, edit := range map[string]func(*client.Sequence){
		"a step replaced": func(s *client.Sequence) { s.Steps[0].Name = "echo" },
		"steps swapped":   func(s *client.Sequence) { s.Steps[0], s.Steps[1] = s.Steps[1], s.Steps[0] },
		"a step dropped":  func(s *client.Sequence) { s.Steps = s.Steps[:1] },
		"version pinned":  func(s *client.Sequence) { s.Steps[1].Version = 1 },
		"another signer":  func(s *client.Sequence) { s.Signer = bytes.Repeat([]byte{1}, 32) },
	} {
		tamper(edit)
		if _, err := e.c.InvokeSequence(ctx, "pipe", []byte("abc")); !errors.Is(err, client.ErrVerification) {
			t.Errorf("%s: got %v, want a verification error", what, err)
		}
	}
	// Stripped: an unpinned client runs it and says so; a pinned one refuses.
	tamper(func(s *client.Sequence) { s.Steps[0].Name = "echo"; s.Signer, s.Signature = nil, nil })
	if res, err := e.c.InvokeSequence(ctx, "pipe", []byte("abc")); err != nil || res.SequenceSigner != nil || string(res.Output) != "abc" {
		t.Errorf("unsigned definition, no pins: %v %q, signer %x", err, res.Output, res.SequenceSigner)
	}
	if _, err := pinned.InvokeSequence(ctx, "pipe", []byte("abc")); !errors.Is(err, client.ErrVerification) {
		t.Errorf("unsigned definition, owner pinned: got %v, want a verification error", err)
	}
	if _, err := pinned.InvokeSequenceAsync(ctx, "pipe", []byte("abc"), ""); !errors.Is(err, client.ErrVerification) {
		t.Errorf("unsigned definition queued, owner pinned: got %v, want a verification error", err)
	}
	tamper(func(*client.Sequence) {})

	// A step's function is later deployed by someone else: the owner's
	// signature does not extend to it.
	other := &env{t: t, n: e.n, c: e.c}
	_, other.owner, _ = ed25519.GenerateKey(rand.Reader)
	other.deploy("echo", fixture(t, "echo.wasm"), nil)
	fresh, err := client.New(e.n.URL, e.n.Token, clientPolicy(e.n.Policy), client.WithCallerKey(e.owner)) // no cached certificate of echo's latest
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.InvokeSequence(ctx, "pipe", []byte("abc")); !errors.Is(err, client.ErrVerification) {
		t.Errorf("a step of another owner: got %v, want a verification error", err)
	}
	// The gateway refuses such a definition, and a signature that does not
	// verify, at once.
	var ce *client.Error
	if _, err := e.c.PutSequence(ctx, "pipe2", []client.StepRef{{Name: "sha"}, {Name: "echo"}}, e.owner); !errors.As(err, &ce) || ce.Code != string(apierr.BundleSignature) {
		t.Errorf("a step of another owner at creation: got %v, want bundle_signature", err)
	}
	body := fmt.Sprintf(`{"steps":[{"name":"sha"}],"signer":%q,"signature":%q}`,
		base64.StdEncoding.EncodeToString(ownerPub), base64.StdEncoding.EncodeToString(make([]byte, 64)))
	if st, eb := e.send(http.MethodPut, "/v1/sequences/pipe3", "application/json", e.n.Token, []byte(body)); st != 422 || eb.Code != apierr.BundleSignature {
		t.Errorf("a bad signature: %d %s", st, eb.Code)
	}
}
