//go:build wasip1

package cloister

import (
	"fmt"
	"os"
	"runtime/debug"
	"unsafe"
)

// Function error codes that cloister_handle returns besides 0 (success).
// They are documented in docs/reactor-abi.md.
const (
	codeHandlerError  = 1 // the handler returned an error
	codeHandlerPanic  = 2 // the handler panicked
	codeOutputRefused = 3 // output_write returned -1: the output limit
	codeABI           = 4 // no handler, or the host's input functions misbehaved
)

// The host functions of the reactor ABI v1. Lengths and results are i32.

//go:wasmimport cloister input_len
func inputLen() int32

//go:wasmimport cloister input_read
func inputRead(ptr unsafe.Pointer, n int32) int32

//go:wasmimport cloister output_write
func outputWrite(ptr unsafe.Pointer, n int32) int32

// handle is the ABI's cloister_handle export: it reads the request, runs
// the handler and appends its result to the response.
//
//go:wasmexport cloister_handle
func handle() int32 {
	if handler == nil {
		logf("%v", ErrNoHandler)
		return codeABI
	}
	input, err := readInput()
	if err != nil {
		logf("reading the request: %v", err)
		return codeABI
	}
	output, code := run(input)
	if code != 0 {
		return code
	}
	if len(output) > 0 && outputWrite(unsafe.Pointer(&output[0]), int32(len(output))) != 0 {
		logf("writing the response: the host refused %d bytes (output limit)", len(output))
		return codeOutputRefused
	}
	return 0
}

// readInput copies the whole request into a new slice.
func readInput() ([]byte, error) {
	n := inputLen()
	if n < 0 {
		return nil, fmt.Errorf("input_len returned %d", n)
	}
	if n == 0 {
		return []byte{}, nil
	}
	buf := make([]byte, n)
	if got := inputRead(unsafe.Pointer(&buf[0]), n); got != n {
		return nil, fmt.Errorf("input_read copied %d of %d bytes", got, n)
	}
	return buf, nil
}

// run calls the handler, turning an error or a panic into a non-zero code
// and a message on stderr.
func run(input []byte) (output []byte, code int32) {
	defer func() {
		if v := recover(); v != nil {
			logf("handler panicked: %v\n%s", v, debug.Stack())
			output, code = nil, codeHandlerPanic
		}
	}()
	output, err := handler(input)
	if err != nil {
		logf("%v", err)
		return nil, codeHandlerError
	}
	if int64(len(output)) > 1<<31-1 {
		logf("writing the response: %d bytes is more than the ABI can carry", len(output))
		return nil, codeOutputRefused
	}
	return output, 0
}

// logf writes one line to stderr, the function's log.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
