package console

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/client"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
)

const (
	defaultHealthTimeout = 5 * time.Second
	// maxUpload bounds a deploy's upload: the module or script and its manifest.
	maxUpload = 64 << 20
	// maxJSONBody bounds every other request body.
	maxJSONBody = 8 << 20
)

func (s *Server) routes() {
	s.mux.Handle("GET /", http.FileServerFS(s.assets))
	api := s.api
	api.HandleFunc("GET /api/overview", s.overview)
	api.HandleFunc("GET /api/functions", s.functions)
	api.HandleFunc("GET /api/functions/{name}", s.function)
	api.HandleFunc("POST /api/functions/{name}", s.deploy)
	api.HandleFunc("DELETE /api/functions/{name}", s.deleteFunction)
	api.HandleFunc("POST /api/invoke", s.invoke)
	api.HandleFunc("GET /api/activations", s.activations)
	api.HandleFunc("GET /api/activations/{id}", s.activation)
	api.HandleFunc("GET /api/ledger", s.ledger)
	api.HandleFunc("GET /api/ledger/bill", s.bill)
	api.HandleFunc("POST /api/ledger/inclusion", s.inclusion)
	api.HandleFunc("GET /api/metrics", s.metricsAPI)
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, kindNotFound, "no such API: "+r.Method+" "+r.URL.Path)
	})
}

// Verification says what the local process verified of an answer. The
// page shows OK only when OK is true; Error says what failed.
type Verification struct {
	OK     bool     `json:"ok"`
	Checks []string `json:"checks,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// fail writes err as the API's error answer: a verification failure is 502
// with kind "verification", never a success.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ce *client.Error
	switch {
	case errors.Is(err, client.ErrVerification):
		s.log.Warn("verification failed", "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": apiError{Kind: kindVerification, Message: err.Error()},
			"verification": Verification{OK: false, Error: err.Error()}})
	case errors.As(err, &ce):
		status := http.StatusBadGateway
		if ce.Status == http.StatusNotFound || ce.Status == http.StatusConflict || ce.Status == http.StatusBadRequest {
			status = ce.Status
		}
		writeJSON(w, status, map[string]any{"error": apiError{Kind: kindPlatform, Message: ce.Message, Code: ce.Code}})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, kindPlatform, err.Error())
	default:
		s.log.Warn("request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusBadGateway, kindPlatform, err.Error())
	}
}

// attestationChecks are what Client.Attest verifies.
var attestationChecks = []string{
	"coordinator evidence verified against your pinned policy (TEE kind, measurement, TCB, freshness)",
	"evidence binds the coordinator's identity key and the manifest hash",
	"manifest matches its hash (and the pinned manifest, if the policy pins one)",
	"every admitted worker's certificate is signed by the attested coordinator",
}

// AttestationView is the overview's attestation.
type AttestationView struct {
	Verification
	TEE          string    `json:"tee,omitempty"`
	Sim          bool      `json:"sim"`
	Measurement  string    `json:"measurement,omitempty"`
	ManifestHash string    `json:"manifest_hash,omitempty"`
	TCB          string    `json:"tcb,omitempty"`
	IdentityKey  string    `json:"identity_key,omitempty"`
	LedgerOrigin string    `json:"ledger_origin,omitempty"`
	Warning      string    `json:"warning,omitempty"`
	VerifiedAt   time.Time `json:"verified_at,omitzero"`
}

// WorkerView is an admitted worker, from its verified certificate.
type WorkerView struct {
	WorkerID    string    `json:"worker_id"`
	TEE         string    `json:"tee"`
	TCB         string    `json:"tcb"`
	Measurement string    `json:"measurement"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Expired     bool      `json:"expired"`
}

