// Command reactor-go is an example Cloister function written in Go and built
// as a reactor (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared) for the reactor
// ABI v1 (docs/reactor-abi.md), using the Go SDK (sdk/go).
//
// Its package initialisation builds an upper-case table for the Basic
// Multilingual Plane once; the platform snapshots the module after it, so
// requests do not pay for it. The handler takes {"text":"..."} and returns
// {"words":N,"upper":"...","calls":N}, where calls counts the requests this
// instance has handled: with the platform's reset to the snapshot it is
// always 1.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// request is the function's input document.
type request struct {
	Text string `json:"text"`
}

// response is the function's output document.
type response struct {
	Words int    `json:"words"`
	Upper string `json:"upper"`
	Calls int    `json:"calls"`
}

// upperBMP maps every rune of the Basic Multilingual Plane to its upper
// case (256 KiB). It is built once, during initialisation.
var upperBMP = buildUpperBMP()

func buildUpperBMP() *[0x10000]rune {
	t := new([0x10000]rune)
	for r := range t {
		t[r] = unicode.ToUpper(rune(r))
	}
	return t
}

// calls counts the requests handled since the snapshot.
var calls int

func init() { cloister.Handle(handle) }

// handle is the function's handler. Empty (or whitespace-only) input is an
// empty text; malformed JSON is an error.
func handle(input []byte) ([]byte, error) {
	calls++
	var req request
	if len(bytes.TrimSpace(input)) > 0 {
		if err := json.Unmarshal(input, &req); err != nil {
			return nil, fmt.Errorf("invalid JSON input: %w", err)
		}
	}
	return json.Marshal(response{
		Words: len(strings.Fields(req.Text)),
		Upper: upper(req.Text),
		Calls: calls,
	})
}

// upper is strings.ToUpper with the table for the BMP.
func upper(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if int(r) < len(upperBMP) {
			r = upperBMP[r]
		} else {
			r = unicode.ToUpper(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// main is required by -buildmode=c-shared but never run: the platform calls
// _initialize (which runs package initialisation) and then cloister_handle.
func main() {}
