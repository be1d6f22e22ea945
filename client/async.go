package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/receipt"
	"github.com/cloister-faas/cloister/internal/seal"
	"github.com/cloister-faas/cloister/internal/tee"
	"github.com/cloister-faas/cloister/internal/wire"
)

// Activation is an activation record as the gateway stores it. It is
// untrusted: ActivationResult verifies the receipt and opens the result.
// Field names follow OpenWhisk where one exists.
type Activation struct {
	ActivationID string `json:"activationId"`
	Namespace    string `json:"namespace"`
	Name         string `json:"name"`
	// Version is the function version that ran (0 until it runs when the
	// latest was asked for).
	Version int    `json:"version"`
	Kind    string `json:"kind"` // "function" or "sequence"
	Mode    string `json:"mode"`
	// Trust is "gateway-trusted" for a plaintext invocation: the gateway
	// saw its input and output.
	Trust string `json:"trust,omitempty"`
	// Status is "queued", "running", "success", "application_error",
	// "developer_error" or "platform_error"; the last four are final.
	Status string `json:"status"`
	// Submitted, Start and End are milliseconds since the Unix epoch;
	// Duration is End - Start in milliseconds.
	Submitted int64              `json:"submitted"`
	Start     int64              `json:"start,omitempty"`
	End       int64              `json:"end,omitempty"`
	Duration  int64              `json:"duration,omitempty"`
	Response  ActivationResponse `json:"response"`
	// Logs are platform lines (queued, attempts, retries) and, for a
	// plaintext invocation, the function's stderr. SealedLogs is the
	// function's stderr sealed to the caller (ActivationLogs opens it).
	Logs       []string         `json:"logs"`
	SealedLogs []byte           `json:"sealed_logs,omitempty"`
	Receipt    *SignedReceipt   `json:"receipt,omitempty"`
	Receipts   []*SignedReceipt `json:"receipts,omitempty"`
	Attempts   int              `json:"attempts"`
	Worker     string           `json:"worker,omitempty"`
	// IdempotencyKey is the caller's key, if any (AsyncOptions.IdempotencyKey).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Trigger and Rule name what fired a triggered activation.
	Trigger string `json:"trigger,omitempty"`
	Rule    string `json:"rule,omitempty"`
}

// ActivationResponse is the outcome of an activation, shaped like
// OpenWhisk's response object. Result is the function's output: sealed to
// the caller (Sealed true) for a confidential invocation, plain otherwise.
type ActivationResponse struct {
	Status  string           `json:"status"`
	Success bool             `json:"success"`
	Sealed  bool             `json:"sealed,omitempty"`
	Result  []byte           `json:"result,omitempty"`
	Error   *ActivationError `json:"error,omitempty"`
	// Step and StepCode name the failed step of a sequence.
	Step     int    `json:"step,omitempty"`
	StepCode string `json:"step_code,omitempty"`
}

// ActivationError is the platform's error code and message for a failed
// activation (Error.Code lists the codes).
type ActivationError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StepRef names one step of a sequence. In a sequence definition Version
// may be 0 (the latest when invoked) and CodeHash empty; in a sealed
// sequence request both are resolved from the step's verified certificate.
type StepRef struct {
	Name     string `json:"name"`
	Version  int    `json:"version,omitempty"`
	CodeHash string `json:"code_sha256,omitempty"`
}

// Pending is an asynchronous invocation this client submitted: everything
// needed later to verify the activation's receipt and open its result.
// ResponseKey is a secret (it decrypts the result): keep a saved Pending
// private.
type Pending struct {
	ActivationID string `json:"activationId"`
	// Duplicate is set when the idempotency key was used before: the
	// activation is the earlier one. Its result opens with this Pending
	// when the earlier submission went through the same Client, with the
	// same input, within 10 minutes (the Client sends the same sealed
	// request again); otherwise only the earlier Pending opens it.
	Duplicate    bool              `json:"duplicate,omitempty"`
	Kind         string            `json:"kind"` // "function" or "sequence"
	Namespace    string            `json:"namespace"`
	Name         string            `json:"name"`
	Version      int               `json:"version,omitempty"`
	CodeHash     string            `json:"code_sha256,omitempty"`
	SnapshotHash string            `json:"snapshot_sha256,omitempty"`
	AllowTEE     []string          `json:"allow_tee,omitempty"`
	MinTCB       map[string]string `json:"min_tcb,omitempty"`
	Mode         string            `json:"mode"`
	RequestHash  string            `json:"request_sha256"`
	ResponseKey  []byte            `json:"response_key,omitempty"`
	// Caller is the caller hash the receipt must name (Client.CallerHash),
	// or "-" for an anonymous submission.
	Caller string `json:"caller_sha256,omitempty"`
	// Steps are a sequence's resolved steps; Signer the owner key that
	// signed its definition (none: unsigned).
	Steps  []StepRef `json:"steps,omitempty"`
	Signer []byte    `json:"sequence_signer,omitempty"`
}

