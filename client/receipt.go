package client

import (
	"context"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
)

// Receipt is a decoded invocation receipt (docs/api.md, "Receipts"): the
// record a worker signs of one invocation. It holds hashes of what crossed
// the network, never a plaintext input or output. Its JSON is the
// receipt's canonical encoding.
type Receipt struct {
	Version         int    `json:"v"`
	InvocationID    string `json:"invocation_id"`
	Namespace       string `json:"namespace"`
	Function        string `json:"function"`
	FunctionVersion int    `json:"function_version"`
	CodeHash        string `json:"code_sha256"`
	// InstrumentedHash names the module that actually ran: the original
	// after the metering and reset pass.
	InstrumentedHash string     `json:"instrumented_code_sha256,omitempty"`
	BundleHash       string     `json:"bundle_sha256"`
	SnapshotHash     string     `json:"snapshot_sha256,omitempty"`
	ResetGeneration  *uint64    `json:"reset_generation,omitempty"`
	Mode             string     `json:"mode"`
	RequestHash      string     `json:"request_sha256"`
	ResponseHash     string     `json:"response_sha256"`
	Status           string     `json:"status"`
	Metering         Metering   `json:"metering"`
	TEE              ReceiptTEE `json:"tee"`
	WorkerID         string     `json:"worker_id"`
	Time             time.Time  `json:"time"`
	// Prev is the ledger entry hash of the previous receipt of a sequence;
	// empty for step 1 and for a single invocation.
	Prev string `json:"prev,omitempty"`
	// Sequence names the sequence this receipt is a step of, and Step its
	// 1-based position; both empty outside a sequence.
	Sequence string `json:"sequence,omitempty"`
	Step     int    `json:"step,omitempty"`
	// Trust is "gateway-trusted" for a plaintext invocation (mode "plain"):
	// the receipt proves what ran, not that the data stayed confidential.
	// Empty for the sealed modes.
	Trust string `json:"trust,omitempty"`
	// Caller is the hash of the key that signed the request (see
	// Client.CallerHash); empty for an anonymous or plaintext call.
	Caller string `json:"caller_sha256,omitempty"`
}

// Metering is what the worker measured of an invocation. Nil fields were
// not measured.
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

// ReceiptTEE says where an invocation ran, as the worker's certificate
// states it: the TEE kind ("sim", "sev-snp" or "tdx"), its TCB and the
// worker's measurement.
type ReceiptTEE struct {
	Kind        string `json:"kind"`
	TCB         string `json:"tcb"`
	Measurement string `json:"measurement"`
}

// SignedReceipt is a receipt as it travels and as it is saved (cloister
// invoke --receipt-out): the receipt's canonical bytes, the worker's
// Ed25519 signature of them, and the worker's certificate. Its JSON is
// the ledger entry of the receipt (Entry), so it must not change.
type SignedReceipt struct {
	Receipt    []byte      `json:"receipt"`
	Signature  []byte      `json:"sig"`
	WorkerCert Certificate `json:"worker_cert"`
}

// Certificate is a document signed by the attested coordinator, as it
// travels: a JSON body and the Ed25519 signature of it. It is not
// verified; the client opens the ones it relies on (a worker's, a
// function's, an invoker policy) with the coordinator's identity key.
type Certificate struct {
	Body      []byte `json:"body"`
	Signature []byte `json:"sig"`
}

// Entry returns the receipt's ledger entry: its canonical JSON encoding,
// the bytes the transparency log holds.
func (s *SignedReceipt) Entry() ([]byte, error) { return s.internal().Entry() }

// VerifyReceipt verifies a signed receipt, such as one saved from
// Result.SignedReceipt: the worker's signature, the worker's certificate
// back to the attested coordinator (valid when the receipt was made), and
// the receipt's canonical encoding. It does not check which invocation the
// receipt is for: compare the fields of the receipt it returns with what
// you expect. VerifyInclusion proves that it was logged. Verification
// failures wrap ErrVerification.
func (c *Client) VerifyReceipt(ctx context.Context, s *SignedReceipt) (*Receipt, error) {
	if _, err := c.Attest(ctx); err != nil {
		return nil, err
	}
	v, err := c.receipts().Verify(s.internal(), receipt.Expect{})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	return receiptFrom(v.Receipt), nil
}

// internal is s as package receipt verifies it; nil stays nil.
func (s *SignedReceipt) internal() *receipt.Signed {
	if s == nil {
		return nil
	}
	return &receipt.Signed{Receipt: s.Receipt, Signature: s.Signature, WorkerCert: certs.Signed(s.WorkerCert)}
}

// signedReceiptFrom is a verified receipt's public form; nil stays nil.
func signedReceiptFrom(s *receipt.Signed) *SignedReceipt {
	if s == nil {
		return nil
	}
	return &SignedReceipt{Receipt: s.Receipt, Signature: s.Signature, WorkerCert: Certificate(s.WorkerCert)}
}

// signedReceiptsFrom converts a receipt chain; nil stays nil.
func signedReceiptsFrom(chain []*receipt.Signed) []*SignedReceipt {
	if chain == nil {
		return nil
	}
	out := make([]*SignedReceipt, len(chain))
	for i, s := range chain {
		out[i] = signedReceiptFrom(s)
	}
	return out
}

// receiptFrom is a decoded receipt's public form; nil stays nil.
func receiptFrom(r *receipt.Receipt) *Receipt {
	if r == nil {
		return nil
	}
	return &Receipt{
		Version: r.Version, InvocationID: r.InvocationID, Namespace: r.Namespace, Function: r.Function,
		FunctionVersion: r.FunctionVersion, CodeHash: r.CodeHash, InstrumentedHash: r.InstrumentedHash,
		BundleHash: r.BundleHash, SnapshotHash: r.SnapshotHash, ResetGeneration: r.ResetGeneration, Mode: r.Mode,
		RequestHash: r.RequestHash, ResponseHash: r.ResponseHash, Status: r.Status, Metering: Metering(r.Metering),
		TEE:      ReceiptTEE{Kind: string(r.TEE.Kind), TCB: r.TEE.TCB, Measurement: r.TEE.Measurement},
		WorkerID: r.WorkerID, Time: r.Time, Prev: r.Prev, Sequence: r.Sequence, Step: r.Step, Trust: r.Trust, Caller: r.Caller,
	}
}
