// Package receipt defines the invocation receipt: its canonical encoding,
// signing by a worker's attested key, and verification back to the
// coordinator (worker key → worker certificate → coordinator identity, whose
// key the client learned from verified hardware evidence).
//
// A receipt never contains plaintext inputs or outputs, only hashes of what
// crossed the untrusted network. Metering fields that were not measured are
// absent, never zero.
package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/strictjson"
	"github.com/cloister-faas/cloister/internal/tee"
)

// Version is the receipt format version this package writes.
const Version = 1

// domain separates receipt signatures from every other signature.
const domain = "cloister-receipt-v1\n"

// Errors returned by Verify.
var (
	ErrSignature = errors.New("receipt: signature does not verify")
	ErrChain     = errors.New("receipt: worker certificate does not chain to the coordinator")
	ErrMismatch  = errors.New("receipt: does not match the invocation")
	ErrMalformed = errors.New("receipt: malformed")
)

// Metering is what the worker measured. Nil fields were not measured.
type Metering struct {
	Instructions    *uint64           `json:"instructions,omitempty"`
	FuelLimit       *uint64           `json:"fuel_limit,omitempty"`
	PeakMemoryPages *uint32           `json:"peak_memory_pages,omitempty"`
	WallNanos       *int64            `json:"wall_ns,omitempty"`
	CPUNanos        *int64            `json:"cpu_ns,omitempty"`
	InputBytes      *int64            `json:"input_bytes,omitempty"`
	OutputBytes     *int64            `json:"output_bytes,omitempty"`
	HostCalls       map[string]uint64 `json:"host_calls,omitempty"`
}

// TEE describes where the invocation ran, as certified at admission.
type TEE struct {
	Kind        tee.Kind `json:"kind"`
	TCB         string   `json:"tcb"`
	Measurement string   `json:"measurement"`
}

// Receipt is the signed record of one invocation (docs/api.md, "Receipts").
type Receipt struct {
	Version         int    `json:"v"`
	InvocationID    string `json:"invocation_id"`
	Namespace       string `json:"namespace"`
	Function        string `json:"function"`
	FunctionVersion int    `json:"function_version"`
	CodeHash        string `json:"code_sha256"`
	// InstrumentedHash names the module that actually ran: the original
	// after the metering and reset pass.
	InstrumentedHash string    `json:"instrumented_code_sha256,omitempty"`
	BundleHash       string    `json:"bundle_sha256"`
	SnapshotHash     string    `json:"snapshot_sha256,omitempty"`
	ResetGeneration  *uint64   `json:"reset_generation,omitempty"`
	Mode             string    `json:"mode"`
	RequestHash      string    `json:"request_sha256"`
	ResponseHash     string    `json:"response_sha256"`
	Status           string    `json:"status"`
	Metering         Metering  `json:"metering"`
	TEE              TEE       `json:"tee"`
	WorkerID         string    `json:"worker_id"`
	Time             time.Time `json:"time"`
	// Prev is the entry hash (EntryHash of Entry) of the previous receipt
	// of a sequence; empty for step 1 and for a single invocation.
	Prev string `json:"prev,omitempty"`
	// Sequence names the sequence this receipt is a step of, and Step its
	// 1-based position; both empty outside a sequence.
	Sequence string `json:"sequence,omitempty"`
	Step     int    `json:"step,omitempty"`
	// Trust is TrustGatewayTrusted for a plaintext invocation (mode
	// "plain"): the gateway saw the input and the output, so the receipt
	// proves what ran, not that the data stayed confidential. Empty for
	// the sealed modes. Verify refuses any other combination.
	Trust string `json:"trust,omitempty"`
	// Caller is the hex SHA-256 of the key that signed the request
	// (certs.CallerHash), checked by the worker against the function's
	// invoker policy; empty for an anonymous or plaintext call. A session
	// names the key that opened it.
	Caller string `json:"caller_sha256,omitempty"`
}

// TrustGatewayTrusted marks a receipt of a plaintext invocation.
const TrustGatewayTrusted = "gateway-trusted"

// Signed is a receipt as it travels: the canonical bytes that were signed,
// the worker's signature, and the worker's certificate.
type Signed struct {
	Receipt    []byte       `json:"receipt"`
	Signature  []byte       `json:"sig"`
	WorkerCert certs.Signed `json:"worker_cert"`
}

// Entry is the ledger entry of a signed receipt: its canonical JSON
// encoding (fields in declaration order), the same bytes whoever encodes
// it. It writes exactly what json.Marshal(s) writes (byte slices as
// standard base64, which needs no escaping), without reflection: every
// receipt is encoded for the ledger.
func (s *Signed) Entry() ([]byte, error) {
	b64 := base64.StdEncoding
	n := len(`{"receipt":"","sig":"","worker_cert":{"body":"","sig":""}}`) + b64.EncodedLen(len(s.Receipt)) +
		b64.EncodedLen(len(s.Signature)) + b64.EncodedLen(len(s.WorkerCert.Body)) + b64.EncodedLen(len(s.WorkerCert.Signature))
	b := make([]byte, 0, n)
	field := func(prefix string, v []byte) {
		b = append(b, prefix...)
		if v == nil {
			b = append(b, "null"...)
			return
		}
		b = append(b, '"')
		b = b64.AppendEncode(b, v)
		b = append(b, '"')
	}
	field(`{"receipt":`, s.Receipt)
	field(`,"sig":`, s.Signature)
	field(`,"worker_cert":{"body":`, s.WorkerCert.Body)
	field(`,"sig":`, s.WorkerCert.Signature)
	return append(b, "}}"...), nil
}

