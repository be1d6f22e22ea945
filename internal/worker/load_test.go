package worker

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"github.com/cloister-faas/cloister/internal/apierr"
	"github.com/cloister-faas/cloister/internal/bundle"
	"github.com/cloister-faas/cloister/internal/certs"
	"github.com/cloister-faas/cloister/internal/seal"
)

// TestOpenCertifiedChecksNamespace: inside the TEE the worker serves a
// bundle only under the namespace its owner signed it for, whatever the
// certificate it came with says; a bundle signed for no namespace (built
// before the field existed) is still served where it was certified.
func TestOpenCertifiedChecksNamespace(t *testing.T) {
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	module := []byte("\x00asm\x01\x00\x00\x00")
	build := func(name, ns string) []byte {
		m := bundle.DefaultManifest(name)
		m.Version, m.Namespace = 1, ns
		b, err := bundle.Build(m, module, owner)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fc := &certs.Function{Namespace: "team-b", Name: "fn", Version: 1, CodeHash: seal.SHA256Hex(module),
		OwnerKey: owner.Public().(ed25519.PublicKey)}
	for _, c := range []struct {
		what string
		raw  []byte
		name string
		want apierr.Code
	}{
		{"signed for the served namespace", build("fn", "team-b"), "fn", ""},
		{"signed for no namespace", build("fn", ""), "fn", ""},
		{"signed for another namespace", build("fn", "team-a"), "fn", apierr.BundleSignature},
		{"signed for another function", build("other", "team-b"), "fn", apierr.BundleIntegrity},
	} {
		_, err := openCertified(c.raw, fc, "team-b", c.name, 1)
		if got := apierr.CodeOf(err); got != c.want || (c.want == "" && err != nil) {
			t.Errorf("%s: got %v, want %q", c.what, err, c.want)
		}
	}
}
