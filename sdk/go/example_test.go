package cloister_test

import (
	"bytes"
	"fmt"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// A function registers its handler during initialisation; on the host,
// Call runs it the way a test would.
func Example() {
	// In a function: func init() { cloister.Handle(upper) }
	cloister.Handle(func(input []byte) ([]byte, error) {
		return bytes.ToUpper(input), nil
	})

	out, err := cloister.Call([]byte("hello"))
	fmt.Printf("%s %v\n", out, err)
	// Output: HELLO <nil>
}
