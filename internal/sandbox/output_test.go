package sandbox

import (
	"errors"
	"strings"
	"testing"
)

func TestBoundedBuffer(t *testing.T) {
	tests := []struct {
		name       string
		limit      int
		writes     []string
		wantBuf    string
		wantErrAt  int // index of the first failing write, -1 for none
		wantCalled int
	}{
		{name: "under", limit: 10, writes: []string{"abc", "def"}, wantBuf: "abcdef", wantErrAt: -1},
		{name: "exactly at", limit: 6, writes: []string{"abc", "def"}, wantBuf: "abcdef", wantErrAt: -1},
		{name: "one over", limit: 5, writes: []string{"abc", "def"}, wantBuf: "abcde", wantErrAt: 1, wantCalled: 1},
		{name: "first write over", limit: 2, writes: []string{"abc"}, wantBuf: "ab", wantErrAt: 0, wantCalled: 1},
		{name: "writes after overflow", limit: 2, writes: []string{"abc", "d", "e"}, wantBuf: "ab", wantErrAt: 0, wantCalled: 1},
		{name: "empty writes at limit", limit: 3, writes: []string{"abc", ""}, wantBuf: "abc", wantErrAt: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := 0
			b := &boundedBuffer{limit: tt.limit, onOverflow: func() { called++ }}
			errAt := -1
			for i, w := range tt.writes {
				n, err := b.Write([]byte(w))
				if err != nil {
					if !errors.Is(err, errOutputLimit) {
						t.Errorf("write %d: got error %v, want %v", i, err, errOutputLimit)
					}
					if errAt < 0 {
						errAt = i
					}
				} else if n != len(w) {
					t.Errorf("write %d: got n=%d with no error, want %d", i, n, len(w))
				}
			}
			if got := string(b.buf); got != tt.wantBuf {
				t.Errorf("got buffer %q, want %q", got, tt.wantBuf)
			}
			if errAt != tt.wantErrAt {
				t.Errorf("got first error at write %d, want %d", errAt, tt.wantErrAt)
			}
			if got, want := b.overflowed, tt.wantErrAt >= 0; got != want {
				t.Errorf("got overflowed %v, want %v", got, want)
			}
			if called != tt.wantCalled {
				t.Errorf("got %d overflow calls, want %d", called, tt.wantCalled)
			}
		})
	}
}

func TestTruncatingBuffer(t *testing.T) {
	tests := []struct {
		name          string
		limit         int
		writes        []string
		wantBuf       string
		wantTruncated bool
	}{
		{name: "under", limit: 10, writes: []string{"abc", "def"}, wantBuf: "abcdef"},
		{name: "exactly at", limit: 6, writes: []string{"abc", "def"}, wantBuf: "abcdef"},
		{name: "over", limit: 4, writes: []string{"abc", "def", "ghi"}, wantBuf: "abcd", wantTruncated: true},
		{name: "large write", limit: 3, writes: []string{strings.Repeat("x", 1000)}, wantBuf: "xxx", wantTruncated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &truncatingBuffer{limit: tt.limit}
			for i, w := range tt.writes {
				n, err := b.Write([]byte(w))
				if err != nil || n != len(w) {
					t.Errorf("write %d: got %d, %v, want %d, nil: stderr writes always succeed", i, n, err, len(w))
				}
			}
			if got := string(b.buf); got != tt.wantBuf {
				t.Errorf("got buffer %q, want %q", got, tt.wantBuf)
			}
			if b.truncated != tt.wantTruncated {
				t.Errorf("got truncated %v, want %v", b.truncated, tt.wantTruncated)
			}
		})
	}
}
