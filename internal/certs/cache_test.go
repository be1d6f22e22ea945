package certs

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func TestWorkerCache(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	wpub, _, _ := ed25519.GenerateKey(rand.Reader)
	s, err := Sign(priv, DomainWorker, Worker{WorkerID: "w1", SigningKey: wpub})
	if err != nil {
		t.Fatal(err)
	}
	var c WorkerCache
	for range 2 { // a miss, then a hit
		w, err := c.Open(s, pub)
		if err != nil || w.WorkerID != "w1" {
			t.Fatalf("Open: %+v %v", w, err)
		}
	}
	// A cached certificate does not open under another coordinator key,
	// nor with its signature or body changed.
	if _, err := c.Open(s, otherPub); !errors.Is(err, ErrSignature) {
		t.Errorf("another coordinator key: %v", err)
	}
	bad := s
	bad.Signature = append([]byte{}, s.Signature...)
	bad.Signature[0] ^= 1
	if _, err := c.Open(bad, pub); !errors.Is(err, ErrSignature) {
		t.Errorf("altered signature: %v", err)
	}
	bad = s
	bad.Body = append(append([]byte{}, s.Body...), ' ')
	if _, err := c.Open(bad, pub); !errors.Is(err, ErrSignature) {
		t.Errorf("altered body: %v", err)
	}
	// A hit neither copies nor hashes the certificate: no allocation, even
	// for a certificate larger than a stack buffer.
	big, err := Sign(priv, DomainWorker, Worker{WorkerID: "w1", SigningKey: wpub, TCB: strings.Repeat("t", 4096)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(big, pub); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Open(big, pub); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a hit allocates %v times, want 0", n)
	}
	// The cache stays bounded.
	for i := range maxCached + 10 {
		s, _ := Sign(priv, DomainWorker, Worker{WorkerID: "w" + string(rune('a'+i%26)), SigningKey: wpub, TCB: string(rune(i))})
		if _, err := c.Open(s, pub); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > maxCached {
		t.Fatalf("cache holds %d certificates, bound %d", n, maxCached)
	}
}
