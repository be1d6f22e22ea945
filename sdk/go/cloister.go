// Package cloister is the guest side of the Cloister reactor ABI v1 for Go
// functions built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared. The ABI
// is specified in docs/reactor-abi.md.
//
// A function registers its handler from an init function and leaves main
// empty; in a c-shared build main is never run:
//
//	func init() { cloister.Handle(handle) }
//
//	func main() {}
//
// The platform initialises the module once (package initialisation runs
// then), snapshots it, and calls the handler for each request from that
// snapshot, so state the handler changes is not seen by the next request.
//
// In a wasip1 build the package imports the host functions of module
// "cloister" and exports cloister_handle. On other platforms it only keeps
// the handler so that [Call] can test it. The package must never write a
// handler's output anywhere but the response, nor its input anywhere at all;
// errors and panics go to stderr, which is the function's log.
package cloister

import "errors"

// ErrNoHandler is returned by [Call] when no handler has been registered
// with [Handle].
var ErrNoHandler = errors.New("cloister: no handler registered")

// handler is the function registered by Handle.
var handler func(input []byte) ([]byte, error)

// Handle registers h as the function's request handler, replacing any
// earlier one. Call it during package initialisation (from init or a
// package-level variable's initialiser), not from main, which a c-shared
// build never runs. It panics if h is nil.
//
// For each request h receives the request bytes and returns the response
// bytes. A non-nil error fails the request with function error code 1
// (see docs/reactor-abi.md); its text is written to stderr and the
// response is discarded. h must not retain input after it returns.
func Handle(h func(input []byte) ([]byte, error)) {
	if h == nil {
		panic("cloister: Handle called with a nil handler")
	}
	handler = h
}

// Call invokes the registered handler with input and returns its result,
// or [ErrNoHandler]. It lets a function's handler be unit-tested on the
// host; it does not go through the ABI, and a panic in the handler
// propagates to the caller.
func Call(input []byte) ([]byte, error) {
	if handler == nil {
		return nil, ErrNoHandler
	}
	return handler(input)
}
