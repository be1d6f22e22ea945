package bundle_test

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/cloister-faas/cloister/internal/bundle"
)

func TestSequenceSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	steps := []bundle.SequenceStep{{Name: "a", Version: 1}, {Name: "b"}}
	sig, err := bundle.SignSequence(priv, "ns", "pipe", steps)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.VerifySequence(pub, sig, "ns", "pipe", steps); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	for what, v := range map[string]func() error{
		"renamed": func() error { return bundle.VerifySequence(pub, sig, "ns", "pipe2", steps) },
		"step renamed": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pipe", []bundle.SequenceStep{{Name: "x", Version: 1}, {Name: "b"}})
		},
		"version": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pipe", []bundle.SequenceStep{{Name: "a", Version: 2}, {Name: "b"}})
		},
		"pinned latest": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pipe", []bundle.SequenceStep{{Name: "a", Version: 1}, {Name: "b", Version: 1}})
		},
		"reordered": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pipe", []bundle.SequenceStep{{Name: "b"}, {Name: "a", Version: 1}})
		},
		"step added": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pipe", append(slices.Clone(steps), bundle.SequenceStep{Name: "a"}))
		},
		"other namespace": func() error { return bundle.VerifySequence(pub, sig, "ns2", "pipe", steps) },
		"namespace split": func() error { return bundle.VerifySequence(pub, sig, "nsp", "ipe", steps) },
		"step dropped":    func() error { return bundle.VerifySequence(pub, sig, "ns", "pipe", steps[:1]) },
		"other signer":    func() error { return bundle.VerifySequence(other, sig, "ns", "pipe", steps) },
		"short signer":    func() error { return bundle.VerifySequence(pub[:5], sig, "ns", "pipe", steps) },
		"no signature":    func() error { return bundle.VerifySequence(pub, nil, "ns", "pipe", steps) },
		"split ambiguity": func() error {
			return bundle.VerifySequence(pub, sig, "ns", "pip", []bundle.SequenceStep{{Name: "ea", Version: 1}, {Name: "b"}})
		},
	} {
		if err := v(); !errors.Is(err, bundle.ErrSequenceSignature) {
			t.Errorf("%s: %v, want ErrSequenceSignature", what, err)
		}
	}
	for what, steps := range map[string][]bundle.SequenceStep{
		"no steps":    nil,
		"bad name":    {{Name: "A"}},
		"bad version": {{Name: "a", Version: -1}},
	} {
		if _, err := bundle.SignSequence(priv, "ns", "pipe", steps); !errors.Is(err, bundle.ErrManifest) {
			t.Errorf("%s: %v, want ErrManifest", what, err)
		}
	}
	if _, err := bundle.SignSequence(priv, "ns", "Bad Name", steps); !errors.Is(err, bundle.ErrManifest) {
		t.Errorf("bad sequence name: %v", err)
	}
	if _, err := bundle.SignSequence(priv, "", "pipe", steps); !errors.Is(err, bundle.ErrManifest) {
		t.Errorf("no namespace: %v", err)
	}
}

// TestLegacySequenceSignature: a signature over the v1 message, which has
// no namespace, is told apart as unbound (the caller decides), in every
// namespace; a tampered one still does not verify.
func TestLegacySequenceSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	steps := []bundle.SequenceStep{{Name: "a", Version: 1}, {Name: "b"}}
	// The v1 message, as docs/async.md gave it: the domain, then the name
	// and each step's name with its length in front, and each version.
	msg := append([]byte("cloister-sequence-v1\n"), byte(len("pipe")))
	msg = append(msg, "pipe"...)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(steps)))
	for _, s := range steps {
		msg = append(append(msg, byte(len(s.Name))), s.Name...)
		msg = binary.BigEndian.AppendUint32(msg, uint32(s.Version))
	}
	sig := ed25519.Sign(priv, msg)
	for _, ns := range []string{"ns", "other"} {
		if err := bundle.VerifySequence(pub, sig, ns, "pipe", steps); !errors.Is(err, bundle.ErrSequenceUnbound) {
			t.Errorf("legacy signature in %s: got %v, want %v", ns, err, bundle.ErrSequenceUnbound)
		}
	}
	if err := bundle.VerifySequence(pub, sig, "ns", "pipe", steps[:1]); !errors.Is(err, bundle.ErrSequenceSignature) {
		t.Errorf("legacy signature, step dropped: got %v, want %v", err, bundle.ErrSequenceSignature)
	}
}