// HealthView is a gateway's answer to /healthz and /readyz. It is health,
// not proof: the attestation is what proves what serves.
type HealthView struct {
	URL   string `json:"url"`
	Live  bool   `json:"live"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// Overview is the answer of GET /api/overview.
type Overview struct {
	Attestation AttestationView `json:"attestation"`
	Policy      client.Policy   `json:"policy"`
	// PolicyAllowsSim is set when the pinned policy accepts sim evidence.
	PolicyAllowsSim bool         `json:"policy_allows_sim"`
	Workers         []WorkerView `json:"workers"`
	Health          []HealthView `json:"health"`
	Namespace       string       `json:"namespace,omitempty"`
	Caller          string       `json:"caller_sha256,omitempty"`
	CanDeploy       bool         `json:"can_deploy"`
	Now             time.Time    `json:"now"`
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := time.Now()
	o := Overview{Policy: s.cfg.Policy, PolicyAllowsSim: slices.Contains(s.cfg.Policy.AllowTEE, "sim"), Workers: []WorkerView{},
		Namespace: s.cfg.Client.Namespace(), Caller: s.cfg.Client.CallerHash(), CanDeploy: s.cfg.OwnerKey != nil, Now: now}
	a, err := s.cfg.Client.Attest(ctx)
	if err != nil {
		o.Attestation.Error = err.Error()
	} else {
		o.Attestation = AttestationView{Verification: Verification{OK: true, Checks: attestationChecks}, TEE: a.TEE, Sim: a.TEE == "sim",
			Measurement: a.Measurement, ManifestHash: a.ManifestHash, TCB: a.TCB, IdentityKey: hex.EncodeToString(a.IdentityKey),
			LedgerOrigin: a.LedgerOrigin, Warning: a.Warning, VerifiedAt: a.VerifiedAt}
		for _, wk := range a.Workers {
			o.Workers = append(o.Workers, WorkerView{WorkerID: wk.WorkerID, TEE: wk.TEE, TCB: wk.TCB, Measurement: wk.Measurement,
				NotBefore: wk.NotBefore, NotAfter: wk.NotAfter, Expired: now.After(wk.NotAfter)})
		}
	}
	for _, gw := range s.cfg.Gateways {
		o.Health = append(o.Health, s.health(ctx, gw))
	}
	writeJSON(w, http.StatusOK, o)
}

// health asks a gateway's /healthz and /readyz, which need no API key.
func (s *Server) health(ctx context.Context, gw string) HealthView {
	h := HealthView{URL: gw}
	get := func(path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(gw, "/")+path, nil)
		if err != nil {
			return err
		}
		resp, err := s.cfg.HTTP.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Message string `json:"message"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body) // the status is what counts
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d %s", path, resp.StatusCode, body.Message)
		}
		return nil
	}
	if err := get("/healthz"); err != nil {
		h.Error = err.Error()
		return h
	}
	h.Live = true
	if err := get("/readyz"); err != nil {
		h.Error = err.Error()
		return h
	}
	h.Ready = true
	return h
}

// FunctionView is a function version: the fields of its certificate,
// verified here against the attested coordinator's key, and, in a single
// function's answer, the manifest the gateway reports (Limits, Manifest:
// not verified here; the bundle hash in the certificate covers them).
type FunctionView struct {
	Namespace    string            `json:"namespace"`
	Name         string            `json:"name"`
	Version      int               `json:"version"`
	Latest       int               `json:"latest,omitempty"`
	Created      time.Time         `json:"created"`
	Confidential string            `json:"confidential"`
	CodeHash     string            `json:"code_sha256"`
	SnapshotHash string            `json:"snapshot_sha256,omitempty"`
	BundleHash   string            `json:"bundle_sha256"`
	OwnerKey     string            `json:"owner_key,omitempty"`
	Suite        string            `json:"suite,omitempty"`
	AllowTEE     []string          `json:"allow_tee,omitempty"`
	MinTCB       map[string]string `json:"min_tcb,omitempty"`
	// Runtime follows from the certified ABI.
	Runtime     string          `json:"runtime,omitempty"`
	ABI         string          `json:"abi,omitempty"`
	Limits      *bundle.Limits  `json:"limits,omitempty"`
	Manifest    json.RawMessage `json:"manifest,omitempty"`
	Certificate Verification    `json:"certificate"`
}

