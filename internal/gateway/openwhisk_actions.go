package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/wire"
)

// OpenWhisk actions: code actions become functions whose bundles the
// gateway builds and signs with the namespace's deploy key (gateway-trusted),
// and sequence actions become sequences.

type owPutBody struct {
	Exec        *OWExec      `json:"exec"`
	Limits      *OWLimits    `json:"limits"`
	Parameters  []OWKeyValue `json:"parameters"`
	Annotations []OWKeyValue `json:"annotations"`
}

func (g *Gateway) owSequenceExists(ctx context.Context, ns, name string) bool {
	_, err := g.sequence(ctx, ns, name)
	return err == nil
}

func (g *Gateway) owPutAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	overwrite, err := owQueryBool(r, "overwrite", false)
	if err != nil {
		return err
	}
	raw, release, err := g.readUpload(w, r, "action")
	if err != nil {
		return err
	}
	defer release()
	var body owPutBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return apierr.New(apierr.BadRequest, "The request content was malformed: %v", err)
	}
	ctx := r.Context()
	_, fnErr := g.svc.functions.Latest(ctx, p.Namespace, name)
	isFn, isSeq := fnErr == nil, g.owSequenceExists(ctx, p.Namespace, name)
	if (isFn || isSeq) && !overwrite {
		return apierr.New(apierr.Conflict, "resource already exists (add ?overwrite=true to update it)")
	}
	meta, err := g.owMeta(ctx, actionMetaKey(p.Namespace, name))
	if err != nil {
		return err
	}
	if body.Parameters != nil {
		meta.Parameters = body.Parameters
	}
	if body.Annotations != nil {
		meta.Annotations = body.Annotations
	}
	for _, kv := range meta.Parameters {
		if kv.Key == "" || !json.Valid(kv.Value) {
			return apierr.New(apierr.BadRequest, "every parameter needs a key and a JSON value")
		}
	}
	meta.Updated = time.Now().UnixMilli()
	switch {
	case body.Exec == nil && !(isFn || isSeq):
		return apierr.New(apierr.BadRequest, "an action needs exec: {kind, code} or {kind: sequence, components}")
	case body.Exec == nil:
		// An update of parameters or annotations only.
	case body.Exec.Kind == KindSequence:
		if err := g.owPutSequence(ctx, p, name, body.Exec.Components, isFn); err != nil {
			return err
		}
		meta.Kind, meta.Version = KindSequence, meta.Version+1
	default:
		v, err := g.owDeployCode(ctx, p, name, body.Exec, body.Limits, meta.Annotations)
		if err != nil {
			return err
		}
		if isSeq {
			// A sequence left behind would shadow the new code: invocations
			// and reads look the sequence up first.
			if err := g.sequences.Delete(ctx, sequenceKey(p.Namespace, name)); err != nil {
				return storeError("sequence store", err)
			}
		}
		meta.Kind, meta.Version = body.Exec.Kind, v
	}
	if err := g.owPutMeta(ctx, actionMetaKey(p.Namespace, name), meta); err != nil {
		return err
	}
	a, err := g.owAction(ctx, p.Namespace, name, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// owDeployCode builds a bundle from an OpenWhisk action, signs it with the
// namespace's gateway deploy key, and registers it as a new version.
func (g *Gateway) owDeployCode(ctx context.Context, p *Principal, name string, ex *OWExec, lim *OWLimits, annos []OWKeyValue) (int, error) {
	// Its calls come through the gateway in plaintext (OpenWhisk clients
	// do not seal), so anyone the gateway lets in may invoke it.
	m := bundle.Manifest{Name: name, Confidential: bundle.ConfidentialOptional, Deployer: bundle.DeployerGatewayTrusted,
		Invokers: &certs.Invokers{Kind: certs.InvokersAny}}
	var module []byte
	switch ex.Kind {
	case KindNodeDefault, KindNode20:
		if ex.Binary {
			return 0, apierr.New(apierr.BadRequest, "zipped Node.js actions are not supported; send the script as exec.code")
		}
		if ex.Main != "" && ex.Main != "main" {
			return 0, apierr.New(apierr.BadRequest, "exec.main %q: the entry point must be main", ex.Main)
		}
		m.Runtime, m.ABI, module = bundle.RuntimeJS, bundle.ABIJS, []byte(ex.Code)
	case KindPython3, KindPythonDefault:
		if ex.Binary {
			return 0, apierr.New(apierr.BadRequest, "zipped Python actions are not supported; send the script as exec.code")
		}
		if ex.Main != "" && ex.Main != "main" {
			return 0, apierr.New(apierr.BadRequest, "exec.main %q: the entry point must be main", ex.Main)
		}
		m.Runtime, m.ABI, module = bundle.RuntimePython, bundle.ABIPython, []byte(ex.Code)
		m.Limits.MemoryPages = bundle.DefaultPythonMemoryPages
	case KindBlackbox, KindWasm:
		if ex.Code == "" {
			return 0, apierr.New(apierr.BadRequest, "kind %s needs exec.code: a WebAssembly module, base64 (container images are not run)", ex.Kind)
		}
		b, err := base64.StdEncoding.DecodeString(ex.Code)
		if err != nil {
			return 0, apierr.New(apierr.BadRequest, "exec.code of kind %s must be a base64 WebAssembly module: %v", ex.Kind, err)
		}
		m.Runtime, module = bundle.RuntimeWasm, b
		if abi, ok := owAnno(annos, "cloister-abi"); ok {
			m.ABI = abi
		}
	default:
		return 0, apierr.New(apierr.BadRequest, "kind %q is not supported (use %s, %s, %s, %s, %s, %s or %s)", ex.Kind, KindNodeDefault, KindNode20, KindPython3, KindPythonDefault, KindBlackbox, KindWasm, KindSequence)
	}
	if c, ok := owAnno(annos, "confidential"); ok {
		m.Confidential = c
	}
	if lim != nil {
		if lim.Memory < 0 || lim.Memory > bundle.MaxMemoryPages/16 || lim.Timeout < 0 {
			return 0, apierr.New(apierr.BadRequest, "limits: memory must be 0 to %d MB and timeout ≥ 0 ms", bundle.MaxMemoryPages/16)
		}
		if lim.Memory > 0 {
			m.Limits.MemoryPages = uint32(lim.Memory * 16)
		}
		m.Limits.TimeoutMS = lim.Timeout
		if lim.Concurrency > 0 {
			m.Limits.Concurrency = lim.Concurrency
		}
	}
	v, err := g.svc.functions.NextVersion(ctx, p.Namespace, name)
	if err != nil {
		return 0, err
	}
	m.Version, m.Namespace = v, p.Namespace
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		return 0, apierr.Wrap(apierr.InvalidManifest, err)
	}
	kv, err := g.owStore()
	if err != nil {
		return 0, err
	}
	key, err := g.deployKeys.key(ctx, kv, p.Namespace)
	if err != nil {
		return 0, err
	}
	b, err := bundle.Build(m, module, key)
	if err != nil {
		return 0, apierr.Wrap(apierr.InvalidBundle, err)
	}
	fi, err := g.register(ctx, p.Namespace, name, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return 0, err
	}
	return fi.Version, nil
}

