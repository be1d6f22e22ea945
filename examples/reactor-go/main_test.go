package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// TestHandle runs the registered handler on the host through the SDK's
// Call. Without the platform's snapshot reset, calls keeps counting.
func TestHandle(t *testing.T) {
	calls = 0
	tests := []struct {
		name  string
		input string
		want  response
	}{
		{"words", `{"text":"hello, reactor world"}`, response{3, "HELLO, REACTOR WORLD", 1}},
		{"empty input", ``, response{0, "", 2}},
		{"whitespace input", " \n", response{0, "", 3}},
		{"empty object", `{}`, response{0, "", 4}},
		{"unicode", `{"text":" straße\tǆ ﬀ 𐐨 "}`, response{4, " STRAßE\tǄ ﬀ 𐐀 ", 5}},
		{"unknown fields ignored", `{"text":"a b","x":1}`, response{2, "A B", 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := cloister.Call([]byte(tt.input))
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			var got response
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output %q is not JSON: %v", out, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHandleInvalid(t *testing.T) {
	for _, input := range []string{`{"text":`, `[1]`, `{"text":1}`, `nope`} {
		if out, err := cloister.Call([]byte(input)); err == nil {
			t.Errorf("Call(%q) = %q, want an error", input, out)
		}
	}
}

// TestUpper checks the table against strings.ToUpper over every rune.
func TestUpper(t *testing.T) {
	var b strings.Builder
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if utf8.ValidRune(r) {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if got, want := upper(s), strings.ToUpper(s); got != want {
		t.Error("upper differs from strings.ToUpper")
	}
}
