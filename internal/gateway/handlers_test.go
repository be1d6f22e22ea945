package gateway

// Unit tests of the invocation handlers of both APIs, over a fake
// registry, bus and queue (the service layer's interfaces): every error
// path answers with its stable code, and nothing reaches a worker or the
// queue that should not.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/async"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/bus"
	"github.com/cloister-faas/cloister/internal/bus/bustest"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/registry"
	"github.com/cloister-faas/cloister/internal/trigger"
	"github.com/cloister-faas/cloister/internal/wire"
)

// fakeFunctions is a registry in memory; err, when set, is every read's.
type fakeFunctions struct {
	recs map[string]*registry.Record // "ns/name/version"; version 0 is the latest
	err  error
}

func (f *fakeFunctions) Get(_ context.Context, ns, name string, version int) (*registry.Record, error) {
	if f.err != nil {
		return nil, f.err
	}
	rec, ok := f.recs[fmt.Sprintf("%s/%s/%d", ns, name, version)]
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", registry.ErrNotFound, ns, name)
	}
	return rec, nil
}

func (f *fakeFunctions) Latest(ctx context.Context, ns, name string) (int, error) {
	rec, err := f.Get(ctx, ns, name, 0)
	if err != nil {
		return 0, err
	}
	return rec.Function.Version, nil
}

func (f *fakeFunctions) NextVersion(ctx context.Context, ns, name string) (int, error) {
	v, err := f.Latest(ctx, ns, name)
	if errors.Is(err, registry.ErrNotFound) {
		return 1, nil
	}
	return v + 1, err
}

func (f *fakeFunctions) List(_ context.Context, ns string) ([]*registry.Record, error) {
	if f.err != nil {
		return nil, f.err
	}
	var out []*registry.Record
	for k, rec := range f.recs {
		if strings.HasPrefix(k, ns+"/") && strings.HasSuffix(k, "/0") {
			out = append(out, rec)
		}
	}
	return out, nil
}

func (f *fakeFunctions) ListPage(ctx context.Context, ns, after string, limit int) ([]*registry.Record, bool, error) {
	recs, err := f.List(ctx, ns)
	if err != nil {
		return nil, false, err
	}
	slices.SortFunc(recs, func(a, b *registry.Record) int { return strings.Compare(a.Function.Name, b.Function.Name) })
	recs = slices.DeleteFunc(recs, func(r *registry.Record) bool { return r.Function.Name <= after })
	if limit > 0 && len(recs) > limit {
		return recs[:limit], true, nil
	}
	return recs, false, nil
}

func (f *fakeFunctions) add(ns, name string, version int, confidential string, timeoutMS int) *registry.Record {
	m, _ := json.Marshal(bundle.Manifest{Name: name, Version: version, Limits: bundle.Limits{TimeoutMS: timeoutMS}})
	rec := &registry.Record{Manifest: m, Function: certs.Function{Namespace: ns, Name: name, Version: version,
		Confidential: confidential, BundleHash: fmt.Sprintf("bundle-%s-%d", name, version)}}
	f.recs[fmt.Sprintf("%s/%s/%d", ns, name, version)] = rec
	f.recs[fmt.Sprintf("%s/%s/0", ns, name)] = rec
	return rec
}

// fakeInvoker is the bus: it records what reached it and answers with
// reply or err.
type fakeInvoker struct {
	mu       sync.Mutex
	reqs     []*wire.InvokeRequest
	deadline time.Duration // of the last call's context
	reply    *wire.InvokeReply
	err      error
}

func (f *fakeInvoker) call(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	if d, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(d)
	}
	if f.err != nil {
		return nil, f.err
	}
	rep := *f.reply
	return &rep, nil
}

func (f *fakeInvoker) invoke(ctx context.Context, _ *registry.Record, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	return f.call(ctx, req)
}

func (f *fakeInvoker) invokeAny(ctx context.Context, req *wire.InvokeRequest) (*wire.InvokeReply, error) {
	return f.call(ctx, req)
}

func (f *fakeInvoker) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// fakeQueue keeps activations in memory and finishes each submitted one
// at once with result (nil: it stays queued).
type fakeQueue struct {
	mu     sync.Mutex
	subs   []async.Submission
	acts   map[string]*wire.Activation
	result *wire.ActivationResponse
	err    error
	// recordErr fails Record.
	recordErr error
}

func (q *fakeQueue) Submit(_ context.Context, sub async.Submission) (wire.Accepted, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return wire.Accepted{}, q.err
	}
	q.subs = append(q.subs, sub)
	id := fmt.Sprintf("%032d", len(q.subs))
	a := &wire.Activation{ActivationID: id, Namespace: sub.Request.Namespace, Name: sub.Request.Name, Version: sub.Request.Version,
		Mode: sub.Request.Mode, Status: wire.StatusQueued}
	if q.result != nil {
		a.Status, a.Response = q.result.Status, *q.result
	}
	q.acts[id] = a
	return wire.Accepted{ActivationID: id}, nil
}

func (q *fakeQueue) get(ns, id string) (*wire.Activation, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	a, ok := q.acts[id]
	if !ok || a.Namespace != ns {
		return nil, apierr.New(apierr.NotFound, "activation %s not found", id)
	}
	cp := *a
	return &cp, nil
}

func (q *fakeQueue) Wait(_ context.Context, ns, id string) (*wire.Activation, error) {
	return q.get(ns, id)
}

func (q *fakeQueue) Get(_ context.Context, ns, id string) (*wire.Activation, uint64, error) {
	a, err := q.get(ns, id)
	return a, 1, err
}

func (q *fakeQueue) Update(_ context.Context, ns, id string, fn func(*wire.Activation) error) (*wire.Activation, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	a, ok := q.acts[id]
	if !ok || a.Namespace != ns {
		return nil, apierr.New(apierr.NotFound, "activation %s not found", id)
	}
	return a, fn(a)
}

func (q *fakeQueue) Record(_ context.Context, a *wire.Activation) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.recordErr != nil {
		return q.recordErr
	}
	q.acts[a.ActivationID] = a
	return nil
}

func (q *fakeQueue) List(context.Context, string, async.ListOptions) ([]*wire.Activation, error) {
	return nil, errors.New("not used")
}

func (q *fakeQueue) ListPage(context.Context, string, async.ListOptions) ([]*wire.Activation, string, error) {
	return nil, "", errors.New("not used")
}

