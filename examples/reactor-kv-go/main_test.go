package main

import (
	"strconv"
	"strings"
	"sync"
	"testing"

	cloister "github.com/cloister-faas/cloister/sdk/go"
)

// call runs the handler on the host (the SDK's in-memory state).
func call(t *testing.T, in string) (string, error) {
	t.Helper()
	out, err := cloister.Call([]byte(in))
	return string(out), err
}

func TestHandle(t *testing.T) {
	cloister.ResetKV()
	for _, c := range []struct{ in, want string }{
		{`{"op":"get","key":"a"}`, `{"found":false,"value":""}`},
		{`{"op":"put","key":"a","value":"hello"}`, `{"ok":true}`},
		{`{"op":"get","key":"a"}`, `{"found":true,"value":"hello"}`},
		{`{"op":"put","key":"ab","value":""}`, `{"ok":true}`},
		{`{"op":"get","key":"ab"}`, `{"found":true,"value":""}`},
		{`{"op":"put","key":"b","value":"x"}`, `{"ok":true}`},
		{`{"op":"list","key":"a"}`, `{"keys":["a","ab"]}`},
		{`{"op":"list"}`, `{"keys":["a","ab","b"]}`},
		{`{"op":"delete","key":"a"}`, `{"deleted":true}`},
		{`{"op":"delete","key":"a"}`, `{"deleted":false}`},
		{`{"op":"add","key":"n"}`, `{"value":1}`},
		{`{"op":"add","key":"n","delta":41}`, `{"value":42}`},
		{`{"op":"add","key":"n","delta":-50}`, `{"value":-8}`},
		{`{"op":"get","key":"n"}`, `{"found":true,"value":"-8"}`},
	} {
		if got, err := call(t, c.in); err != nil || got != c.want {
			t.Errorf("%s: got %s %v, want %s", c.in, got, err, c.want)
		}
	}
	call(t, `{"op":"put","key":"max","value":"9223372036854775807"}`)
	for _, c := range []struct{ in, want string }{
		{`not json`, "invalid JSON"},
		{`{"op":"get"}`, "key must be"},
		{`{"op":"get","key":"` + strings.Repeat("k", maxKey+1) + `"}`, "key must be"},
		{`{"op":"nope","key":"a"}`, "unknown op"},
		{`{"op":"add","key":"b"}`, "does not hold an integer"},
		{`{"op":"add","key":"max"}`, "overflows"},
	} {
		if _, err := call(t, c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// TestConcurrentAdds: compare-and-set loses no update.
func TestConcurrentAdds(t *testing.T) {
	cloister.ResetKV()
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				if _, err := call(t, `{"op":"add","key":"c"}`); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got, _ := call(t, `{"op":"get","key":"c"}`); got != `{"found":true,"value":"`+strconv.Itoa(goroutines*each)+`"}` {
		t.Fatalf("after %d adds: %s", goroutines*each, got)
	}
}
