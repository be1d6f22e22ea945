// Package client is Cloister's Go client SDK. It verifies the coordinator's
// attestation against a pinned policy, fetches certified function keys,
// seals requests end to end to the attested worker (RFC 9180 HPKE), opens
// sessions for cheap repeated requests, decrypts responses and verifies
// every receipt back to the attested coordinator.
//
// Nothing it sends to the gateway contains the plaintext of a confidential
// request, and it returns an output only after its receipt verified.
//
// Every type it exports is its own, never an internal one: it converts at
// the boundary, and its tests check that each type that mirrors one the
// server sends has that type's JSON, so that a change inside the platform
// cannot change this API unseen.
package client

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/artoken"
	"github.com/cloister-faas/cloister/internal/attest"
	"github.com/cloister-faas/cloister/internal/attest/collateral"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// ErrVerification wraps every failure to verify attestation, a certificate,
// a response or a receipt. A caller must not use the output then.
var ErrVerification = errors.New("cloister: verification failed")

// Error is an error answered by the platform, with its stable code. When the
// function ran and failed (a trap, a timeout), Receipt holds its verified receipt.
type Error struct {
	Status  int
	Code    string
	Message string
	Receipt *Receipt
	// For sequence_step_failed: the failed step (1-based), its own code,
	// and the verified receipt chain up to it.
	Step     int
	StepCode string
	Chain    []*Receipt
	// Logs is the function's stderr, opened and authenticated, when the
	// invocation asked for it (InvokeOptions.Logs).
	Logs []byte
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status) }

// Client talks to Cloister gateways: one at a time, failing over to the
// next where that is safe (see New). It is safe for concurrent use.
type Client struct {
	gws    []string     // gateway base URLs, without a trailing slash
	cur    atomic.Int64 // index in gws of the gateway that answered last
	log    *slog.Logger
	token  string
	policy attest.Policy
	hc     *http.Client
	ttl    time.Duration
	now    func() time.Time
	cache  string
	ns     string
	owners []ed25519.PublicKey

	mu       sync.Mutex
	att      *Attestation
	attExp   time.Time
	verifier *receipt.Verifier         // for att.IdentityKey
	fns      map[string]cachedFunction // verified certificates, by name@version
	seqs     map[[32]byte]bool         // verified sequence signatures (see verifySequence)
	// resubmits are sealed async submissions by idempotency key (see
	// sealSubmission).
	resubmits map[string]sealedSubmission
	// caller signs sealed requests (WithCallerKey); nil: anonymous.
	caller ed25519.PrivateKey
	pq     bool // WithPostQuantum

	useToken bool
	resultTk string           // the last verified attestation-result token
	resultCl *artoken.Claims  // its claims
	attester *attest.Verifier // verifies raw hardware evidence
}