func (q *fakeQueue) DeadLetters(context.Context, string, time.Time, int) ([]wire.DeadLetter, error) {
	return nil, errors.New("not used")
}

func (q *fakeQueue) submissions() []async.Submission {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]async.Submission(nil), q.subs...)
}

// fakeKV is a key-value bucket in memory with the few methods the
// handlers under test use; the others panic (the embedded nil interface).
type fakeKV struct {
	jetstream.KeyValue
	mu  sync.Mutex
	m   map[string][]byte
	err error
}

type kvEntry struct {
	jetstream.KeyValueEntry
	key string
	val []byte
}

func (e kvEntry) Key() string      { return e.key }
func (e kvEntry) Value() []byte    { return e.val }
func (e kvEntry) Revision() uint64 { return 1 }

func (kv *fakeKV) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.err != nil {
		return nil, kv.err
	}
	v, ok := kv.m[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return kvEntry{key: key, val: v}, nil
}

func (kv *fakeKV) Put(_ context.Context, key string, v []byte) (uint64, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.err != nil {
		return 0, kv.err
	}
	kv.m[key] = v
	return 1, nil
}

func (kv *fakeKV) Delete(_ context.Context, key string, _ ...jetstream.KVDeleteOpt) error {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.err != nil {
		return kv.err
	}
	delete(kv.m, key)
	return nil
}

// fakeLister lists keys already collected.
type fakeLister struct{ keys chan string }

func (l fakeLister) Keys() <-chan string { return l.keys }
func (l fakeLister) Stop() error         { return nil }

func (kv *fakeKV) ListKeysFiltered(_ context.Context, filters ...string) (jetstream.KeyLister, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.err != nil {
		return nil, kv.err
	}
	ch := make(chan string, len(kv.m))
	for k := range kv.m {
		for _, f := range filters {
			if ok, _ := path.Match(strings.ReplaceAll(f, ".", "/"), strings.ReplaceAll(k, ".", "/")); ok {
				ch <- k
				break
			}
		}
	}
	close(ch)
	return fakeLister{keys: ch}, nil
}

// handlerFixture is a gateway whose service runs on fakes.
type handlerFixture struct {
	g         *Gateway
	fns       *fakeFunctions
	workers   *fakeInvoker
	queue     *fakeQueue
	sequences *fakeKV
	p         *Principal
	// header is added to every request serve makes.
	header http.Header
}

func newHandlerFixture(t *testing.T, withQueue bool) *handlerFixture {
	t.Helper()
	f := &handlerFixture{
		fns:       &fakeFunctions{recs: map[string]*registry.Record{}},
		workers:   &fakeInvoker{reply: &wire.InvokeReply{}},
		queue:     &fakeQueue{acts: map[string]*wire.Activation{}},
		sequences: &fakeKV{m: map[string][]byte{}},
		p:         &Principal{Namespace: "acme", Scope: ScopeDeploy},
	}
	var q activationQueue
	f.g = &Gateway{log: slog.New(slog.DiscardHandler)}
	if withQueue {
		q = f.queue
		f.g.cfg.Async = &bus.AsyncStores{Sequences: f.sequences, OpenWhisk: &fakeKV{m: map[string][]byte{}}, Triggers: &fakeKV{m: map[string][]byte{}}}
		f.g.owActions, f.g.sequences = bus.NewFollower(f.g.cfg.Async.OpenWhisk), bus.NewFollower(f.sequences)
	}
	f.g.svc = newService(f.fns, f.workers, q)
	return f
}