func (g *Gateway) owPutSequence(ctx context.Context, p *Principal, name string, components []string, replacesFn bool) error {
	if g.cfg.Async == nil {
		return apierr.New(apierr.Unavailable, "sequences are not enabled on this gateway")
	}
	if len(components) < 1 || len(components) > MaxSequenceSteps {
		return apierr.New(apierr.BadRequest, "a sequence has 1 to %d components, not %d", MaxSequenceSteps, len(components))
	}
	steps := make([]wire.StepRef, len(components))
	for i, c := range components {
		n, err := owName(p.Namespace, c)
		if err != nil {
			return err
		}
		if n == name {
			return apierr.New(apierr.BadRequest, "a sequence cannot contain itself")
		}
		if g.owSequenceExists(ctx, p.Namespace, n) {
			return apierr.New(apierr.BadRequest, "component %d (%s) is a sequence; sequences of sequences are not supported", i+1, n)
		}
		if _, err := g.svc.lookup(ctx, p.Namespace, n, 0); err != nil {
			return err
		}
		steps[i] = wire.StepRef{Name: n}
	}
	if replacesFn {
		if err := g.deleteVersions(ctx, p.Namespace, name); err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
	}
	seq := wire.Sequence{Namespace: p.Namespace, Name: name, Steps: steps, Created: time.Now().UTC()}
	b, _ := json.Marshal(seq) // plain data: Marshal cannot fail
	if _, err := g.sequences.Put(ctx, sequenceKey(p.Namespace, name), b); err != nil {
		return storeError("sequence store", err)
	}
	return nil
}

