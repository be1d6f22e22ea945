package apierr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestCodesDocumented keeps docs/api.md's table of error codes in step with
// the codes: every code has a row with its HTTP status, and every row names
// a code.
func TestCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // code -> status column
	for line := range strings.Lines(string(doc)) {
		cols := strings.Split(line, "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`") {
			continue
		}
		code := strings.Trim(strings.TrimSpace(cols[1]), "`")
		st := strings.TrimSpace(cols[2])
		if _, err := strconv.Atoi(st); err != nil || len(st) != 3 {
			continue // not the error table
		}
		rows[code] = st
	}
	for c, s := range status {
		got, ok := rows[string(c)]
		if !ok {
			t.Errorf("code %s is not in docs/api.md's error table", c)
			continue
		}
		if got != strconv.Itoa(s) {
			t.Errorf("code %s: docs/api.md says %s, the code answers %d", c, got, s)
		}
	}
	for code := range rows {
		if _, ok := status[Code(code)]; !ok {
			t.Errorf("docs/api.md documents %s, which is not a code", code)
		}
	}
}

// TestWrapKeepsTheCause: a wrapped error has its code and its cause's
// message, errors.Is and errors.As see the cause through it, and its JSON
// body is the code and the message only.
func TestWrapKeepsTheCause(t *testing.T) {
	cause := fmt.Errorf("reading: %w", context.DeadlineExceeded)
	err := Wrap(Timeout, cause)
	if CodeOf(err) != Timeout || !errors.Is(err, context.DeadlineExceeded) || err.Error() != "timeout: reading: context deadline exceeded" {
		t.Fatalf("wrapped: %v (code %s)", err, CodeOf(err))
	}
	b, _ := json.Marshal(err)
	if string(b) != `{"code":"timeout","message":"reading: context deadline exceeded"}` {
		t.Fatalf("JSON body %s", b)
	}
	if Wrap(Timeout, nil) != nil {
		t.Fatal("Wrap of nil is not nil")
	}
}
