// Package state is Cloister's sealed key-value store for stateful
// functions (docs/state.md).
//
// Values live in an untrusted NATS KV bucket, AEAD-sealed inside the worker
// with a per-function state key that only the coordinator can derive and
// that it releases only to admitted workers. The AAD binds the namespace,
// the function, the key and the value's version. Which version of each key
// is current is decided by an [Anchor] held by the coordinator (in its TEE):
// the worker asks it, in batches, for every read and commits every write to
// it with compare-and-set. A host that returns an older value (rollback),
// moves a value from another key or function (swap) or brings back a
// deleted key (replay) is detected with [ErrIntegrity].
//
// The anchor makes every change durable before it answers, by group commit
// (anchorcommit.go), in a sealed, hash-chained log: the journal that every
// coordinator of a deployment reads (internal/journal), so that a standby
// anchor follows the active one ([Anchor.CatchUp]) and takes over with the
// same state ([Anchor.Lead]), while a stale one is fenced off
// ([Anchor.Fenced]); or, for an anchor opened without JetStream, a file
// (anchorlog.go), whose records move into the journal the first time an
// anchor with one leads.
//
// The package never logs keys, values or key names, and never hands the
// state key to guest code: it lives in the worker's memory only.
package state