// functions answers GET /api/functions[?limit=N][&after=NAME]: a page of
// the functions (of limit, or MaxFunctionPage), in name order, through the
// gateway's paging, and "next", the after of the next page; without limit
// or after, all of them.
func (s *Server) functions(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > client.MaxFunctionPage {
			writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("limit must be 1-%d", client.MaxFunctionPage))
			return
		}
		limit = n
	}
	after := q.Get("after")
	if after != "" && !bundle.ValidName(after) {
		writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("invalid cursor %q: after is a function name", after))
		return
	}
	a, err := s.cfg.Client.Attest(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var list []client.FunctionInfo
	next := ""
	if limit == 0 && after == "" {
		list, err = s.cfg.Client.List(ctx)
	} else {
		list, next, err = s.cfg.Client.ListPage(ctx, after, cmp.Or(limit, client.MaxFunctionPage))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]FunctionView, 0, len(list))
	for _, fi := range list {
		out = append(out, functionView(fi, a.IdentityKey, s.cfg.Client.Namespace()))
	}
	body := map[string]any{"functions": out}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

// functionView opens fi's certificate with the coordinator's key and shows
// its fields; a certificate that does not open, or that names another
// function, is reported as a verification failure and its fields left out.
func functionView(fi client.FunctionInfo, coordinator []byte, pinnedNS string) FunctionView {
	v := FunctionView{Namespace: fi.Namespace, Name: fi.Name, Version: fi.Version, Latest: fi.Latest, Created: fi.Created}
	var m bundle.Manifest
	if len(fi.Manifest) > 0 && json.Unmarshal(fi.Manifest, &m) == nil {
		v.Limits, v.Manifest = &m.Limits, fi.Manifest
	}
	fc, err := certs.OpenFunction(certs.Signed(fi.Certificate), coordinator)
	switch {
	case err != nil:
		v.Certificate.Error = err.Error()
		return v
	case fc.Name != fi.Name || fc.Version != fi.Version || fc.Namespace != fi.Namespace:
		v.Certificate.Error = fmt.Sprintf("the certificate is for %s/%s v%d", fc.Namespace, fc.Name, fc.Version)
		return v
	case pinnedNS != "" && fc.Namespace != pinnedNS:
		v.Certificate.Error = fmt.Sprintf("the function is in namespace %q, not the pinned %q", fc.Namespace, pinnedNS)
		return v
	}
	v.Confidential, v.CodeHash, v.SnapshotHash, v.BundleHash = fc.Confidential, fc.CodeHash, fc.SnapshotHash, fc.BundleHash
	v.OwnerKey, v.Suite, v.ABI = hex.EncodeToString(fc.OwnerKey), seal.SuiteName(fc.Suite), fc.ABI
	switch fc.ABI {
	case bundle.ABIJS:
		v.Runtime = bundle.RuntimeJS
	case bundle.ABIPython:
		v.Runtime = bundle.RuntimePython
	default:
		v.Runtime = bundle.RuntimeWasm
	}
	for _, k := range fc.AllowTEE {
		v.AllowTEE = append(v.AllowTEE, string(k))
	}
	if len(fc.MinTCB) > 0 {
		v.MinTCB = map[string]string{}
		for k, t := range fc.MinTCB {
			v.MinTCB[string(k)] = t
		}
	}
	v.Certificate = Verification{OK: true, Checks: []string{"certificate signed by the attested coordinator", "it names this function, version and namespace"}}
	return v
}