// answer is a handler's response as a client sees it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) code(t *testing.T) apierr.Code {
	t.Helper()
	var e struct {
		Code apierr.Code `json:"code"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e.Code
}

// serve runs h as the gateway's routes do: an error becomes the API's
// error body (openWhisk: OpenWhisk's). name is the route's {name} or {id}.
func (f *handlerFixture) serve(h handlerFunc, openWhisk bool, method, target, name, contentType string, body []byte) answer {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.SetPathValue("name", name)
	r.SetPathValue("id", name)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for k, v := range f.header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	if err := h(w, r, f.p); err != nil {
		if openWhisk {
			owErr(w, err)
		} else {
			writeError(w, err)
		}
	}
	return answer{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
}

// handlerRefusal is a request that a handler must refuse with status and code.
type handlerRefusal struct {
	name, target, fn, ctype string
	body                    []byte
	status                  int
	code                    apierr.Code
}

// refuses checks that h refuses each case as it should.
func (f *handlerFixture) refuses(t *testing.T, h handlerFunc, cases []handlerRefusal) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := f.serve(h, false, http.MethodPost, c.target, c.fn, c.ctype, c.body)
			if a.status != c.status || a.code(t) != c.code {
				t.Fatalf("got %d %s (%s), want %d %s", a.status, a.code(t), a.body, c.status, c.code)
			}
		})
	}
}

func sealedBody(t *testing.T, mode string, version int) []byte {
	t.Helper()
	b, err := json.Marshal(wire.SealedRequest{Mode: mode, Version: version, Ciphertext: []byte("opaque")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInvokeErrors(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 1000)
	f.fns.add("acme", "secret", 1, bundle.ConfidentialRequired, 1000)
	big := bytes.Repeat([]byte("x"), MaxInvokeBytes+1)
	cases := []handlerRefusal{
		{"invalid name", "/v1/functions/Bad!/invoke", "Bad!", "", nil, 400, apierr.BadRequest},
		{"invalid version", "/v1/functions/open/invoke?version=-1", "open", "", nil, 400, apierr.BadRequest},
		{"version past 31 bits", "/v1/functions/open/invoke?version=2147483648", "open", "", nil, 400, apierr.BadRequest},
		{"oversized body", "/v1/functions/open/invoke", "open", "", big, 413, apierr.PayloadTooLarge},
		{"bad async flag", "/v1/functions/open/invoke?async=maybe", "open", "", nil, 400, apierr.BadRequest},
		{"unknown function", "/v1/functions/nope/invoke", "nope", "", nil, 404, apierr.NotFound},
		{"unknown version", "/v1/functions/open/invoke?version=7", "open", "", nil, 404, apierr.NotFound},
		{"plaintext to a confidential function", "/v1/functions/secret/invoke", "secret", "", []byte("{}"), 403, apierr.ConfidentialRequired},
		{"queued plaintext to a confidential function", "/v1/functions/secret/invoke?async=true", "secret", "", []byte("{}"), 403, apierr.ConfidentialRequired},
		{"malformed sealed request", "/v1/functions/secret/invoke", "secret", wire.SealedContentType, []byte("{not json"), 400, apierr.BadRequest},
		{"sealed mode not accepted", "/v1/functions/secret/invoke", "secret", wire.SealedContentType, sealedBody(t, wire.ModeSequence, 0), 400, apierr.BadRequest},
		{"sealed version disagrees with the query", "/v1/functions/secret/invoke?version=1", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 2), 400, apierr.BadRequest},
		{"sealed version out of range", "/v1/functions/secret/invoke", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, -1), 400, apierr.BadRequest},
		{"bad logs flag", "/v1/functions/secret/invoke?logs=lots", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 0), 400, apierr.BadRequest},
		{"a session queued", "/v1/functions/secret/invoke?async=true", "secret", wire.SealedContentType, sealedBody(t, wire.ModeSession, 0), 400, apierr.BadRequest},
	}
	f.refuses(t, f.g.invoke, cases)
	if n := f.workers.calls(); n != 0 {
		t.Errorf("%d refused requests reached a worker", n)
	}
	if n := len(f.queue.submissions()); n != 0 {
		t.Errorf("%d refused requests were queued", n)
	}
}

func TestInvokeStoresUnavailable(t *testing.T) {
	f := newHandlerFixture(t, false)
	f.fns.err = errors.New("nats: timeout")
	a := f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke", "open", "", []byte("{}"))
	if a.status != 503 || a.code(t) != apierr.Unavailable {
		t.Fatalf("registry down: got %d %s, want 503 unavailable", a.status, a.code(t))
	}
	f.fns.err = nil
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	a = f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke?async=true", "open", "", []byte("{}"))
	if a.status != 503 || a.code(t) != apierr.Unavailable {
		t.Fatalf("async without a queue: got %d %s, want 503 unavailable", a.status, a.code(t))
	}
}

func TestInvokePlaintext(t *testing.T) {
	f := newHandlerFixture(t, false)
	f.fns.add("acme", "open", 3, bundle.ConfidentialOptional, 2000)
	rc := &receipt.Signed{Receipt: []byte(`{"x":1}`), Signature: []byte{1}}
	f.workers.reply = &wire.InvokeReply{Version: 3, Output: []byte("hello"), Receipt: rc}
	a := f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke", "open", "", []byte(`{"a":1}`))
	if a.status != 200 || string(a.body) != "hello" || a.header.Get(HeaderVersion) != "3" {
		t.Fatalf("got %d %q version %q", a.status, a.body, a.header.Get(HeaderVersion))
	}
	if h, err := base64.StdEncoding.DecodeString(a.header.Get(HeaderReceipt)); err != nil || !bytes.Contains(h, []byte(`"sig"`)) {
		t.Errorf("receipt header %q: %v", a.header.Get(HeaderReceipt), err)
	}
	req := f.workers.reqs[0]
	if req.Mode != wire.ModePlain || string(req.Plain) != `{"a":1}` || req.Version != 3 || req.Namespace != "acme" {
		t.Errorf("the worker got %+v", req)
	}
	// The call is bounded by the function's own limit plus the margins.
	if want := replyMargin + stepMargin + 2*time.Second; f.workers.deadline > want || f.workers.deadline < want-time.Second {
		t.Errorf("call budget %v, want about %v", f.workers.deadline, want)
	}

	// A function that failed: the code's status, with the receipt.
	f.workers.reply = &wire.InvokeReply{Version: 3, Error: &apierr.Error{Code: apierr.FuelExhausted, Message: "out of fuel"}, Receipt: rc}
	a = f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke", "open", "", nil)
	var eb wire.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil || a.status != apierr.FuelExhausted.Status() || eb.Code != apierr.FuelExhausted || eb.Receipt == nil {
		t.Errorf("failed call: got %d %s (%v)", a.status, a.body, err)
	}

	// The bus refuses: the code passes through.
	f.workers.err = apierr.New(apierr.NoWorker, "no worker")
	a = f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke", "open", "", nil)
	if a.status != apierr.NoWorker.Status() || a.code(t) != apierr.NoWorker {
		t.Errorf("no worker: got %d %s", a.status, a.body)
	}
}

func TestInvokeSealedForwardsCiphertext(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "secret", 2, bundle.ConfidentialRequired, 0)
	f.workers.reply = &wire.InvokeReply{Version: 2, Ciphertext: []byte("sealed-answer")}
	a := f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/secret/invoke?version=2&logs=true", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 2))
	var sr wire.SealedResponse
	if err := json.Unmarshal(a.body, &sr); err != nil || a.status != 200 || string(sr.Ciphertext) != "sealed-answer" || sr.Version != 2 {
		t.Fatalf("got %d %s (%v)", a.status, a.body, err)
	}
	req := f.workers.reqs[0]
	if req.Mode != wire.ModeHPKE || string(req.Sealed.Ciphertext) != "opaque" || !req.Logs || req.Plain != nil {
		t.Errorf("the worker got %+v", req)
	}

	// Queued: the sealed body as it is, at the resolved version.
	a = f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/secret/invoke?async=true", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 0))
	subs := f.queue.submissions()
	if a.status != 202 || len(subs) != 1 || subs[0].Request.Version != 2 || string(subs[0].Request.Sealed.Ciphertext) != "opaque" || subs[0].Kind != "function" {
		t.Fatalf("queued: got %d %s, submissions %+v", a.status, a.body, subs)
	}
}

func TestOpenSessionModes(t *testing.T) {
	f := newHandlerFixture(t, false)
	f.fns.add("acme", "secret", 1, bundle.ConfidentialRequired, 0)
	a := f.serve(f.g.openSession, false, http.MethodPost, "/v1/functions/secret/sessions", "secret", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 0))
	if a.status != 400 || a.code(t) != apierr.BadRequest {
		t.Errorf("hpke to the sessions route: got %d %s", a.status, a.body)
	}
	big := bytes.Repeat([]byte("x"), maxSessionOpenBytes+1)
	a = f.serve(f.g.openSession, false, http.MethodPost, "/v1/functions/secret/sessions", "secret", wire.SealedContentType, big)
	if a.status != 413 || a.code(t) != apierr.PayloadTooLarge {
		t.Errorf("oversized session request: got %d %s", a.status, a.body)
	}
	f.workers.reply = &wire.InvokeReply{Version: 1, Ticket: []byte("ticket")}
	a = f.serve(f.g.openSession, false, http.MethodPost, "/v1/functions/secret/sessions", "secret", wire.SealedContentType, sealedBody(t, wire.ModeSessionOpen, 0))
	if a.status != 200 || !bytes.Contains(a.body, []byte(base64.StdEncoding.EncodeToString([]byte("ticket")))) {
		t.Errorf("session open: got %d %s", a.status, a.body)
	}
}

func putSequence(t *testing.T, f *handlerFixture, name string, steps ...string) {
	t.Helper()
	seq := wire.Sequence{Namespace: "acme", Name: name}
	for _, s := range steps {
		seq.Steps = append(seq.Steps, wire.StepRef{Name: s})
	}
	b, _ := json.Marshal(seq)
	f.sequences.m[sequenceKey("acme", name)] = b
}

func TestInvokeSequence(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "a", 1, bundle.ConfidentialRequired, 1000)
	f.fns.add("acme", "b", 1, bundle.ConfidentialRequired, 3000)
	putSequence(t, f, "pipe", "a", "b")
	seqBody := func(steps ...string) []byte {
		sr := wire.SealedRequest{Mode: wire.ModeSequence, Ciphertext: []byte("opaque")}
		for _, s := range steps {
			sr.Steps = append(sr.Steps, wire.StepRef{Name: s, Version: 1})
		}
		b, _ := json.Marshal(sr)
		return b
	}
	cases := []handlerRefusal{
		{"plaintext", "/v1/sequences/pipe/invoke", "pipe", "", []byte("{}"), 403, apierr.ConfidentialRequired},
		{"wrong mode", "/v1/sequences/pipe/invoke", "pipe", wire.SealedContentType, sealedBody(t, wire.ModeHPKE, 0), 400, apierr.BadRequest},
		{"unknown sequence", "/v1/sequences/nope/invoke", "nope", wire.SealedContentType, seqBody("a", "b"), 404, apierr.NotFound},
		{"other steps", "/v1/sequences/pipe/invoke", "pipe", wire.SealedContentType, seqBody("b", "a"), 400, apierr.BadRequest},
		{"fewer steps", "/v1/sequences/pipe/invoke", "pipe", wire.SealedContentType, seqBody("a"), 400, apierr.BadRequest},
	}
	f.refuses(t, f.g.invokeSequence, cases)
	if n := f.workers.calls(); n != 0 {
		t.Fatalf("%d refused sequences reached a worker", n)
	}
	f.workers.reply = &wire.InvokeReply{Ciphertext: []byte("out")}
	a := f.serve(f.g.invokeSequence, false, http.MethodPost, "/v1/sequences/pipe/invoke", "pipe", wire.SealedContentType, seqBody("a", "b"))
	if a.status != 200 {
		t.Fatalf("got %d %s", a.status, a.body)
	}
	// Both steps' limits, each with its margin, and the reply's.
	if want := replyMargin + 2*stepMargin + 4*time.Second; f.workers.deadline > want || f.workers.deadline < want-time.Second {
		t.Errorf("sequence budget %v, want about %v", f.workers.deadline, want)
	}
	f.sequences.err = errors.New("nats: connection closed")
	a = f.serve(f.g.invokeSequence, false, http.MethodPost, "/v1/sequences/pipe/invoke", "pipe", wire.SealedContentType, seqBody("a", "b"))
	if a.status != 503 || a.code(t) != apierr.Unavailable {
		t.Errorf("sequence store down: got %d %s", a.status, a.body)
	}
}

func TestOpenWhiskInvoke(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	f.fns.add("acme", "secret", 1, bundle.ConfidentialRequired, 0)

	a := f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/secret", "secret", "application/json", []byte("{}"))
	var ow struct {
		Error string      `json:"error"`
		Code  apierr.Code `json:"code"`
	}
	if err := json.Unmarshal(a.body, &ow); err != nil || a.status != 403 || ow.Code != apierr.ConfidentialRequired ||
		!strings.Contains(ow.Error, "cloister invoke secret") || !strings.Contains(ow.Error, "Go SDK") {
		t.Errorf("confidential action: got %d %s", a.status, a.body)
	}
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open", "open", "application/json", []byte("[1,2]"))
	if a.status != 400 {
		t.Errorf("parameters that are not an object: got %d %s", a.status, a.body)
	}
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=perhaps", "open", "application/json", nil)
	if a.status != 400 {
		t.Errorf("bad blocking flag: got %d %s", a.status, a.body)
	}
	if n := len(f.queue.submissions()); n != 0 {
		t.Fatalf("%d refused invocations were queued", n)
	}

	// Not blocking: 202 and the id.
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open", "open", "application/json", []byte(`{"x":1}`))
	if a.status != 202 || !bytes.Contains(a.body, []byte("activationId")) {
		t.Errorf("non-blocking: got %d %s", a.status, a.body)
	}
	// Blocking, with the result only: the function's JSON object, run at
	// once on a worker, and its activation recorded, finished.
	f.workers.reply = &wire.InvokeReply{Version: 1, Output: []byte(`{"y":2}`), Logs: []byte("line 1\nline 2\n")}
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true&result=true", "open", "application/json", []byte(`{"x":1}`))
	if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"y":2}` {
		t.Errorf("blocking result: got %d %s", a.status, a.body)
	}
	if got := f.workers.reqs[len(f.workers.reqs)-1]; got.Mode != wire.ModePlain || string(got.Plain) != `{"x":1}` || got.Version != 1 || !got.Logs {
		t.Errorf("blocking call sent %+v", got)
	}
	// An application error is a 502, as in OpenWhisk, with the activation.
	f.workers.reply = &wire.InvokeReply{Version: 1, Error: &apierr.Error{Code: apierr.FunctionExit, Message: "exit 1"}}
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true", "open", "application/json", nil)
	var act struct {
		ID       string `json:"activationId"`
		Response struct {
			Status string `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal(a.body, &act); err != nil || a.status != 502 || act.Response.Status != "application error" {
		t.Errorf("application error: got %d %s", a.status, a.body)
	}
	rec, err := f.queue.get("acme", act.ID)
	if err != nil || rec.Status != wire.StatusApplicationError || rec.Kind != "function" || rec.Attempts != 1 || rec.End < rec.Start ||
		rec.Trust != wire.TrustGatewayTrusted || len(rec.Logs) != 2 {
		t.Errorf("blocking activation record: %+v, %v", rec, err)
	}
	subs := f.queue.submissions()
	if len(subs) != 1 {
		t.Fatalf("%d invocations queued, want only the non-blocking one", len(subs))
	}
	if got := subs[0].Request; got.Mode != wire.ModePlain || string(got.Plain) != `{"x":1}` || got.Version != 1 {
		t.Errorf("queued %+v", got)
	}

	// The queue refuses: its code passes through, in OpenWhisk's shape.
	f.queue.err = apierr.New(apierr.QuotaExceeded, "too many queued")
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open", "open", "application/json", nil)
	if err := json.Unmarshal(a.body, &ow); err != nil || a.status != apierr.QuotaExceeded.Status() || ow.Code != apierr.QuotaExceeded {
		t.Errorf("queue full: got %d %s", a.status, a.body)
	}

	// Without async, OpenWhisk invocations are unavailable.
	g := newHandlerFixture(t, false)
	a = g.serve(g.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open", "open", "application/json", nil)
	if a.status != 503 {
		t.Errorf("no async: got %d %s", a.status, a.body)
	}
}

// TestOpenWhiskBlockingQueued checks which blocking invocations still go
// through the queue (an idempotency key, a function that may outlast the
// blocking wait) and what a direct one does when the worker or the
// activation store fails.
func TestOpenWhiskBlockingQueued(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	f.fns.add("acme", "slow", 1, bundle.ConfidentialOptional, 120_000)
	f.queue.result = &wire.ActivationResponse{Status: wire.StatusSuccess, Success: true, Result: json.RawMessage(`{"q":1}`)}
	f.workers.reply = &wire.InvokeReply{Version: 1, Output: []byte(`{"d":1}`)}

	a := f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/slow?blocking=true&result=true", "slow", "application/json", nil)
	if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"q":1}` || len(f.queue.submissions()) != 1 || f.workers.calls() != 0 {
		t.Errorf("a function that may outlast the wait: got %d %s, %d queued, %d direct", a.status, a.body, len(f.queue.submissions()), f.workers.calls())
	}
	f.header = http.Header{HeaderIdempotencyKey: {"k1"}}
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true&result=true", "open", "application/json", nil)
	if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"q":1}` || len(f.queue.submissions()) != 2 || f.workers.calls() != 0 {
		t.Errorf("with an idempotency key: got %d %s, %d queued, %d direct", a.status, a.body, len(f.queue.submissions()), f.workers.calls())
	}
	if got := f.queue.submissions()[1].IdempotencyKey; got != "k1" {
		t.Errorf("queued with idempotency key %q", got)
	}
	f.header = nil

	// No worker: the error, and nothing recorded, since nothing ran.
	f.workers.err = apierr.New(apierr.Unavailable, "no worker")
	n := len(f.queue.acts)
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true", "open", "application/json", nil)
	if a.status != 503 || len(f.queue.acts) != n {
		t.Errorf("no worker: got %d %s, %d records (had %d)", a.status, a.body, len(f.queue.acts), n)
	}
	// A worker with no room: nothing ran, so the invocation is queued and
	// waited for.
	for _, code := range []apierr.Code{apierr.ConcurrencyLimit, apierr.Overloaded} {
		f.workers.err = apierr.New(code, "full")
		queued := len(f.queue.submissions())
		a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true&result=true", "open", "application/json", nil)
		if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"q":1}` || len(f.queue.submissions()) != queued+1 {
			t.Errorf("worker full (%s): got %d %s, %d queued (had %d)", code, a.status, a.body, len(f.queue.submissions()), queued)
		}
	}
	f.workers.err = nil
	// The store fails after the function ran: the caller still gets the result.
	f.queue.recordErr = apierr.New(apierr.Unavailable, "store down")
	a = f.serve(f.g.owInvoke, true, http.MethodPost, "/api/v1/namespaces/_/actions/open?blocking=true&result=true", "open", "application/json", nil)
	if a.status != 200 || strings.TrimSpace(string(a.body)) != `{"d":1}` {
		t.Errorf("store down after the run: got %d %s", a.status, a.body)
	}
}

