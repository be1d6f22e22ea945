package apierr

import (
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
