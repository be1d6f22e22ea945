package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Sequence is a stored sequence definition: a function made of functions.
type Sequence struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Steps     []StepRef `json:"steps"`
	Created   time.Time `json:"created"`
	// Signer and Signature are the owner's Ed25519 key and its signature
	// of the namespace, name and steps (PutSequence). Both are absent from
	// a definition the gateway made (the OpenWhisk API); a client that
	// pins owner keys refuses those.
	Signer    []byte `json:"signer,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

func (c *Client) postJSON(ctx context.Context, path string, v any, ctype string, hdr http.Header, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.doHeader(ctx, http.MethodPost, path, b, ctype, hdr, out)
}

// PutSequence creates or replaces a sequence: a function made of the
// functions in steps (Version 0 = the latest at each invocation). Unless
// owner is nil, it signs the definition with the owner's key, which must be
// the key that signed every step's bundle; clients then run the sequence
// only as signed, and clients that pin owner keys run no other. The
// signature covers the namespace: the pinned one (WithNamespace), or else
// the one of the first step's verified function certificate.
func (c *Client) PutSequence(ctx context.Context, name string, steps []StepRef, owner ed25519.PrivateKey) (*Sequence, error) {
	body := map[string]any{"steps": steps}
	if owner != nil {
		ns := c.ns
		if ns == "" && len(steps) > 0 {
			fn, err := c.Function(ctx, steps[0].Name, steps[0].Version)
			if err != nil {
				return nil, fmt.Errorf("finding the namespace of step 1 (%s): %w", steps[0].Name, err)
			}
			ns = fn.Namespace
		}
		sig, err := bundle.SignSequence(owner, ns, name, sequenceSteps(steps))
		if err != nil {
			return nil, err
		}
		body["signer"], body["signature"] = owner.Public(), sig
	}
	b, _ := json.Marshal(body) // steps, a key and a signature: Marshal cannot fail
	var s Sequence
	if err := c.do(ctx, http.MethodPut, "/v1/sequences/"+url.PathEscape(name), b, "application/json", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// GetSequence returns a sequence definition.
func (c *Client) GetSequence(ctx context.Context, name string) (*Sequence, error) {
	var s Sequence
	if err := c.do(ctx, http.MethodGet, "/v1/sequences/"+url.PathEscape(name), nil, "", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Sequences lists the namespace's sequences.
func (c *Client) Sequences(ctx context.Context) ([]*Sequence, error) {
	var out struct {
		Sequences []*Sequence `json:"sequences"`
	}
	return out.Sequences, c.do(ctx, http.MethodGet, "/v1/sequences", nil, "", &out)
}

// DeleteSequence removes a sequence.
func (c *Client) DeleteSequence(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sequences/"+url.PathEscape(name), nil, "", nil)
}

// sealSequence resolves a sequence's steps to verified function
// certificates and seals input to the first step's key under an info that
// binds every step.
func (c *Client) sealSequence(ctx context.Context, name string, input []byte, async bool) (*Pending, wire.SealedRequest, error) {
	def, err := c.GetSequence(ctx, name)
	if err != nil {
		return nil, wire.SealedRequest{}, err
	}
	if len(def.Steps) == 0 {
		return nil, wire.SealedRequest{}, fmt.Errorf("%w: sequence %q has no steps", ErrVerification, name)
	}
	// The gateway serves the definition. Signed, it must be the owner's
	// for the namespace its steps are certified in (checked below, once
	// the certificates name it) and every step a function of that owner.
	// Unsigned, the steps are the gateway's word: the receipts show which
	// ran, and a client that pins owner keys refuses it.
	signed := def.Signer != nil || def.Signature != nil
	if !signed && len(c.owners) > 0 {
		return nil, wire.SealedRequest{}, fmt.Errorf("%w: sequence %q is not signed by an owner, and this client pins owner keys", ErrVerification, name)
	}
	p := &Pending{Kind: "sequence", Name: name, Mode: wire.ModeSequence}
	if signed {
		p.Signer = bytes.Clone(def.Signer)
	}
	info := make([]seal.SequenceStep, len(def.Steps))
	var first *Function
	for i, s := range def.Steps {
		fn, err := c.Function(ctx, s.Name, s.Version)
		if err != nil {
			return nil, wire.SealedRequest{}, fmt.Errorf("step %d (%s): %w", i+1, s.Name, err)
		}
		if signed && !fn.OwnerKey.Equal(ed25519.PublicKey(def.Signer)) {
			return nil, wire.SealedRequest{}, fmt.Errorf("%w: step %d (%s) is signed by owner %x, the sequence by %x", ErrVerification, i+1, s.Name, fn.OwnerKey, def.Signer)
		}
		if i == 0 {
			first, p.Namespace = fn, fn.Namespace
		} else if fn.Namespace != p.Namespace {
			return nil, wire.SealedRequest{}, fmt.Errorf("%w: step %d is in namespace %q, step 1 in %q", ErrVerification, i+1, fn.Namespace, p.Namespace)
		}
		info[i] = seal.SequenceStep{Name: fn.Name, Version: fn.Version, CodeHash: fn.CodeHash}
		p.Steps = append(p.Steps, StepRef{Name: fn.Name, Version: fn.Version, CodeHash: fn.CodeHash})
	}
	if signed {
		if err := c.verifySequence(p.Namespace, name, def); err != nil {
			return nil, wire.SealedRequest{}, fmt.Errorf("%w: sequence %q: %w", ErrVerification, name, err)
		}
	}
	cc, err := seal.SealRequest(first.hpkeKey, seal.SequenceInfo(async, p.Namespace, name, info), seal.NewPayload(input, c.now()), c.caller, false)
	if err != nil {
		return nil, wire.SealedRequest{}, err
	}
	steps := make([]wire.StepRef, len(p.Steps))
	for i, s := range p.Steps {
		steps[i] = wire.StepRef(s)
	}
	sr := wire.SealedRequest{Mode: wire.ModeSequence, Enc: cc.Enc, Ciphertext: cc.Ciphertext, Steps: steps}
	p.RequestHash = seal.RequestHash(sr.Mode, sr.Enc, nil, sr.Ciphertext)
	p.ResponseKey, p.Caller = cc.ResponseKey, c.expectCaller()
	return p, sr, nil
}

// InvokeSequence runs a sequence once. Every step runs in one attested
// worker; the intermediate outputs never leave it. The output is returned
// after the whole receipt chain verified: one receipt per step, each
// naming the one before.
func (c *Client) InvokeSequence(ctx context.Context, name string, input []byte) (*Result, error) {
	p, sr, err := c.sealSequence(ctx, name, input, false)
	if err != nil {
		return nil, err
	}
	var resp wire.SealedResponse
	err = c.postJSON(ctx, "/v1/sequences/"+url.PathEscape(name)+"/invoke", sr, wire.SealedContentType, nil, &resp)
	if err != nil {
		var e *apiError
		if !errors.As(err, &e) {
			return nil, withReceiptHint(err, p.RequestHash)
		}
		if e.body.Code != apierr.SequenceStepFailed {
			return nil, &Error{Status: e.status, Code: string(e.body.Code), Message: e.body.Message}
		}
		return c.finishSequence(ctx, p, nil, e.body.Receipts, false, e.body)
	}
	return c.finishSequence(ctx, p, resp.Ciphertext, resp.Receipts, true, wire.ErrorBody{})
}

// InvokeSequenceAsync queues a sequence invocation (see InvokeAsync).
func (c *Client) InvokeSequenceAsync(ctx context.Context, name string, input []byte, idempotencyKey string) (*Pending, error) {
	p, sr, err := c.sealSequence(ctx, name, input, true)
	if err != nil {
		return nil, err
	}
	var acc wire.Accepted
	if err := c.postJSON(ctx, "/v1/sequences/"+url.PathEscape(name)+"/invoke?async=true", sr, wire.SealedContentType, idemHeader(idempotencyKey), &acc); err != nil {
		return nil, withActivationHint(publicError(err))
	}
	p.ActivationID, p.Duplicate = acc.ActivationID, acc.Duplicate
	return p, nil
}

// finishSequence verifies a sequence's receipt chain against the steps the
// request was sealed for, then opens the output (success) or returns the
// failed step as *Error.
func (c *Client) finishSequence(ctx context.Context, p *Pending, ct []byte, chain []*receipt.Signed, ok bool, eb wire.ErrorBody) (*Result, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	first := p.Steps[0]
	last := receipt.Expect{}
	if ok {
		if len(chain) != len(p.Steps) {
			return nil, fmt.Errorf("%w: %d receipts for %d steps", ErrVerification, len(chain), len(p.Steps))
		}
		last.ResponseHash = seal.SHA256Hex(ct)
	} else if len(chain) == 0 || len(chain) > len(p.Steps) {
		return nil, &Error{Status: eb.Code.Status(), Code: string(eb.Code), Message: eb.Message, Step: eb.Step, StepCode: string(eb.StepCode)}
	}
	vs, err := c.receipts().VerifyChain(chain, receipt.Expect{Namespace: p.Namespace, Function: first.Name, Version: first.Version,
		CodeHash: first.CodeHash, RequestHash: p.RequestHash, Caller: p.Caller}, last)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	rcs := make([]*Receipt, len(vs))
	for i, v := range vs {
		s := p.Steps[i]
		r := v.Receipt
		if r.Sequence != p.Name || r.Function != s.Name || r.FunctionVersion != s.Version || r.CodeHash != s.CodeHash || r.Mode != wire.ModeSequence {
			return nil, fmt.Errorf("%w: receipt %d is for %s v%d of %q, not step %s v%d", ErrVerification, i+1, r.Function, r.FunctionVersion, r.Sequence, s.Name, s.Version)
		}
		rcs[i] = receiptFrom(r)
	}
	lastV := vs[len(vs)-1]
	if !ok {
		e := &Error{Status: eb.Code.Status(), Code: string(eb.Code), Message: eb.Message, Step: eb.Step, StepCode: string(eb.StepCode), Chain: rcs}
		failed := lastV.Receipt
		switch {
		case eb.Step == len(vs) && failed.Status == string(eb.StepCode):
			e.Receipt = rcs[len(rcs)-1] // the failed step ran and its receipt says how it failed
		case eb.Step == len(vs)+1 && failed.Status == "ok":
			// the failed step never ran (its input was refused)
		default:
			return nil, fmt.Errorf("%w: step %d failed with %s, but the chain ends at step %d with status %q", ErrVerification, eb.Step, eb.StepCode, len(vs), failed.Status)
		}
		return nil, e
	}
	for i, v := range vs {
		if v.Receipt.Status != "ok" {
			return nil, fmt.Errorf("%w: step %d's receipt says %q on a successful sequence", ErrVerification, i+1, v.Receipt.Status)
		}
	}
	out, err := seal.OpenSymmetric(p.ResponseKey, seal.AADResponse, []byte(p.RequestHash), ct)
	if err != nil {
		return nil, fmt.Errorf("%w: response: %w", ErrVerification, err)
	}
	pub := signedReceiptsFrom(chain)
	return &Result{Output: out, Version: lastV.Receipt.FunctionVersion, Receipt: rcs[len(rcs)-1], SignedReceipt: pub[len(pub)-1],
		Worker: workerFrom(lastV.Worker), Attestation: a, Mode: wire.ModeSequence, Chain: pub, SequenceSigner: signerKey(p.Signer)}, nil
}

// maxVerifiedSequences bounds the client's memory of verified sequence
// signatures.
const maxVerifiedSequences = 1024

// verifySequence checks the owner's signature of def, stored under name in
// namespace ns. A legacy signature, which does not cover the namespace, is
// accepted only by a client that pins no owner keys (it trusts no less
// than an unsigned definition, which such a client runs too). A signature
// that verified before is not checked again: the memory is keyed by a hash
// of everything the check read.
func (c *Client) verifySequence(ns, name string, def *Sequence) error {
	h := sha256.New()
	for _, b := range [][]byte{def.Signer, def.Signature, []byte(ns), []byte(name)} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
		h.Write(b)
	}
	for _, s := range def.Steps {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s.Name))))
		h.Write([]byte(s.Name))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(s.Version)))
	}
	var id [32]byte
	h.Sum(id[:0])
	c.mu.Lock()
	ok := c.seqs[id]
	c.mu.Unlock()
	if ok {
		return nil
	}
	err := bundle.VerifySequence(def.Signer, def.Signature, ns, name, sequenceSteps(def.Steps))
	if errors.Is(err, bundle.ErrSequenceUnbound) && len(c.owners) == 0 {
		err = nil
	}
	if err != nil {
		if errors.Is(err, bundle.ErrSequenceUnbound) {
			return fmt.Errorf("%w, and this client pins owner keys", err)
		}
		return err
	}
	c.mu.Lock()
	if c.seqs == nil || len(c.seqs) >= maxVerifiedSequences {
		c.seqs = map[[32]byte]bool{}
	}
	c.seqs[id] = true
	c.mu.Unlock()
	return nil
}

// signerKey is a sequence's signer as a key (nil: unsigned).
func signerKey(b []byte) ed25519.PublicKey {
	if b == nil {
		return nil
	}
	return ed25519.PublicKey(b)
}

// sequenceSteps are the steps as an owner signs them.
func sequenceSteps(steps []StepRef) []bundle.SequenceStep {
	out := make([]bundle.SequenceStep, len(steps))
	for i, s := range steps {
		out[i] = bundle.SequenceStep{Name: s.Name, Version: s.Version}
	}
	return out
}
