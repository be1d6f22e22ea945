package enginert

import (
	"bytes"
	"errors"
	"testing"
)

var errScript = errors.New("invalid script")

func TestCheckSource(t *testing.T) {
	for _, tt := range []struct {
		src string
		ok  bool
	}{
		{"def main(p): return p", true},
		{"", false},
		{"12345", false}, // over the limit of 4
		{"a\x00", false},
		{"\xff\xfe", false},
	} {
		max := 64
		if tt.src == "12345" {
			max = 4
		}
		err := CheckSource([]byte(tt.src), max, errScript)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errScript)) {
			t.Errorf("%q: got %v", tt.src, err)
		}
	}
}

func TestFrame(t *testing.T) {
	got := Frame("CPY1", []byte("abc"), []byte("{}"))
	want := append([]byte("CPY1\x03\x00\x00\x00abc"), "{}"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := Printable(bytes.Repeat([]byte("x"), 300)); len(got) != 202 {
		t.Errorf("Printable kept %d bytes", len(got))
	}
	if Hash([]byte("")) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("Hash of nothing: %s", Hash(nil))
	}
}
