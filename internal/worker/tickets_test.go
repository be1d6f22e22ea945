package worker

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
)

// TestSessionTicketCache checks that a session's ticket is opened once and
// then served from the cache, and that the cache skips no check: a ticket
// altered by one byte, another function version's ticket and an expired
// ticket are refused with session_invalid, cached or not.
func TestSessionTicketCache(t *testing.T) {
	ticketKey := bytes.Repeat([]byte{7}, 16)
	fc := &certs.Function{Namespace: "team-a", Name: "fn", Version: 2, CodeHash: "c0de"}
	fn := &loaded{fn: fc, ticketKey: ticketKey}
	opened := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	expires := opened.Add(SessionTTL)
	sealTicket := func(t *testing.T, v int) []byte {
		t.Helper()
		b, err := seal.SealTicket(ticketKey, seal.Ticket{ID: []byte("id"), Key: bytes.Repeat([]byte{9}, 16),
			Namespace: fc.Namespace, Name: fc.Name, Version: v, CodeHash: fc.CodeHash, Expires: expires})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := sealTicket(t, 2)

	first, err := fn.sessionTicket(good, opened)
	if err != nil {
		t.Fatalf("first call: %v", err)
	}
	again, err := fn.sessionTicket(bytes.Clone(good), opened.Add(time.Minute))
	if err != nil {
		t.Fatalf("second call: %v", err)
	}
	if again != first {
		t.Error("the second call opened the ticket again, want it from the cache")
	}
	// The cached session key is the ticket's: it opens what the client sealed.
	ct, err := seal.SealSymmetric(bytes.Repeat([]byte{9}, 16), seal.AADRequest, good, []byte("input"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := again.key.Open(seal.AADRequest, good, ct); err != nil || string(pt) != "input" {
		t.Errorf("cached session key: got %q, %v; want the input", pt, err)
	}

	refused := func(name string, sealed []byte, at time.Time) {
		t.Helper()
		_, err := fn.sessionTicket(sealed, at)
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Code != apierr.SessionInvalid {
			t.Errorf("%s: got %v, want session_invalid", name, err)
		}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	refused("a byte flipped", flipped, opened)
	refused("another version's ticket", sealTicket(t, 1), opened)
	refused("expired, from the cache", good, expires.Add(time.Second))

	// A full cache starts again: nothing grows past maxTickets.
	for range maxTickets + 1 {
		if _, err := fn.sessionTicket(sealTicket(t, 2), opened); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(fn.tickets.m); n > maxTickets {
		t.Errorf("the cache holds %d tickets, want at most %d", n, maxTickets)
	}
}

// BenchmarkSessionTicket compares what a session call pays for its ticket
// and key: opened from the cache, against decrypted, decoded and its
// cipher set up (seal.OpenTicket and seal.NewSymmetric) as every call did
// before the cache.
func BenchmarkSessionTicket(b *testing.B) {
	ticketKey := bytes.Repeat([]byte{7}, 16)
	fc := &certs.Function{Namespace: "team-a", Name: "fn", Version: 2, CodeHash: strings.Repeat("c0de", 16)}
	now := time.Now()
	sealed, err := seal.SealTicket(ticketKey, seal.Ticket{ID: bytes.Repeat([]byte{1}, 16), Key: bytes.Repeat([]byte{9}, 16),
		Namespace: fc.Namespace, Name: fc.Name, Version: 2, CodeHash: fc.CodeHash, Expires: now.Add(SessionTTL), Caller: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		fn := &loaded{fn: fc, ticketKey: ticketKey}
		for b.Loop() {
			if _, err := fn.sessionTicket(sealed, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("opened", func(b *testing.B) {
		for b.Loop() {
			t, err := seal.OpenTicket(ticketKey, sealed)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := seal.NewSymmetric(t.Key); err != nil {
				b.Fatal(err)
			}
		}
	})
}
