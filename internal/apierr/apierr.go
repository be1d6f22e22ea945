// Package apierr defines the stable error codes that cross process
// boundaries: worker to gateway over NATS, gateway to client over HTTP.
// A code, once published, never changes meaning. Messages are for people
// and must never contain secrets or plaintext payloads.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error code.
type Code string

// The codes. docs/api.md lists them with their HTTP status.
const (
	BadRequest           Code = "bad_request"
	Unauthorized         Code = "unauthorized"
	Forbidden            Code = "forbidden"
	NotFound             Code = "not_found"
	Conflict             Code = "version_conflict"
	PayloadTooLarge      Code = "payload_too_large"
	InvalidModule        Code = "invalid_module"
	InvalidManifest      Code = "invalid_manifest"
	InvalidBundle        Code = "invalid_bundle"
	BundleSignature      Code = "bundle_signature"
	BundleIntegrity      Code = "bundle_integrity"
	DecryptFailed        Code = "decrypt_failed"
	Replay               Code = "replay"
	StaleRequest         Code = "stale_request"
	ConfidentialRequired Code = "confidential_required"
	SessionInvalid       Code = "session_invalid"
	FunctionTrap         Code = "function_trap"
	FunctionExit         Code = "function_exit"
	JSError              Code = "js_error"     // a JavaScript function threw (docs/js.md)
	PythonError          Code = "python_error" // a Python function raised an exception that nothing caught (docs/python.md)
	Timeout              Code = "timeout"
	FuelExhausted        Code = "fuel_exhausted"
	MemoryLimit          Code = "memory_limit"
	OutputTooLarge       Code = "output_too_large"
	ConcurrencyLimit     Code = "concurrency_limit"
	TEEPolicy            Code = "tee_policy"
	NoWorker             Code = "no_worker"
	Unavailable          Code = "unavailable"
	Internal             Code = "internal"
	// StateIntegrity: the untrusted store returned state that is not the
	// function's current committed state (rollback, swap or replay).
	StateIntegrity Code = "state_integrity"
	// StateQuota: a state write would exceed the function's key count or
	// total bytes.
	StateQuota Code = "state_quota"
	// StateValueTooLarge: a state value is over the value size limit.
	StateValueTooLarge Code = "state_value_too_large"
	// ActivationPending: the activation has not finished yet; ask again later.
	ActivationPending Code = "activation_pending"
	// IdempotencyConflict: an idempotency key already queued an invocation
	// of another function or sequence in the namespace.
	IdempotencyConflict Code = "idempotency_conflict"
	// SequenceStepFailed: a step of a sequence failed; the answer names the
	// step (1-based) and its own code.
	SequenceStepFailed Code = "sequence_step_failed"
	// InvalidTrigger: a malformed trigger or rule (cron expression, subject,
	// payload, or a rule naming something that cannot be fired).
	InvalidTrigger Code = "invalid_trigger"
	// QuotaExceeded: a namespace's quota is spent (triggers, rules,
	// versions, code size, queued jobs, request rate). The message names
	// the quota and its limit. Other namespaces are not affected.
	QuotaExceeded Code = "quota_exceeded"
	// Overloaded: a shared resource of the platform is full for now
	// (worker slots, the worker's guest-memory budget, HTTP connections).
	// Nothing ran; the caller may try again later.
	Overloaded Code = "overloaded"
	// WorkerLost: the worker running a synchronous call stopped (it died
	// or left the bus) before it answered. The call may have run, up to
	// its end: retry it if running it twice is safe.
	WorkerLost Code = "worker_lost"
	// Interrupted: the function started, and a platform service it needed
	// (the state anchor, the replay store) failed during the call. It may
	// have had effects: retry it if running it twice is safe.
	Interrupted Code = "interrupted"
	// KeyRevoked: the API key was revoked (`cloister keys api revoke`).
	// Every gateway refuses it within seconds of the revocation.
	KeyRevoked Code = "key_revoked"
	// KeyExpired: the API key is past the expiry it was created with.
	KeyExpired Code = "key_expired"
	// InsufficientScope: the API key is valid, but its scope (invoke,
	// deploy, admin) does not cover the route (RFC 6750's name).
	InsufficientScope Code = "insufficient_scope"
	// CallerNotAuthorised: the function's invoker policy does not name the
	// caller (the key that signed the sealed request, or nobody for an
	// anonymous or plaintext call). The worker refused it in the TEE, and
	// the refusal has a receipt.
	CallerNotAuthorised Code = "caller_not_authorised"
	// CallerSignature: a sealed request carries a caller key whose
	// signature does not verify for this request and function.
	CallerSignature Code = "caller_signature"
)

