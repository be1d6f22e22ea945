package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// The native API's sequences: definitions, and sealed invocations that a
// worker runs step by step.

func sequenceKey(ns, name string) string { return "s." + ns + "." + name }

// sequence reads a sequence definition from the store, as every route
// that shows, changes or runs a sequence does: what another gateway (or
// anything else) stored is seen at once.
func (g *Gateway) sequence(ctx context.Context, ns, name string) (*wire.Sequence, error) {
	return g.lookupSequence(ctx, ns, name, false)
}

// sequenceFollowed is sequence served from memory while the gateway
// follows the bucket (docs/adr/0023-followed-buckets.md), for the
// OpenWhisk invocation path, which asks on every call whether the name is
// a sequence; a change made elsewhere arrives with the watch.
func (g *Gateway) sequenceFollowed(ctx context.Context, ns, name string) (*wire.Sequence, error) {
	return g.lookupSequence(ctx, ns, name, true)
}

func (g *Gateway) lookupSequence(ctx context.Context, ns, name string, fromMemory bool) (*wire.Sequence, error) {
	if g.cfg.Async == nil {
		return nil, apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	read := g.sequences.Read
	if fromMemory {
		read = g.sequences.Get
	}
	e, err := read(ctx, sequenceKey(ns, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, apierr.New(apierr.NotFound, "sequence %q not found in namespace %q", name, ns)
	}
	if err != nil {
		return nil, storeError("sequence store", err)
	}
	var s wire.Sequence
	if err := json.Unmarshal(e.Value, &s); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt sequence record")
	}
	return &s, nil
}

// MaxSequenceSteps bounds a sequence definition (the worker's limit).
const MaxSequenceSteps = 16

func (g *Gateway) putSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	var def struct {
		Steps     []wire.StepRef `json:"steps"`
		Signer    []byte         `json:"signer"`
		Signature []byte         `json:"signature"`
	}
	if err := readDefinition(w, r, &def); err != nil {
		return err
	}
	if len(def.Steps) < 1 || len(def.Steps) > MaxSequenceSteps {
		return apierr.New(apierr.BadRequest, "a sequence has 1 to %d steps, not %d", MaxSequenceSteps, len(def.Steps))
	}
	if _, err := g.svc.functions.Latest(r.Context(), p.Namespace, name); err == nil {
		return apierr.New(apierr.Conflict, "a function named %q exists; a sequence needs a name of its own", name)
	}
	steps := make([]wire.StepRef, len(def.Steps))
	signed := make([]bundle.SequenceStep, len(def.Steps))
	for i, s := range def.Steps {
		if !bundle.ValidName(s.Name) || s.Version < 0 || s.Version > MaxVersion {
			return apierr.New(apierr.BadRequest, "step %d: invalid function name %q or version %d", i+1, s.Name, s.Version)
		}
		steps[i] = wire.StepRef{Name: s.Name, Version: s.Version}
		signed[i] = bundle.SequenceStep{Name: s.Name, Version: s.Version}
	}
	if def.Signer != nil || def.Signature != nil {
		// A definition signed without its namespace (an older cloister)
		// is refused like a bad signature: new definitions are signed for
		// the namespace they are stored in.
		if err := bundle.VerifySequence(def.Signer, def.Signature, p.Namespace, name, signed); err != nil {
			return apierr.Wrap(apierr.BundleSignature, err)
		}
	}
	for i, s := range steps {
		rec, err := g.svc.lookup(r.Context(), p.Namespace, s.Name, s.Version)
		if err != nil {
			return err
		}
		// The client checks this again, against the certificates; here it
		// gives the owner a clear error at once.
		if def.Signer != nil && !bytes.Equal(rec.Function.OwnerKey, def.Signer) {
			return apierr.New(apierr.BundleSignature, "step %d: function %q is signed by another owner than the sequence", i+1, s.Name)
		}
	}
	seq := wire.Sequence{Namespace: p.Namespace, Name: name, Steps: steps, Created: time.Now().UTC(), Signer: def.Signer, Signature: def.Signature}
	b, _ := json.Marshal(seq) // plain data: Marshal cannot fail
	if _, err := g.sequences.Put(r.Context(), sequenceKey(p.Namespace, name), b); err != nil {
		return storeError("sequence store", err)
	}
	writeJSON(w, http.StatusOK, seq)
	return nil
}