func (s *Server) function(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	if !bundle.ValidName(name) {
		writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("invalid function name %q", name))
		return
	}
	version := 0
	if vs := r.URL.Query().Get("version"); vs != "" {
		var err error
		if version, err = strconv.Atoi(vs); err != nil || version < 0 {
			writeError(w, http.StatusBadRequest, kindBadRequest, "version must be a number")
			return
		}
	}
	a, err := s.cfg.Client.Attest(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	fi, err := s.cfg.Client.Get(ctx, name, version)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"function": functionView(*fi, a.IdentityKey, s.cfg.Client.Namespace())})
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	if s.cfg.OwnerKey == nil {
		writeError(w, http.StatusForbidden, kindForbidden, "this console holds no owner key: run `cloister keys new`, or start it with --key")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUpload)
	if err := r.ParseMultipartForm(maxUpload); err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, "reading the upload: "+err.Error())
		return
	}
	defer r.MultipartForm.RemoveAll() // best effort: temporary files
	f, hdr, err := r.FormFile("file")
	if err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, "no file: upload a .wasm module, or a .js or .py script, as the form field \"file\"")
		return
	}
	code, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, "reading the upload: "+err.Error())
		return
	}
	manifest := []byte(r.FormValue("manifest"))
	m, err := PrepareManifest(name, hdr.Filename, manifest)
	if err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
		return
	}
	fi, err := Deploy(ctx, s.cfg.Client, m, code, s.cfg.OwnerKey)
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
			return
		}
		s.fail(w, r, err)
		return
	}
	a, err := s.cfg.Client.Attest(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"function": functionView(*fi, a.IdentityKey, s.cfg.Client.Namespace())})
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !bundle.ValidName(name) {
		writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("invalid function name %q", name))
		return
	}
	if err := s.cfg.Client.Delete(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name})
}

