package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/cloister-faas/cloister/internal/certs"
)

func sampleAppend() *LedgerAppendRequest {
	return &LedgerAppendRequest{
		WorkerCert: certs.Signed{Body: []byte(`{"worker":"w1"}`), Signature: bytes.Repeat([]byte{7}, 64)},
		Receipts:   [][]byte{[]byte("first receipt"), bytes.Repeat([]byte{0, 0xff}, 1500)},
		Signature:  bytes.Repeat([]byte{9}, 64),
	}
}

func TestLedgerAppendRoundTrip(t *testing.T) {
	in := sampleAppend()
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var out LedgerAppendRequest
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*in, out) {
		t.Fatalf("round trip changed the request:\n%+v\n%+v", in, out)
	}

	resp := LedgerAppendResponse{Indices: []uint64{0, 1, 1 << 40}}
	rb, _ := resp.MarshalBinary()
	var got LedgerAppendResponse
	if err := got.UnmarshalBinary(rb); err != nil || !reflect.DeepEqual(got, resp) {
		t.Fatalf("indices round trip: %v %v", got, err)
	}
}

func TestLedgerAppendMalformed(t *testing.T) {
	good, _ := sampleAppend().MarshalBinary()
	empty, _ := (&LedgerAppendRequest{}).MarshalBinary()
	emptyEntry, _ := (&LedgerAppendRequest{Receipts: [][]byte{{}}}).MarshalBinary()
	tooMany := make([][]byte, MaxLedgerBatch+1)
	if _, err := (&LedgerAppendRequest{Receipts: tooMany}).MarshalBinary(); !errors.Is(err, ErrMalformedLedgerBatch) {
		t.Errorf("encoding %d receipts: %v", len(tooMany), err)
	}
	hugeCount := append([]byte(nil), good...)
	cases := map[string][]byte{
		"nil":           nil,
		"json":          []byte(`{"receipts":[]}`),
		"bad magic":     append([]byte("CLA2"), good[4:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte(nil), good...), 0),
		"no receipts":   empty,
		"empty entry":   emptyEntry,
		"only magic":    []byte("CLA1"),
		"huge part":     append([]byte("CLA1"), 0xff, 0xff, 0xff, 0xff),
		"count too big": setCount(hugeCount, MaxLedgerBatch+1),
	}
	for name, b := range cases {
		var r LedgerAppendRequest
		if err := r.UnmarshalBinary(b); !errors.Is(err, ErrMalformedLedgerBatch) {
			t.Errorf("%s: got %v, want ErrMalformedLedgerBatch", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"nil": nil, "short": []byte("CLI1\x00\x00\x00\x02\x00"), "count mismatch": []byte("CLI1\x00\x00\x00\x01"),
	} {
		var r LedgerAppendResponse
		if err := r.UnmarshalBinary(b); !errors.Is(err, ErrMalformedLedgerBatch) {
			t.Errorf("indices %s: got %v", name, err)
		}
	}
}

// setCount rewrites the receipt count of an encoded sampleAppend.
func setCount(b []byte, n uint32) []byte {
	s := sampleAppend()
	off := 4 + 4 + len(s.WorkerCert.Body) + 4 + len(s.WorkerCert.Signature) + 4 + len(s.Signature)
	b[off], b[off+1], b[off+2], b[off+3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return b
}

func FuzzLedgerAppend(f *testing.F) {
	good, _ := sampleAppend().MarshalBinary()
	f.Add(good)
	f.Add([]byte("CLA1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r LedgerAppendRequest
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded batch does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("decoding is not the inverse of encoding")
		}
	})
}