func TestRequirePlain(t *testing.T) {
	f := newHandlerFixture(t, false)
	open := f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	secret := f.fns.add("acme", "secret", 1, bundle.ConfidentialRequired, 0)
	empty := f.fns.add("acme", "empty", 1, "", 0)
	if err := requirePlain(open, plainHintInvoke); err != nil {
		t.Errorf("optional: %v", err)
	}
	for _, rec := range []*registry.Record{secret, empty} {
		err := requirePlain(rec, plainHintOpenWhisk)
		if apierr.CodeOf(err) != apierr.ConfidentialRequired || !strings.Contains(err.Error(), "cloister invoke "+rec.Function.Name) {
			t.Errorf("%s: %v", rec.Function.Name, err)
		}
	}
}

func TestTimeLimitDecodedOncePerBundle(t *testing.T) {
	f := newHandlerFixture(t, false)
	rec := f.fns.add("acme", "slow", 1, bundle.ConfidentialOptional, 4000)
	s := f.g.svc
	if got := s.timeLimit(rec); got != 4*time.Second {
		t.Fatalf("limit %v, want 4s", got)
	}
	// The same bundle hash is the same manifest: not decoded again.
	rec.Manifest = json.RawMessage(`{"limits":{"timeout_ms":1}}`)
	if got := s.timeLimit(rec); got != 4*time.Second {
		t.Errorf("limit %v after the cache, want 4s", got)
	}
	// A manifest without a limit gets the default.
	def := f.fns.add("acme", "default", 1, bundle.ConfidentialOptional, 0)
	var m bundle.Manifest
	m.ApplyDefaults()
	if got := s.timeLimit(def); got != time.Duration(m.Limits.TimeoutMS)*time.Millisecond || got == 0 {
		t.Errorf("default limit %v", got)
	}
	if got := s.callBudget(rec, def); got != replyMargin+2*stepMargin+4*time.Second+time.Duration(m.Limits.TimeoutMS)*time.Millisecond {
		t.Errorf("budget %v", got)
	}
}