// InvokeRequest is the body of POST /api/invoke.
type InvokeRequest struct {
	Name    string `json:"name"`
	Version int    `json:"version,omitempty"`
	// Params is the input: any JSON value, sent as its bytes.
	Params         json.RawMessage `json:"params"`
	Logs           bool            `json:"logs,omitempty"`
	Async          bool            `json:"async,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// ResultView is a verified result, or a function's verified failure.
type ResultView struct {
	OK bool `json:"ok"`
	// Output is the function's output as text; OutputBase64 when it is
	// not UTF-8.
	Output       string                `json:"output,omitempty"`
	OutputBase64 []byte                `json:"output_base64,omitempty"`
	Logs         *string               `json:"logs,omitempty"`
	Mode         string                `json:"mode,omitempty"`
	Version      int                   `json:"version,omitempty"`
	Error        *apiError             `json:"error,omitempty"`
	Receipt      *client.Receipt       `json:"receipt,omitempty"`
	Signed       *client.SignedReceipt `json:"signed_receipt,omitempty"`
	Worker       *WorkerView           `json:"worker,omitempty"`
	Verification Verification          `json:"verification"`
}

// receiptChecks are what the client verified of a sealed call's receipt.
var receiptChecks = []string{
	"attestation of the coordinator verified against your policy",
	"function certificate signed by the attested coordinator; input sealed (HPKE) to its key",
	"receipt signed by the worker, whose certificate the attested coordinator signed",
	"receipt names this namespace, function, version, code and snapshot hashes",
	"receipt's request hash is that of the sealed request sent",
	"receipt names your caller key (or anonymous)",
	"worker's TEE admitted by the function's certified TEE policy",
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	var req InvokeRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !bundle.ValidName(req.Name) {
		writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("invalid function name %q", req.Name))
		return
	}
	if len(req.Params) > 0 && !json.Valid(req.Params) {
		writeError(w, http.StatusBadRequest, kindBadRequest, "params is not JSON")
		return
	}
	ctx := r.Context()
	if req.Async {
		p, err := s.cfg.Client.InvokeAsync(ctx, req.Name, req.Params, client.AsyncOptions{Version: req.Version, IdempotencyKey: req.IdempotencyKey})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if err := s.keep(p); err != nil {
			s.log.Warn("keeping an activation's key", "activation", p.ActivationID, "err", err)
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"activation_id": p.ActivationID, "duplicate": p.Duplicate})
		return
	}
	res, err := s.cfg.Client.Invoke(ctx, req.Name, req.Params, client.InvokeOptions{Version: req.Version, Logs: req.Logs})
	if err != nil {
		s.failedResult(w, r, err)
		return
	}
	checks := append(slices.Clone(receiptChecks), "receipt's response hash is that of the sealed answer; the output decrypted and authenticated")
	if req.Logs {
		checks = append(checks, "logs decrypted and authenticated")
	}
	writeJSON(w, http.StatusOK, resultView(res, checks, req.Logs))
}

// failedResult writes a failed invocation: a function that ran and failed
// is an answer (200) with its verified receipt; anything else is an error.
func (s *Server) failedResult(w http.ResponseWriter, r *http.Request, err error) {
	var ce *client.Error
	if errors.Is(err, client.ErrVerification) || !errors.As(err, &ce) || ce.Receipt == nil {
		s.fail(w, r, err)
		return
	}
	v := ResultView{Error: &apiError{Kind: kindFunction, Code: ce.Code, Message: ce.Message}, Receipt: ce.Receipt,
		Verification: Verification{OK: true, Checks: append(slices.Clone(receiptChecks), "receipt status is the error's code")}}
	if ce.Logs != nil {
		l := string(ce.Logs)
		v.Logs = &l
	}
	writeJSON(w, http.StatusOK, v)
}

func resultView(res *client.Result, checks []string, withLogs bool) ResultView {
	v := ResultView{OK: true, Mode: res.Mode, Version: res.Version, Receipt: res.Receipt, Signed: res.SignedReceipt,
		Verification: Verification{OK: true, Checks: checks}}
	if utf8.Valid(res.Output) {
		v.Output = string(res.Output)
	} else {
		v.OutputBase64 = res.Output
	}
	if withLogs || res.Logs != nil {
		l := string(res.Logs)
		v.Logs = &l
	}
	if wk := res.Worker; wk != nil {
		v.Worker = &WorkerView{WorkerID: wk.WorkerID, TEE: wk.TEE, TCB: wk.TCB, Measurement: wk.Measurement, NotBefore: wk.NotBefore,
			NotAfter: wk.NotAfter, Expired: time.Now().After(wk.NotAfter)}
	}
	return v
}

// ActivationSummary is a line of the activations list, as the gateway
// reports it: unverified (a detail verifies the receipt).
type ActivationSummary struct {
	ID        string    `json:"activation_id"`
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Kind      string    `json:"kind"`
	Mode      string    `json:"mode"`
	Status    string    `json:"status"`
	Submitted time.Time `json:"submitted"`
	Duration  int64     `json:"duration_ms"`
	Attempts  int       `json:"attempts"`
	Trigger   string    `json:"trigger,omitempty"`
	// KeyHeld says whether this console holds the key that opens the result.
	KeyHeld bool `json:"key_held"`
}

// activationScanPages bounds the gateway pages one filtered page of
// activations reads (the status and since filters are the console's).
const activationScanPages = 5

// activations answers GET /api/activations[?limit=N][&before=ID]
// [&function=NAME][&status=S][&since=T]: a page of activations, newest
// first, through the gateway's paging, and "next", the before of the next
// page. The gateway filters by function; the console by status and since,
// reading a few gateway pages at most to fill a page (a page may be short
// while next is set).
func (s *Server) activations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > client.MaxActivationPage {
			writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("limit must be 1-%d", client.MaxActivationPage))
			return
		}
		limit = n
	}
	before := q.Get("before")
	if before != "" && !validActivationID(before) {
		writeError(w, http.StatusBadRequest, kindBadRequest, "invalid cursor: before is an activation id")
		return
	}
	name, status := q.Get("function"), q.Get("status")
	if name != "" && !bundle.ValidName(name) {
		writeError(w, http.StatusBadRequest, kindBadRequest, fmt.Sprintf("invalid function name %q", name))
		return
	}
	var since time.Time
	if sv := q.Get("since"); sv != "" {
		if d, err := time.ParseDuration(sv); err == nil && d > 0 {
			since = time.Now().Add(-d)
		} else if since, err = time.Parse(time.RFC3339, sv); err != nil {
			writeError(w, http.StatusBadRequest, kindBadRequest, "since: want an RFC 3339 time or a duration such as 1h")
			return
		}
	}
	out := []ActivationSummary{}
	next := before
	// Without a status filter, a gateway page is the page (since only
	// ends it early); with one, full pages are read until this one is full.
	fetch := limit
	if status != "" {
		fetch = client.MaxActivationPage
	}
pages:
	for range activationScanPages {
		list, gwNext, err := s.cfg.Client.ActivationsPage(r.Context(), client.ActivationQuery{Limit: fetch, Name: name, Before: next})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		next = gwNext
		for i, a := range list {
			sub := time.UnixMilli(a.Submitted)
			if !since.IsZero() && sub.Before(since) {
				// Newest first: the rest is older still.
				next = ""
				break pages
			}
			if status != "" && a.Status != status {
				continue
			}
			out = append(out, ActivationSummary{ID: a.ActivationID, Name: a.Name, Version: a.Version, Kind: a.Kind, Mode: a.Mode,
				Status: a.Status, Submitted: sub, Duration: a.Duration, Attempts: a.Attempts, Trigger: a.Trigger, KeyHeld: s.pendingFor(a.ActivationID) != nil})
			if len(out) == limit {
				if i < len(list)-1 {
					next = a.ActivationID
				}
				break pages
			}
		}
		if next == "" {
			break
		}
	}
	body := map[string]any{"activations": out, "verified": false,
		"note": "the list is the gateway's record; open an activation to verify its receipt"}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

// ActivationView is one activation: the gateway's record (unverified),
// its platform log lines, and, when this console holds its key (or it was
// a plaintext call), its verified result.
type ActivationView struct {
	Record       *client.Activation `json:"record"`
	PlatformLogs []string           `json:"platform_logs"`
	Result       *ResultView        `json:"result,omitempty"`
	// Pending is set while the activation has not finished.
	Pending bool `json:"pending,omitempty"`
	// Note says why there is no result.
	Note string `json:"note,omitempty"`
}

func (s *Server) activation(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	if !validActivationID(id) {
		writeError(w, http.StatusBadRequest, kindBadRequest, "an activation id is 32 lower-case hex digits")
		return
	}
	a, err := s.cfg.Client.Activation(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := ActivationView{Record: a, PlatformLogs: a.Logs}
	a.SealedLogs, a.Response.Result = nil, nil // sealed bytes: the result below is what they open to
	p := s.pendingFor(id)
	if p == nil && a.Mode == "plain" {
		p = &client.Pending{ActivationID: id, Kind: a.Kind, Namespace: a.Namespace, Name: a.Name, Mode: a.Mode}
	}
	if p == nil {
		v.Note = "the result is sealed to the client that queued this activation; this console does not hold its key"
		writeJSON(w, http.StatusOK, v)
		return
	}
	lines, fl, err := s.cfg.Client.ActivationLogs(ctx, id, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v.PlatformLogs = lines
	res, err := s.cfg.Client.ActivationResult(ctx, p)
	var ce *client.Error
	switch {
	case err == nil:
		rv := resultView(res, receiptChecks[:4:4], false)
		rv.Verification.Checks = append(rv.Verification.Checks, "receipt's request and response hashes are those of this activation; the result decrypted and authenticated")
		if fl != nil {
			l := string(fl)
			rv.Logs = &l
		}
		v.Result = &rv
	case errors.As(err, &ce) && ce.Code == "activation_pending":
		v.Pending = true
	case errors.Is(err, client.ErrVerification):
		s.fail(w, r, err)
		return
	case errors.As(err, &ce) && ce.Receipt != nil:
		rv := ResultView{Error: &apiError{Kind: kindFunction, Code: ce.Code, Message: ce.Message}, Receipt: ce.Receipt,
			Verification: Verification{OK: true, Checks: append(slices.Clone(receiptChecks[:4:4]), "receipt status is the error's code")}}
		if fl != nil {
			l := string(fl)
			rv.Logs = &l
		}
		v.Result = &rv
	case errors.As(err, &ce):
		v.Result = &ResultView{Error: &apiError{Kind: kindPlatform, Code: ce.Code, Message: ce.Message}}
	default:
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// CheckpointView is a verified ledger checkpoint.
type CheckpointView struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Hash   string `json:"root_hash"`
}

func checkpointView(cp *client.Checkpoint) *CheckpointView {
	if cp == nil {
		return nil
	}
	return &CheckpointView{Origin: cp.Origin, Size: cp.Size, Hash: hex.EncodeToString(cp.Hash)}
}

func (s *Server) ledger(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	a, err := s.cfg.Client.Attest(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.cfg.Client.Ledger(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	checks := []string{"checkpoint signed by the attested coordinator's key, for its ledger origin"}
	if s.cfg.CheckpointDir == "" {
		cp, note, err := l.VerifiedCheckpoint(ctx)
		if err != nil {
			s.fail(w, r, fmt.Errorf("%w: checkpoint: %w", client.ErrVerification, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"checkpoint": checkpointView(cp), "note": string(note), "verification": Verification{OK: true, Checks: checks}})
		return
	}
	path := checkpointPath(s.cfg.CheckpointDir, a.IdentityKey)
	u, err := l.UpdateTrusted(ctx, path)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": apiError{Kind: kindVerification, Message: err.Error()},
			"verification": Verification{Error: err.Error()}, "stored": checkpointView(u.Stored), "latest": checkpointView(u.Latest),
			"stored_note": string(u.StoredRaw), "latest_note": string(u.LatestRaw)})
		return
	}
	if u.Stored != nil {
		checks = append(checks, fmt.Sprintf("consistency proof: it extends the checkpoint of size %d verified before", u.Stored.Size))
	} else {
		checks = append(checks, "first checkpoint seen for this coordinator: stored to check the next against")
	}
	writeJSON(w, http.StatusOK, map[string]any{"checkpoint": checkpointView(u.Latest), "previous": checkpointView(u.Stored),
		"note": string(u.LatestRaw), "verification": Verification{OK: true, Checks: checks}})
}

func (s *Server) bill(w http.ResponseWriter, r *http.Request) {
	rep, err := Bill(r.Context(), s.cfg.Client)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if !rep.Verification.OK {
		status = http.StatusBadGateway
	}
	writeJSON(w, status, rep)
}

// InclusionRequest is the body of POST /api/ledger/inclusion.
type InclusionRequest struct {
	Receipt *client.SignedReceipt `json:"receipt"`
}

func (s *Server) inclusion(w http.ResponseWriter, r *http.Request) {
	var req InclusionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Receipt == nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, "no receipt")
		return
	}
	ctx := r.Context()
	rc, err := s.cfg.Client.VerifyReceipt(ctx, req.Receipt)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	checks := []string{"receipt signed by a worker whose certificate the attested coordinator signed"}
	idx, cp, err := s.cfg.Client.VerifyInclusion(ctx, req.Receipt)
	switch {
	case errors.Is(err, client.ErrNotLogged):
		writeJSON(w, http.StatusOK, map[string]any{"receipt": rc, "included": false, "note": err.Error(),
			"verification": Verification{OK: true, Checks: checks}})
	case err != nil:
		s.fail(w, r, err)
	default:
		checks = append(checks, "inclusion proof verified against a checkpoint signed by the attested coordinator")
		writeJSON(w, http.StatusOK, map[string]any{"receipt": rc, "included": true, "index": idx, "checkpoint": checkpointView(cp),
			"verification": Verification{OK: true, Checks: checks}})
	}
}

// readJSON decodes r's body into v, or writes a 400 and returns false.
// It requires a JSON content type, which a cross-origin form cannot send.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, kindBadRequest, "send application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, "reading the request: "+err.Error())
		return false
	}
	return true
}

func validActivationID(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}
