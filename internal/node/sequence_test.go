package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/apierr"
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
	if _, err := e.c.PutSequence(ctx, "pipeline", []client.StepRef{{Name: "echo"}, {Name: "sha"}, {Name: "echo"}}); err != nil {
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
	vs, err := v.VerifyChain(res.Chain, receipt.Expect{}, receipt.Expect{})
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
	swapped := []*receipt.Signed{res.Chain[1], res.Chain[0], res.Chain[2]}
	if _, err := v.VerifyChain(swapped, receipt.Expect{}, receipt.Expect{}); !errors.Is(err, receipt.ErrBrokenChain) {
		t.Fatalf("swapped chain: %v", err)
	}
	if _, err := v.VerifyChain([]*receipt.Signed{res.Chain[0], res.Chain[2]}, receipt.Expect{}, receipt.Expect{}); !errors.Is(err, receipt.ErrBrokenChain) {
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
	if _, err := e.c.PutSequence(ctx, "broken", []client.StepRef{{Name: "echo"}, {Name: "boom"}, {Name: "echo"}}); err != nil {
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
		if _, err := e.c.PutSequence(ctx, "s", c.steps); !errors.As(err, &ce) || ce.Code != string(c.code) {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := e.c.PutSequence(ctx, "echo", []client.StepRef{{Name: "echo"}}); !errors.As(err, &ce) || ce.Code != string(apierr.Conflict) {
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
