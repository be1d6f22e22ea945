package pyrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cloister-faas/cloister/internal/sandbox"
	"github.com/cloister-faas/cloister/internal/sandbox/sandboxtest"
)

// example reads examples/NAME/main.py.
func example(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", name, "main.py"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExamples loads examples/hello-py and examples/kv-py as a worker does
// (NewFunction) and calls them, so that they keep working.
func TestExamples(t *testing.T) {
	t.Run("hello-py", func(t *testing.T) {
		f := newLoaded(t, sandbox.Limits{}, example(t, "hello-py"))
		for _, c := range []struct{ params, want string }{
			{`{"name":"Ada"}`, `{"greeting":"Hello, Ada!","calls":1}`},
			{`{"name":"Ada"}`, `{"greeting":"Hello, Ada!","calls":1}`},
			{``, `{"greeting":"Hello, stranger!","calls":1}`},
		} {
			if got, _, err := invoke(t, f, c.params); err != nil || got != c.want {
				t.Errorf("%s: got %s %v, want %s", c.params, got, err, c.want)
			}
		}
	})
	t.Run("kv-py", func(t *testing.T) {
		f := newLoaded(t, sandbox.Limits{}, example(t, "kv-py"))
		kv := &sandboxtest.MapKV{}
		for _, c := range []struct{ params, want string }{
			{`{"op":"get","key":"note/1"}`, `{"value":null}`},
			{`{"op":"put","key":"note/1","value":"call the lab"}`, `{"ok":true}`},
			{`{"op":"put","key":"note/2","value":42}`, `{"ok":true}`},
			{`{"op":"get","key":"note/1"}`, `{"value":"call the lab"}`},
			{`{"op":"list","key":"note/"}`, `{"keys":["note/1","note/2"]}`},
			{`{"op":"del","key":"note/2"}`, `{"deleted":true}`},
			{`{"op":"del","key":"note/2"}`, `{"deleted":false}`},
			{`{"op":"list"}`, `{"keys":["note/1"]}`},
			{`{"op":"incr","key":"visits"}`, `{"value":1}`},
			{`{"op":"incr","key":"visits","by":10}`, `{"value":11}`},
		} {
			if got, err := invokeKV(f, kv, c.params); err != nil || got != c.want {
				t.Errorf("%s: got %s %v, want %s", c.params, got, err, c.want)
			}
		}
		var e *Exception
		if _, err := invokeKV(f, kv, `{"op":"rename"}`); !errors.As(err, &e) || e.Name != "ValueError" {
			t.Errorf("unknown op: got %v, want ValueError", err)
		}
		if _, err := invokeKV(f, nil, `{"op":"get","key":"note/1"}`); !errors.As(err, &e) || e.Name != "cloister.StateDenied" {
			t.Errorf("without state: got %v, want cloister.StateDenied", err)
		}
		// Concurrent increments, in as many sandboxes, lose no update.
		const workers, each = 2, 10
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					if _, err := invokeKV(f, kv, `{"op":"incr","key":"hits"}`); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if got, err := invokeKV(f, kv, `{"op":"get","key":"hits"}`); err != nil || got != fmt.Sprintf(`{"value":"%d"}`, workers*each) {
			t.Errorf("after concurrent increments: got %s %v, want %d", got, err, workers*each)
		}
	})
}