// AsyncOptions configure InvokeAsync.
type AsyncOptions struct {
	// Version is the function version; 0 means the latest.
	Version int
	// Plaintext queues the input unsealed (confidential: optional only).
	Plaintext bool
	// IdempotencyKey, if set, makes the submission idempotent in the
	// namespace: submitting again returns the first activation.
	IdempotencyKey string
}

func idemHeader(key string) http.Header {
	if key == "" {
		return nil
	}
	return http.Header{"Idempotency-Key": {key}}
}

// InvokeAsync queues an invocation and returns at once. The request is
// sealed end to end for the async path (seal.AsyncInfo); the result will be
// sealed to this client under a key only the returned Pending holds.
func (c *Client) InvokeAsync(ctx context.Context, name string, input []byte, o AsyncOptions) (*Pending, error) {
	path := "/v1/functions/" + url.PathEscape(name) + "/invoke?async=true"
	var acc wire.Accepted
	if o.Plaintext {
		if o.Version != 0 {
			path += "&version=" + strconv.Itoa(o.Version)
		}
		if err := c.doHeader(ctx, http.MethodPost, path, input, "application/octet-stream", idemHeader(o.IdempotencyKey), &acc); err != nil {
			return nil, withActivationHint(err)
		}
		return &Pending{ActivationID: acc.ActivationID, Duplicate: acc.Duplicate, Kind: "function", Namespace: c.ns, Name: name,
			Version: o.Version, Mode: wire.ModePlain, RequestHash: seal.SHA256Hex(input), Caller: "-"}, nil
	}
	fn, err := c.Function(ctx, name, o.Version)
	if err != nil {
		return nil, err
	}
	sub, err := c.sealSubmission(fn, input, o.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	sr := sub.request
	if err := c.postJSON(ctx, path, sr, wire.SealedContentType, idemHeader(o.IdempotencyKey), &acc); err != nil {
		return nil, withActivationHint(publicError(err))
	}
	return &Pending{ActivationID: acc.ActivationID, Duplicate: acc.Duplicate, Kind: "function", Namespace: fn.Namespace, Name: fn.Name,
		Version: fn.Version, CodeHash: fn.CodeHash, SnapshotHash: fn.SnapshotHash, AllowTEE: fn.AllowTEE, MinTCB: fn.MinTCB, Mode: wire.ModeHPKE,
		RequestHash: seal.RequestHash(sr.Mode, sr.Enc, nil, sr.Ciphertext), ResponseKey: sub.responseKey, Caller: c.expectCaller()}, nil
}

// sealedSubmission is a sealed async request and the key that opens its
// result.
type sealedSubmission struct {
	request     wire.SealedRequest
	responseKey []byte
	exp         time.Time
}

// Submissions with an idempotency key are kept for resubmitTTL, at most
// maxResubmits of them.
const (
	resubmitTTL  = 10 * time.Minute
	maxResubmits = 4096
)

// sealSubmission seals input for an async invocation of fn. A submission
// with an idempotency key is sealed once: submitting the same input to the
// same function version with the same key again, through this Client and
// within resubmitTTL (as a caller does after an error that left the
// outcome unknown), sends the same sealed request. Whichever of the
// submissions the gateway queued, the Pending returned opens its result;
// and the worker, which refuses a sealed request queued as two
// activations, sees only one.
func (c *Client) sealSubmission(fn *Function, input []byte, key string) (sealedSubmission, error) {
	var id string
	if key != "" {
		h := sha256.New()
		for _, f := range []string{fn.Namespace, fn.Name, strconv.Itoa(fn.Version), fn.CodeHash, key} {
			fmt.Fprintf(h, "%d:%s", len(f), f) // a hash.Hash never fails a write
		}
		h.Write(input)
		id = string(h.Sum(nil))
		c.mu.Lock()
		s, ok := c.resubmits[id]
		c.mu.Unlock()
		if ok && c.now().Before(s.exp) {
			return s, nil
		}
	}
	cc, err := seal.SealRequest(fn.hpkeKey, seal.AsyncInfo(fn.Namespace, fn.Name, fn.Version, fn.CodeHash), seal.NewPayload(input, c.now()), c.caller, false)
	if err != nil {
		return sealedSubmission{}, err
	}
	s := sealedSubmission{
		request:     wire.SealedRequest{Mode: wire.ModeHPKE, Version: fn.Version, Enc: cc.Enc, Ciphertext: cc.Ciphertext},
		responseKey: cc.ResponseKey, exp: c.now().Add(resubmitTTL),
	}
	if key != "" {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.resubmits == nil || len(c.resubmits) >= maxResubmits {
			now := c.now()
			for k, old := range c.resubmits {
				if !now.Before(old.exp) {
					delete(c.resubmits, k)
				}
			}
			if c.resubmits == nil || len(c.resubmits) >= maxResubmits {
				c.resubmits = map[string]sealedSubmission{}
			}
		}
		c.resubmits[id] = s
	}
	return s, nil
}

// withActivationHint adds to an ErrOutcomeUnknown how to find out whether
// an asynchronous submission without an idempotency key was queued.
func withActivationHint(err error) error {
	if !errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w (if it was queued, Activations lists it; an IdempotencyKey makes a submission safe to retry)", err)
}

// DeadLetter is a job the async queue gave up on (malformed, refused by
// the worker, or out of attempts), as listed: without the job itself, a
// sealed queue message that the listing leaves out.
type DeadLetter struct {
	Activation string `json:"activation,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	// Code is the platform's error code (Error.Code), Reason what happened.
	Code     string    `json:"code"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	Worker   string    `json:"worker,omitempty"`
	Time     time.Time `json:"time"`
}

// DeadLetters lists the namespace's dead letters, newest first, at most
// limit (0: the server's default, 30), published at or after since (zero:
// all kept, 30 days).
func (c *Client) DeadLetters(ctx context.Context, limit int, since time.Time) ([]DeadLetter, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	var out struct {
		DeadLetters []DeadLetter `json:"dead_letters"`
	}
	path := "/v1/dead-letters"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return out.DeadLetters, c.do(ctx, http.MethodGet, path, nil, "", &out)
}

// Activation returns an activation record (unverified).
func (c *Client) Activation(ctx context.Context, id string) (*Activation, error) {
	var a Activation
	if err := c.do(ctx, http.MethodGet, "/v1/activations/"+url.PathEscape(id), nil, "", &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Activations lists the namespace's activations, newest first; name, if
// set, keeps one function's or sequence's.
func (c *Client) Activations(ctx context.Context, limit int, name string) ([]*Activation, error) {
	list, _, err := c.ActivationsPage(ctx, ActivationQuery{Limit: limit, Name: name})
	return list, err
}

// MaxActivationPage is the largest ActivationQuery.Limit.
const MaxActivationPage = 200

// ActivationQuery selects a page of activations.
type ActivationQuery struct {
	// Limit is the page's size, 1 to MaxActivationPage (0: the gateway's
	// default, 30).
	Limit int
	// Name, if set, keeps one function's or sequence's activations.
	Name string
	// Before, if set, starts the page after this activation: the next
	// cursor of the page before.
	Before string
}

// ActivationsPage returns a page of the namespace's activations, newest
// first, and the Before of the following page ("" on the last). With a
// Name, a page may come back short (the gateway bounds the records one
// page reads) while next is still set.
func (c *Client) ActivationsPage(ctx context.Context, q ActivationQuery) (list []*Activation, next string, err error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Name != "" {
		v.Set("name", q.Name)
	}
	if q.Before != "" {
		v.Set("before", q.Before)
	}
	var out struct {
		Activations []*Activation `json:"activations"`
		Next        string        `json:"next"`
	}
	path := "/v1/activations"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	if err := c.do(ctx, http.MethodGet, path, nil, "", &out); err != nil {
		return nil, "", err
	}
	return out.Activations, out.Next, nil
}

// activationResult is the body of GET /v1/activations/{id}/result.
type activationResult struct {
	ActivationID string                  `json:"activationId"`
	Status       string                  `json:"status"`
	Version      int                     `json:"version"`
	Mode         string                  `json:"mode"`
	Response     wire.ActivationResponse `json:"response"`
	Receipt      *receipt.Signed         `json:"receipt,omitempty"`
	Receipts     []*receipt.Signed       `json:"receipts,omitempty"`
}

// ErrPending is returned (wrapped in *Error, code activation_pending) while
// an activation has not finished.
var ErrPending = errors.New("activation not finished")

// ActivationResult fetches a finished activation's result, verifies its
// receipt (or receipt chain) against what p expects, and opens the sealed
// result. A function failure comes back as *Error with its verified
// receipt; an unfinished activation as *Error with code activation_pending.
func (c *Client) ActivationResult(ctx context.Context, p *Pending) (*Result, error) {
	var ar activationResult
	if err := c.do(ctx, http.MethodGet, "/v1/activations/"+url.PathEscape(p.ActivationID)+"/result", nil, "", &ar); err != nil {
		return nil, err
	}
	if ar.ActivationID != p.ActivationID {
		return nil, fmt.Errorf("%w: result is for activation %s", ErrVerification, ar.ActivationID)
	}
	resp := ar.Response
	if !resp.Success && ar.Receipt == nil {
		e := &Error{Status: http.StatusOK, Code: string(apierr.Internal), Message: "activation failed without a result"}
		if resp.Error != nil {
			e.Code, e.Message = string(resp.Error.Code), resp.Error.Message
		}
		return nil, e
	}
	a, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	if p.Kind == "sequence" {
		return c.finishSequence(ctx, p, resp.Result, ar.Receipts, resp.Success, errorBody(resp))
	}
	exp := receipt.Expect{Namespace: p.Namespace, Function: p.Name, Version: p.Version, CodeHash: p.CodeHash,
		SnapshotHash: p.SnapshotHash, RequestHash: p.RequestHash, Caller: p.Caller}
	if resp.Success {
		exp.ResponseHash = seal.SHA256Hex(resp.Result)
	}
	v, err := c.receipts().Verify(ar.Receipt, exp)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	fn := &Function{Namespace: p.Namespace, Name: p.Name, Version: p.Version, allowTEE: kinds[tee.Kind](p.AllowTEE), minTCB: minTCBs[tee.Kind](p.MinTCB)}
	if err := checkWorkerPolicy(fn, v.Worker); err != nil {
		return nil, err
	}
	if !resp.Success {
		code := errorBody(resp).Code
		if v.Receipt.Status != string(code) {
			return nil, fmt.Errorf("%w: receipt status %q differs from error %q", ErrVerification, v.Receipt.Status, code)
		}
		return nil, &Error{Status: code.Status(), Code: string(code), Message: errorBody(resp).Message, Receipt: receiptFrom(v.Receipt)}
	}
	if v.Receipt.Status != "ok" {
		return nil, fmt.Errorf("%w: receipt status %q on a successful activation", ErrVerification, v.Receipt.Status)
	}
	out := resp.Result
	if p.Mode != wire.ModePlain {
		if out, err = seal.OpenSymmetric(p.ResponseKey, seal.AADResponse, []byte(p.RequestHash), resp.Result); err != nil {
			return nil, fmt.Errorf("%w: result: %w", ErrVerification, err)
		}
	}
	return &Result{Output: out, Version: v.Receipt.FunctionVersion, Receipt: receiptFrom(v.Receipt), SignedReceipt: signedReceiptFrom(ar.Receipt), Worker: workerFrom(v.Worker),
		Attestation: a, Mode: p.Mode}, nil
}

func errorBody(r wire.ActivationResponse) wire.ErrorBody {
	b := wire.ErrorBody{Code: apierr.Internal, Step: r.Step, StepCode: r.StepCode}
	if r.Error != nil {
		b.Code, b.Message = r.Error.Code, r.Error.Message
	}
	return b
}

// WaitActivation polls ActivationResult every interval until the
// activation finishes or ctx ends.
func (c *Client) WaitActivation(ctx context.Context, p *Pending, interval time.Duration) (*Result, error) {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	for {
		res, err := c.ActivationResult(ctx, p)
		var e *Error
		if !errors.As(err, &e) || e.Code != string(apierr.ActivationPending) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// ActivationLogs returns an activation's platform log lines and the
// function's own logs, opened with p's key when they are sealed (p may be
// nil: then sealed logs are not returned).
func (c *Client) ActivationLogs(ctx context.Context, id string, p *Pending) ([]string, []byte, error) {
	var out struct {
		Logs       []string `json:"logs"`
		SealedLogs []byte   `json:"sealed_logs"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/activations/"+url.PathEscape(id)+"/logs", nil, "", &out); err != nil {
		return nil, nil, err
	}
	if len(out.SealedLogs) == 0 || p == nil || p.ResponseKey == nil {
		return out.Logs, nil, nil
	}
	fl, err := seal.OpenSymmetric(p.ResponseKey, seal.AADLogs, []byte(p.RequestHash), out.SealedLogs)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: logs: %w", ErrVerification, err)
	}
	return out.Logs, fl, nil
}
