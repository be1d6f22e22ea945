package worker

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
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
	if err := scriptOutcome(bundle.RuntimeJS, &res, nil, false); err != nil || string(res.Stdout) != `{"a":1}` {
		t.Fatalf("result: got %s, %v", res.Stdout, err)
	}

	res = sandbox.Result{Stdout: exceptionAnswer(t, "secret 42")}
	err := scriptOutcome(bundle.RuntimeJS, &res, nil, true)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != apierr.JSError || !strings.Contains(ae.Message, "Error: secret 42") || !strings.Contains(ae.Message, "action.js:1") {
		t.Fatalf("plain exception: got %v", err)
	}
	res = sandbox.Result{Stdout: exceptionAnswer(t, "secret 42")}
	err = scriptOutcome(bundle.RuntimeJS, &res, nil, false)
	if !errors.As(err, &ae) || ae.Code != apierr.JSError || strings.Contains(ae.Message, "secret") || res.Stdout != nil {
		t.Fatalf("sealed exception: got %v (output %q), want js_error without the text", err, res.Stdout)
	}

	// A long message is cut at a character boundary.
	res = sandbox.Result{Stdout: exceptionAnswer(t, strings.Repeat("é", maxExceptionText))}
	if err = scriptOutcome(bundle.RuntimeJS, &res, nil, true); !errors.As(err, &ae) || len(ae.Message) > maxExceptionText+3 || !utf8.ValidString(ae.Message) {
		t.Fatalf("long exception: %d bytes, valid UTF-8 %v", len(ae.Message), utf8.ValidString(ae.Message))
	}

	res = sandbox.Result{Stdout: []byte("O"), MemoryPages: 512}
	if err = scriptOutcome(bundle.RuntimeJS, &res, nil, true); apierr.CodeOf(err) != apierr.MemoryLimit {
		t.Fatalf("out of memory: got %v", err)
	}
	res = sandbox.Result{Stdout: []byte("Q")}
	if err = scriptOutcome(bundle.RuntimeJS, &res, nil, true); apierr.CodeOf(err) != apierr.Internal {
		t.Fatalf("malformed answer: got %v", err)
	}
	trap := errors.New("trapped")
	if err = scriptOutcome(bundle.RuntimeJS, &res, trap, true); err != trap {
		t.Fatalf("sandbox error: got %v, want it unchanged", err)
	}
}

func TestScriptInput(t *testing.T) {
	for _, runtime := range []string{bundle.RuntimeJS, bundle.RuntimePython} {
		fn := &loaded{manifest: bundle.Manifest{Runtime: runtime}, script: []byte("function main(){}")}
		if _, err := scriptInput(fn, []byte("[]")); apierr.CodeOf(err) != apierr.BadRequest {
			t.Fatalf("%s, array params: got %v, want bad_request", runtime, err)
		}
		if in, err := scriptInput(fn, nil); err != nil || !strings.HasSuffix(string(in), "{}") {
			t.Fatalf("%s, empty params: got %q, %v", runtime, in, err)
		}
	}
}

func pythonException(t *testing.T, msg string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"name": "ValueError", "message": msg,
		"traceback": "Traceback (most recent call last):\n  File \"main.py\", line 2, in main\nValueError: " + msg + "\n"})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("E"), b...)
}

func TestPythonOutcome(t *testing.T) {
	res := sandbox.Result{Stdout: []byte(`R{"a":1}`)}
	if err := scriptOutcome(bundle.RuntimePython, &res, nil, false); err != nil || string(res.Stdout) != `{"a":1}` {
		t.Fatalf("result: got %s, %v", res.Stdout, err)
	}
	res = sandbox.Result{Stdout: pythonException(t, "secret 42")}
	err := scriptOutcome(bundle.RuntimePython, &res, nil, true)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != apierr.PythonError || !strings.Contains(ae.Message, "line 2, in main") || !strings.HasSuffix(ae.Message, "ValueError: secret 42") {
		t.Fatalf("plain exception: got %v", err)
	}
	res = sandbox.Result{Stdout: pythonException(t, "secret 42")}
	err = scriptOutcome(bundle.RuntimePython, &res, nil, false)
	if !errors.As(err, &ae) || ae.Code != apierr.PythonError || strings.Contains(ae.Message, "secret") || !strings.Contains(string(res.Stderr), "secret 42") {
		t.Fatalf("sealed exception: got %v (logs %q), want python_error with the text in the logs only", err, res.Stderr)
	}
	res = sandbox.Result{Stdout: []byte("O"), MemoryPages: 512}
	if err = scriptOutcome(bundle.RuntimePython, &res, nil, true); apierr.CodeOf(err) != apierr.MemoryLimit {
		t.Fatalf("out of memory: got %v", err)
	}
}
