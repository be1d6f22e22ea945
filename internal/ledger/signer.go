package ledger

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// NewSigner returns a signed-note signer and its verifier for an Ed25519 key
// (algorithm 0x01 of https://c2sp.org/signed-note). name is the key name; it
// is also the checkpoint origin line of a log signed with it
// (https://c2sp.org/tlog-checkpoint), so it must be the log's Origin.
//
// The signer signs the raw note text, without a domain prefix, as the
// signed-note format requires. When the coordinator's identity key is used,
// a checkpoint ("<origin>\n<size>\n<root>\n") cannot pass for a statement
// of package certs (domain line, then JSON) or the reverse, provided the
// origin is not one of the certs domain names.
func NewSigner(name string, key ed25519.PrivateKey) (note.Signer, note.Verifier, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, nil, fmt.Errorf("ledger signer: key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	v, err := NewVerifier(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, err
	}
	return &signer{name: name, hash: v.KeyHash(), key: key, verifier: v}, v, nil
}

// NewVerifier returns the signed-note verifier for the coordinator's Ed25519
// public key under name: what a client that learned the key from verified
// evidence needs to check checkpoints.
func NewVerifier(name string, pub ed25519.PublicKey) (note.Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ledger verifier: key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("ledger verifier: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("ledger verifier: %w", err)
	}
	return v, nil
}

// signer is a note.Signer over a raw Ed25519 private key. Its key hash is the
// one note.NewVerifier computes for the public key, so signatures verify with
// the matching verifier.
type signer struct {
	name     string
	hash     uint32
	key      ed25519.PrivateKey
	verifier note.Verifier
}

func (s *signer) Name() string                    { return s.name }
func (s *signer) KeyHash() uint32                 { return s.hash }
func (s *signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// verifierFor returns the verifier of a signer made by NewSigner.
func verifierFor(s note.Signer) (note.Verifier, error) {
	if ours, ok := s.(*signer); ok {
		return ours.verifier, nil
	}
	return nil, errors.New("ledger: Options.Verifier is required when Signer was not made by NewSigner")
}