// EntryHash is hex sha256 of Entry: the key clients look a receipt up by.
func EntryHash(entry []byte) string {
	h := sha256.Sum256(entry)
	return hex.EncodeToString(h[:])
}

// Encode returns the canonical encoding of r: compact JSON with fields in
// declaration order and map keys sorted (encoding/json's guarantees).
func Encode(r *Receipt) ([]byte, error) {
	return json.Marshal(r)
}

// Sign encodes and signs r with the worker key and attaches its certificate.
func Sign(r *Receipt, key ed25519.PrivateKey, cert certs.Signed) (*Signed, error) {
	body, err := Encode(r)
	if err != nil {
		return nil, fmt.Errorf("encoding receipt: %w", err)
	}
	return &Signed{Receipt: body, Signature: ed25519.Sign(key, append([]byte(domain), body...)), WorkerCert: cert}, nil
}

// Expect lists what the verifier knows independently of the receipt. Empty
// fields are not checked.
type Expect struct {
	Namespace    string
	Function     string
	Version      int
	CodeHash     string
	SnapshotHash string
	RequestHash  string
	ResponseHash string
	// Caller is the hash of the caller key the request was signed with
	// (certs.CallerHash); "-" expects an anonymous call.
	Caller string
}

// Verified is the result of a successful Verify.
type Verified struct {
	Receipt *Receipt
	Worker  *certs.Worker
}

// Verify checks the signature chain of s up to the coordinator key, that the
// worker certificate was valid when the receipt was made, that the bytes are
// canonical, and that the receipt matches exp.
func Verify(s *Signed, coordinator ed25519.PublicKey, exp Expect) (*Verified, error) {
	return verify(s, coordinator, exp, certs.OpenWorker)
}

// Verifier verifies receipts against one coordinator key, remembering the
// worker certificates it has already verified (a certificate is signed once
// and used for many receipts). It is safe for concurrent use.
type Verifier struct {
	coordinator ed25519.PublicKey
	workers     certs.WorkerCache
}

// NewVerifier returns a Verifier for a coordinator key.
func NewVerifier(coordinator ed25519.PublicKey) *Verifier { return &Verifier{coordinator: coordinator} }

// Verify is Verify with the verifier's coordinator key and certificate cache.
func (v *Verifier) Verify(s *Signed, exp Expect) (*Verified, error) {
	return verify(s, v.coordinator, exp, v.openWorker)
}

// openWorker opens a worker certificate, from the cache if it was opened
// before.
func (v *Verifier) openWorker(c certs.Signed, key ed25519.PublicKey) (*certs.Worker, error) {
	return v.workers.Open(c, key)
}

func verify(s *Signed, coordinator ed25519.PublicKey, exp Expect, openWorker func(certs.Signed, ed25519.PublicKey) (*certs.Worker, error)) (*Verified, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: missing", ErrMalformed)
	}
	w, err := openWorker(s.WorkerCert, coordinator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if !ed25519.Verify(w.SigningKey, append([]byte(domain), s.Receipt...), s.Signature) {
		return nil, ErrSignature
	}
	return check(s, w, exp)
}

// checkCaller compares a receipt's caller with the expected one: a hash,
// "-" for anonymous, or "" for not checked.
func checkCaller(got, want string) error {
	switch {
	case want == "" || got == want || (want == "-" && got == ""):
		return nil
	case want == "-":
		return fmt.Errorf("%w: caller_sha256: got %q, want an anonymous call", ErrMismatch, got)
	default:
		return fmt.Errorf("%w: caller_sha256: got %q, want %q", ErrMismatch, got, want)
	}
}

// check verifies everything but the signature of a receipt whose worker
// certificate opened as w.
func check(s *Signed, w *certs.Worker, exp Expect) (*Verified, error) {
	var r Receipt
	if err := strictjson.Unmarshal(s.Receipt, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if canon, err := Encode(&r); err != nil || !bytes.Equal(canon, s.Receipt) {
		return nil, fmt.Errorf("%w: not in canonical encoding", ErrMalformed)
	}
	if r.Version != Version {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, r.Version)
	}
	if (r.Mode == "plain") != (r.Trust == TrustGatewayTrusted) || (r.Trust != "" && r.Trust != TrustGatewayTrusted) {
		return nil, fmt.Errorf("%w: mode %q with trust %q (a plaintext invocation, and only one, is %q)", ErrMalformed, r.Mode, r.Trust, TrustGatewayTrusted)
	}
	if err := w.ValidAt(r.Time); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if r.WorkerID != w.WorkerID || r.TEE.Kind != w.TEE || r.TEE.Measurement != w.Measurement || r.TEE.TCB != w.TCB {
		return nil, fmt.Errorf("%w: worker identity differs from its certificate", ErrMismatch)
	}
	check := func(field, got, want string) error {
		if want != "" && got != want {
			return fmt.Errorf("%w: %s: got %q, want %q", ErrMismatch, field, got, want)
		}
		return nil
	}
	if err := errors.Join(
		check("namespace", r.Namespace, exp.Namespace),
		check("function", r.Function, exp.Function),
		check("code_sha256", r.CodeHash, exp.CodeHash),
		check("snapshot_sha256", r.SnapshotHash, exp.SnapshotHash),
		check("request_sha256", r.RequestHash, exp.RequestHash),
		check("response_sha256", r.ResponseHash, exp.ResponseHash),
		checkCaller(r.Caller, exp.Caller),
	); err != nil {
		return nil, err
	}
	if exp.Version != 0 && r.FunctionVersion != exp.Version {
		return nil, fmt.Errorf("%w: function_version: got %d, want %d", ErrMismatch, r.FunctionVersion, exp.Version)
	}
	return &Verified{Receipt: &r, Worker: w}, nil
}