type cachedFunction struct {
	fn  *Function
	exp time.Time
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. Its Timeout (default 10 min) bounds
// each attempt on one gateway (see New for failover).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithAttestationTTL sets how long a verified attestation is reused (default 60 s).
func WithAttestationTTL(d time.Duration) Option { return func(c *Client) { c.ttl = d } }

// WithClock injects the clock.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithAttestationCache keeps the attestation document in a file so that
// short-lived processes (the CLI) share it for the TTL. The cached document
// is verified again on every load; only the network round trip is saved.
func WithAttestationCache(path string) Option { return func(c *Client) { c.cache = path } }

// WithResultToken makes Attest, once it has verified the coordinator's raw
// evidence, renew the attestation with the coordinator's attestation-result
// token (GET /v1/attestation/token: an EdDSA JWT valid 60 s, see
// docs/operations.md) instead of verifying hardware evidence again. The
// token must be signed by the identity key the raw evidence bound and
// name the same TEE, measurement and manifest; otherwise Attest falls back
// to the raw evidence.
func WithResultToken() Option { return func(c *Client) { c.useToken = true } }

// WithCollateral sets where hardware-evidence collateral (AMD and Intel
// certificates, CRLs, TCB info) is cached on disk, and optionally an offline
// bundle file to use instead of the network.
func WithCollateral(cacheDir, bundlePath string) Option {
	return func(c *Client) {
		o := collateral.Options{Dir: cacheDir}
		if bundlePath != "" {
			if b, err := collateral.LoadBundle(bundlePath); err == nil {
				o.Bundle, o.Offline = b, true
			}
		}
		c.attester = &attest.Verifier{Collateral: collateral.New(o)}
	}
}

// WithNamespace pins the namespace the client's functions live in. The
// gateway is untrusted: without the pin it could route a request to a
// same-named function in another namespace, whose owner would see the input.
func WithNamespace(ns string) Option { return func(c *Client) { c.ns = ns } }

// Namespace returns the namespace pinned with WithNamespace, or "" if none
// is. Owner tooling signs bundles for it (Manifest.Namespace).
func (c *Client) Namespace() string { return c.ns }

// WithPostQuantum makes the client seal only to functions whose key is of
// the post-quantum suite, MLKEM768-X25519 (X-Wing): a function certificate
// of the X25519 suite (issued before the hybrid suite was the default) is
// refused with ErrVerification. Without it, both are accepted, each as its
// certificate says.
func WithPostQuantum() Option { return func(c *Client) { c.pq = true } }

// WithCallerKey makes the client sign every sealed request, and every
// session it opens, with the caller key k, inside the envelope: the
// worker checks the key against the function's invoker policy (which is
// "owner", the owner key, unless the owner said otherwise) and names its
// hash in the receipt, which the client checks. Without it, requests are
// anonymous, and only functions whose policy is "any" serve them.
func WithCallerKey(k ed25519.PrivateKey) Option { return func(c *Client) { c.caller = k } }

// CallerHash is the hash of the client's caller key as receipts name it
// (certs.CallerHash), or "" for an anonymous client.
func (c *Client) CallerHash() string {
	if c.caller == nil {
		return ""
	}
	return certs.CallerHash(c.caller.Public().(ed25519.PublicKey))
}

// expectCaller is the caller the client's receipts must name: its key's
// hash, or "-" (anonymous) without one.
func (c *Client) expectCaller() string {
	if h := c.CallerHash(); h != "" {
		return h
	}
	return "-"
}

// WithOwnerKeys pins the owner keys whose functions the client will send
// data to; a function certificate naming another owner is refused.
func WithOwnerKeys(keys ...ed25519.PublicKey) Option {
	return func(c *Client) { c.owners = append(c.owners, keys...) }
}

// New returns a client for the gateway at baseURL, authenticating with an
// API key and verifying attestation against policy.
//
// baseURL may list several gateways, separated by commas
// ("https://gw1.example,https://gw2.example"); each must be an http or
// https URL. Gateways hold no state, so any of them serves any request.
// The client sends each request to the gateway that answered last (the
// first listed, to begin with) and fails over to the next ones in turn,
// trying each at most once per request and none once a minute has passed:
//
//   - when no connection could be made to it (refused, unreachable, a
//     failed TLS handshake), since the request then never left the client;
//   - when it answers 502, 503 or 504 with a code that says nothing ran:
//     unavailable, no_worker or overloaded;
//   - for a GET, or a POST with an Idempotency-Key (InvokeAsync with
//     AsyncOptions.IdempotencyKey), also on any other transport failure
//     (a dropped connection, a timeout) and any other 502, 503 or 504.
//
// Any other request that reached a gateway and got no answer from it is
// not sent again: it fails with an error wrapping ErrOutcomeUnknown. A
// sealed request sent again would be refused as a replay anyway. If every
// gateway fails, the last answer (or the transport errors) is returned.
// Attestation, function keys and the ledger are GETs and fail over freely;
// they are verified whichever gateway serves them.
func New(baseURL, token string, policy Policy, opts ...Option) (*Client, error) {
	ap := policy.internal()
	if err := ap.Validate(); err != nil {
		return nil, err
	}
	gws, err := parseGateways(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{gws: gws, token: token, policy: ap,
		hc: &http.Client{Timeout: 10 * time.Minute}, ttl: 60 * time.Second, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Attestation is a verified coordinator attestation.
type Attestation struct {
	// TEE is the coordinator's TEE kind: "sim", "sev-snp" or "tdx".
	TEE          string
	TCB          string
	Measurement  string
	IdentityKey  ed25519.PublicKey
	ManifestHash string
	// Workers are the admitted workers' certificates, verified against IdentityKey.
	Workers []*Worker
	// LedgerOrigin names the transparency log whose checkpoints IdentityKey signs.
	LedgerOrigin string
	// Warning is set for sim evidence, which offers no hardware protection.
	Warning    string
	VerifiedAt time.Time
}

type cachedDoc struct {
	Doc     wire.Attestation `json:"doc"`
	Fetched time.Time        `json:"fetched"`
}

// Attest returns the verified coordinator attestation, fetching and
// verifying it at most once per TTL.
func (c *Client) Attest(ctx context.Context) (*Attestation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.att != nil && now.Before(c.attExp) {
		return c.att, nil
	}
	if c.useToken && c.att != nil {
		if err := c.renewWithToken(ctx, now); err == nil {
			return c.att, nil
		}
		// Anything off about the token: verify the raw evidence again.
	}
	if c.cache != "" {
		if b, err := os.ReadFile(c.cache); err == nil {
			var cd cachedDoc
			if json.Unmarshal(b, &cd) == nil && now.Sub(cd.Fetched) < c.ttl && now.After(cd.Fetched) {
				if a, err := c.verifyDoc(&cd.Doc); err == nil {
					c.att, c.attExp = a, cd.Fetched.Add(c.ttl)
					return a, nil
				}
			}
		}
	}
	var doc wire.Attestation
	if err := c.do(ctx, http.MethodGet, "/v1/attestation", nil, "", &doc); err != nil {
		return nil, fmt.Errorf("fetching attestation: %w", err)
	}
	a, err := c.verifyDoc(&doc)
	if err != nil {
		return nil, err
	}
	c.att, c.attExp = a, now.Add(c.ttl)
	if c.cache != "" {
		if b, err := json.Marshal(cachedDoc{Doc: doc, Fetched: now}); err == nil {
			// Best effort: the cache only saves a fetch; the next verify writes it again.
			_ = os.WriteFile(c.cache, b, 0o600)
		}
	}
	return a, nil
}

// renewWithToken extends the verified attestation with a fresh
// attestation-result token. Callers hold c.mu.
func (c *Client) renewWithToken(ctx context.Context, now time.Time) error {
	var t wire.ResultToken
	if err := c.do(ctx, http.MethodGet, "/v1/attestation/token", nil, "", &t); err != nil {
		return err
	}
	cl, err := verifyResultToken(t.Token, c.att.IdentityKey, now)
	if err != nil {
		return err
	}
	if string(cl.TEE) != c.att.TEE || cl.Measurement != c.att.Measurement || cl.ManifestHash != c.att.ManifestHash {
		return fmt.Errorf("%w: the result token describes another coordinator state", ErrVerification)
	}
	c.resultTk, c.resultCl = t.Token, cl
	a := *c.att
	a.VerifiedAt = now
	c.att = &a
	c.attExp = now.Add(c.ttl)
	if exp := time.Unix(cl.Expires, 0); exp.Before(c.attExp) {
		c.attExp = exp
	}
	return nil
}

// ResultToken returns the last attestation-result token this client
// verified (with WithResultToken), for handing to a relying party, and its
// claims; "" and nil before the first.
func (c *Client) ResultToken() (string, *ResultClaims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resultTk, claimsFrom(c.resultCl)
}

func (c *Client) verifyDoc(doc *wire.Attestation) (*Attestation, error) {
	v := c.attester
	if v == nil {
		v = &attest.Verifier{Now: c.now}
	}
	claims, err := v.Verify(doc.Evidence, c.policy)
	if err != nil {
		return nil, fmt.Errorf("%w: coordinator evidence: %w", ErrVerification, err)
	}
	if seal.SHA256Hex(doc.Manifest) != doc.ManifestHash {
		return nil, fmt.Errorf("%w: manifest does not match its hash", ErrVerification)
	}
	if c.policy.ManifestHash != "" && c.policy.ManifestHash != doc.ManifestHash {
		return nil, fmt.Errorf("%w: manifest %s is not the pinned %s", ErrVerification, doc.ManifestHash, c.policy.ManifestHash)
	}
	mh, _ := hex.DecodeString(doc.ManifestHash) // the SHA256Hex of the manifest, checked above
	if len(doc.IdentityKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: coordinator identity key", ErrVerification)
	}
	rd := tee.BindReportData(wire.LabelCoordinator, doc.IdentityKey, mh)
	if err := attest.Validate(claims, c.policy, rd, c.now()); err != nil {
		return nil, fmt.Errorf("%w: coordinator evidence: %w", ErrVerification, err)
	}
	if c.att == nil || !c.att.IdentityKey.Equal(doc.IdentityKey) {
		c.verifier = receipt.NewVerifier(doc.IdentityKey)
		c.fns = map[string]cachedFunction{}
	}
	a := &Attestation{TEE: string(claims.Kind), TCB: claims.TCB, Measurement: hex.EncodeToString(claims.Measurement),
		IdentityKey: doc.IdentityKey, ManifestHash: doc.ManifestHash, VerifiedAt: c.now(), LedgerOrigin: doc.LedgerOrigin}
	for _, w := range doc.Workers {
		wc, err := certs.OpenWorker(w, doc.IdentityKey)
		if err != nil {
			return nil, fmt.Errorf("%w: admitted worker: %w", ErrVerification, err)
		}
		a.Workers = append(a.Workers, workerFrom(wc))
	}
	if claims.Kind == tee.KindSim {
		a.Warning = "sim TEE: no hardware protection (development only)"
	}
	return a, nil
}

// Function is a function version's verified certificate.
type Function struct {
	Namespace    string
	Name         string
	Version      int
	CodeHash     string
	SnapshotHash string
	BundleHash   string
	Confidential string
	// AllowTEE lists the TEE kinds the function may run in, from its
	// certificate ("sim", "sev-snp", "tdx").
	AllowTEE []string
	// MinTCB is the function's minimum TCB per TEE kind, from its
	// certificate.
	MinTCB map[string]string
	// OwnerKey is the key that signed the function's bundle.
	OwnerKey ed25519.PublicKey
	// Suite names the HPKE suite of the function's key, from its
	// certificate: "MLKEM768-X25519" (post-quantum, X-Wing) or "X25519".
	Suite   string
	hpkeKey []byte
	plain   bool // a plaintext call's stand-in: no certificate was fetched
	// allowTEE and minTCB are AllowTEE and MinTCB as the certificate has
	// them, which checkWorkerPolicy checks receipts against.
	allowTEE []tee.Kind
	minTCB   map[tee.Kind]string
}

// Function fetches and verifies the certificate of a function version
// (0 = latest).
//
// A verified certificate is reused for the attestation TTL, so a new latest
// version is picked up within that time.
func (c *Client) Function(ctx context.Context, name string, version int) (*Function, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	key := name + "@" + strconv.Itoa(version)
	c.mu.Lock()
	cf, ok := c.fns[key]
	c.mu.Unlock()
	if ok && c.now().Before(cf.exp) {
		return cf.fn, nil
	}
	var fi wire.FunctionInfo
	if err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/key"+versionQuery(version), nil, "", &fi); err != nil {
		return nil, err
	}
	fc, err := certs.OpenFunction(fi.Certificate, a.IdentityKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	if fc.Name != name || (version != 0 && fc.Version != version) {
		return nil, fmt.Errorf("%w: certificate is for %s v%d, asked for %s v%d", ErrVerification, fc.Name, fc.Version, name, version)
	}
	if c.ns != "" && fc.Namespace != c.ns {
		return nil, fmt.Errorf("%w: function is in namespace %q, not the pinned %q", ErrVerification, fc.Namespace, c.ns)
	}
	if len(c.owners) > 0 && !slices.ContainsFunc(c.owners, func(k ed25519.PublicKey) bool { return k.Equal(ed25519.PublicKey(fc.OwnerKey)) }) {
		return nil, fmt.Errorf("%w: function is signed by owner %x, which is not pinned", ErrVerification, fc.OwnerKey)
	}
	// The suite is the certificate's, which the coordinator signed: the
	// key must be one of it, and a client that wants post-quantum sealing
	// refuses any other (a gateway serving an older version's certificate
	// cannot make it seal with X25519 alone).
	if err := seal.CheckSuite(fc.Suite, fc.HPKEKey); err != nil {
		return nil, fmt.Errorf("%w: function certificate: %w", ErrVerification, err)
	}
	if c.pq && fc.Suite != seal.SuiteXWing {
		return nil, fmt.Errorf("%w: %s v%d is sealed with %s, and this client requires post-quantum sealing (%s)", ErrVerification,
			fc.Name, fc.Version, seal.SuiteName(fc.Suite), seal.SuiteName(seal.SuiteXWing))
	}
	fn := &Function{Namespace: fc.Namespace, Name: fc.Name, Version: fc.Version, CodeHash: fc.CodeHash, SnapshotHash: fc.SnapshotHash,
		BundleHash: fc.BundleHash, Confidential: fc.Confidential, AllowTEE: kinds[string](fc.AllowTEE), MinTCB: minTCBs[string](fc.MinTCB),
		allowTEE: fc.AllowTEE, minTCB: fc.MinTCB, OwnerKey: ed25519.PublicKey(fc.OwnerKey), hpkeKey: fc.HPKEKey,
		Suite: seal.SuiteName(fc.Suite)}
	c.mu.Lock()
	if c.fns != nil {
		c.fns[key] = cachedFunction{fn: fn, exp: c.now().Add(c.ttl)}
	}
	c.mu.Unlock()
	return fn, nil
}

func versionQuery(v int) string {
	if v == 0 {
		return ""
	}
	return "?version=" + strconv.Itoa(v)
}

// Result is a verified invocation result.
type Result struct {
	Output        []byte
	Version       int
	Receipt       *Receipt
	SignedReceipt *SignedReceipt
	// Worker is the certificate of the worker that signed the receipt.
	Worker      *Worker
	Attestation *Attestation
	Mode        string
	// Chain is a sequence's verified receipt chain, step 1 first; Receipt
	// and SignedReceipt are its last step.
	Chain []*SignedReceipt
	// Logs is what the function wrote on stderr, opened and authenticated,
	// when InvokeOptions.Logs asked for it (nil: it wrote nothing).
	Logs []byte
	// SequenceSigner is the owner key that signed the sequence's
	// definition, nil if the definition was unsigned (the steps were then
	// the gateway's word; see sealSequence).
	SequenceSigner ed25519.PublicKey
}

// InvokeOptions select the version and the mode.
type InvokeOptions struct {
	// Version is the function version; 0 means the latest.
	Version int
	// Plaintext sends the input unsealed. The function must allow it
	// (confidential: optional), and the gateway sees the input and output.
	Plaintext bool
	// Logs asks for what the function wrote on stderr (up to 64 KiB),
	// sealed to this client like the output: Result.Logs, or Error.Logs
	// when the function failed. Sealed invocations only.
	Logs bool
}

// Invoke runs a function once and returns its verified output.
func (c *Client) Invoke(ctx context.Context, name string, input []byte, o InvokeOptions) (*Result, error) {
	if o.Plaintext {
		if o.Logs {
			return nil, errors.New("client: logs are returned to sealed invocations only")
		}
		return c.invokePlain(ctx, name, input, o.Version)
	}
	fn, err := c.Function(ctx, name, o.Version)
	if err != nil {
		return nil, err
	}
	cc, err := seal.SealRequest(fn.hpkeKey, seal.Info(fn.Namespace, fn.Name, fn.Version, fn.CodeHash), seal.NewPayload(input, c.now()), c.caller, false)
	if err != nil {
		return nil, err
	}
	sr := wire.SealedRequest{Mode: wire.ModeHPKE, Version: fn.Version, Enc: cc.Enc, Ciphertext: cc.Ciphertext}
	path := "/invoke"
	if o.Logs {
		path += "?logs=true"
	}
	rk, err := seal.NewSymmetric(cc.ResponseKey)
	if err != nil {
		return nil, err
	}
	return c.sendSealed(ctx, fn, path, sr, rk, seal.RequestHash(sr.Mode, sr.Enc, nil, sr.Ciphertext))
}

func (c *Client) sendSealed(ctx context.Context, fn *Function, path string, sr wire.SealedRequest, key *seal.Symmetric, reqHash string) (*Result, error) {
	body, err := json.Marshal(sr)
	if err != nil {
		return nil, err
	}
	var resp wire.SealedResponse
	err = c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(fn.Name)+path, body, wire.SealedContentType, &resp)
	if errors.Is(err, ErrOutcomeUnknown) {
		return nil, withReceiptHint(err, reqHash)
	}
	if err != nil {
		var sealedLogs []byte
		if ae := (*apiError)(nil); errors.As(err, &ae) {
			sealedLogs = ae.body.Logs
		}
		err = c.verifyErrorReceipt(ctx, err, fn, reqHash)
		var e *Error
		if sealedLogs != nil && errors.As(err, &e) {
			if e.Logs, err = openLogs(key, reqHash, sealedLogs); err != nil {
				return nil, err
			}
			return nil, e
		}
		return nil, err
	}
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	v, err := c.receipts().Verify(resp.Receipt, receipt.Expect{Namespace: fn.Namespace, Function: fn.Name,
		Version: fn.Version, CodeHash: fn.CodeHash, SnapshotHash: fn.SnapshotHash, RequestHash: reqHash, ResponseHash: seal.SHA256Hex(resp.Ciphertext),
		Caller: c.expectCaller()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	if v.Receipt.Status != "ok" {
		return nil, fmt.Errorf("%w: receipt status %q on a successful response", ErrVerification, v.Receipt.Status)
	}
	if err := checkWorkerPolicy(fn, v.Worker); err != nil {
		return nil, err
	}
	out, err := key.Open(seal.AADResponse, []byte(reqHash), resp.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: response: %w", ErrVerification, err)
	}
	logs, err := openLogs(key, reqHash, resp.Logs)
	if err != nil {
		return nil, err
	}
	return &Result{Output: out, Version: fn.Version, Receipt: receiptFrom(v.Receipt), SignedReceipt: signedReceiptFrom(resp.Receipt), Worker: workerFrom(v.Worker), Attestation: a, Mode: sr.Mode, Logs: logs}, nil
}

// openLogs opens a function's stderr sealed to the caller; none is nil.
// Logs that do not open were altered on the way: a verification error.
func openLogs(key *seal.Symmetric, reqHash string, sealed []byte) ([]byte, error) {
	if sealed == nil {
		return nil, nil
	}
	logs, err := key.Open(seal.AADLogs, []byte(reqHash), sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: logs: %w", ErrVerification, err)
	}
	if logs == nil {
		logs = []byte{}
	}
	return logs, nil
}

// checkWorkerPolicy checks the worker that signed a receipt against the
// function's certified TEE policy (allow_tee and min_tcb), as every role
// does (certs.Function.Admits).
func checkWorkerPolicy(fn *Function, w *certs.Worker) error {
	f := certs.Function{Namespace: fn.Namespace, Name: fn.Name, Version: fn.Version, AllowTEE: fn.allowTEE, MinTCB: fn.minTCB}
	if err := f.Admits(w); err != nil {
		return fmt.Errorf("%w: %w", ErrVerification, err)
	}
	return nil
}

// verifyErrorReceipt verifies the receipt attached to a function failure,
// so that a caller can trust the failure's metering too.
func (c *Client) verifyErrorReceipt(ctx context.Context, err error, fn *Function, reqHash string) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	out := &Error{Status: e.status, Code: string(e.body.Code), Message: e.body.Message}
	if e.body.Receipt != nil {
		if _, aerr := c.Attest(ctx); aerr != nil {
			return aerr
		}
		exp := receipt.Expect{Namespace: fn.Namespace, Function: fn.Name, Version: fn.Version, CodeHash: fn.CodeHash,
			SnapshotHash: fn.SnapshotHash, RequestHash: reqHash, Caller: c.expectCaller()}
		if fn.plain {
			exp.Caller = "-"
		}
		v, verr := c.receipts().Verify(e.body.Receipt, exp)
		if verr != nil {
			return fmt.Errorf("%w: receipt of failed invocation: %w", ErrVerification, verr)
		}
		if v.Receipt.Status != string(e.body.Code) {
			return fmt.Errorf("%w: receipt status %q differs from error %q", ErrVerification, v.Receipt.Status, e.body.Code)
		}
		out.Receipt = receiptFrom(v.Receipt)
	}
	return out
}

func (c *Client) invokePlain(ctx context.Context, name string, input []byte, version int) (*Result, error) {
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if input == nil {
		input = []byte{}
	}
	resp, err := c.exchange(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke"+versionQuery(version), input, hdr)
	if err != nil {
		return nil, withReceiptHint(err, seal.SHA256Hex(input))
	}
	out := resp.body
	fn := &Function{Namespace: c.ns, Name: name, Version: version, plain: true}
	if resp.status != http.StatusOK {
		return nil, c.verifyErrorReceipt(ctx, decodeError(resp.status, out), fn, seal.SHA256Hex(input))
	}
	rb, err := base64.StdEncoding.DecodeString(resp.header.Get("Cloister-Receipt"))
	if err != nil {
		return nil, fmt.Errorf("%w: missing or malformed receipt header", ErrVerification)
	}
	var sr receipt.Signed
	if err := json.Unmarshal(rb, &sr); err != nil {
		return nil, fmt.Errorf("%w: malformed receipt", ErrVerification)
	}
	v, err := c.receipts().Verify(&sr, receipt.Expect{Namespace: c.ns, Function: name, Version: version,
		RequestHash: seal.SHA256Hex(input), ResponseHash: seal.SHA256Hex(out), Caller: "-"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	return &Result{Output: out, Version: v.Receipt.FunctionVersion, Receipt: receiptFrom(v.Receipt), SignedReceipt: signedReceiptFrom(&sr), Worker: workerFrom(v.Worker), Attestation: a, Mode: wire.ModePlain}, nil
}

// receipts returns the receipt verifier of the current attestation.
func (c *Client) receipts() *receipt.Verifier {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verifier
}

// apiError is a non-2xx answer before it is turned into an *Error.
type apiError struct {
	status int
	body   wire.ErrorBody
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %s", e.body.Code, e.body.Message) }

// publicError turns an *apiError into the *Error callers see; other errors
// pass through.
func publicError(err error) error {
	var e *apiError
	if errors.As(err, &e) {
		return &Error{Status: e.status, Code: string(e.body.Code), Message: e.body.Message}
	}
	return err
}

func decodeError(status int, b []byte) error {
	e := &apiError{status: status}
	if json.Unmarshal(b, &e.body) != nil || e.body.Code == "" {
		e.body.Code = apierr.Internal
		e.body.Message = fmt.Sprintf("unexpected HTTP %d from gateway", status)
	}
	return e
}

// do sends a request and decodes a JSON answer. Errors come back as *Error.
func (c *Client) do(ctx context.Context, method, path string, body []byte, ctype string, out any) error {
	return c.doHeader(ctx, method, path, body, ctype, nil, out)
}

// withReceiptHint adds to an ErrOutcomeUnknown how to find out whether an
// invocation ran.
func withReceiptHint(err error, reqHash string) error {
	if !errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w (if it ran, its receipt is in the ledger with request_sha256 %s; invoke again to run it, or use InvokeAsync with an IdempotencyKey to have a call that can be retried)", err, reqHash)
}

// doHeader is do with extra request headers. It fails over between
// gateways (see exchange).
func (c *Client) doHeader(ctx context.Context, method, path string, body []byte, ctype string, hdr http.Header, out any) error {
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		h[k] = v
	}
	resp, err := c.exchange(ctx, method, path, body, h)
	if err != nil {
		return err
	}
	b := resp.body
	if resp.status/100 != 2 {
		err := decodeError(resp.status, b)
		if ctype == wire.SealedContentType {
			return err // the caller verifies an attached receipt
		}
		return publicError(err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding gateway answer: %w", err)
	}
	return nil
}