// owAction builds the action record of a function or sequence.
func (g *Gateway) owAction(ctx context.Context, ns, name string, code bool) (*OWAction, error) {
	meta, err := g.owMeta(ctx, actionMetaKey(ns, name))
	if err != nil {
		return nil, err
	}
	a := &OWAction{Namespace: ns, Name: name, Parameters: meta.Parameters, Annotations: meta.Annotations, Updated: meta.Updated}
	if a.Parameters == nil {
		a.Parameters = []OWKeyValue{}
	}
	if seq, err := g.sequence(ctx, ns, name); err == nil {
		a.Version = owVersion(max(meta.Version, 1))
		a.Exec = OWExec{Kind: KindSequence}
		for _, s := range seq.Steps {
			a.Exec.Components = append(a.Exec.Components, "/"+ns+"/"+s.Name)
		}
		a.Annotations = withAnno(a.Annotations, "exec", KindSequence)
		a.Limits = OWLimits{Timeout: 0, Memory: 0, Logs: 10}
		if a.Updated == 0 {
			a.Updated = seq.Created.UnixMilli()
		}
		return a, nil
	}
	rec, err := g.svc.lookup(ctx, ns, name, 0)
	if err != nil {
		return nil, err
	}
	var m bundle.Manifest
	if err := json.Unmarshal(rec.Manifest, &m); err != nil {
		return nil, apierr.New(apierr.Internal, "corrupt manifest of %s", name)
	}
	m.ApplyDefaults()
	f := rec.Function
	a.Version = owVersion(f.Version)
	kind := meta.Kind
	if kind == "" || kind == KindSequence {
		switch m.Runtime {
		case bundle.RuntimeJS:
			kind = KindNodeDefault
		case bundle.RuntimePython:
			kind = KindPython3
		default:
			kind = KindWasm
		}
	}
	a.Exec = OWExec{Kind: kind, Binary: !bundle.Script(m.Runtime)}
	a.Limits = OWLimits{Timeout: m.Limits.TimeoutMS, Memory: int(m.Limits.MemoryPages / 16), Logs: 10, Concurrency: m.Limits.Concurrency}
	deployer := "owner"
	if m.Deployer != "" {
		deployer = m.Deployer
	}
	execAnno := "blackbox"
	switch m.Runtime {
	case bundle.RuntimeJS:
		execAnno = "nodejs"
	case bundle.RuntimePython:
		execAnno = "python"
	}
	a.Annotations = withAnno(a.Annotations, "exec", execAnno)
	a.Annotations = withAnno(a.Annotations, "confidential", m.Confidential)
	a.Annotations = withAnno(a.Annotations, "cloister-deployer", deployer)
	a.Annotations = withAnno(a.Annotations, "cloister-owner-key", hex.EncodeToString(f.OwnerKey))
	a.Annotations = withAnno(a.Annotations, "cloister-code-sha256", f.CodeHash)
	if a.Updated == 0 || meta.Version != f.Version {
		a.Updated = rec.Created.UnixMilli()
	}
	if code {
		raw, err := g.cfg.Stores.Bundles.GetBytes(ctx, rec.Object)
		if err != nil {
			return nil, apierr.New(apierr.Unavailable, "reading the bundle: %v", err)
		}
		bd, err := bundle.Open(raw)
		if err != nil {
			return nil, apierr.New(apierr.BundleIntegrity, "stored bundle of %s: %v", name, err)
		}
		if a.Exec.Binary {
			a.Exec.Code = base64.StdEncoding.EncodeToString(bd.Module)
		} else {
			a.Exec.Code = string(bd.Module)
		}
	}
	return a, nil
}

func (g *Gateway) owGetAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	code, err := owQueryBool(r, "code", true)
	if err != nil {
		return err
	}
	a, err := g.owAction(r.Context(), p.Namespace, name, code)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (g *Gateway) owListActions(w http.ResponseWriter, r *http.Request, p *Principal) error {
	pg, err := owListPage(r, "actions")
	if err != nil {
		return err
	}
	ctx := r.Context()
	recs, err := g.svc.functions.List(ctx, p.Namespace)
	if err != nil {
		return err
	}
	names := []string{}
	for _, rec := range recs {
		names = append(names, rec.Function.Name)
	}
	if g.cfg.Async != nil {
		seqs, _, err := g.namespaceSequences(ctx, p.Namespace)
		if err != nil {
			return err
		}
		names = append(names, seqs...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if pg.count {
		writeOWList(w, "actions", names, pg)
		return nil
	}
	// Build the records of the page only: skip the first pg.skip actions
	// that exist, then take pg.limit.
	out := []*OWAction{}
	skip := pg.skip
	for _, n := range names {
		if len(out) == pg.limit {
			break
		}
		a, err := g.owAction(ctx, p.Namespace, n, false)
		if apierr.CodeOf(err) == apierr.NotFound {
			continue
		}
		if err != nil {
			return err
		}
		if skip > 0 {
			skip--
			continue
		}
		out = append(out, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (g *Gateway) owDeleteAction(w http.ResponseWriter, r *http.Request, p *Principal) error {
	name, err := functionName(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := g.owAction(ctx, p.Namespace, name, false)
	if err != nil {
		return err
	}
	if a.Exec.Kind == KindSequence {
		if err := g.sequences.Delete(ctx, sequenceKey(p.Namespace, name)); err != nil {
			return storeError("sequence store", err)
		}
	} else if err := g.deleteVersions(ctx, p.Namespace, name); err != nil {
		return err
	}
	if _, err := g.owStore(); err == nil {
		// The action is gone; its stale parameters and annotations would
		// come back with an action created again under its name.
		if err := g.owActions.Delete(ctx, actionMetaKey(p.Namespace, name)); err != nil {
			g.log.Warn("deleting OpenWhisk action metadata", "namespace", p.Namespace, "action", name, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}