func TestActivationHandlers(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	get := func(h handlerFunc, ow bool, id string) answer {
		return f.serve(h, ow, http.MethodGet, "/v1/activations/"+id, id, "", nil)
	}
	// Queued and not finished.
	pending := f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke?async=true", "open", "", []byte("{}"))
	var acc wire.Accepted
	if err := json.Unmarshal(pending.body, &acc); err != nil || pending.status != 202 {
		t.Fatalf("queueing: %d %s", pending.status, pending.body)
	}
	if a := get(f.g.getActivation, false, acc.ActivationID); a.status != 200 || !bytes.Contains(a.body, []byte(wire.StatusQueued)) {
		t.Errorf("a queued activation: %d %s", a.status, a.body)
	}
	if a := get(f.g.activationResult, false, acc.ActivationID); a.status != apierr.ActivationPending.Status() || a.code(t) != apierr.ActivationPending {
		t.Errorf("the result of a queued activation: %d %s", a.status, a.body)
	}
	// OpenWhisk lists an activation once it has finished.
	if a := get(f.g.owGetActivation, true, acc.ActivationID); a.status != 404 {
		t.Errorf("OpenWhisk, a queued activation: %d %s", a.status, a.body)
	}

	f.queue.result = &wire.ActivationResponse{Status: wire.StatusSuccess, Success: true, Result: json.RawMessage(`{"ok":true}`)}
	done := f.serve(f.g.invoke, false, http.MethodPost, "/v1/functions/open/invoke?async=true", "open", "", []byte("{}"))
	if err := json.Unmarshal(done.body, &acc); err != nil {
		t.Fatal(err)
	}
	if a := get(f.g.activationResult, false, acc.ActivationID); a.status != 200 || !bytes.Contains(a.body, []byte(`"success":true`)) {
		t.Errorf("a result: %d %s", a.status, a.body)
	}
	if a := get(f.g.activationLogs, false, acc.ActivationID); a.status != 200 || !bytes.Contains(a.body, []byte(acc.ActivationID)) {
		t.Errorf("logs: %d %s", a.status, a.body)
	}
	var ow OWActivation
	if a := get(f.g.owGetActivation, true, acc.ActivationID); a.status != 200 || json.Unmarshal(a.body, &ow) != nil || !ow.Response.Success || ow.Name != "open" {
		t.Errorf("OpenWhisk, a finished activation: %d %s", a.status, a.body)
	}
	// Another namespace's activation is not found.
	f.p = &Principal{Namespace: "other", Scope: ScopeInvoke}
	if a := get(f.g.getActivation, false, acc.ActivationID); a.status != 404 {
		t.Errorf("another namespace's activation: %d %s", a.status, a.body)
	}

	for _, target := range []string{"/v1/activations?limit=0", "/v1/activations?limit=x", "/v1/activations?name=Bad!"} {
		if a := f.serve(f.g.listActivations, false, http.MethodGet, target, "", "", nil); a.status != 400 {
			t.Errorf("%s: %d %s", target, a.status, a.body)
		}
	}
	for _, target := range []string{"/v1/dead-letters?limit=-1", "/v1/dead-letters?since=yesterday"} {
		if a := f.serve(f.g.listDeadLetters, false, http.MethodGet, target, "", "", nil); a.status != 400 {
			t.Errorf("%s: %d %s", target, a.status, a.body)
		}
	}
	if a := f.serve(f.g.owListActivations, true, http.MethodGet, "/api/v1/namespaces/_/activations?count=true", "", "", nil); a.status != 400 {
		t.Errorf("OpenWhisk count of activations: %d %s", a.status, a.body)
	}

	// Without async, every activation route is unavailable.
	g := newHandlerFixture(t, false)
	for _, h := range []handlerFunc{g.g.getActivation, g.g.activationResult, g.g.activationLogs, g.g.listActivations, g.g.listDeadLetters, g.g.owGetActivation, g.g.owListActivations} {
		if a := g.serve(h, false, http.MethodGet, "/v1/activations/"+acc.ActivationID, acc.ActivationID, "", nil); a.status != 503 {
			t.Errorf("no async: %d %s", a.status, a.body)
		}
	}
}

