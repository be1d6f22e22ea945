// Package sandbox runs untrusted WebAssembly functions for the worker.
//
// A function uses one of two ABIs. A WASI command (wasi_snapshot_preview1,
// an exported _start taking no arguments) reads its request on stdin,
// writes its response on stdout and logs on stderr, CGI-style, finds the
// platform's metadata in its environment, and runs in a fresh instance per
// call ([Module.Run]). A reactor (docs/reactor-abi.md) is initialised once,
// snapshotted, and each call of cloister_handle runs in a pooled sandbox
// restored exactly to that snapshot ([Module.NewFunction], [Function.Call]):
// memory is a copy-on-write mapping of the snapshot image, and a reset drops
// only the pages the call dirtied. The package compiles each module once
// with wazero (pure Go, no cgo) and shares the compiled code by code hash;
// every call is bounded by [Limits] and granted only what its
// [Capabilities] allow.
//
// # What it must never do
//
//   - Let state survive from one run to the next. Every [Module.Run]
//     instantiates the compiled module afresh and closes the instance before
//     it returns, whatever happened; every [Function.Call] starts from the
//     snapshot, and a sandbox whose reset cannot be exact (it trapped, timed
//     out, grew its memory, wrote its tables, touched stdio descriptors) is
//     discarded, never served again.
//   - Grant more than the capabilities say. A guest gets no filesystem (no
//     preopened directories), no sockets (WASI sock_* calls see no
//     preopened listeners and cannot open any), no host environment, only
//     wazero's deterministic fake clock unless Capabilities.Clock, and only
//     a deterministic random source unless Capabilities.Random. wazero
//     options smuggled in the caller's context (such as experimental socket
//     listeners or function listeners) are stripped before the guest runs.
//   - Let a guest exceed its limits: linear memory, wall time and stdout
//     size are enforced by the host, and the guest is stopped when it goes
//     over them.
//   - Put guest output in errors or logs. Errors carry a short, fixed
//     description of what went wrong, never the contents of stdout or stderr.
//   - Let a guest exhaust the host outside its limits. Tables are bounded
//     by [MaxTableEntries], and every binary goes through a structure check
//     before wazero decodes it, because wazero v1.12's decoder trusts the
//     counts in a binary and a few dozen hostile bytes can make it allocate
//     gigabytes (a fatal error that recover cannot catch). Never hand
//     wazero a binary that has not been through that check.
//   - Panic or block forever on hostile input: malformed modules are
//     rejected by [Engine.Compile] with [ErrInvalidModule], and every run
//     ends when its context or its time limit does.
//
// The worker checks failures with [errors.Is] against the exported sentinel
// errors ([ErrInvalidModule], [ErrTrap], [ErrTimeout], [ErrMemoryLimit],
// [ErrOutputTooLarge], [ErrExit] and friends).
package sandbox
