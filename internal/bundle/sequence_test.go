package bundle_test

import (
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"

	"github.com/cloister-faas/cloister/internal/bundle"
)

func TestSequenceSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	steps := []bundle.SequenceStep{{Name: "a", Version: 1}, {Name: "b"}}
	sig, err := bundle.SignSequence(priv, "pipe", steps)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.VerifySequence(pub, sig, "pipe", steps); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	for what, v := range map[string]func() error{
		"renamed": func() error { return bundle.VerifySequence(pub, sig, "pipe2", steps) },
		"step renamed": func() error {
			return bundle.VerifySequence(pub, sig, "pipe", []bundle.SequenceStep{{Name: "x", Version: 1}, {Name: "b"}})
		},
		"version": func() error {
			return bundle.VerifySequence(pub, sig, "pipe", []bundle.SequenceStep{{Name: "a", Version: 2}, {Name: "b"}})
		},
		"pinned latest": func() error {
			return bundle.VerifySequence(pub, sig, "pipe", []bundle.SequenceStep{{Name: "a", Version: 1}, {Name: "b", Version: 1}})
		},
		"reordered": func() error {
			return bundle.VerifySequence(pub, sig, "pipe", []bundle.SequenceStep{{Name: "b"}, {Name: "a", Version: 1}})
		},
		"step added": func() error {
			return bundle.VerifySequence(pub, sig, "pipe", append(slices.Clone(steps), bundle.SequenceStep{Name: "a"}))
		},
		"step dropped": func() error { return bundle.VerifySequence(pub, sig, "pipe", steps[:1]) },
		"other signer": func() error { return bundle.VerifySequence(other, sig, "pipe", steps) },
		"short signer": func() error { return bundle.VerifySequence(pub[:5], sig, "pipe", steps) },
		"no signature": func() error { return bundle.VerifySequence(pub, nil, "pipe", steps) },
		"split ambiguity": func() error {
			return bundle.VerifySequence(pub, sig, "pip", []bundle.SequenceStep{{Name: "ea", Version: 1}, {Name: "b"}})
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
		if _, err := bundle.SignSequence(priv, "pipe", steps); !errors.Is(err, bundle.ErrManifest) {
			t.Errorf("%s: %v, want ErrManifest", what, err)
		}
	}
	if _, err := bundle.SignSequence(priv, "Bad Name", steps); !errors.Is(err, bundle.ErrManifest) {
		t.Errorf("bad sequence name: %v", err)
	}
}