func TestFunctionHandlers(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	f.fns.add("acme", "open", 2, bundle.ConfidentialOptional, 0)
	cases := []struct {
		name, target, fn string
		h                handlerFunc
		status           int
	}{
		{"get, invalid name", "/v1/functions/A", "A", f.g.getFunction, 400},
		{"get, invalid version", "/v1/functions/open?version=0x1", "open", f.g.getFunction, 400},
		{"get, unknown", "/v1/functions/nope", "nope", f.g.getFunction, 404},
		{"get, unknown version", "/v1/functions/open?version=9", "open", f.g.getFunction, 404},
		{"get", "/v1/functions/open", "open", f.g.getFunction, 200},
		{"get an older version", "/v1/functions/open?version=1", "open", f.g.getFunction, 200},
		{"next version, invalid name", "/v1/functions/-/next-version", "-", f.g.nextVersion, 400},
		{"next version", "/v1/functions/open/next-version", "open", f.g.nextVersion, 200},
		{"list", "/v1/functions", "", f.g.listFunctions, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a := f.serve(c.h, false, http.MethodGet, c.target, c.fn, "", nil); a.status != c.status {
				t.Fatalf("got %d %s, want %d", a.status, a.body, c.status)
			}
		})
	}
	var fi wire.FunctionInfo
	if a := f.serve(f.g.getFunction, false, http.MethodGet, "/v1/functions/open?version=1", "open", "", nil); json.Unmarshal(a.body, &fi) != nil || fi.Version != 1 || fi.Latest != 2 {
		t.Errorf("an older version: %s", a.body)
	}
	if a := f.serve(f.g.nextVersion, false, http.MethodGet, "/v1/functions/new/next-version", "new", "", nil); !bytes.Contains(a.body, []byte(`"version":1`)) {
		t.Errorf("next version of a new function: %s", a.body)
	}
	f.fns.err = errors.New("nats: no responders")
	for _, h := range []handlerFunc{f.g.getFunction, f.g.nextVersion, f.g.listFunctions} {
		if a := f.serve(h, false, http.MethodGet, "/v1/functions/open", "open", "", nil); a.status != 503 || a.code(t) != apierr.Unavailable {
			t.Errorf("registry down: got %d %s", a.status, a.body)
		}
	}
}

