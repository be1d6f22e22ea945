package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/receipt"
)

func sampleSigned(n byte) *receipt.Signed {
	return &receipt.Signed{Receipt: []byte(`{"v":1}`), Signature: bytes.Repeat([]byte{n}, 64),
		WorkerCert: certs.Signed{Body: []byte(`{"worker":"w"}`), Signature: bytes.Repeat([]byte{n + 1}, 64)}}
}

var binaryRequests = []InvokeRequest{
	{},
	{Namespace: "acme", Name: "echo", Version: 3, Mode: ModePlain, Plain: []byte(`{"x":1}`), Logs: true},
	{Namespace: "acme", Name: "echo", Version: 0, Mode: ModeHPKE, Activation: "0123456789abcdef0123456789abcdef",
		Sealed: SealedRequest{Mode: ModeHPKE, Version: 7, Enc: bytes.Repeat([]byte{1}, 1120), Ciphertext: bytes.Repeat([]byte{2}, 5000)}},
	{Namespace: "acme", Name: "seq", Mode: "sequence", Sealed: SealedRequest{Mode: "sequence", Ticket: []byte("ticket"), Ciphertext: []byte{0},
		Steps: []StepRef{{Name: "a", Version: 1}, {Name: "b", Version: 2}}}},
}

var binaryReplies = []InvokeReply{
	{},
	{Version: 3, Output: []byte("out"), Receipt: sampleSigned(1), Logs: []byte("line\n")},
	{Version: 4, Ciphertext: bytes.Repeat([]byte{9}, 4096), Ticket: []byte("t"), TicketExpires: time.Date(2026, 12, 7, 9, 0, 0, 5, time.UTC), Receipt: sampleSigned(2)},
	{Version: 5, Error: &apierr.Error{Code: apierr.FunctionTrap, Message: "trap: unreachable"}, Receipt: sampleSigned(3),
		Receipts: []*receipt.Signed{sampleSigned(4), sampleSigned(3)}, Step: 2, StepCode: apierr.FunctionTrap},
}

// TestBinaryRoundTrip checks that each message decodes to itself, and to
// what its JSON encoding decodes to: the two formats carry the same values.
func TestBinaryRoundTrip(t *testing.T) {
	for i, want := range binaryRequests {
		b, err := want.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got InvokeRequest
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		var viaJSON InvokeRequest
		j, _ := json.Marshal(want)
		if err := json.Unmarshal(j, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, viaJSON) {
			t.Errorf("request %d: binary gives\n%+v\nJSON gives\n%+v", i, got, viaJSON)
		}
	}
	for i, want := range binaryReplies {
		b, err := want.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > want.BinarySize() {
			t.Errorf("reply %d: %d bytes, more than its BinarySize %d", i, len(b), want.BinarySize())
		}
		var got InvokeReply
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		var viaJSON InvokeReply
		j, _ := json.Marshal(want)
		if err := json.Unmarshal(j, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if !got.TicketExpires.Equal(viaJSON.TicketExpires) {
			t.Errorf("reply %d: ticket expiry %v, JSON gives %v", i, got.TicketExpires, viaJSON.TicketExpires)
		}
		got.TicketExpires, viaJSON.TicketExpires = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, viaJSON) {
			t.Errorf("reply %d: binary gives\n%+v\nJSON gives\n%+v", i, got, viaJSON)
		}
	}
}

// TestBinaryRefuses checks that JSON, the other message's tag, every
// truncation and trailing bytes are refused with ErrMalformed.
func TestBinaryRefuses(t *testing.T) {
	req, _ := binaryRequests[2].AppendBinary(nil)
	rep, _ := binaryReplies[3].AppendBinary(nil)
	j, _ := json.Marshal(binaryRequests[1])
	var r InvokeRequest
	var p InvokeReply
	for name, err := range map[string]error{
		"json request":       r.UnmarshalBinary(j),
		"json reply":         p.UnmarshalBinary([]byte(`{"version":1}`)),
		"reply as request":   r.UnmarshalBinary(rep),
		"request as reply":   p.UnmarshalBinary(req),
		"empty":              r.UnmarshalBinary(nil),
		"trailing":           r.UnmarshalBinary(append(req, 0)),
		"bad bool":           r.UnmarshalBinary(append(req[:len(req)-1:len(req)-1], 2)),
		"huge receipt count": p.UnmarshalBinary(append([]byte{tagInvokeReply, 0, 0, 0, 0, 0, 0, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f)),
	} {
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	for n := range len(req) {
		if err := r.UnmarshalBinary(req[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("request cut at %d of %d: %v", n, len(req), err)
		}
	}
	for n := range len(rep) {
		if err := p.UnmarshalBinary(rep[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("reply cut at %d of %d: %v", n, len(rep), err)
		}
	}
}

// TestBinaryAliases checks that decoded byte fields cannot be appended to
// over the rest of the message.
func TestBinaryAliases(t *testing.T) {
	b, _ := binaryRequests[1].AppendBinary(nil)
	var r InvokeRequest
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	before := bytes.Clone(b)
	_ = append(r.Plain, "overwrite"...)
	if !bytes.Equal(b, before) {
		t.Error("appending to a decoded field wrote into the message")
	}
}

// FuzzInvokeBinary decodes arbitrary bytes as both messages: no panic, and
// whatever decodes encodes back to the same bytes.
func FuzzInvokeBinary(f *testing.F) {
	for _, r := range binaryRequests {
		b, _ := r.AppendBinary(nil)
		f.Add(b)
	}
	for _, r := range binaryReplies {
		b, _ := r.AppendBinary(nil)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r InvokeRequest
		if r.UnmarshalBinary(data) == nil {
			b, err := r.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			var again InvokeRequest
			if err := again.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(r, again) {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		var p InvokeReply
		if p.UnmarshalBinary(data) == nil {
			b, err := p.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > p.BinarySize() {
				t.Fatalf("reply of %d bytes, more than its BinarySize %d", len(b), p.BinarySize())
			}
			var again InvokeReply
			if err := again.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(p, again) {
				t.Fatalf("reply does not round-trip: %v", err)
			}
		}
	})
}
