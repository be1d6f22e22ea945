package wire

import (
	"github.com/cloister-faas/cloister/internal/certs"
)

// DomainInspection is the signature domain of a worker's Inspection
// statement, so that no other signature of a worker's key (receipts,
// ledger batches, key requests) can pass for one.
const DomainInspection = "cloister-inspection-v1\n"

// InspectRequest asks an admitted worker (bus.SubjectWorkerInspect, queue
// group bus.WorkerQueue) to inspect a bundle at deploy: load it from the
// object store, check it, compile it, run a reactor's initialisation in a
// sandbox, and report the ABI and the snapshot hash in a signed
// Inspection. The coordinator sends it; it runs no guest code itself
// (docs/adr/0005-init-on-worker.md).
type InspectRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Version   int    `json:"version"`
	// Object names the bundle in the object store.
	Object string `json:"object"`
	// BundleHash and CodeHash are what the coordinator read and checked:
	// the worker refuses a bundle that does not match them.
	BundleHash string `json:"bundle_sha256"`
	CodeHash   string `json:"code_sha256"`
	// Nonce is fresh per request; the Inspection repeats it.
	Nonce []byte `json:"nonce"`
	// TimeoutMS is what is left of the deploy's timeout: the worker gives
	// up after it.
	TimeoutMS int64 `json:"timeout_ms"`
}

// Inspection is what a worker states about a bundle, signed with its
// certified signing key under DomainInspection. It binds the request
// (namespace, name, version, code and bundle hashes, nonce) to the answer
// (ABI and snapshot hash).
type Inspection struct {
	WorkerID   string `json:"worker_id"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Version    int    `json:"version"`
	CodeHash   string `json:"code_sha256"`
	BundleHash string `json:"bundle_sha256"`
	Nonce      []byte `json:"nonce"`
	// ABI is the sandbox's: "wasi-command" or "reactor" (a JavaScript
	// function runs on the engine, a reactor).
	ABI string `json:"abi"`
	// SnapshotHash is the hash of the state every invocation starts from.
	SnapshotHash string `json:"snapshot_sha256"`
}

// InspectReply answers an InspectRequest: the worker's certificate, issued
// by the coordinator, and its signed Inspection. A failed inspection is an
// error reply with a stable code (invalid_module, memory_limit, timeout,
// bundle_integrity, …) instead.
type InspectReply struct {
	Certificate certs.Signed `json:"certificate"`
	Statement   certs.Signed `json:"statement"`
}
