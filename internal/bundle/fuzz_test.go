package bundle_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/cloister-faas/cloister/internal/bundle"
)

// FuzzOpen feeds arbitrary bytes to Open, which the worker runs on bytes
// from untrusted storage. It must never panic, must fail only with one of
// the package's sentinels, and anything it accepts must re-verify.
func FuzzOpen(f *testing.F) {
	f.Add(build(f, manifest(), module))
	f.Add(build(f, bundle.Manifest{Name: "bare", Version: 1}, nil))
	f.Add([]byte{})
	f.Add(magic)
	f.Add(append(append([]byte(nil), magic...), 0, 0, 0, 2, '{', '}'))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := bundle.Open(b)
		if err != nil {
			if got != nil {
				t.Fatalf("got bundle and error %v, want nil bundle", err)
			}
			if !errors.Is(err, bundle.ErrMalformed) && !errors.Is(err, bundle.ErrHash) &&
				!errors.Is(err, bundle.ErrSignature) && !errors.Is(err, bundle.ErrManifest) {
				t.Fatalf("got error %v, want one of the package's sentinels", err)
			}
			return
		}
		sum := sha256.Sum256(got.Module)
		if want := hex.EncodeToString(sum[:]); got.CodeHash != want {
			t.Fatalf("got code hash %s, want sha256(Module) %s", got.CodeHash, want)
		}
		if err := got.Manifest.Validate(); err != nil {
			t.Fatalf("accepted a manifest that does not validate: %v", err)
		}
		m, err := bundle.ParseManifest(got.RawManifest)
		if err != nil || !reflect.DeepEqual(m, got.Manifest) {
			t.Fatalf("raw manifest parses to %+v, %v; want %+v", m, err, got.Manifest)
		}
		mh := sha256.Sum256(got.RawManifest)
		msg := append(append([]byte(signDomain), mh[:]...), sum[:]...)
		if !ed25519.Verify(got.Signer, msg, sigOf(t, b)) {
			t.Fatal("accepted a bundle whose signature does not verify")
		}
	})
}

// sigOf extracts the header signature of an encoded bundle the way Open
// reads it: with a json.Decoder, which takes the first value and matches
// keys case-insensitively.
func sigOf(t *testing.T, b []byte) []byte {
	t.Helper()
	n := binary.BigEndian.Uint32(b[len(magic):])
	var h struct {
		Signature []byte `json:"signature"`
	}
	if err := json.NewDecoder(bytes.NewReader(b[len(magic)+4 : len(magic)+4+int(n)])).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.Signature
}
