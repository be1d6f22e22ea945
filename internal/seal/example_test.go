package seal_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-faas/cloister/internal/seal"
)

// A client seals an input to one function version; the worker that holds the
// version's key opens it and answers under the exported response key.
func ExampleSealRequest() {
	// The coordinator derives the function's key pair and certifies its
	// public half; the client learns it from the function certificate.
	master := bytes.Repeat([]byte{0x42}, 32)
	const ns, name, version = "acme", "hello", 1
	const code = "c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de"
	key, err := seal.DeriveFunctionKey(master, seal.DefaultSuite, ns, name, version, code)
	if err != nil {
		panic(err)
	}
	info := seal.Info(ns, name, version, code)

	// Client: seal a payload (nonce, clock, input).
	payload := seal.NewPayload([]byte("hello, enclave"), time.Now())
	c, err := seal.SealRequest(seal.PublicKeyBytes(key), info, payload, nil, false)
	if err != nil {
		panic(err)
	}

	// Worker: open it with the function key under the same info.
	s, err := seal.OpenRequest(key, info, c.Enc, c.Ciphertext, false)
	if err != nil {
		panic(err)
	}
	p, err := seal.DecodePayload(s.Payload)
	if err != nil {
		panic(err)
	}
	fmt.Printf("worker got: %s\n", p.Input)
	resp, err := seal.SealSymmetric(s.ResponseKey, seal.AADResponse, nil, []byte("hi, client"))
	if err != nil {
		panic(err)
	}

	// Client: open the response.
	out, err := seal.OpenSymmetric(c.ResponseKey, seal.AADResponse, nil, resp)
	if err != nil {
		panic(err)
	}
	fmt.Printf("client got: %s\n", out)

	// Sealed to version 1, the request does not open as version 2.
	_, err = seal.OpenRequest(key, seal.Info(ns, name, 2, code), c.Enc, c.Ciphertext, false)
	fmt.Println(errors.Is(err, seal.ErrDecrypt))
	// Output:
	// worker got: hello, enclave
	// client got: hi, client
	// true
}