var status = map[Code]int{
	BadRequest:           http.StatusBadRequest,
	Unauthorized:         http.StatusUnauthorized,
	Forbidden:            http.StatusForbidden,
	NotFound:             http.StatusNotFound,
	Conflict:             http.StatusConflict,
	PayloadTooLarge:      http.StatusRequestEntityTooLarge,
	InvalidModule:        http.StatusUnprocessableEntity,
	InvalidManifest:      http.StatusUnprocessableEntity,
	InvalidBundle:        http.StatusBadRequest,
	BundleSignature:      http.StatusUnprocessableEntity,
	BundleIntegrity:      http.StatusBadGateway,
	DecryptFailed:        http.StatusBadRequest,
	Replay:               http.StatusConflict,
	StaleRequest:         http.StatusBadRequest,
	ConfidentialRequired: http.StatusForbidden,
	SessionInvalid:       http.StatusUnauthorized,
	FunctionTrap:         http.StatusUnprocessableEntity,
	FunctionExit:         http.StatusUnprocessableEntity,
	JSError:              http.StatusUnprocessableEntity,
	PythonError:          http.StatusUnprocessableEntity,
	Timeout:              http.StatusGatewayTimeout,
	FuelExhausted:        http.StatusUnprocessableEntity,
	MemoryLimit:          http.StatusUnprocessableEntity,
	OutputTooLarge:       http.StatusUnprocessableEntity,
	ConcurrencyLimit:     http.StatusTooManyRequests,
	TEEPolicy:            http.StatusServiceUnavailable,
	NoWorker:             http.StatusServiceUnavailable,
	Unavailable:          http.StatusServiceUnavailable,
	Internal:             http.StatusInternalServerError,
	StateIntegrity:       http.StatusBadGateway,
	StateQuota:           http.StatusInsufficientStorage,
	StateValueTooLarge:   http.StatusRequestEntityTooLarge,
	ActivationPending:    http.StatusConflict,
	IdempotencyConflict:  http.StatusConflict,
	SequenceStepFailed:   http.StatusUnprocessableEntity,
	InvalidTrigger:       http.StatusBadRequest,
	QuotaExceeded:        http.StatusTooManyRequests,
	Overloaded:           http.StatusServiceUnavailable,
	WorkerLost:           http.StatusServiceUnavailable,
	Interrupted:          http.StatusServiceUnavailable,
	KeyRevoked:           http.StatusUnauthorized,
	KeyExpired:           http.StatusUnauthorized,
	InsufficientScope:    http.StatusForbidden,
	CallerNotAuthorised:  http.StatusForbidden,
	CallerSignature:      http.StatusBadRequest,
}

// Status returns the HTTP status for a code (500 for unknown codes).
func (c Code) Status() int {
	if s, ok := status[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is an error with a stable code. It is also the JSON error body.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// cause is the error Wrap gave it, kept for errors.Is and errors.As in
	// this process; it does not travel (the JSON body carries the code and
	// the message).
	cause error
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the error Wrap gave e, or nil.
func (e *Error) Unwrap() error { return e.cause }

// Wrap returns an *Error with code c and err's message, which unwraps to
// err, so that errors.Is and errors.As still see the cause (a sentinel of
// a library package, a context error). Wrap(c, nil) is nil. (It returns an
// error, not an *Error, so that nil stays nil.)
func Wrap(c Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: c, Message: err.Error(), cause: err}
}

// New returns an *Error with a formatted message.
func New(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// From returns err as an *Error, mapping unknown errors to Internal with a
// generic message (the detail is for logs, not for callers).
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: Internal, Message: "internal error"}
}

// CodeOf returns the code of err, or "" when err is nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	return From(err).Code
}
