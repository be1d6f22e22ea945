package wire

import (
	"encoding/json"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// StepRef names one step of a sequence. In a sequence definition Version
// may be 0 (the latest when invoked) and CodeHash empty; in a sealed
// sequence request both are resolved from the step's verified certificate.
type StepRef struct {
	Name     string `json:"name"`
	Version  int    `json:"version,omitempty"`
	CodeHash string `json:"code_sha256,omitempty"`
}

// Sequence is a stored sequence definition: a function made of functions.
type Sequence struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Steps     []StepRef `json:"steps"`
	Created   time.Time `json:"created"`
	// Signer and Signature are the owner's Ed25519 key and its signature
	// of the name and steps (bundle.SignSequence). Both are absent from a
	// definition the gateway made (the OpenWhisk API); a client that pins
	// owner keys refuses those.
	Signer    []byte `json:"signer,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// AsyncJob is one message of the async work queue. Request is exactly what
// a synchronous invocation would send a worker (sealed in the confidential
// modes), with Request.Activation set.
type AsyncJob struct {
	Activation string        `json:"activation"`
	Request    InvokeRequest `json:"request"`
	Submitted  time.Time     `json:"submitted"`
}

// Activation statuses. Queued and Running are not final; the others are.
// The final ones map to OpenWhisk's response.status: "success",
// "application error", "action developer error", "whisk internal error".
const (
	StatusQueued           = "queued"
	StatusRunning          = "running"
	StatusSuccess          = "success"
	StatusApplicationError = "application_error"
	StatusDeveloperError   = "developer_error"
	StatusPlatformError    = "platform_error"
)

// FinalStatus reports whether s ends an activation.
func FinalStatus(s string) bool {
	return s == StatusSuccess || s == StatusApplicationError || s == StatusDeveloperError || s == StatusPlatformError
}

// ActivationResponse is the outcome of an activation, shaped like
// OpenWhisk's response object. Result is the function's output: sealed to
// the caller (Sealed true) for a confidential invocation, plain otherwise.
type ActivationResponse struct {
	Status  string        `json:"status"`
	Success bool          `json:"success"`
	Sealed  bool          `json:"sealed,omitempty"`
	Result  []byte        `json:"result,omitempty"`
	Error   *apierr.Error `json:"error,omitempty"`
	// Step and StepCode name the failed step of a sequence.
	Step     int         `json:"step,omitempty"`
	StepCode apierr.Code `json:"step_code,omitempty"`
}

// Activation is the durable record of one asynchronous invocation. Field
// names follow OpenWhisk where one exists (activationId, start, end,
// duration in milliseconds since the epoch / milliseconds). The record is
// kept in untrusted storage: trust only the receipt and the sealed result.
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
	// saw its input and output (as the receipt's trust field says).
	Trust  string `json:"trust,omitempty"`
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
	// function's stderr sealed to the caller.
	Logs       []string          `json:"logs"`
	SealedLogs []byte            `json:"sealed_logs,omitempty"`
	Receipt    *receipt.Signed   `json:"receipt,omitempty"`
	Receipts   []*receipt.Signed `json:"receipts,omitempty"`
	Attempts   int               `json:"attempts"`
	Worker     string            `json:"worker,omitempty"`
	// IdempotencyKey is the caller's key, if any (see POST .../invoke?async=true).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Trigger and Rule name what fired a triggered activation.
	Trigger string `json:"trigger,omitempty"`
	Rule    string `json:"rule,omitempty"`
}

// Accepted answers an asynchronous invocation or a trigger fire.
type Accepted struct {
	ActivationID string `json:"activationId"`
	// Duplicate is true when the idempotency key was seen before: the
	// activation is the earlier one and nothing new was queued.
	Duplicate bool `json:"duplicate,omitempty"`
}

// DeadLetter is published on the dead-letter subject for a job that will
// never complete: malformed, refused by the worker (poison), or out of
// attempts. Job is the original message, still sealed.
type DeadLetter struct {
	Activation string          `json:"activation,omitempty"`
	Namespace  string          `json:"namespace,omitempty"`
	Name       string          `json:"name,omitempty"`
	Code       apierr.Code     `json:"code"`
	Reason     string          `json:"reason"`
	Attempts   int             `json:"attempts"`
	Worker     string          `json:"worker,omitempty"`
	Time       time.Time       `json:"time"`
	Job        json.RawMessage `json:"job,omitempty"`
	// JobBase64 holds the original bytes when they were not valid JSON.
	JobBase64 []byte `json:"job_base64,omitempty"`
}

// Trigger fires rules: on a cron schedule, on every message of a NATS
// subject, or by POST /v1/triggers/{name}/fire.
type Trigger struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Cron      string `json:"cron,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Payload is the input of cron fires (default: {"trigger","time"}).
	Payload json.RawMessage `json:"payload,omitempty"`
	Created time.Time       `json:"created"`
	// Disabled, when set, says why a stored trigger no longer fires (a
	// record from before a stricter rule, such as a subject outside its
	// namespace's event space). It is computed when the trigger is read and
	// ignored when one is written; re-creating the trigger clears it.
	Disabled string `json:"disabled,omitempty"`
}

// Rule connects a trigger to a function: every fire of the trigger invokes
// the function asynchronously with the fire's payload, while Active.
type Rule struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Trigger   string    `json:"trigger"`
	Function  string    `json:"function"`
	Version   int       `json:"version,omitempty"`
	Active    bool      `json:"active"`
	Created   time.Time `json:"created"`
}

// Fired answers a trigger fire: one activation per active rule.
type Fired struct {
	Trigger     string   `json:"trigger"`
	Activations []string `json:"activationIds"`
}