// withSequenceBucket puts the fixture's sequences in a real bucket: their
// listing reads the bucket's stream (bus.Keys). It returns the server's
// connection, whose closing takes the store down.
func (f *handlerFixture) withSequenceBucket(t *testing.T) *nats.Conn {
	t.Helper()
	nc := bustest.Connect(t)
	as := bustest.OpenAsync(t, nc)
	f.g.cfg.Async.JS, f.g.cfg.Async.Sequences = as.JS, as.Sequences
	f.g.sequences = bus.NewFollower(as.Sequences)
	return nc
}

func TestSequenceHandlers(t *testing.T) {
	f := newHandlerFixture(t, true)
	nc := f.withSequenceBucket(t)
	f.fns.add("acme", "a", 1, bundle.ConfidentialRequired, 0)
	f.fns.add("acme", "b", 1, bundle.ConfidentialRequired, 0)
	put := func(name, body string) answer {
		return f.serve(f.g.putSequence, false, http.MethodPut, "/v1/sequences/"+name, name, "application/json", []byte(body))
	}
	steps := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = `{"name":"a"}`
		}
		return `{"steps":[` + strings.Join(s, ",") + `]}`
	}
	refusals := []struct {
		name, seq, body string
		code            apierr.Code
	}{
		{"invalid name", "Bad", steps(1), apierr.BadRequest},
		{"not JSON", "pipe", `{"steps":`, apierr.BadRequest},
		{"oversized", "pipe", strings.Repeat(" ", maxDefinitionBytes+1), apierr.PayloadTooLarge},
		{"no steps", "pipe", steps(0), apierr.BadRequest},
		{"too many steps", "pipe", steps(MaxSequenceSteps + 1), apierr.BadRequest},
		{"a function's name", "a", steps(1), apierr.Conflict},
		{"an invalid step", "pipe", `{"steps":[{"name":"a","version":-1}]}`, apierr.BadRequest},
		{"an unknown step", "pipe", `{"steps":[{"name":"nope"}]}`, apierr.NotFound},
		{"a signature that does not verify", "pipe", `{"steps":[{"name":"a"}],"signer":"AAAA","signature":"AAAA"}`, apierr.BundleSignature},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			if a := put(c.seq, c.body); a.status != c.code.Status() || a.code(t) != c.code {
				t.Fatalf("got %d %s, want %d %s", a.status, a.body, c.code.Status(), c.code)
			}
		})
	}
	if a := f.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil); a.status != 200 || !bytes.Contains(a.body, []byte(`"sequences":[]`)) {
		t.Fatalf("refused definitions were stored: %d %s", a.status, a.body)
	}
	if a := put("pipe", `{"steps":[{"name":"a"},{"name":"b","version":1}]}`); a.status != 200 {
		t.Fatalf("put: %d %s", a.status, a.body)
	}
	if a := f.serve(f.g.getSequence, false, http.MethodGet, "/v1/sequences/pipe", "pipe", "", nil); a.status != 200 || !bytes.Contains(a.body, []byte(`"name":"b"`)) {
		t.Errorf("get: %d %s", a.status, a.body)
	}
	if a := f.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil); a.status != 200 || !bytes.Contains(a.body, []byte(`"pipe"`)) {
		t.Errorf("list: %d %s", a.status, a.body)
	}
	// Another namespace sees none of it.
	other := *f
	other.p = &Principal{Namespace: "other", Scope: ScopeDeploy}
	if a := other.serve(f.g.getSequence, false, http.MethodGet, "/v1/sequences/pipe", "pipe", "", nil); a.status != 404 {
		t.Errorf("another namespace's get: %d %s", a.status, a.body)
	}
	if a := other.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil); bytes.Contains(a.body, []byte(`"pipe"`)) {
		t.Errorf("another namespace's list: %s", a.body)
	}
	if a := f.serve(f.g.deleteSequence, false, http.MethodDelete, "/v1/sequences/pipe", "pipe", "", nil); a.status != 200 {
		t.Errorf("delete: %d %s", a.status, a.body)
	}
	if a := f.serve(f.g.deleteSequence, false, http.MethodDelete, "/v1/sequences/pipe", "pipe", "", nil); a.status != 404 {
		t.Errorf("delete again: %d %s", a.status, a.body)
	}
	if a := f.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil); a.status != 200 || bytes.Contains(a.body, []byte(`"pipe"`)) {
		t.Errorf("list after the delete: %d %s", a.status, a.body)
	}
	nc.Close()
	if a := put("pipe", steps(1)); a.status != 503 {
		t.Errorf("store down, put: %d %s", a.status, a.body)
	}
	if a := f.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil); a.status != 503 {
		t.Errorf("store down, list: %d %s", a.status, a.body)
	}
	g := newHandlerFixture(t, false)
	for _, h := range []handlerFunc{g.g.putSequence, g.g.getSequence, g.g.deleteSequence, g.g.listSequences} {
		if a := g.serve(h, false, http.MethodPut, "/v1/sequences/pipe", "pipe", "", []byte(steps(1))); a.status != 503 {
			t.Errorf("without async: %d %s", a.status, a.body)
		}
	}
}

