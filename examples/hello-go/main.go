// Command hello-go is an example Cloister function written in Go and built
// as a WASI command (GOOS=wasip1 GOARCH=wasm).
//
// It reads a JSON request such as {"name":"Ada"} from stdin and writes a JSON
// greeting to stdout. Malformed input is reported on stderr with exit code 2.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// request is the function's input document.
type request struct {
	Name string `json:"name"`
}

// response is the function's output document.
type response struct {
	Greeting string `json:"greeting"`
	Function string `json:"function"`
	Bytes    int    `json:"bytes"`
}

// respond computes the function's output for input. env looks up
// environment variables (os.Getenv in production). An empty or
// whitespace-only input, or an empty name, greets "world".
func respond(input []byte, env func(string) string) ([]byte, error) {
	var req request
	if len(bytes.TrimSpace(input)) > 0 {
		if err := json.Unmarshal(input, &req); err != nil {
			return nil, fmt.Errorf("invalid JSON input: %w", err)
		}
	}
	name := req.Name
	if name == "" {
		name = "world"
	}
	out, err := json.Marshal(response{
		Greeting: "Hello, " + name + "!",
		Function: env("CLOISTER_FUNCTION"),
		Bytes:    len(input),
	})
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hello-go: reading stdin: %v\n", err)
		os.Exit(1)
	}
	out, err := respond(input, os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hello-go: %v\n", err)
		os.Exit(2)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintf(os.Stderr, "hello-go: writing stdout: %v\n", err)
		os.Exit(1)
	}
}
