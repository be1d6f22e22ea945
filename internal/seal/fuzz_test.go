package seal_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/seal"
)

// FuzzDecodePayload checks that DecodePayload never panics, fails only with
// ErrMalformed, and that anything it accepts re-encodes to the same bytes.
func FuzzDecodePayload(f *testing.F) {
	f.Add(seal.Payload{Nonce: [16]byte{1}, Time: time.Unix(1700000000, 5), Input: []byte("input")}.Encode())
	f.Add(seal.Payload{}.Encode())
	f.Add(seal.Payload{Nonce: [16]byte{2}, Time: time.Unix(1700000000, 5), Input: []byte("input"),
		Caller: make([]byte, 32), Signature: make([]byte, 64)}.Encode())
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := seal.DecodePayload(b)
		if err != nil {
			if !errors.Is(err, seal.ErrMalformed) {
				t.Fatalf("got %v, want %v", err, seal.ErrMalformed)
			}
			return
		}
		if got := p.Encode(); !bytes.Equal(got, b) {
			t.Fatalf("decoded %x re-encodes to %x", b, got)
		}
	})
}

// FuzzOpenTicket checks that OpenTicket never panics on attacker-supplied
// tickets, fails only with ErrDecrypt or ErrMalformed, and that any ticket
// it accepts carries a 16-byte session key.
func FuzzOpenTicket(f *testing.F) {
	key := bytes.Repeat([]byte{9}, 16)
	good, err := seal.SealTicket(key, seal.Ticket{ID: []byte("s"), Key: bytes.Repeat([]byte{7}, 16), Name: "hello", Version: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(key, good)
	f.Add(key, []byte{})
	f.Add(key, good[:28])
	f.Add([]byte{}, good)
	f.Add(bytes.Repeat([]byte{9}, 32), good)
	f.Fuzz(func(t *testing.T, key, sealed []byte) {
		tk, err := seal.OpenTicket(key, sealed)
		if err != nil {
			if tk != nil {
				t.Fatalf("got ticket and error %v", err)
			}
			if !errors.Is(err, seal.ErrDecrypt) && !errors.Is(err, seal.ErrMalformed) {
				t.Fatalf("got %v, want %v or %v", err, seal.ErrDecrypt, seal.ErrMalformed)
			}
			return
		}
		if len(tk.Key) != 16 {
			t.Fatalf("accepted a ticket with a %d-byte key", len(tk.Key))
		}
	})
}
