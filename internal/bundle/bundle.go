// Package bundle encodes, signs and verifies function bundles: a module and
// its owner-signed manifest in one self-describing blob.
//
// Layout (all integers big-endian):
//
//	magic "\x00CLB" | version byte 1 | uint32 header length | header JSON | module bytes
//
// The header holds the raw manifest JSON, the module's sha256 and size, the
// owner's Ed25519 public key and a signature over
// "cloister-bundle-v1\n" ‖ sha256(manifest JSON) ‖ sha256(module). The
// manifest names the function, its version and the namespace the owner
// signed it for (Manifest.Namespace, checked with Manifest.BoundTo), so
// the signature covers where the bundle may run, not only what it is.
//
// Parse must never trust a field it has not checked: the worker calls Open
// inside the TEE on bytes that came from untrusted storage.
package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cloister-faas/cloister/internal/strictjson"
)

var magic = []byte{0, 'C', 'L', 'B', 1}

const signDomain = "cloister-bundle-v1\n"

// MaxHeader bounds the header size.
const MaxHeader = 1 << 20

// Errors. Test with errors.Is.
var (
	ErrMalformed = errors.New("bundle: malformed")
	ErrSignature = errors.New("bundle: owner signature does not verify")
	ErrHash      = errors.New("bundle: module hash mismatch")
	ErrManifest  = errors.New("bundle: invalid manifest")
	// ErrNamespace means the owner signed the bundle for another namespace
	// than the one it is registered or served in.
	ErrNamespace = errors.New("bundle: signed for another namespace")
	// ErrUnbound means the bundle's signed manifest names no namespace, so
	// its signature does not say where it may be registered.
	ErrUnbound = errors.New("bundle: not bound to a namespace")
)

type header struct {
	Manifest     json.RawMessage `json:"manifest"`
	ModuleSHA256 string          `json:"module_sha256"`
	ModuleSize   int             `json:"module_size"`
	Signer       []byte          `json:"signer"`
	Signature    []byte          `json:"signature"`
}

// Bundle is a parsed and verified bundle.
type Bundle struct {
	Manifest    Manifest
	RawManifest []byte
	Module      []byte
	CodeHash    string // hex sha256 of Module
	Signer      ed25519.PublicKey
}

// Hash returns the hex sha256 of encoded bundle bytes.
func Hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func signedMessage(rawManifest []byte, moduleHash [32]byte) []byte {
	mh := sha256.Sum256(rawManifest)
	msg := append([]byte(signDomain), mh[:]...)
	return append(msg, moduleHash[:]...)
}

// Build validates the manifest, signs it with the module and encodes the bundle.
func Build(m Manifest, module []byte, owner ed25519.PrivateKey) ([]byte, error) {
	m.ApplyDefaults()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	mod := sha256.Sum256(module)
	h := header{
		Manifest:     raw,
		ModuleSHA256: hex.EncodeToString(mod[:]),
		ModuleSize:   len(module),
		Signer:       owner.Public().(ed25519.PublicKey),
		Signature:    ed25519.Sign(owner, signedMessage(raw, mod)),
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(magic)+4+len(hb)+len(module))
	out = append(out, magic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(hb)))
	out = append(out, hb...)
	return append(out, module...), nil
}

// Open parses b, checks the module hash and the owner's signature, and
// validates the manifest. It does not decide whether the signer is trusted.
func Open(b []byte) (*Bundle, error) {
	if len(b) < len(magic)+4 || !bytes.Equal(b[:len(magic)], magic) {
		return nil, fmt.Errorf("%w: not a cloister bundle (bad magic)", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(b[len(magic):])
	rest := b[len(magic)+4:]
	if n > MaxHeader || int(n) > len(rest) {
		return nil, fmt.Errorf("%w: header length %d", ErrMalformed, n)
	}
	var h header
	if err := strictjson.Unmarshal(rest[:n], &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	module := rest[n:]
	if h.ModuleSize != len(module) {
		return nil, fmt.Errorf("%w: module is %d bytes, header says %d", ErrHash, len(module), h.ModuleSize)
	}
	mod := sha256.Sum256(module)
	want, err := hex.DecodeString(h.ModuleSHA256)
	if err != nil || !bytes.Equal(want, mod[:]) {
		return nil, fmt.Errorf("%w: module sha256 is %x", ErrHash, mod)
	}
	if len(h.Signer) != ed25519.PublicKeySize || !ed25519.Verify(h.Signer, signedMessage(h.Manifest, mod), h.Signature) {
		return nil, ErrSignature
	}
	m, err := ParseManifest(h.Manifest)
	if err != nil {
		return nil, err
	}
	return &Bundle{
		Manifest:    m,
		RawManifest: append([]byte(nil), h.Manifest...),
		Module:      module,
		CodeHash:    hex.EncodeToString(mod[:]),
		Signer:      ed25519.PublicKey(h.Signer),
	}, nil
}