func (g *Gateway) getSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	s, err := g.sequence(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

func (g *Gateway) deleteSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	if _, err := g.sequence(r.Context(), p.Namespace, name); err != nil {
		return err
	}
	if err := g.sequences.Delete(r.Context(), sequenceKey(p.Namespace, name)); err != nil {
		return storeError("sequence store", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
	return nil
}

func (g *Gateway) listSequences(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	_, out, err := g.namespaceSequences(r.Context(), p.Namespace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sequences": out})
	return nil
}

// namespaceSequences returns the names of the namespace's sequences, in
// order, and their definitions. It lists the bucket's subjects (bus.Keys),
// which misses no sequence while others change, and reads each key, which
// leaves out the deleted ones (their delete markers are listed too) and
// any record that does not decode.
func (g *Gateway) namespaceSequences(ctx context.Context, ns string) ([]string, []*wire.Sequence, error) {
	prefix := sequenceKey(ns, "")
	keys, err := bus.Keys(ctx, g.cfg.Async.JS, g.cfg.Async.Sequences, prefix+"*")
	if err != nil {
		return nil, nil, storeError("sequence store", err)
	}
	slices.Sort(keys)
	names, defs := []string{}, []*wire.Sequence{}
	for _, k := range keys {
		name := strings.TrimPrefix(k, prefix)
		s, err := g.sequence(ctx, ns, name)
		switch apierr.CodeOf(err) {
		case "":
			names, defs = append(names, name), append(defs, s)
		case apierr.NotFound, apierr.Internal:
		default:
			return nil, nil, err
		}
	}
	return names, defs, nil
}

// invokeSequence forwards a sealed sequence request (mode "sequence") to a
// worker, or queues it with ?async=true. The steps in the request must be
// the stored definition's; their versions and code hashes, resolved by the
// client, are bound into the HPKE info, so the gateway cannot change them.
func (g *Gateway) invokeSequence(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	isAsync, err := queryAsync(r)
	if err != nil {
		return err
	}
	body, err := readInvokeBody(w, r)
	if err != nil {
		return err
	}
	if !isSealed(r) {
		return apierr.New(apierr.ConfidentialRequired, "sequences take sealed requests only (Content-Type %s); use `cloister invoke` or the client SDK", wire.SealedContentType)
	}
	// A sequence's steps carry their versions; the request's own is unused.
	sr, _, err := parseSealed(body, 0, wire.ModeSequence)
	if err != nil {
		return err
	}
	seq, err := g.sequence(r.Context(), p.Namespace, name)
	if err != nil {
		return err
	}
	if len(sr.Steps) != len(seq.Steps) {
		return apierr.New(apierr.BadRequest, "the request has %d steps; sequence %q has %d", len(sr.Steps), name, len(seq.Steps))
	}
	recs := make([]*registry.Record, len(seq.Steps))
	for i, s := range seq.Steps {
		got := sr.Steps[i]
		if got.Version < 0 || got.Version > MaxVersion {
			return apierr.New(apierr.BadRequest, "step %d of the request has version %d: out of range 1 to %d", i+1, got.Version, MaxVersion)
		}
		if got.Name != s.Name || (s.Version != 0 && got.Version != s.Version) {
			return apierr.New(apierr.BadRequest, "step %d of the request is %s v%d; the sequence names %s v%s", i+1, got.Name, got.Version, s.Name, versionString(s.Version))
		}
		if recs[i], err = g.svc.lookup(r.Context(), p.Namespace, got.Name, got.Version); err != nil {
			return err
		}
	}
	req := wire.InvokeRequest{Namespace: p.Namespace, Name: name, Mode: wire.ModeSequence, Sealed: sr}
	if isAsync {
		acc, err := g.svc.submit(r.Context(), "sequence", req, r.Header.Get(HeaderIdempotencyKey))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusAccepted, acc)
		return nil
	}
	rep, err := g.svc.routeSequence(r.Context(), recs, &req)
	if err != nil {
		return err
	}
	if rep.Error != nil {
		writeJSON(w, rep.Error.Code.Status(), wire.ErrorBody{Code: rep.Error.Code, Message: rep.Error.Message, Receipt: rep.Receipt,
			Step: rep.Step, StepCode: rep.StepCode, Receipts: rep.Receipts})
		return nil
	}
	writeJSON(w, http.StatusOK, wire.SealedResponse{Ciphertext: rep.Ciphertext, Receipt: rep.Receipt, Receipts: rep.Receipts})
	return nil
}
