// Command guest is a reactor that abi_test.go builds with the SDK to
// exercise each of its paths through the ABI. Its handler echoes the
// request, except that "error" returns an error and "panic" panics. With
// NO_HANDLER set in the environment it registers no handler.
package main

import (
	"errors"
	"os"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

func init() {
	if os.Getenv("NO_HANDLER") == "" {
		cloister.Handle(handle)
	}
}

func handle(input []byte) ([]byte, error) {
	switch string(input) {
	case "error":
		return nil, errors.New("guest: bad request")
	case "panic":
		panic("guest: boom")
	}
	return input, nil
}

func main() {}