func TestTriggerAndRuleHandlers(t *testing.T) {
	f := newHandlerFixture(t, true)
	// Triggers and rules in a real bucket: their listings and quotas read
	// the bucket's stream (bus.Keys).
	as := bustest.OpenAsync(t, bustest.Connect(t))
	f.g.cfg.Async.JS, f.g.cfg.Async.Triggers = as.JS, as.Triggers
	f.fns.add("acme", "open", 1, bundle.ConfidentialOptional, 0)
	f.fns.add("acme", "secret", 1, bundle.ConfidentialRequired, 0)
	do := func(h handlerFunc, ow bool, name, body string) answer {
		return f.serve(h, ow, http.MethodPut, "/", name, "application/json", []byte(body))
	}
	for _, c := range []struct {
		name, trig, body string
		code             apierr.Code
	}{
		{"invalid name", "Bad", `{}`, apierr.InvalidTrigger},
		{"not JSON", "t", `{`, apierr.BadRequest},
		{"cron and subject", "t", `{"cron":"* * * * *","subject":"cloister.events.acme.x"}`, apierr.InvalidTrigger},
		{"bad cron", "t", `{"cron":"every day"}`, apierr.InvalidTrigger},
		{"another namespace's subject", "t", `{"subject":"cloister.events.other.x"}`, apierr.InvalidTrigger},
	} {
		if a := do(f.g.putTrigger, false, c.trig, c.body); a.code(t) != c.code {
			t.Errorf("trigger, %s: got %d %s, want %s", c.name, a.status, a.body, c.code)
		}
	}
	if a := do(f.g.putTrigger, false, "t", `{}`); a.status != 200 {
		t.Fatalf("put trigger: %d %s", a.status, a.body)
	}
	for _, c := range []struct {
		name, body string
		code       apierr.Code
	}{
		{"invalid function", `{"trigger":"t","function":"Bad"}`, apierr.InvalidTrigger},
		{"version out of range", `{"trigger":"t","function":"open","version":-2}`, apierr.InvalidTrigger},
		{"unknown function", `{"trigger":"t","function":"nope"}`, apierr.NotFound},
		{"a confidential function", `{"trigger":"t","function":"secret"}`, apierr.ConfidentialRequired},
	} {
		if a := do(f.g.putRule, false, "r", c.body); a.code(t) != c.code {
			t.Errorf("rule, %s: got %d %s, want %s", c.name, a.status, a.body, c.code)
		}
	}
	if a := do(f.g.putRule, false, "r", `{"trigger":"t","function":"open"}`); a.status != 200 {
		t.Fatalf("put rule: %d %s", a.status, a.body)
	}

	// A fire queues the rule's function with the event, in plaintext.
	if a := f.serve(f.g.fireTrigger, false, http.MethodPost, "/", "t", "application/json", []byte(`{"x":1}`)); a.status != 202 {
		t.Fatalf("fire: %d %s", a.status, a.body)
	}
	subs := f.queue.submissions()
	if len(subs) != 1 || subs[0].Request.Name != "open" || string(subs[0].Request.Plain) != `{"x":1}` || subs[0].Trigger != "t" || subs[0].Rule != "r" {
		t.Fatalf("fire queued %+v", subs)
	}
	if a := f.serve(f.g.fireTrigger, false, http.MethodPost, "/", "nope", "", nil); a.status != 404 {
		t.Errorf("fire an unknown trigger: %d %s", a.status, a.body)
	}
	big := bytes.Repeat([]byte("x"), trigger.MaxPayload+1)
	if a := f.serve(f.g.fireTrigger, false, http.MethodPost, "/", "t", "", big); a.code(t) != apierr.PayloadTooLarge {
		t.Errorf("an oversized event: %d", a.status)
	}
	// The queue refuses: nothing is lost silently.
	f.queue.err = apierr.New(apierr.QuotaExceeded, "full")
	if a := f.serve(f.g.fireTrigger, false, http.MethodPost, "/", "t", "", []byte(`{}`)); a.code(t) != apierr.QuotaExceeded {
		t.Errorf("fire into a full queue: %d %s", a.status, a.body)
	}
	f.queue.err = nil

	// OpenWhisk: a rule to a confidential action is refused, saying why
	// (events are plaintext).
	if a := do(f.g.owPutRule, true, "r2", `{"trigger":"t","action":"secret"}`); a.status != 403 || !bytes.Contains(a.body, []byte("trigger events are plaintext")) {
		t.Errorf("OpenWhisk rule to a confidential action: %d %s", a.status, a.body)
	}

	g := newHandlerFixture(t, false)
	for _, h := range []handlerFunc{g.g.putTrigger, g.g.listTriggers, g.g.fireTrigger, g.g.putRule, g.g.listRules, g.g.owPutRule, g.g.owFireTrigger} {
		if a := g.serve(h, false, http.MethodPut, "/", "t", "", []byte(`{}`)); a.status != 503 {
			t.Errorf("without async: %d %s", a.status, a.body)
		}
	}
}

// The fakes are what the service layer takes.
var (
	_ functionReader  = (*registry.Registry)(nil)
	_ activationQueue = (*async.Store)(nil)
	_ io.Writer       = (*statusWriter)(nil)
)

// TestListSequencesWhileTheyChange: the sequence listings (ours and
// OpenWhisk's actions) name every sequence while others are rewritten,
// and none that was deleted.
func TestListSequencesWhileTheyChange(t *testing.T) {
	f := newHandlerFixture(t, true)
	f.withSequenceBucket(t)
	ctx := t.Context()
	const n = 30
	def := func(i int) []byte {
		b, _ := json.Marshal(wire.Sequence{Namespace: "acme", Name: fmt.Sprintf("seq-%02d", i), Steps: []wire.StepRef{{Name: "a"}}, Created: time.Now()})
		return b
	}
	for i := range n + 1 {
		if _, err := f.g.cfg.Async.Sequences.Put(ctx, sequenceKey("acme", fmt.Sprintf("seq-%02d", i)), def(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.g.cfg.Async.Sequences.Delete(ctx, sequenceKey("acme", fmt.Sprintf("seq-%02d", n))); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for cctx.Err() == nil {
				for i := g; i < n && cctx.Err() == nil; i += 4 {
					if _, err := f.g.cfg.Async.Sequences.Put(cctx, sequenceKey("acme", fmt.Sprintf("seq-%02d", i)), def(i)); err != nil && cctx.Err() == nil {
						t.Errorf("put: %v", err)
						return
					}
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	for round := range 100 {
		var l struct{ Sequences []wire.Sequence }
		a := f.serve(f.g.listSequences, false, http.MethodGet, "/v1/sequences", "", "", nil)
		if err := json.Unmarshal(a.body, &l); err != nil || a.status != 200 {
			t.Fatalf("round %d: %d %s", round, a.status, a.body)
		}
		if len(l.Sequences) != n {
			t.Fatalf("round %d: listed %d sequences, want %d", round, len(l.Sequences), n)
		}
		if round%10 == 0 {
			a := f.serve(f.g.owListActions, true, http.MethodGet, "/api/v1/namespaces/_/actions?count=true", "", "", nil)
			if a.status != 200 || !bytes.Contains(a.body, []byte(fmt.Sprintf(`"actions":%d`, n))) {
				t.Fatalf("round %d: OpenWhisk's count: %d %s, want %d actions", round, a.status, a.body, n)
			}
		}
	}
}
