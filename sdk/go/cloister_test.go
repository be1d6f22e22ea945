package cloister

import (
	"bytes"
	"errors"
	"testing"
)

func TestCall(t *testing.T) {
	defer func(h func([]byte) ([]byte, error)) { handler = h }(handler)

	handler = nil
	if out, err := Call([]byte("x")); !errors.Is(err, ErrNoHandler) || out != nil {
		t.Errorf("Call without a handler: got %q, %v; want nil, ErrNoHandler", out, err)
	}

	errBad := errors.New("bad")
	Handle(func(in []byte) ([]byte, error) {
		if len(in) == 0 {
			return nil, errBad
		}
		return bytes.ToUpper(in), nil
	})
	if out, err := Call([]byte("abc")); err != nil || string(out) != "ABC" {
		t.Errorf("Call(abc): got %q, %v; want \"ABC\", nil", out, err)
	}
	if out, err := Call(nil); !errors.Is(err, errBad) || out != nil {
		t.Errorf("Call(nil): got %q, %v; want nil, %v", out, err, errBad)
	}

	Handle(func([]byte) ([]byte, error) { return []byte("second"), nil })
	if out, _ := Call(nil); string(out) != "second" {
		t.Errorf("after a second Handle: got %q, want \"second\"", out)
	}
}

func TestHandleNil(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Handle(nil) did not panic")
		}
	}()
	Handle(nil)
}
