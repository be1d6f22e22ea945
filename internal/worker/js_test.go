package worker

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/sandbox"
)

func exceptionAnswer(t *testing.T, msg string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"name": "Error", "message": msg, "stack": "    at main (action.js:1)\n"})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("E"), b...)
}

func TestJSOutcome(t *testing.T) {
	res := sandbox.Result{Stdout: []byte(`R{"a":1}`)}
	if err := jsOutcome(&res, nil, false); err != nil || string(res.Stdout) != `{"a":1}` {
		t.Fatalf("result: got %s, %v", res.Stdout, err)
	}

	res = sandbox.Result{Stdout: exceptionAnswer(t, "secret 42")}
	err := jsOutcome(&res, nil, true)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != apierr.JSError || !strings.Contains(ae.Message, "Error: secret 42") || !strings.Contains(ae.Message, "action.js:1") {
		t.Fatalf("plain exception: got %v", err)
	}
	res = sandbox.Result{Stdout: exceptionAnswer(t, "secret 42")}
	err = jsOutcome(&res, nil, false)
	if !errors.As(err, &ae) || ae.Code != apierr.JSError || strings.Contains(ae.Message, "secret") || res.Stdout != nil {
		t.Fatalf("sealed exception: got %v (output %q), want js_error without the text", err, res.Stdout)
	}

	// A long message is cut at a character boundary.
	res = sandbox.Result{Stdout: exceptionAnswer(t, strings.Repeat("é", maxExceptionText))}
	if err = jsOutcome(&res, nil, true); !errors.As(err, &ae) || len(ae.Message) > maxExceptionText+3 || !utf8.ValidString(ae.Message) {
		t.Fatalf("long exception: %d bytes, valid UTF-8 %v", len(ae.Message), utf8.ValidString(ae.Message))
	}

	res = sandbox.Result{Stdout: []byte("O"), MemoryPages: 512}
	if err = jsOutcome(&res, nil, true); apierr.CodeOf(err) != apierr.MemoryLimit {
		t.Fatalf("out of memory: got %v", err)
	}
	res = sandbox.Result{Stdout: []byte("Q")}
	if err = jsOutcome(&res, nil, true); apierr.CodeOf(err) != apierr.Internal {
		t.Fatalf("malformed answer: got %v", err)
	}
	trap := errors.New("trapped")
	if err = jsOutcome(&res, trap, true); err != trap {
		t.Fatalf("sandbox error: got %v, want it unchanged", err)
	}
}

func TestJSInput(t *testing.T) {
	if _, err := jsInput([]byte("function main(){}"), []byte("[]")); apierr.CodeOf(err) != apierr.BadRequest {
		t.Fatalf("array params: got %v, want bad_request", err)
	}
	if in, err := jsInput([]byte("function main(){}"), nil); err != nil || !strings.HasSuffix(string(in), "{}") {
		t.Fatalf("empty params: got %q, %v", in, err)
	}
}
